"""The parsers of the host's reports, fed by output captured on Debian hosts."""

import json
import os

import pytest

from conftest import FIXTURES, uwsgi_host as h

RELEASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def fixture(release, name):
    return (FIXTURES / release / name).read_text()


@pytest.mark.parametrize("release", RELEASES)
def test_ss_listeners_give_the_backlog_in_effect_and_the_queue(release):
    listeners = h.parse_ss_listeners(fixture(release, "ss-listening.txt"))
    by_key = {h.listener_key(item): item for item in listeners}
    app = by_key["/run/uwsgi/flaskapp.sock"]
    assert (app["kind"], app["backlog"], app["queue"]) == ("unix", 4096, 0)
    api = by_key[":8001"]
    assert (api["kind"], api["local"], api["port"], api["backlog"]) == ("tcp", "127.0.0.1:8001", 8001, 2048)
    assert h.backlogs_by_socket(listeners)["/run/uwsgi/flaskapp.sock"] == 4096


@pytest.mark.parametrize("release", RELEASES)
def test_ss_names_the_processes_it_can_see(release):
    listeners = h.parse_ss_listeners(fixture(release, "ss-listening.txt"))
    journal = next(item for item in listeners if item["local"] == "/run/systemd/journal/stdout")
    assert [name for name, _ in journal["processes"]] == ["systemd-journal", "systemd"]
    # uWSGI runs as the app's user: a container's root without CAP_SYS_PTRACE cannot see its fds.
    assert next(i for i in listeners if i["local"] == "/run/uwsgi/flaskapp.sock")["processes"] == []


def test_ss_ignores_headers_and_other_states():
    text = "Netid State Recv-Q Send-Q Local Peer\nu_str ESTAB 0 0 /x 1 * 2\nudp UNCONN 0 0 0.0.0.0:68 0.0.0.0:*\n"
    assert h.parse_ss_listeners(text) == []


def test_tcp_on_every_address_and_ipv6():
    text = "tcp LISTEN 3 4096 0.0.0.0:80 0.0.0.0:*\ntcp LISTEN 0 4096 [::]:80 [::]:*\n"
    listeners = h.parse_ss_listeners(text)
    assert [item["port"] for item in listeners] == [80, 80]
    assert h.backlogs_by_socket(listeners) == {":80": 4096}
    assert listeners[0]["queue"] == 3


@pytest.mark.parametrize("release", RELEASES)
def test_supervisor_status(release):
    states = h.parse_supervisor_status(fixture(release, "supervisorctl-status.txt"))
    assert set(states) == {"flaskapp", "flaskapi"}
    assert all(s["state"] == "RUNNING" and s["pid"] > 1 for s in states.values())


def test_supervisor_status_of_failed_and_stopped_programs():
    text = ("flaskapi                         FATAL     Exited too quickly (process log may have details)\n"
            "other                            STOPPED   Nov 28 06:05 AM\n"
            "unix:///var/run/supervisor.sock no such file\n")
    states = h.parse_supervisor_status(text)
    assert states["flaskapi"]["state"] == "FATAL" and states["flaskapi"]["pid"] is None
    assert states["other"]["state"] == "STOPPED"
    assert "unix:///var/run/supervisor.sock" not in states


@pytest.mark.parametrize("release", RELEASES)
def test_sysctl_grep(release):
    settings = h.parse_sysctl_grep(fixture(release, "sysctl-grep.txt"))
    assert {"path": "/run/sysctl.d/70-low.conf", "key": "net.ipv4.tcp_max_syn_backlog", "value": "512"} in settings
    assert {"path": "/etc/sysctl.conf", "key": "net.core.somaxconn", "value": "2048"} in settings


@pytest.mark.parametrize("release", RELEASES)
def test_program_file_written_by_the_role(release):
    program = h.parse_program_file(fixture(release, "program-flaskapp.conf"))
    assert program["name"] == "flaskapp"
    assert program["ini"] == "/etc/uwsgi/supervisor/flaskapp.ini"
    assert (program["user"], program["group"]) == ("www-data", "www-data")


def test_program_file_of_an_earlier_role_version_is_still_the_roles():
    text = ("#\n# Ansible managed\n#\n[program:ledger]\ncommand=/usr/bin/uwsgi --ini /etc/uwsgi/supervisor/ledger.ini\n"
            "user=app1\n")
    program = h.parse_program_file(text)
    assert (program["name"], program["user"], program["group"]) == ("ledger", "app1", None)


def test_program_file_of_someone_else_is_not_the_roles():
    text = "[program:flaskapp]\ncommand=/usr/bin/uwsgi --master -s /run/uwsgi/flaskapp.sock --module app:app\n"
    assert h.parse_program_file(text) is None
    assert h.parse_program_file("") is None


@pytest.mark.parametrize("release", RELEASES)
def test_ini_sockets(release):
    assert h.parse_ini_sockets(fixture(release, "flaskapi.ini")) == ["127.0.0.1:8001"]
    assert h.parse_ini_sockets("[uwsgi]\nhttp-socket = :8080\nchmod-socket = 660\n") == [":8080"]


def test_tmpfiles_dirs():
    text = "# comment\nd /run/uwsgi 0775 root www-data -\nD /run/other 0755 root root -\nf /run/x.txt\n"
    assert h.parse_tmpfiles_dirs(text) == ["/run/uwsgi", "/run/other"]


def test_program_of_pid_walks_up_to_the_master():
    parents = {12: 11, 11: 10, 10: 1}
    assert h.program_of_pid(12, parents, {11: "flaskapp"}) == "flaskapp"
    assert h.program_of_pid(10, parents, {11: "flaskapp"}) is None
    assert h.program_of_pid(5, {5: 5}, {}) is None  # a loop ends


def test_log_tail_keeps_the_last_non_empty_lines():
    assert h.log_tail("a\n\nb\nc\n", 2) == ["b", "c"]
    assert h.log_tail("", 5) == []


def test_a_socket_on_a_disk_is_matched_by_the_device_ss_prints():
    """ss --extended prints the kernel's own dev_t split by the C library
    (0/65024 for /dev/vda, 254:0): the file at the path is compared the same
    way, or every socket outside tmpfs would read as replaced."""
    listeners = h.parse_ss_listeners((FIXTURES / "bookworm" / "ss-listening-disk.txt").read_text())
    stat_ = json.loads((FIXTURES / "bookworm" / "stat-socket-disk.json").read_text())
    assert listeners[0]["vfs"] == {"ino": stat_["st_ino"], "dev": "0/65024"}
    assert (stat_["major"], stat_["minor"]) == (254, 0)
    assert h.ss_device(stat_["st_dev"]) == "0/65024"
    file_ = {"exists": True, "ino": stat_["st_ino"], "dev": h.ss_device(stat_["st_dev"]), "uid": 0}
    assert h.socket_in_effect(stat_["path"], listeners, file_, 0) == (listeners[0], None)
    # tmpfs (major 0): both ways agree.
    assert h.ss_device(os.makedev(0, 27)) == "0/27"


def test_a_log_is_read_from_its_offset_within_a_bound(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"old\n" * 10 + b"new line\n")
    assert h.read_log(str(log), 40) == (b"new line\n", 49)
    # Shorter than the offset: rotated, all of it is new.
    assert h.read_log(str(log), 4000)[0].startswith(b"old\n")
    assert h.read_log(str(log), 0, limit=9) == (b"new line\n", 49)


def test_a_fifo_or_a_symlink_at_a_log_s_path_reads_as_nothing_at_once(tmp_path):
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    secret = tmp_path / "shadow"
    secret.write_text("root:secret")
    (tmp_path / "link.log").symlink_to(secret)
    assert h.read_log(str(fifo)) == (b"", None)
    assert h.read_log(str(tmp_path / "link.log")) == (b"", None)
    assert h.read_log(str(tmp_path / "missing.log")) == (b"", None)


def test_a_deep_queue_keeps_every_unix_listener_in_the_probe_s_reading():
    """Captured with 1,500 connections queued on deep.sock (iproute2 6.1.0):
    ss --extended then loses that listener, and so the probe would have called
    a serving app's socket gone and restarted it, dropping its queue. The plain
    read keeps it; --extended's files are added where it still has them."""
    plain = (FIXTURES / "bookworm" / "ss-deep-queue.txt").read_text()
    extended = (FIXTURES / "bookworm" / "ss-deep-queue-extended.txt").read_text()
    assert "/tmp/run-uwsgi/deep.sock" not in [item["local"] for item in h.parse_ss_listeners(extended)]
    listeners = h.with_extended(h.parse_ss_listeners(plain), extended)
    by_path = {item["local"]: item for item in listeners}
    assert h.backlogs_by_socket(listeners)["/tmp/run-uwsgi/deep.sock"] == 4096
    assert by_path["/tmp/run-uwsgi/deep.sock"]["queue"] == 1500
    assert "vfs" not in by_path["/tmp/run-uwsgi/deep.sock"]
    assert by_path["/tmp/run-uwsgi/otherf.sock"]["vfs"] == {"ino": 2146571, "dev": "0/65024"}
    # Without its file, the listener still serves the app: nothing to restart.
    file_ = {"exists": True, "ino": 99, "dev": "0/65024", "uid": 33}
    assert h.socket_in_effect("/tmp/run-uwsgi/deep.sock", listeners, file_, 33) == (by_path["/tmp/run-uwsgi/deep.sock"], None)


def test_extended_tcp_owner_is_added_by_address(release="bookworm"):
    extended = fixture(release, "ss-listening-extended.txt")
    listeners = h.with_extended(h.parse_ss_listeners(extended.replace(" uid:", " x:")), extended)
    owners = {item["local"]: item.get("uid") for item in h.parse_ss_listeners(extended) if item["kind"] == "tcp"}
    assert owners["127.0.0.1:8001"] == 33
    assert {item["local"]: item.get("uid") for item in listeners if item["kind"] == "tcp"} == owners


def test_supervisors_process_info_reads_as_its_status_lines():
    # Captured together on a converged Debian 12 host of the beside layout.
    infos = json.loads(fixture("bookworm", "supervisor-processinfo-beside.json"))
    status = fixture("bookworm", "supervisorctl-status-beside-rpc.txt")
    assert h.parse_supervisor_status(h.supervisor_status_text(infos)) == h.parse_supervisor_status(status)


def test_supervisorctl_s_socket_comes_from_its_own_section():
    conf = fixture("bookworm", "supervisord.conf")
    assert h.supervisor_serverurl(conf) == "/var/run/supervisor.sock"
    assert h.supervisor_serverurl(conf.replace("[supervisorctl]\n", "[supervisorctl]\nusername = ops\npassword = secret\n")) is None
    assert h.supervisor_serverurl(conf.replace("unix:///var/run/supervisor.sock", "http://127.0.0.1:9001")) is None
    assert h.supervisor_serverurl("[unix_http_server]\nfile=/run/s.sock\n") is None
    assert h.supervisor_serverurl("not an ini [") is None


def test_supervisors_socket_is_asked_only_when_root_owns_it(tmp_path):
    assert h.supervisor_rpc(str(tmp_path / "absent.sock"), "supervisor.getAllProcessInfo") is None
    (tmp_path / "file").write_text("")
    assert h.supervisor_rpc(str(tmp_path / "file"), "supervisor.getAllProcessInfo") is None


def test_supervisors_socket_answers_one_xml_rpc_call(tmp_path):
    import socketserver
    import threading
    from xmlrpc.server import SimpleXMLRPCDispatcher, SimpleXMLRPCRequestHandler

    class Server(socketserver.UnixStreamServer, SimpleXMLRPCDispatcher):
        def __init__(self, path):
            SimpleXMLRPCDispatcher.__init__(self, allow_none=True)
            self.logRequests = False
            socketserver.UnixStreamServer.__init__(self, path, SimpleXMLRPCRequestHandler)

    class Handler(SimpleXMLRPCRequestHandler):
        disable_nagle_algorithm = False  # a unix socket has no TCP options

        def address_string(self):
            return "unix"

    path = str(tmp_path / "supervisor.sock")
    server = Server(path)
    server.RequestHandlerClass = Handler
    server.register_function(lambda: [{"name": "shop", "group": "shop", "statename": "RUNNING",
                                       "description": "pid 7, uptime 0:00:05"}], "supervisor.getAllProcessInfo")
    threading.Thread(target=server.handle_request, daemon=True).start()
    infos = h.supervisor_rpc(path, "supervisor.getAllProcessInfo")
    server.server_close()
    if os.geteuid() != 0:
        assert infos is None  # a socket root does not own is never asked
        return
    assert h.parse_supervisor_status(h.supervisor_status_text(infos))["shop"]["pid"] == 7
