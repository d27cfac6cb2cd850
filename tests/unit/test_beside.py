"""apply_strategy beside: Supervisor's view of a pool and two instances, and
the steps that move an app to a new instance (library/uwsgi_switch.py). The
status and program files were captured on Debian 12 with app zapp (a TCP
socket), serving and in the middle of a switch."""

import pytest

from conftest import FIXTURES, ROOT, filters as f, load, uwsgi_host as h
from test_decisions import SETTINGS

switch = load("uwsgi_switch", "library/uwsgi_switch.py")
STATUS = (FIXTURES / "bookworm" / "supervisorctl-status-beside.txt").read_text()
SWITCHING = (FIXTURES / "bookworm" / "supervisorctl-status-beside-switching.txt").read_text()
PROGRAM = (FIXTURES / "bookworm" / "program-beside.conf").read_text()
ZAPP = {"name": "zapp", "module": "app:app", "socket": "127.0.0.1:8003", "apply_strategy": "beside", "processes": 2}


def test_an_app_is_seen_as_its_serving_instance_with_its_pool():
    zapp = h.parse_supervisor_status(STATUS)["zapp"]
    assert zapp["state"] == "RUNNING" and zapp["pid"] == 29777
    assert (zapp["program"], zapp["idle"], zapp["extra"]) == ("zapp.a", "zapp.b", None)
    assert zapp["pool"]["state"] == "RUNNING" and zapp["pool"]["pid"] == 29776


def test_of_two_running_instances_the_older_serves_and_the_other_is_extra():
    zapp = h.parse_supervisor_status(SWITCHING)["zapp"]
    assert (zapp["program"], zapp["pid"], zapp["extra"]) == ("zapp.a", 29777, "zapp.b")


def test_other_programs_are_not_taken_for_instances():
    states = h.parse_supervisor_status(STATUS)
    assert set(states) == {"flaskapi", "flaskapp", "uwsgi-sampler", "zapp", "zapp.a", "zapp.b", "zapp.socket"}
    assert h.slot_app("uwsgi-sampler") is None and h.slot_app("a.b") == "a" and h.slot_app(".a") is None


def test_the_program_file_is_the_apps_own():
    program = h.parse_program_file(PROGRAM)
    assert (program["name"], program["beside"]) == ("zapp", True)
    assert program["ini"] == "/etc/uwsgi/supervisor/zapp.ini"
    assert h.is_roles_program(program, "/etc/uwsgi/supervisor")


def test_a_pool_ini_names_the_socket_it_holds():
    assert h.parse_ini_sockets("zergpool = /var/lib/uwsgi-zerg/zapp/pool.zerg:127.0.0.1:8003\n") == ["127.0.0.1:8003"]


def steps(status, **item):
    return switch.switch_steps(dict({"name": "zapp"}, **item), h.parse_supervisor_status(status))


def test_a_change_starts_the_idle_instance_and_stops_the_serving_one_once_it_has_its_workers():
    assert steps(STATUS) == [("update", ["zapp.b"]), ("start", "zapp.b"), ("wait", "zapp.b"), ("stop", "zapp.a")]


def test_a_switch_that_did_not_finish_loses_its_unproven_instance_first():
    assert steps(SWITCHING)[:2] == [("stop", "zapp.b"), ("update", ["zapp.b"])]


def test_a_new_app_loads_its_three_programs():
    assert steps("") == [("update", ["zapp.socket", "zapp.a", "zapp.b"]), ("wait", "zapp.a")]


def test_a_changed_program_reaches_each_instance_while_the_other_serves():
    assert steps(STATUS, update=True) == [
        ("update", ["zapp.b"]), ("start", "zapp.b"), ("wait", "zapp.b"), ("stop", "zapp.a"),
        ("update", ["zapp.a"]), ("wait", "zapp.a"), ("stop", "zapp.b")]
    serving_b = "\n".join(
        "zapp.a  STOPPED   Dec 06 05:40 AM" if line.startswith("zapp.a ") else
        "zapp.b  RUNNING   pid 5, uptime 0:01:00" if line.startswith("zapp.b ") else line
        for line in STATUS.splitlines())
    assert steps(serving_b, update=True) == [
        ("update", ["zapp.a"]), ("start", "zapp.a"), ("wait", "zapp.a"), ("stop", "zapp.b"), ("update", ["zapp.b"])]


def test_a_stopped_app_starts_its_pool_and_first_instance():
    stopped = "\n".join(line.replace("RUNNING", "STOPPED") if line.startswith("zapp") else line
                        for line in STATUS.splitlines())
    assert steps(stopped) == [("start", "zapp.socket"), ("update", ["zapp.a", "zapp.b"]), ("start", "zapp.a"),
                              ("wait", "zapp.a")]


def beside_probe(status=STATUS, backlog=1024, workers=2):
    listener = {"kind": "tcp", "local": "127.0.0.1:8003", "port": 8003, "queue": 0, "backlog": backlog,
                "processes": [["uwsgi", 29776]], "programs": ["zapp"]}
    return {"supervisor": {"running": True, "programs": h.parse_supervisor_status(status)},
            "listeners": [listener], "workers": {"zapp": workers},
            "managed": {"zapp": {"name": "zapp", "beside": True, "sockets": ["127.0.0.1:8003"],
                                 "config_mtime": 1000.0, "started": 2000.0}}}


def plan(probe, changed=None, code=None, **app):
    apps = f.uwsgi_public(f.uwsgi_normalize([dict(ZAPP, **app)], SETTINGS))
    return f.uwsgi_apply_plan(apps, dict({"programs": [], "inis": [], "envs": [], "binaries": []}, **(changed or {})),
                              probe, "graceful", code)


def test_a_serving_beside_app_as_asked_needs_nothing():
    result = plan(beside_probe())
    assert result["switch"] == [] and result["listen"] == [] and result["why"] == []


@pytest.mark.parametrize("changed, code, app, why", [
    ({"inis": ["zapp"]}, None, {}, "its ini or environment changed"),
    ({"binaries": ["zapp"]}, None, {}, "its uwsgi binary changed"),
    ({}, {"zapp": "its revision is b2, it last took b1"}, {}, "its revision is b2, it last took b1"),
    ({}, None, {"processes": 4}, "it runs 2 workers, not 4"),
])
def test_every_other_change_is_a_new_instance_never_a_reload(changed, code, app, why):
    result = plan(beside_probe(), changed, code, **app)
    assert [i["name"] for i in result["switch"]] == ["zapp"]
    assert result["reload"] == result["restart"] == result["chain"] == result["load"] == []
    assert why in result["why"][0]


def test_a_new_listen_goes_to_the_pools_open_socket_alone():
    result = plan(beside_probe(), listen=3000)
    assert [(i["pid"], i["was"], i["backlog"]) for i in result["listen"]] == [(29776, 1024, 3000)]
    assert result["switch"] == []


def layout_errors(beside_before, app):
    probe = {"managed": {"zapp": {"name": "zapp", "beside": beside_before, "sockets": ["127.0.0.1:8003"]}},
             "users": {"www-data": {"exists": True, "uid": 33, "gid": 33, "groups": [33]}},
             "groups": {"www-data": {"exists": True, "gid": 33}}, "supervisor": {"programs": {}}, "listeners": []}
    return f.uwsgi_host_plan(f.uwsgi_public(f.uwsgi_normalize([app], SETTINGS)), probe, SETTINGS)["errors"]


def test_a_serving_app_moves_into_the_layout_but_not_out_of_it():
    assert layout_errors(False, ZAPP) == []
    errors = layout_errors(True, dict(ZAPP, apply_strategy="graceful"))
    assert any("cannot move a serving app out of the beside layout" in e for e in errors), errors


# A 1.x program zapp serving its unix socket, as Supervisor shows it before the move.
ONE_X = "zapp                             RUNNING   pid 333, uptime 1 day, 2:03:04\n"
POOL_UP = "zapp.socket                      RUNNING   pid 340, uptime 0:00:09\n"
UNIX = {"socket": "/run/u/app.sock", "adopt": True}


def test_a_serving_unix_app_moves_in_without_its_path_ever_leading_nowhere():
    # The pool binds beside the path, an instance loads, the name moves, the old master drains and goes.
    assert steps(ONE_X, **UNIX) == [
        ("stage", "zapp.socket"), ("update", ["zapp.a", "zapp.b"]), ("start", "zapp.a"), ("wait", "zapp.a"),
        ("rename", "zapp.socket"), ("drain", "zapp"), ("update", ["zapp"])]


def test_a_move_that_did_not_finish_goes_on_from_its_pool():
    assert steps(ONE_X + POOL_UP, **UNIX)[0] == ("update", ["zapp.a", "zapp.b"])


def test_a_serving_tcp_app_shares_its_port_and_steers_new_connections_to_the_loaded_instance():
    assert steps(ONE_X, adopt=True, socket="127.0.0.1:8003") == [
        ("share", "zapp"), ("stage", "zapp.socket"), ("update", ["zapp.a", "zapp.b"]), ("start", "zapp.a"),
        ("wait", "zapp.a"), ("steer", "zapp"), ("drain", "zapp"), ("update", ["zapp"])]


def test_a_stopped_1x_program_or_a_new_socket_goes_before_its_pool_binds():
    assert steps(ONE_X, adopt=True, socket=None)[:2] == [("update", ["zapp"]), ("update", ["zapp.socket"])]
    stopped = ONE_X.replace("RUNNING   pid 333, uptime 1 day, 2:03:04", "STOPPED   Dec 06 02:40 AM")
    assert steps(stopped, **UNIX)[:2] == [("update", ["zapp"]), ("update", ["zapp.socket"])]
    assert ("rename", "zapp.socket") not in steps(stopped, **UNIX)


def test_the_plan_moves_a_1x_app_in_and_says_how():
    probe = beside_probe()
    probe["supervisor"]["programs"] = h.parse_supervisor_status(ONE_X)
    probe["managed"]["zapp"]["beside"] = False
    result = plan(probe)
    assert [(i["name"], i["adopt"], i["socket"]) for i in result["switch"]] == [("zapp", True, "127.0.0.1:8003")]
    assert "its pool binds port 8003 beside the old master (SO_REUSEPORT)" in result["why"][0]


def test_a_socket_renamed_over_its_path_is_named_by_the_path():
    listeners = h.with_extended(h.parse_ss_listeners((FIXTURES / "bookworm" / "ss-moved-in.txt").read_text()),
                                (FIXTURES / "bookworm" / "ss-moved-in-extended.txt").read_text())
    # What stat said of /run/u/app.sock after the rename (inode 92, tmpfs device 0/48).
    files = {"/run/u/app.sock": {"exists": True, "is_socket": True, "ino": 92, "dev": "0/48", "uid": 0}}
    moved = h.moved_in(listeners, files)
    assert (moved[0]["local"], moved[0]["bound_as"]) == ("/run/u/app.sock", "/run/u/app.sock.new")
    listener, wrong = h.socket_in_effect("/run/u/app.sock", moved, files["/run/u/app.sock"], uid=0)
    assert wrong is None and listener["vfs"]["ino"] == 92
    # The old master, still draining on the file it bound, is not taken for the app's socket.
    assert h.backlogs_by_socket(moved)["/run/u/app.sock"] == 100
    assert [x["processes"][-1][1] for x in moved if x["local"] == "/run/u/app.sock"] == [340, 333]
    # Before the rename the file at the path is the old master's (inode 90): nothing is renamed.
    before = h.moved_in(h.with_extended(h.parse_ss_listeners((FIXTURES / "bookworm" / "ss-moved-in.txt").read_text()),
                                        (FIXTURES / "bookworm" / "ss-moved-in-extended.txt").read_text()),
                        {"/run/u/app.sock": dict(files["/run/u/app.sock"], ino=90)})
    assert not any("bound_as" in x for x in before)
    assert "/run/u/app.sock.new" in {x["local"] for x in before}


def test_the_module_documents_itself():
    assert "uwsgi_switch" in (ROOT / "library" / "uwsgi_switch.py").read_text()


def test_a_moved_socket_restarts_the_pool_on_it_then_starts_a_new_instance():
    probe = beside_probe()
    probe["managed"]["zapp"]["sockets"] = ["/run/uwsgi/zapp.sock"]
    result = plan(probe)
    assert [(i["name"], i["pool_restart"]) for i in result["switch"]] == [("zapp", True)]
    assert "its socket moved" in result["why"][0] and result["listen"] == []
    assert steps(STATUS, pool_restart=True)[:2] == [("restart", "zapp.socket"), ("update", ["zapp.b"])]


def test_a_serving_beside_tcp_app_keeps_its_user_and_a_unix_one_moves_to_the_new_one():
    probe = {"managed": {"zapp": {"name": "zapp", "beside": True, "user": "app1", "sockets": ["127.0.0.1:8003"]}},
             "users": {"www-data": {"exists": True, "uid": 33, "gid": 33, "groups": [33]}},
             "groups": {"www-data": {"exists": True, "gid": 33}}, "supervisor": {"programs": {}}, "listeners": []}
    errors = f.uwsgi_host_plan(f.uwsgi_public(f.uwsgi_normalize([ZAPP], SETTINGS)), probe, SETTINGS)["errors"]
    assert any("its pool holds TCP port 8003 as user app1" in e for e in errors), errors
    unix = dict(ZAPP, socket="/run/uwsgi/zapp.sock")
    assert f.uwsgi_host_plan(f.uwsgi_public(f.uwsgi_normalize([unix], SETTINGS)), probe, SETTINGS)["errors"] == []


def test_a_new_user_binds_a_new_pool_beside_the_path_before_the_name_moves():
    probe = beside_probe()
    probe["managed"]["zapp"].update(user="app1", sockets=["/run/uwsgi/zapp.sock"])
    result = plan(probe, socket="/run/uwsgi/zapp.sock")
    assert [(i["rebind"], i["socket"]) for i in result["switch"]] == [(True, "/run/uwsgi/zapp.sock")]
    assert "its user is now www-data: a new pool binds /run/uwsgi/zapp.sock.new" in result["why"][0]
    assert steps(STATUS, rebind=True, update=True, socket="/run/uwsgi/zapp.sock") == [
        ("stage", "zapp.socket"), ("update", ["zapp.b"]), ("start", "zapp.b"), ("wait", "zapp.b"),
        ("rename", "zapp.socket"), ("drain", "zapp"), ("stop", "zapp.a"), ("update", ["zapp.a"]),
        ("wait", "zapp.a"), ("stop", "zapp.b")]


@pytest.mark.parametrize("found, why", [
    ({"exists": False}, "its socket file /run/uwsgi/zapp.sock is gone"),
    ({"exists": True, "ino": 99, "dev": 2049, "uid": 33}, "is not the socket its master listens on"),
])
def test_a_pool_whose_socket_file_was_lost_binds_again_beside_the_path(found, why):
    probe = beside_probe()
    probe["managed"]["zapp"].update(sockets=["/run/uwsgi/zapp.sock"])
    probe["listeners"] = [{"kind": "unix", "local": "/run/uwsgi/zapp.sock", "queue": 0, "backlog": 1024,
                           "vfs": {"ino": 12, "dev": 2049}}]
    probe["socket_files"] = {"/run/uwsgi/zapp.sock": found}
    result = plan(probe, socket="/run/uwsgi/zapp.sock")
    assert [(i["rebind"], i["socket"]) for i in result["switch"]] == [(True, "/run/uwsgi/zapp.sock")]
    assert why in result["why"][0] and "its pool binds /run/uwsgi/zapp.sock.new again" in result["why"][0]
    assert steps(STATUS, rebind=True, socket="/run/uwsgi/zapp.sock") == [
        ("stage", "zapp.socket"), ("update", ["zapp.b"]), ("start", "zapp.b"), ("wait", "zapp.b"),
        ("rename", "zapp.socket"), ("drain", "zapp"), ("stop", "zapp.a")]
    # The file at the path is the pool's: nothing to do.
    probe["socket_files"] = {"/run/uwsgi/zapp.sock": {"exists": True, "ino": 12, "dev": 2049, "uid": 33}}
    assert plan(probe, socket="/run/uwsgi/zapp.sock")["switch"] == []


def test_a_pool_ini_that_may_bind_beside_its_path_names_one_socket():
    ini = (ROOT / "templates" / "etc" / "uwsgi" / "pool.ini.j2").read_text()
    assert "if-exists = {{ item.stage_mark }}" in ini
    text = ("if-exists = /run/backlogops-uwsgi-stage/mapp\nzergpool = /var/lib/uwsgi-zerg/mapp/pool.zerg:"
            "/run/uwsgi/mapp.sock.new\nendif =\nif-not-exists = /run/backlogops-uwsgi-stage/mapp\n"
            "zergpool = /var/lib/uwsgi-zerg/mapp/pool.zerg:/run/uwsgi/mapp.sock\nendif =\n")
    assert h.parse_ini_sockets(text) == ["/run/uwsgi/mapp.sock"]


def test_every_step_a_plan_can_hold_is_one_the_switch_runs():
    runnable = set(switch.OWN_STEPS) | {"update", "start", "stop", "restart", "wait"}
    for status, item in [(ONE_X, UNIX), (ONE_X, dict(adopt=True, socket="127.0.0.1:8003")),
                         (STATUS, dict(rebind=True, update=True, socket="/run/uwsgi/zapp.sock"))]:
        assert {action for action, _ in steps(status, **item)} <= runnable


def test_ss_extended_gives_a_tcp_listeners_inode():
    # Captured on Debian 12 with a 1.x app on 127.0.0.1:8005 and flaskapi on 127.0.0.1:8001.
    found = h.parse_ss_listeners((FIXTURES / "bookworm" / "ss-tcp-extended.txt").read_text())
    assert {x["port"]: (x["uid"], x["backlog"]) for x in found} == {8005: (33, 1000), 8001: (33, 2048)}
    assert all(x["inode"] > 0 for x in found)


def test_a_new_instance_that_did_not_serve_is_reported_with_its_own_log():
    probe = beside_probe()
    switched = [{"name": "zapp", "ok": False, "from": "zapp.a", "log_program": "zapp.b",
                 "why": "zapp.b: supervisorctl start zapp.b: zapp.b: ERROR (spawn error)",
                 "log": ["[strict-mode] unknown config directive: no-such-option"]}]
    verdicts = f.uwsgi_proof(f.uwsgi_public(f.uwsgi_normalize([ZAPP], SETTINGS)), probe, None, switched)
    assert not verdicts[0]["ok"] and "its new instance did not serve" in verdicts[0]["message"]
    line = f.uwsgi_rollback_report(verdicts, ["zapp"], [], {}, {"zapp": ""}, "/var/log/supervisor")[0]
    assert ("Its log (/var/log/supervisor/zapp.b.log) during this run: "
            "[strict-mode] unknown config directive: no-such-option") in line


MAINTAIL = (FIXTURES / "bookworm" / "supervisord-maintail.txt").read_text()


def test_supervisords_log_tells_a_requested_stop_from_a_crash():
    events = h.parse_supervisord_log(MAINTAIL)
    # Captured on Debian 12: flaskapp.a stopped by the role (15520), then crash-looping (15909 on).
    assert h.process_ending(events, "flaskapp.a", 15520) == "stopped"
    assert h.process_ending(events, "flaskapp.a", 15909) == "exited"
    assert h.process_ending(events, "flaskapp.a", 16252) is None  # still running
    assert h.process_ending(events, "flaskapp.a", 1) is None


class FakeSupervisor:
    """supervisorctl as uwsgi_switch runs it: `status` answers in turn from `statuses`, `maintail` with `log`."""

    def __init__(self, statuses, log):
        self.statuses, self.log = list(statuses), log

    def run_command(self, argv):
        if argv[1] == "maintail":
            return 0, self.log, ""
        return 0, self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0], ""


def waiting(monkeypatch, statuses, log, children=2):
    monkeypatch.setattr(switch, "children_of", lambda pids: {pid: [0] * (children if pid == 302 else 0) for pid in pids})
    monkeypatch.setattr(switch.time, "sleep", lambda seconds: None)
    module = FakeSupervisor(statuses, log)
    module.params = {"supervisorctl": "supervisorctl", "log_dir": "/var/log/supervisor"}
    found = switch.Switch(module)
    return found.wait("zapp.b", {"children": 2, "timeout": 5}), found.disturbed


def test_a_restart_from_outside_during_the_switch_proves_the_new_process(monkeypatch):
    log = ("2026-12-07 03:00:00,001 INFO spawned: 'zapp.b' with pid 301\n"
           "2026-12-07 03:00:01,001 INFO waiting for zapp.b to stop\n"
           "2026-12-07 03:00:01,501 INFO stopped: zapp.b (terminated by SIGTERM)\n"
           "2026-12-07 03:00:01,601 INFO spawned: 'zapp.b' with pid 302\n")
    statuses = ["zapp.b  RUNNING   pid 301, uptime 0:00:01", "zapp.b  RUNNING   pid 302, uptime 0:00:01"]
    why, disturbed = waiting(monkeypatch, statuses, log)
    assert why is None and disturbed == [
        "zapp.b was restarted from outside this run (pid 301, then 302); its new process was proven instead"]


def test_a_crash_after_the_start_is_the_apps_own(monkeypatch):
    log = ("2026-12-07 03:00:00,001 INFO spawned: 'zapp.b' with pid 301\n"
           "2026-12-07 03:00:04,001 WARN exited: zapp.b (exit status 22; not expected)\n"
           "2026-12-07 03:00:05,001 INFO spawned: 'zapp.b' with pid 302\n")
    statuses = ["zapp.b  RUNNING   pid 301, uptime 0:00:03", "zapp.b  RUNNING   pid 302, uptime 0:00:01"]
    why, disturbed = waiting(monkeypatch, statuses, log)
    assert why.startswith("its app did not load: its master exited after it started") and disturbed == []


def test_a_stop_from_outside_is_named_not_blamed_on_the_app(monkeypatch):
    log = ("2026-12-07 03:00:00,001 INFO spawned: 'zapp.b' with pid 301\n"
           "2026-12-07 03:00:01,501 INFO stopped: zapp.b (terminated by SIGTERM)\n")
    statuses = ["zapp.b  RUNNING   pid 301, uptime 0:00:01", "zapp.b  STOPPED   Dec 07 03:00 AM"]
    why, _ = waiting(monkeypatch, statuses, log, children=0)
    assert why.startswith("it was stopped from outside this run") and "did not load" not in why


def test_a_restart_of_everything_stops_before_it_starts_and_is_no_stop(monkeypatch):
    """`supervisorctl restart all` stops every program first: the instance is
    STOPPED for a while, then started again, and its new process is proven."""
    stopped = ("2026-12-07 03:00:00,001 INFO spawned: 'zapp.b' with pid 301\n"
               "2026-12-07 03:00:01,501 INFO stopped: zapp.b (terminated by SIGTERM)\n")
    statuses = (["zapp.b  RUNNING   pid 301, uptime 0:00:01"] + ["zapp.b  STOPPED   Dec 07 03:00 AM"] * 20
                + ["zapp.b  RUNNING   pid 302, uptime 0:00:01"])
    why, disturbed = waiting(monkeypatch, statuses, stopped)
    assert why is None and disturbed == [
        "zapp.b was restarted from outside this run (pid 301, then 302); its new process was proven instead"]
