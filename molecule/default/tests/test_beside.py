"""apply_strategy beside: every change reaches the app as a new instance
started beside the serving one, over a socket its zerg pool holds for good.
The app imports for 3 s (IMPORT_SECONDS) and runs 4 workers from a release
directory; nginx serves it on :8083; a request stream runs through nginx to
/build for the whole of every run, and a user of the web group (www-data)
tries to bind the socket path in a loop."""

import json
import time

import pytest

import hostchecks as hc
from test_apply import BASE_APPS, ok, run_with

IMPORT_SECONDS = 3
NAME = "zapp"
SOCKET = f"/run/uwsgi/{NAME}.sock"
PORT = 8083
RELEASES = "/srv/zreleases"
BASE = {"name": NAME, "module": "app:app", "chdir": f"{RELEASES}/b1", "processes": 4, "listen": 1000,
        "apply_strategy": "beside", "check_path": "/build", "revision": "b1",
        "environment": {"APP_NAME": NAME, "IMPORT_SECONDS": str(IMPORT_SECONDS)}}
# Each change in turn, on top of the one before.
CHANGES = [
    ("listen", {"listen": 3000}),
    ("processes", {"processes": 5}),
    ("environment", {"environment": dict(BASE["environment"], RELEASE="v2")}),
    ("revision", {"revision": "b2", "chdir": f"{RELEASES}/b2"}),
    ("startsecs", {"startsecs": 5}),
    # A new user: a new pool binds beside the path as that user, and the name moves once it serves.
    ("user", {"uid": "zappuser"}),
]
LAST = {k: v for _, more in CHANGES for k, v in more.items()}
# A www-data process that tries to bind the socket path until its stop file
# exists, then prints how often it got it.
SQUATTER = """
import os, socket, sys
got = 0
while not os.path.exists(sys.argv[2]):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(sys.argv[1])
        got += 1
        os.unlink(sys.argv[1])
    except OSError:
        pass
    s.close()
print(got)
"""


def apps(**change):
    return BASE_APPS + [dict(BASE, **change)]


def inode(host):
    return host.check_output(f"stat -c %i {SOCKET}")


def instances(host):
    """The app's programs as Supervisor shows them: name -> (state, pid)."""
    out = host.run(f"supervisorctl status {NAME}.socket {NAME}.a {NAME}.b").stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def serving_master(host):
    for slot in ("a", "b"):
        state, pid = hc.supervisor_state(host, f"{NAME}.{slot}")
        if state == "RUNNING":
            return pid
    raise AssertionError(instances(host))


@pytest.fixture(scope="module")
def beside(host, tmp_path_factory):
    """Builds b1 and b2, b3 whose import raises, b4 that loads and answers 500; the app serving b1
    beside the README's apps."""
    for build in ("b1", "b2", "b3", "b4"):
        host.run_test(f"mkdir -p {RELEASES}/{build} && cp /srv/flaskapp/app.py {RELEASES}/{build}/ "
                      f"&& echo {build} > {RELEASES}/{build}/BUILD")
    host.run_test(f"echo 'raise RuntimeError(\"broken build b3: SETTINGS_MODULE is not set\")' "
                  f">> {RELEASES}/b3/app.py")
    host.run_test(f"printf '%s\\n' '@app.before_request' 'def broken():' "
                  f"'    raise RuntimeError(\"broken build b4: the database is unreachable\")' >> {RELEASES}/b4/app.py")
    host.run_test(f"cat > /srv/squatter.py <<'EOF'{SQUATTER}EOF")
    host.run_test("id zappuser || useradd --system --no-create-home --gid www-data --shell /usr/sbin/nologin zappuser")
    tmp = tmp_path_factory.mktemp("beside")
    ok(run_with(tmp, "beside-base", apps()))
    yield tmp
    ok(run_with(tmp, "beside-cleanup", BASE_APPS + [{"name": NAME, "state": "absent"}]))


def under_load(host, tag, run, name=NAME, socket=SOCKET, port=PORT):
    """`run()` with a request stream through nginx and a www-data process
    binding the socket path in a loop the whole time."""
    before = host.check_output(f"stat -c %i {socket}")
    stop, out = f"/srv/squat-{tag}.stop", f"/srv/squat-{tag}.out"
    host.run_test(f"rm -f {stop} {out} && setsid -f sh -c 'setpriv --reuid=www-data --regid=www-data --init-groups "
                  f"python3 /srv/squatter.py {socket} {stop} > {out} 2>&1'")
    with hc.Load(host, tag, {name: port}, path="/build", bodies=True) as load:
        result = run()
    host.run_test(f"touch {stop}")
    for _ in range(50):
        if host.run(f"cat {out}").stdout.strip():
            break
        time.sleep(0.1)
    return {"run": result, "load": load, "stats": load.results[name],
            "inode": (before, host.check_output(f"stat -c %i {socket}")),
            "squatted": host.run(f"cat {out}").stdout.strip()}


@pytest.fixture(scope="module")
def changed(host, beside):
    seen, change = {}, {}
    for tag, more in CHANGES:
        change.update(more)
        seen[tag] = under_load(host, tag, lambda tag=tag: run_with(beside, tag, apps(**change)))
        if seen[tag]["run"].returncode != 0:
            break
    return seen


def test_a_new_app_starts_as_a_pool_and_one_instance(host, beside):
    states = instances(host)
    # One instance serves (NAME.a on a host that never ran the app before), the pool holds the socket.
    assert states.pop(f"{NAME}.socket") == "RUNNING" and sorted(states.values()) == ["RUNNING", "STOPPED"], states
    assert hc.listen_backlogs(host)[SOCKET] == 1000
    # The socket is the app user's, bound by its pool.
    assert host.check_output(f"stat -c %U:%G:%a {SOCKET}") == "www-data:www-data:660"


@pytest.mark.parametrize("tag", [c[0] for c in CHANGES])
def test_each_change_comes_as_a_new_instance_with_no_request_lost_or_kept_waiting(host, changed, tag):
    assert tag in changed, "an earlier change failed"
    seen = changed[tag]
    ok(seen["run"])
    seen["load"].check()
    assert seen["stats"]["latency"]["max"] < 1.0, seen["stats"]
    # No other user ever held its path; the socket never moved, but for a new
    # user: the file at the path is then the one that user's pool bound.
    assert seen["squatted"] == "0", seen["squatted"]
    if tag == "user":
        assert seen["inode"][0] != seen["inode"][1]
        assert host.check_output(f"stat -c %U:%G:%a {SOCKET}") == "zappuser:www-data:660"
    else:
        assert seen["inode"][0] == seen["inode"][1]


def test_the_changes_are_in_effect_on_one_instance(host, changed):
    assert "user" in changed
    # The new user's pool bound SOCKET.new and renamed it over the path: ss names it so.
    listener, wrong = hc.unix_listener(host, SOCKET)
    assert wrong is None and listener["backlog"] == 3000 and listener["bound_as"] == SOCKET + ".new"
    master = serving_master(host)
    assert len(host.check_output(f"ps -o pid= --ppid {master}").split()) == 5
    assert sorted(instances(host).values()) == ["RUNNING", "RUNNING", "STOPPED"]
    assert changed["startsecs"]["stats"]["last_body"] == "b2"


def test_a_converged_rerun_changes_nothing(host, changed, beside):
    run = ok(run_with(beside, "rerun", apps(**LAST)))
    assert set(hc.recap_changed(run.stdout).values()) == {0}, run.stdout[-3000:]


HANDLER_PLAY = """
- name: The play's own task notifies the role's handler
  hosts: all
  become: true
  roles:
    - backlogops.uwsgi
  tasks:
    - name: Say the code is new
      ansible.builtin.command: "true"
      changed_when: true
      notify: uwsgi reload
"""


def check_quiet(seen):
    ok(seen["run"])
    seen["load"].check()
    assert seen["stats"]["latency"]["max"] < 1.0, seen["stats"]
    assert seen["inode"][0] == seen["inode"][1]
    assert seen["squatted"] == "0", seen["squatted"]


def test_the_handler_starts_a_new_instance(host, changed, beside):
    playbook = beside / "handler.yml"
    playbook.write_text(HANDLER_PLAY)
    before = serving_master(host)
    seen = under_load(host, "handler", lambda: hc.run_with(
        playbook, beside, "handler", {"uwsgi_apps": apps(**LAST), "uwsgi_reload_apps": [NAME]}))
    check_quiet(seen)
    assert serving_master(host) != before
    said = hc.said(seen["run"])
    assert f"{NAME}: a new instance beside the serving one (the play notified uwsgi reload)" in said, said[-3000:]


def test_a_reinstalled_uwsgi_binary_reaches_the_app_as_a_new_instance(host, changed, beside):
    host.run_test("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall uwsgi-core")
    before = serving_master(host)
    seen = under_load(host, "binary", lambda: run_with(beside, "binary", apps(**LAST)))
    check_quiet(seen)
    assert serving_master(host) != before
    assert "its uwsgi binary changed after its instance started" in hc.said(seen["run"])


def test_a_broken_config_is_refused_and_the_serving_instance_goes_on(host, changed, beside):
    before = serving_master(host)
    seen = under_load(host, "broken-config", lambda: run_with(beside, "broken-config", apps(**dict(
        LAST, options={"harakiri-verbos": True}))))
    assert seen["run"].returncode != 0
    assert "harakiri-verbos" in seen["run"].stdout + seen["run"].stderr
    seen["load"].check()
    assert serving_master(host) == before
    assert seen["inode"][0] == seen["inode"][1]


def test_a_broken_build_is_refused_and_the_serving_instance_goes_on(host, changed, beside):
    before = serving_master(host)
    seen = under_load(host, "broken", lambda: run_with(beside, "broken", apps(**dict(
        LAST, revision="b3", chdir=f"{RELEASES}/b3"))))
    assert seen["run"].returncode != 0
    assert "broken build b3" in seen["run"].stdout + seen["run"].stderr
    seen["load"].check()
    assert seen["stats"]["last_body"] == "b2"
    assert serving_master(host) == before
    # A worker that dies comes back on the build its instance loaded.
    workers = host.check_output(f"ps -o pid= --ppid {before}").split()
    host.run_test(f"kill -9 {workers[0]}")
    bodies = {host.run(f"uwsgiprobe request {SOCKET} /build").stdout.strip().splitlines()[-1] for _ in range(30)}
    assert bodies == {"b2"}, bodies


def test_a_build_that_loads_but_fails_its_check_path_never_serves(host, changed, beside):
    """The trial forks its workers and asks check_path on its private socket: a 500 there is refused
    before any instance starts on the build."""
    before = serving_master(host)
    seen = under_load(host, "answers-500", lambda: run_with(beside, "answers-500", apps(**dict(
        LAST, revision="b4", chdir=f"{RELEASES}/b4"))))
    said = seen["run"].stdout + seen["run"].stderr
    assert seen["run"].returncode != 0
    assert "did not answer: the app loaded, but GET /build answered 500" in said, said[-3000:]
    seen["load"].check()
    assert seen["stats"]["last_body"] == "b2" and serving_master(host) == before
    assert [instances(host)[f"{NAME}.{slot}"] for slot in "ab"].count("RUNNING") == 1, instances(host)


def test_the_record_names_the_layout(host, changed):
    record = json.loads(host.check_output("cat /etc/uwsgi/supervisor/.applied.json"))
    assert record[NAME]["revision"] == "b2"
