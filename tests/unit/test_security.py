"""App users stay in their lane: names, socket options, root by another name,
programs the role did not write, virtualenvs and requirements files root
cannot trust, and reading files an app user controls."""

import os
import stat

import pytest

from conftest import FIXTURES, filters as f, uwsgi_host as h
from test_decisions import SETTINGS, apps, errors, plan, probe


@pytest.mark.parametrize("name", ["all", "ALL", "supervisord", "supervisor", "supervisorctl", "uwsgi-sampler"])
def test_names_supervisor_gives_a_meaning_are_refused(name):
    found = [e for e in errors(apps((0, {"name": name}))) if name in e]
    assert found and "give the app another name" in found[0]


def test_a_name_whose_files_would_not_fit_is_refused_before_any_write():
    longest = 255 - f.LONGEST_SUFFIX
    assert not [e for e in errors(apps((0, {"name": "a" * longest}))) if "bytes long" in e]
    found = [e for e in errors(apps((0, {"name": "a" * (longest + 1)}))) if "bytes long" in e]
    assert found and "use at most %d" % longest in found[0]
    # The measure is the longest file name the role writes for an app: a backup of its environment file.
    assert f.LONGEST_SUFFIX == len(".env.ini") + len(".4194304.2026-12-01@23:59:59~")


@pytest.mark.parametrize("key", ["fastcgi-socket", "scgi-socket", "raw-socket", "shared-socket", "http", "https",
                                 "http2", "stats", "master-fifo", "fastrouter", "zerg-server", "uwsgi_socket",
                                 "ssl-socket", "legion"])
def test_every_option_that_binds_a_socket_or_port_is_refused(key):
    found = [e for e in errors(apps((0, {"options": {key: "/run/uwsgi/flaskapi.sock"}}))) if "options." + key in e]
    assert found, key


@pytest.mark.parametrize("key", ["harakiri", "http-timeout", "socket-timeout", "max-requests", "buffer-size"])
def test_options_that_bind_nothing_stay_allowed(key):
    assert not [e for e in errors(apps((0, {"options": {key: 30}}))) if "options." + key in e]


def test_root_under_another_name_is_refused_by_its_uid_and_gid():
    users = dict(probe()["users"], toor={"exists": True, "uid": 0, "gid": 0, "groups": [0]})
    groups = dict(probe()["groups"], wheel0={"exists": True, "gid": 0})
    found = plan(apps((0, {"uid": "toor", "gid": "wheel0"})), probe(users=users, groups=groups))["errors"]
    assert any("user toor has uid 0 on this host" in e for e in found), found
    assert any("group wheel0 has gid 0" in e for e in found), found
    allowed = plan(apps((0, {"uid": "toor", "gid": "wheel0"})), probe(users=users, groups=groups), allow_root=True)
    assert not [e for e in allowed["errors"] if "uid 0" in e or "gid 0" in e]


def test_a_name_used_by_a_program_the_role_did_not_write_is_refused():
    seen = probe(foreign_programs={"shop": "/etc/supervisor/conf.d/legacy.conf"})
    found = plan(apps((0, {"name": "shop"})), seen)["errors"]
    assert any('program shop that this role did not write (/etc/supervisor/conf.d/legacy.conf)' in e for e in found)


def test_a_program_is_the_roles_only_when_its_ini_is_in_the_roles_config_directory():
    marked = "; managed by backlogops.uwsgi: app legacy\n[program:legacy]\ncommand=/usr/bin/uwsgi --ini %s\n"
    ours = h.parse_program_file(marked % "/etc/uwsgi/supervisor/legacy.ini")
    assert h.is_roles_program(ours, "/etc/uwsgi/supervisor")
    hand = h.parse_program_file("[program:legacy]\ncommand=/usr/bin/uwsgi --ini /etc/uwsgi/apps-enabled/legacy.ini\n")
    assert not h.is_roles_program(hand, "/etc/uwsgi/supervisor")
    assert not h.is_roles_program(h.parse_program_file(marked % "/etc/uwsgi/apps-enabled/legacy.ini"),
                                  "/etc/uwsgi/supervisor")


def test_supervisor_sections_name_programs_and_groups():
    text = "[supervisord]\n[program:shop]\ncommand=x\n[group:web]\nprograms=shop\n[eventlistener:mon]\n"
    assert h.parse_supervisor_sections(text) == ["shop", "web", "mon"]


def test_a_virtualenv_or_requirements_file_root_cannot_trust_is_refused():
    pip = dict(SETTINGS, install_method="pip", plugins=[], binary=None)
    present = f.uwsgi_normalize([{"name": "a", "module": "app:app", "virtualenv": "/srv/a/venv",
                                  "requirements": "/srv/a/requirements.txt"}], pip)
    seen = probe(venvs={"/srv/a/venv": {"writable_by": "/srv/a (owner uid 1001, mode 0755)"}},
                 requirements_writable_by={"/srv/a/requirements.txt": "/srv/a (owner uid 1001, mode 0755)"})
    found = f.uwsgi_host_plan(f.uwsgi_public(present), seen, pip)["errors"]
    assert any("virtualenv /srv/a/venv can be changed by someone other than root: /srv/a (owner uid 1001" in e
               for e in found), found
    assert any("requirements file /srv/a/requirements.txt can be changed by someone other than root" in e
               for e in found), found


def test_untrusted_by_names_the_first_part_someone_else_could_change(tmp_path):
    # tmp_path is under /tmp (sticky) and owned by whoever runs the tests.
    target = tmp_path / "venv" / "bin"
    target.mkdir(parents=True)
    found = h.untrusted_by(str(target))
    if os.geteuid() == 0:
        os.chmod(tmp_path, 0o755)
        assert h.untrusted_by(str(target)) is None
        os.chmod(tmp_path / "venv", 0o775)
        assert h.untrusted_by(str(target)).startswith(str(tmp_path / "venv") + " (owner uid 0, mode 0775")
        os.chown(tmp_path / "venv", 1000, 1000)
        os.chmod(tmp_path / "venv", 0o755)
        assert "owner uid 1000" in h.untrusted_by(str(target))
    else:
        assert found.startswith(str(tmp_path))
    # A path that does not exist stops the walk where it stops being.
    assert h.untrusted_by("/nonexistent/venv") is None
    if os.geteuid() == 0:
        # A venv's bin/python is root's symlink to the system's Python (mode 0777, as every symlink).
        os.chown(tmp_path / "venv", 0, 0)
        os.chmod(tmp_path / "venv", 0o755)
        (target / "python").symlink_to("/usr/bin/python3")
        assert h.untrusted_by(str(target / "python")) is None
        # ... but a symlink on the way is someone's way elsewhere.
        (tmp_path / "elsewhere").symlink_to(tmp_path / "venv")
        assert "a symlink" in h.untrusted_by(str(tmp_path / "elsewhere" / "bin"))


def test_read_untrusted_never_follows_a_symlink_nor_opens_a_fifo_and_is_bounded(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:*:20788:0:99999:7:::\n")
    link = tmp_path / "deps"
    link.symlink_to(secret)
    fifo = tmp_path / "uwsgi"
    os.mkfifo(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2000)
    plain = tmp_path / "plain"
    plain.write_bytes(b"sha256:abc\n")
    assert h.read_untrusted(str(link), 100) == h.NOT_REGULAR
    assert h.read_untrusted(str(fifo), 100) == h.NOT_REGULAR  # returns at once: no reader waits on it
    assert h.read_untrusted(str(big), 1000) == h.NOT_REGULAR
    assert h.read_untrusted(str(plain), 100) == b"sha256:abc\n"
    assert h.read_untrusted(str(tmp_path / "missing"), 100) is None
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


EXTENDED = h.parse_ss_listeners((FIXTURES / "bookworm" / "ss-listening-extended.txt").read_text())
SOCKET = "/run/uwsgi/flaskapp.sock"
BOUND = {"exists": True, "is_socket": True, "ino": 295, "dev": "0/48", "uid": 33}


def test_ss_extended_gives_each_unix_socket_its_bound_file_and_each_tcp_socket_its_owner():
    unix = next(item for item in EXTENDED if item["local"] == SOCKET)
    assert unix["vfs"] == {"ino": 295, "dev": "0/48"} and unix["backlog"] == 4096
    tcp = next(item for item in EXTENDED if item["kind"] == "tcp" and item["port"] == 8001)
    assert tcp["uid"] == 33


@pytest.mark.parametrize("found, uid, problem", [
    (BOUND, 33, None),
    ({"exists": False}, 33, "its socket file /run/uwsgi/flaskapp.sock is gone"),
    (dict(BOUND, ino=999), 33, "is not the socket its master listens on (the file was replaced)"),
    (BOUND, 1001, "was bound by uid 33, not by the app's user"),
])
def test_the_socket_at_the_path_must_be_the_one_a_master_of_the_apps_user_listens_on(found, uid, problem):
    listener, wrong = h.socket_in_effect(SOCKET, EXTENDED, found, uid)
    assert listener["backlog"] == 4096
    assert (wrong is None) if problem is None else (problem in wrong), wrong


def test_a_tcp_port_held_by_another_user_is_not_the_apps():
    assert h.socket_in_effect("127.0.0.1:8001", EXTENDED, None, 33)[1] is None
    assert "held by uid 33" in h.socket_in_effect("127.0.0.1:8001", EXTENDED, None, 1001)[1]


def test_a_deleted_socket_fails_the_proof_and_the_next_run_restarts_the_app():
    seen = probe(listeners=EXTENDED, socket_files={SOCKET: {"exists": False}}, workers={"flaskapp": 2, "flaskapi": 2})
    verdict = f.uwsgi_proof(f.uwsgi_public(apps()), seen)[0]
    assert not verdict["ok"] and "is gone" in verdict["message"], verdict
    seen["managed"]["flaskapp"].update(config_mtime=1000, started=2000)
    plan = f.uwsgi_apply_plan(f.uwsgi_public(apps((0, {"listen": 4096}))), {"programs": [], "inis": [], "envs": []},
                              seen)
    assert plan["restart"] == ["flaskapp"] and "is gone" in plan["why"][0], plan
