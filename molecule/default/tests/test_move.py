"""A serving 1.x app (one program whose master binds its own unix socket)
moves into the beside layout under load: its pool binds the socket beside
the path, an instance loads there, the name is renamed over the path, and the
old master serves its queue out and leaves. The app imports for 3 s and runs 4
workers; nginx serves it on :8084; a request stream runs to /build for the
whole run, and a www-data process binds the socket path in a loop."""

import json

import pytest

import hostchecks as hc
from test_apply import BASE_APPS, ok, run_with
from test_beside import SQUATTER, under_load

NAME = "mapp"
SOCKET = f"/run/uwsgi/{NAME}.sock"
PORT = 8084
BUILD = "/srv/mreleases/m1"
APP = {"name": NAME, "module": "app:app", "chdir": BUILD, "processes": 4, "listen": 1000,
       "apply_strategy": "graceful", "check_path": "/build", "revision": "m1",
       "environment": {"APP_NAME": NAME, "IMPORT_SECONDS": "3"}}


def apps(**change):
    return BASE_APPS + [dict(APP, **change)]


def in_effect(host):
    """The listener that serves SOCKET, read as the role's probe reads it (by the file at the path)."""
    listeners = hc.parsers.with_extended(
        hc.parsers.parse_ss_listeners(host.check_output("ss -H --listening --numeric --unix --processes")),
        host.check_output("ss -H --listening --numeric --unix --extended"))
    ino, dev = host.check_output(f"stat -c '%i %d' {SOCKET}").split()
    found = {"exists": True, "ino": int(ino), "dev": "0/%s" % dev}
    return hc.parsers.socket_in_effect(SOCKET, hc.parsers.moved_in(listeners, {SOCKET: found}), found)


@pytest.fixture(scope="module")
def moved(host, tmp_path_factory):
    host.run_test(f"mkdir -p {BUILD} && cp /srv/flaskapp/app.py {BUILD}/ && echo m1 > {BUILD}/BUILD")
    host.run_test(f"cat > /srv/squatter.py <<'EOF'{SQUATTER}EOF")
    tmp = tmp_path_factory.mktemp("move")
    ok(run_with(tmp, "move-base", apps()))
    before = hc.supervisor_state(host, NAME)
    seen = under_load(host, "move", lambda: run_with(tmp, "move", apps(apply_strategy="beside")),
                      name=NAME, socket=SOCKET, port=PORT)
    yield {"tmp": tmp, "seen": seen, "before": before}
    ok(run_with(tmp, "move-cleanup", BASE_APPS + [{"name": NAME, "state": "absent"}]))


def test_a_serving_1x_app_moves_in_with_no_request_lost_or_kept_waiting(moved):
    seen = moved["seen"]
    ok(seen["run"])
    assert moved["before"][0] == "RUNNING"
    seen["load"].check()
    assert seen["stats"]["latency"]["max"] < 1.0, seen["stats"]
    assert seen["stats"]["last_body"] == "m1"
    # The path always led to a listener: no other user ever bound it.
    assert seen["squatted"] == "0", seen["squatted"]
    assert "its pool binds /run/uwsgi/mapp.sock.new" in hc.said(seen["run"])


def test_after_the_move_the_pool_holds_the_path_and_the_old_program_is_gone(host, moved):
    out = host.run("supervisorctl status").stdout
    states = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}
    assert NAME not in states, out
    assert (states[f"{NAME}.socket"], states[f"{NAME}.a"], states[f"{NAME}.b"]) == ("RUNNING", "RUNNING", "STOPPED")
    listener, wrong = in_effect(host)
    assert wrong is None and listener["backlog"] == 1000
    assert listener["bound_as"] == SOCKET + ".new"
    assert host.check_output(f"stat -c %U:%G:%a {SOCKET}") == "www-data:www-data:660"
    # Root's mark is gone: a restart or a boot of the pool binds the path itself.
    assert not host.file(f"/run/backlogops-uwsgi-stage/{NAME}").exists
    program = host.file(f"/etc/supervisor/conf.d/{NAME}.conf").content_string
    assert f"[program:{NAME}.socket]" in program and f"[program:{NAME}]" not in program
    record = json.loads(host.check_output("cat /etc/uwsgi/supervisor/.applied.json"))
    assert record[NAME]["revision"] == "m1"


def test_a_moved_app_reruns_without_a_change_and_takes_a_new_listen_in_place(host, moved):
    run = ok(run_with(moved["tmp"], "move-rerun", apps(apply_strategy="beside")))
    assert set(hc.recap_changed(run.stdout).values()) == {0}, run.stdout[-3000:]
    ok(run_with(moved["tmp"], "move-listen", apps(apply_strategy="beside", listen=2000)))
    listener, wrong = in_effect(host)
    assert wrong is None and listener["backlog"] == 2000
