"""Serving 1.x apps (one program whose master binds its own socket) move into
the beside layout under load. On a unix socket, the pool binds the socket
beside the path, an instance loads there and the name is renamed over the
path; on TCP, the pool binds the port beside the old master (SO_REUSEPORT) and
new connections go to the old master until the instance has loaded. Then the
old master serves its queue out and leaves. Each app imports for 3 s and runs 4
workers; nginx serves them on :8084 (unix) and :8085 (TCP); request streams
run to /build for the whole run, and a www-data process binds the unix path in
a loop."""

import json
import time

import pytest

import hostchecks as hc
from test_apply import BASE_APPS, ok, run_with
from test_beside import SQUATTER

NAME, TCP = "mapp", "tapp"
SOCKET = f"/run/uwsgi/{NAME}.sock"
PORTS = {NAME: 8084, TCP: 8085}
BUILD = "/srv/mreleases/m1"
APP = {"name": NAME, "module": "app:app", "chdir": BUILD, "processes": 4, "listen": 1000,
       "apply_strategy": "graceful", "check_path": "/build", "revision": "m1",
       "environment": {"APP_NAME": NAME, "IMPORT_SECONDS": "3"}}
TCP_APP = dict(APP, name=TCP, socket="127.0.0.1:8005", environment={"APP_NAME": TCP, "IMPORT_SECONDS": "3"})


def apps(**change):
    return BASE_APPS + [dict(APP, **change), dict(TCP_APP, **change)]


def in_effect(host):
    return hc.unix_listener(host, SOCKET)


def tcp_listeners(host):
    return [x for x in hc.parsers.parse_ss_listeners(host.check_output("ss -H --listening --numeric --unix --tcp"))
            if x["port"] == 8005]


@pytest.fixture(scope="module")
def moved(host, tmp_path_factory):
    host.run_test(f"mkdir -p {BUILD} && cp /srv/flaskapp/app.py {BUILD}/ && echo m1 > {BUILD}/BUILD")
    host.run_test(f"cat > /srv/squatter.py <<'EOF'{SQUATTER}EOF")
    tmp = tmp_path_factory.mktemp("move")
    ok(run_with(tmp, "move-base", apps()))
    before = {name: hc.supervisor_state(host, name) for name in PORTS}
    stop, out = "/srv/squat-move.stop", "/srv/squat-move.out"
    host.run_test(f"rm -f {stop} {out} && setsid -f sh -c 'setpriv --reuid=www-data --regid=www-data --init-groups "
                  f"python3 /srv/squatter.py {SOCKET} {stop} > {out} 2>&1'")
    with hc.Load(host, "move", PORTS, path="/build", bodies=True) as load:
        run = run_with(tmp, "move", apps(apply_strategy="beside"))
    host.run_test(f"touch {stop}")
    for _ in range(50):
        if host.run(f"cat {out}").stdout.strip():
            break
        time.sleep(0.1)
    yield {"tmp": tmp, "run": run, "load": load, "before": before, "squatted": host.run(f"cat {out}").stdout.strip()}
    ok(run_with(tmp, "move-cleanup", BASE_APPS + [{"name": NAME, "state": "absent"}, {"name": TCP, "state": "absent"}]))


def test_serving_1x_apps_move_in_with_no_request_lost_or_kept_waiting(moved):
    ok(moved["run"])
    assert moved["before"] == {name: ("RUNNING", moved["before"][name][1]) for name in PORTS}
    moved["load"].check()
    for name in PORTS:
        stats = moved["load"].results[name]
        assert stats["latency"]["max"] < 1.0, (name, stats)
        assert stats["last_body"] == "m1", (name, stats)
    # The path always led to a listener: no other user ever bound it.
    assert moved["squatted"] == "0", moved["squatted"]
    said = hc.said(moved["run"])
    assert "its pool binds /run/uwsgi/mapp.sock.new" in said and "its pool binds port 8005 beside" in said, said[-3000:]


def test_after_the_move_the_pools_hold_the_sockets_and_the_old_programs_are_gone(host, moved):
    out = host.run("supervisorctl status").stdout
    states = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}
    for name in PORTS:
        assert name not in states, out
        assert (states[f"{name}.socket"], states[f"{name}.a"], states[f"{name}.b"]) == (
            "RUNNING", "RUNNING", "STOPPED"), out
        program = host.file(f"/etc/supervisor/conf.d/{name}.conf").content_string
        assert f"[program:{name}.socket]" in program and f"[program:{name}]" not in program
    listener, wrong = in_effect(host)
    assert wrong is None and listener["backlog"] == 1000
    assert listener["bound_as"] == SOCKET + ".new"
    assert host.check_output(f"stat -c %U:%G:%a {SOCKET}") == "www-data:www-data:660"
    # One listener on the port: the old master's socket left with it.
    assert [x["backlog"] for x in tcp_listeners(host)] == [1000]
    # Root's mark is gone: a restart or a boot of the pool binds the path itself.
    assert host.run("ls /run/backlogops-uwsgi-stage").stdout.strip() == ""
    record = json.loads(host.check_output("cat /etc/uwsgi/supervisor/.applied.json"))
    assert record[NAME]["revision"] == record[TCP]["revision"] == "m1"


@pytest.mark.extended
def test_moved_apps_rerun_without_a_change_and_take_a_new_listen_in_place(host, moved):
    run = ok(run_with(moved["tmp"], "move-rerun", apps(apply_strategy="beside")))
    assert set(hc.recap_changed(run.stdout).values()) == {0}, run.stdout[-3000:]
    ok(run_with(moved["tmp"], "move-listen", apps(apply_strategy="beside", listen=2000)))
    listener, wrong = in_effect(host)
    assert wrong is None and listener["backlog"] == 2000
    assert [x["backlog"] for x in tcp_listeners(host)] == [2000]
