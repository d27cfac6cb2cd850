"""The socket's client (uwsgi_socket_client, the web server's user): the
proof asks, as that user, whether it may connect to each app's unix socket.
What a child with its identity found on a converged host (captured from the
probe: a socket of nobody:nogroup that nginx as www-data could not open, and
one it could), what the proof makes of it, and the kernel's own answer
against the modes' model, on real sockets in a temporary directory."""

import json
import os
import shutil
import socket
import tempfile
import threading
import time

import pytest

from conftest import FIXTURES, filters as f, load, uwsgi_host as h
from test_decisions import apps, plan, probe

CAPTURED = json.loads((FIXTURES / "bookworm" / "probe-socket-client.json").read_text())
WWW_DATA = CAPTURED["socket_client"]
SHOP = {"name": "shop", "module": "app:app", "chdir": "/srv/flaskapp", "socket": "/run/uwsgi-shop4/shop4.sock",
        "uid": "nobody", "gid": "nogroup", "listen": 256, "check_path": "/"}


def seen(**changes):
    """The probe after a run that started shop as nobody:nogroup beside the README's apps."""
    listeners = h.parse_ss_listeners((FIXTURES / "bookworm" / "ss-listening.txt").read_text())
    listeners.append({"kind": "unix", "local": SHOP["socket"], "port": None, "queue": 0, "backlog": 256,
                      "processes": []})
    programs = dict(probe()["supervisor"]["programs"], shop={"state": "RUNNING", "pid": 300, "line": "shop RUNNING"})
    base = probe(listeners=listeners, workers={"flaskapp": 2, "flaskapi": 2, "shop": 2},
                 supervisor={"running": True, "programs": programs}, **CAPTURED)
    base.update(changes)
    return base


def verdicts(probe_, *changes):
    listed = apps(*changes, base=apps() + [SHOP])
    return {v["name"]: v for v in f.uwsgi_proof(f.uwsgi_public(listed), probe_)}


def test_a_socket_the_web_server_cannot_open_fails_the_proof_naming_the_user_and_the_socket_s_modes():
    shop = verdicts(seen())["shop"]
    assert not shop["ok"]
    assert ("its socket client www-data (uwsgi_socket_client, groups www-data) may not connect to "
            "/run/uwsgi-shop4/shop4.sock: the socket is nobody:nogroup 0660, and www-data is neither its owner nor "
            "in its group nogroup, and its mode gives others no write; a web server running as www-data gets "
            "Permission denied and answers 502") in shop["message"], shop["message"]
    assert "give the app a gid www-data is in" in shop["message"]
    # The cause comes first: the failed GET (as www-data, [Errno 13]) is not quoted over it.
    assert "GET / answered" not in shop["message"]


def test_a_socket_the_web_server_can_open_passes_and_its_request_was_made_as_that_user():
    result = verdicts(seen(), (0, {"check_path": "/"}))
    assert result["flaskapp"]["ok"]
    assert result["flaskapp"]["message"].endswith(", GET / answered 200 as www-data")


def test_a_tcp_socket_is_not_checked():
    captured = seen()
    captured["socket_files"]["127.0.0.1:8001"] = {"client": {"ok": False, "error": "Permission denied", "chain": []}}
    assert verdicts(captured)["flaskapi"]["ok"]


def test_without_a_socket_client_nothing_is_checked():
    without = seen(socket_client=None, socket_files={path: {k: v for k, v in found.items() if k != "client"}
                                                     for path, found in CAPTURED["socket_files"].items()})
    assert verdicts(without, (2, {"check_path": None}))["shop"]["ok"]


def chain(*entries):
    return [{"path": p, "uid": u, "gid": g, "owner": str(u), "group": str(g), "mode": m, "link": link}
            for p, u, g, m, link in entries]


ROOT_DIRS = [("/", 0, 0, "0755", False), ("/run", 0, 0, "0755", False)]


@pytest.mark.parametrize("entries, blocker, who", [
    # www-data (33, groups 33) on a socket of nobody:nogroup 660: others' bits decide.
    ([("/run/s", 0, 65534, "1775", False), ("/run/s/a.sock", 65534, 65534, "0660", False)], "/run/s/a.sock", "other"),
    # Its own group: the group's bits, whatever others may.
    ([("/run/s", 0, 33, "1775", False), ("/run/s/a.sock", 65534, 33, "0606", False)], "/run/s/a.sock", "group"),
    # Its owner: the owner's bits alone, even when the group may.
    ([("/run/s", 0, 33, "1775", False), ("/run/s/a.sock", 33, 33, "0460", False)], "/run/s/a.sock", "owner"),
    # A directory it may not search stops it before the socket.
    ([("/run/s", 0, 65534, "0770", False), ("/run/s/a.sock", 33, 33, "0660", False)], "/run/s", "other"),
    # A symlink on the way: the kernel follows it, its own mode says nothing.
    ([("/run/s", 0, 0, "0777", True), ("/run/s/a.sock", 65534, 33, "0660", False)], None, None),
    ([("/run/s", 0, 33, "1775", False), ("/run/s/a.sock", 65534, 33, "0660", False)], None, None),
])
def test_the_modes_name_what_stops_the_client(entries, blocker, who):
    entry, seen_who = f.uwsgi_socket_blocker(WWW_DATA, chain(*ROOT_DIRS, *entries), "/run/s/a.sock")
    assert (entry["path"] if entry else None, seen_who) == (blocker, who)


def test_root_may_always():
    root = {"uid": 0, "groups": [0]}
    assert f.uwsgi_socket_blocker(root, chain(*ROOT_DIRS, ("/run/a.sock", 1, 1, "0000", False)), "/run/a.sock") == (
        None, None)


def test_a_directory_that_stops_it_is_named_with_its_owner_group_and_mode():
    found = chain(*ROOT_DIRS, ("/srv/private", 0, 65534, "0750", False), ("/srv/private/a.sock", 33, 33, "0660", False))
    text = f.uwsgi_client_problem({"socket": "/srv/private/a.sock"}, {"ok": False, "error": "Permission denied",
                                                                        "chain": found}, WWW_DATA)
    assert "directory /srv/private is 0:65534 0750, and www-data is neither its owner nor in its group 65534, and " \
           "its mode gives others no search (x)" in text, text
    assert "let www-data search /srv/private" in text


def test_a_refusal_the_modes_do_not_explain_says_so():
    found = chain(*ROOT_DIRS, ("/run/s", 0, 33, "1775", False), ("/run/s/a.sock", 33, 33, "0660", False))
    text = f.uwsgi_client_problem({"socket": "/run/s/a.sock"}, {"ok": False, "error": "Permission denied",
                                                                  "chain": found}, WWW_DATA)
    assert "the kernel refuses it (Permission denied) though the modes allow it" in text and "an ACL" in text


def test_a_probe_that_cannot_take_the_client_s_identity_says_so():
    text = f.uwsgi_client_problem({"socket": "/run/s/a.sock"}, {"ok": False, "error": "cannot act as www-data: "
                                                                  "[Errno 1] Operation not permitted"}, WWW_DATA)
    assert text.startswith("the proof could not check whether its socket client www-data (uwsgi_socket_client)")


def test_a_client_user_the_host_lacks_is_refused_before_any_change():
    result = plan(apps(), probe(socket_client={"exists": False}), socket_client="nginx")
    assert any(e.startswith("uwsgi_socket_client: user nginx does not exist on this host") and "flaskapp" in e
               and "flaskapi" not in e for e in result["errors"]), result["errors"]


@pytest.mark.parametrize("client, listed", [("", apps()), ("nginx", apps((0, {"socket": "127.0.0.1:8002"})))])
def test_no_client_or_no_unix_socket_needs_no_client_user(client, listed):
    result = plan(listed, probe(socket_client={"exists": False}), socket_client=client)
    assert not any("uwsgi_socket_client" in e for e in result["errors"]), result["errors"]


# --- the kernel's answer, as the client, against the modes' model ----------

pytestmark_root = pytest.mark.skipif(os.geteuid() != 0, reason="taking another user's identity takes root")
NOBODY = {"name": "nobody", "uid": 65534, "gid": 65534, "groups": [65534]}


@pytest.fixture
def base():
    path = tempfile.mkdtemp(prefix="sc.", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def serving(path, mode):
    """A unix socket at `path` with `mode` that answers one HTTP request with 200."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, mode)
    server.listen(4)
    server.settimeout(5)

    def answer():
        try:
            conn, _ = server.accept()
            conn.recv(4096)
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello\n")
            conn.close()
        except OSError:
            pass

    threading.Thread(target=answer, daemon=True).start()
    return server


@pytestmark_root
@pytest.mark.parametrize("dir_mode, sock_mode, allowed", [
    (0o755, 0o666, True), (0o755, 0o660, False), (0o700, 0o666, False), (0o711, 0o666, True),
])
def test_the_kernel_as_the_client_agrees_with_the_modes_model(base, dir_mode, sock_mode, allowed):
    directory = os.path.join(base, "d")
    os.mkdir(directory)
    path = os.path.join(directory, "a.sock")
    server = serving(path, sock_mode)
    os.chmod(directory, dir_mode)
    try:
        found = h.as_user(NOBODY, lambda: h.may_connect(path))
        entry, _ = f.uwsgi_socket_blocker(NOBODY, h.path_chain(path), path)
        assert found["ok"] is allowed and (entry is None) is allowed, (found, entry)
        answer = h.as_user(NOBODY, lambda: h.check_request({"socket": path, "protocol": "http", "path": "/"}))
        assert answer["status"] == (200 if allowed else None), answer
        if not allowed:
            assert "Permission denied" in answer["error"]
            # This process kept its own identity.
            assert os.geteuid() == 0 and h.may_connect(path)["ok"]
    finally:
        server.close()


@pytestmark_root
def test_the_child_s_identity_is_the_client_s_alone():
    assert h.as_user(NOBODY, lambda: [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()]) == [
        65534, 65534, 65534, 65534, [65534]]


def test_a_child_that_cannot_take_the_identity_or_hangs_says_so():
    bogus = {"name": "ghost", "uid": -5, "gid": -5, "groups": []}
    assert h.as_user(bogus, lambda: {"ok": True})["error"].startswith("cannot act as ghost")
    if os.geteuid() == 0:
        assert h.as_user(NOBODY, lambda: time.sleep(5), timeout=0.5) == {"error": "no answer as nobody within 0.5 s"}


@pytestmark_root
def test_the_trial_s_check_path_is_asked_as_the_app_s_user_not_as_root(base):
    """The trial's socket is in a directory the app's user owns: a link there to a socket only root may
    open is not followed as root (library/uwsgi_files.py, ask_as_its_user)."""
    files = load("uwsgi_files_module", "library/uwsgi_files.py")
    own = os.path.join(base, "trial.sock")
    server = serving(own, 0o666)
    root_only = os.path.join(base, "root-only")
    os.mkdir(root_only, 0o700)
    guarded = serving(os.path.join(root_only, "a.sock"), 0o600)
    link = os.path.join(base, "link.sock")
    os.symlink(os.path.join(root_only, "a.sock"), link)
    try:
        check = {"protocol": "uwsgi", "path": "/health", "timeout": 5, "user": NOBODY}
        assert files.ask_as_its_user(dict(check, socket=own))["status"] == 200
        refused = files.ask_as_its_user(dict(check, socket=link))
        assert refused["status"] is None and "Permission denied" in refused["error"], refused
    finally:
        server.close()
        guarded.close()
