"""A change applied to a serving host loses no request. nginx (from the
scenario's prepare) serves the unix-socket app on :8081 and the TCP app on
:8082; a bounded stream of requests runs through each for the whole run of
every change, and each change must leave 0 failed requests, 0 client errors,
0 new lines in nginx's error log, and be in effect afterwards."""

import concurrent.futures
import json
import time

import pytest
import yaml

import hostchecks as hc

PLAYBOOK = hc.PROJECT / "playbooks" / "site.yml"
BASE_APPS = yaml.safe_load(PLAYBOOK.read_text())[0]["vars"]["uwsgi_apps"]
APPS = hc.apps_from_playbook(PLAYBOOK)
UNIX_APP = next(a for a in APPS if a["socket"].startswith("/"))
TCP_APP = next(a for a in APPS if not a["socket"].startswith("/"))
PORTS = {UNIX_APP["name"]: 8081, TCP_APP["name"]: 8082}


def run_with(tmp_path, name, apps, *args, **extra):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(dict({"uwsgi_apps": apps}, **extra)))
    return hc.run_playbook(PLAYBOOK, "-e", f"@{path}", *args)


def ok(run):
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return run


def Load(host, tag):  # noqa: N802 (reads as the class it returns)
    """A request stream through nginx to each app, bounded in time and count."""
    return hc.Load(host, tag, PORTS)


# uWSGI before 2.0.27 (Debian 11 and 12) can reset a request that a worker
# thread had just accepted when a graceful reload stops a worker with threads
# (fixed upstream in 2.0.27): the stream runs against single-threaded workers.
LOAD_BASE = {TCP_APP["name"]: {"threads": 1}}


def with_changes(**per_app):
    apps = [dict(a) for a in BASE_APPS]
    for app in apps:
        app.update(LOAD_BASE.get(app["name"], {}))
        app.update(per_app.get(app["name"], {}))
    return apps


U, T = UNIX_APP["name"], TCP_APP["name"]
ENV = {"APP_NAME": U, "RELEASE": "v2"}
CHANGES = [
    ("listen", {U: {"listen": 3000}, T: {"listen": 2500}}),
    ("processes", {U: {"listen": 3000, "processes": 3}, T: {"listen": 2500, "processes": 3}}),
    # An ini change (an option) with an environment change: one graceful reload takes both.
    ("environment", {U: {"listen": 3000, "processes": 3, "environment": ENV,
                         "options": {"procname-prefix-spaced": "web"}},
                     T: {"listen": 2500, "processes": 3, "options": {"procname-prefix-spaced": "api"}}}),
    ("back", {}),
]


@pytest.fixture(scope="module")
def applied(host, tmp_path_factory):
    """Each change in turn, under load; what each run and each stream saw."""
    tmp = tmp_path_factory.mktemp("apply")
    ok(run_with(tmp, "load-base", with_changes()))
    seen = {}
    for tag, change in CHANGES:
        pids = {a["name"]: hc.supervisor_state(host, a["name"])[1] for a in APPS}
        pools = {a["name"]: hc.pool_pid(host, a["name"]) for a in APPS}
        with Load(host, tag) as load:
            run = run_with(tmp, tag, with_changes(**change))
        seen[tag] = {"run": run, "load": load, "pids": pids, "pools": pools,
                     "after": {a["name"]: hc.supervisor_state(host, a["name"])[1] for a in APPS},
                     "pools_after": {a["name"]: hc.pool_pid(host, a["name"]) for a in APPS},
                     "backlogs": hc.listen_backlogs(host),
                     "workers": {a["name"]: len(host.check_output(
                         f"ps -o pid= --ppid {hc.supervisor_state(host, a['name'])[1]}").split()) for a in APPS},
                     "release": host.run(f"uwsgiprobe request {UNIX_APP['socket']} '/env?k=RELEASE'").stdout,
                     "title": host.run(f"ps -o args= --pid {hc.supervisor_state(host, U)[1]}").stdout.strip()}
        if run.returncode != 0:
            break
    yield seen
    ok(run_with(tmp, "cleanup", BASE_APPS))


# Both apps, unix and TCP, through every kind of config change; make test has the
# same changes on one app in test_beside.py, and TCP beside in the venv scenario.
@pytest.mark.extended
@pytest.mark.parametrize("tag", [c[0] for c in CHANGES])
def test_change_under_load_loses_no_request_and_keeps_the_socket(applied, tag):
    assert tag in applied, "an earlier change failed"
    seen = applied[tag]
    ok(seen["run"])
    seen["load"].check()
    # The pool that holds each socket is never restarted; a new backlog goes to its open socket and
    # needs no new instance, every other change is a new instance beside the serving one.
    assert None not in seen["pools"].values() and seen["pools_after"] == seen["pools"], seen["pools_after"]
    if tag == "listen":
        assert seen["after"] == seen["pids"], (seen["pids"], seen["after"])
    else:
        assert all(seen["after"][n] != seen["pids"][n] for n in seen["pids"]), (seen["pids"], seen["after"])


@pytest.mark.extended
def test_changes_are_in_effect(host, applied):
    said = hc.said(applied["listen"]["run"])
    assert "listen 4096 -> 3000 on the open socket" in said, said[-3000:]
    said = hc.said(applied["processes"]["run"])
    assert "a new instance beside the serving one" in said, said[-3000:]
    # After "back" (and the README playbook again): backlog, workers, environment, option.
    for app in APPS:
        hc.check_backlog(host, app)
        hc.check_running_as(host, app)
    assert "web " not in host.check_output("ps -o args= -C uwsgi")
    assert "RELEASE" not in host.file(f"/etc/uwsgi/supervisor/{U}.env.ini").content_string


@pytest.mark.extended
def test_each_change_was_in_effect_right_after_its_run(applied):
    assert applied["listen"]["backlogs"][UNIX_APP["socket"]] == 3000
    assert applied["listen"]["backlogs"]["127.0.0.1:8001"] == 2500
    assert applied["processes"]["workers"] == {U: 3, T: 3}
    assert '{"RELEASE":"v2"}' in applied["environment"]["release"].replace(" ", "")
    assert applied["environment"]["title"].startswith("web "), applied["environment"]["title"]
    assert applied["back"]["backlogs"][UNIX_APP["socket"]] == UNIX_APP["listen"]
    assert applied["back"]["workers"] == {U: 2, T: 2}


@pytest.mark.extended
def test_a_change_an_interrupted_run_left_in_the_files_is_applied(host, tmp_path):
    """As a run stopped after its templates leaves it: the pool's ini asks listen 3000,
    the socket still has 4096. The next run has no file to change."""
    ini = f"/etc/uwsgi/supervisor/{UNIX_APP['name']}.socket.ini"
    pid = hc.supervisor_state(host, UNIX_APP["name"])[1]
    host.run_test(f"sed -i 's/^listen = {UNIX_APP['listen']}$/listen = 3000/' {ini}")
    try:
        run = ok(run_with(tmp_path, "interrupted", with_changes(**{UNIX_APP["name"]: {"listen": 3000}})))
        said = hc.said(run)
        # The pool's open socket takes it: no new instance.
        assert f"{UNIX_APP['name']}: 4096 -> 3000" in said, said[-3000:]
        hc.check_backlog(host, dict(UNIX_APP, listen=3000))
        assert hc.supervisor_state(host, UNIX_APP["name"]) == ("RUNNING", pid)
    finally:
        ok(run_with(tmp_path, "interrupted-back", BASE_APPS))
    hc.check_backlog(host, UNIX_APP)


@pytest.mark.extended
def test_an_app_that_makes_itself_non_dumpable_still_takes_a_new_listen_in_place(host, tmp_path):
    """A master that made itself non-dumpable refuses pidfd_getfd (1.x's way restarted it): in the
    beside layout the socket is the pool's, which runs no app code, so the new backlog goes to the
    open socket and the serving instance stays."""
    nodump = {"module": "nodump:app"}
    hardened = with_changes(**{UNIX_APP["name"]: nodump})
    try:
        ok(run_with(tmp_path, "nodump", hardened))
        pid = hc.supervisor_state(host, UNIX_APP["name"])[1]
        run = ok(run_with(tmp_path, "nodump-listen", with_changes(**{UNIX_APP["name"]: dict(nodump, listen=3000)})))
        said = hc.said(run)
        assert f"listen {UNIX_APP['listen']} -> 3000 on the open socket" in said, said[-3000:]
        assert "restarting it instead" not in said
        hc.check_backlog(host, dict(UNIX_APP, listen=3000))
        assert hc.supervisor_state(host, UNIX_APP["name"])[1] == pid
    finally:
        ok(run_with(tmp_path, "nodump-back", BASE_APPS))
    hc.check_backlog(host, UNIX_APP)


# Changes that are valid on paper and cannot work on the host: each is refused
# before the serving apps are touched (the preflight's cheap checks, then the
# trial aside), under the same request streams as the changes above.
BROKEN = [
    ("chdir-typo", {U: {"chdir": "/srv/flaskap"}}, "chdir /srv/flaskap is not a directory on this host"),
    ("no-callable", {U: {"module": "app:nope"}}, "uWSGI found no callable 'nope'"),
    ("import-raises", {U: {"module": "slowfail:app"}}, "RuntimeError: broken setting: DATABASE_URL is not set"),
    ("unknown-option", {T: {"options": {"no-such-option": 1}}}, "unknown config directive: no-such-option"),
]
FILES = [f"/etc/uwsgi/supervisor/{a['name']}.{kind}" for a in APPS for kind in ("ini", "env.ini")] + [
    f"/etc/supervisor/conf.d/{a['name']}.conf" for a in APPS]


def file_sums(host):
    return {path: host.file(path).sha256sum for path in FILES}


def refused_under_load(host, tmp_path, tag, change):
    """One broken change under load: the run, the streams, PIDs and files."""
    ok(run_with(tmp_path, f"{tag}-base", with_changes()))
    pids = {a["name"]: hc.supervisor_state(host, a["name"])[1] for a in APPS}
    sums = file_sums(host)
    with Load(host, tag) as load:
        run = run_with(tmp_path, tag, with_changes(**change))
    return {"run": run, "load": load, "pids": pids, "sums": sums, "sums_after": file_sums(host),
            "after": {a["name"]: hc.supervisor_state(host, a["name"])[1] for a in APPS},
            "trial_dirs": host.run("ls -d /run/uwsgi-trial.* 2>/dev/null").stdout.strip()}


# make test proves the claim with a module that raises at import; the other
# kinds are in the extended tier.
@pytest.mark.parametrize("tag, change, cause", [
    pytest.param(*case, marks=() if case[0] == "import-raises" else pytest.mark.extended) for case in BROKEN])
def test_a_change_that_cannot_work_is_refused_before_the_serving_app_is_touched(host, tmp_path, tag, change, cause):
    try:
        seen = refused_under_load(host, tmp_path, tag, change)
    finally:
        ok(run_with(tmp_path, f"{tag}-cleanup", BASE_APPS))
    assert seen["run"].returncode != 0, seen["run"].stdout[-3000:]
    said = hc.said(seen["run"])
    assert cause in said, said[-3000:]
    assert "Nothing was" in said and ("failed the proof" not in said), said[-3000:]
    # Not one request was lost, the masters and every file are as they were,
    # and the trial left nothing behind.
    seen["load"].check()
    assert seen["after"] == seen["pids"]
    assert seen["sums_after"] == seen["sums"]
    assert seen["trial_dirs"] == ""
    for app in APPS:
        hc.check_request(host, app, f"hello from {app['name']}")


@pytest.mark.extended
def test_a_chdir_change_is_a_new_instance(host, tmp_path):
    """chdir is uWSGI's alone (the Supervisor program has no directory=): a new
    release directory is taken by a new instance on the pool's socket."""
    host.run_test("rm -rf /srv/releases && mkdir -p /srv/releases && cp -a /srv/flaskapp /srv/releases/r2 && "
                  "sed -i 's/hello from/r2 hello from/' /srv/releases/r2/app.py")
    try:
        ok(run_with(tmp_path, "chdir-base", with_changes()))
        pid = hc.supervisor_state(host, U)[1]
        with Load(host, "chdir") as load:
            run = ok(run_with(tmp_path, "chdir-r2", with_changes(**{U: {"chdir": "/srv/releases/r2"}})))
        load.check()
        assert f"{U}: a new instance beside the serving one" in hc.said(run), hc.said(run)[-3000:]
        state, now = hc.supervisor_state(host, U)
        assert state == "RUNNING" and now != pid
        hc.check_request(host, UNIX_APP, f"r2 hello from {U}")
    finally:
        ok(run_with(tmp_path, "chdir-back", BASE_APPS))
    hc.check_request(host, UNIX_APP, f"hello from {U}")


@pytest.mark.extended
def test_a_crash_looping_app_takes_the_good_config_and_serves(host, tmp_path):
    """An earlier run left a broken ini (its import fails after startsecs, so
    Supervisor restarts it for ever). A run with the good config makes the app
    serve it, and never rolls back to the broken ini."""
    ini = f"/etc/uwsgi/supervisor/{U}.ini"
    serving = hc.supervisor_entry(host, U).get("program", U)
    host.run_test(f"sed -i 's/^module = app:app$/module = slowfail:app/' {ini} && supervisorctl restart {serving}")
    try:
        time.sleep(6)
        assert hc.supervisor_state(host, U)[0] in ("STARTING", "RUNNING", "BACKOFF")
        run = ok(run_with(tmp_path, "crash-loop-good", BASE_APPS))
        assert "rolled back" not in hc.said(run) and "restored" not in hc.said(run)
        assert "module = app:app" in host.file(ini).content_string
        hc.check_running_as(host, UNIX_APP)
        hc.check_backlog(host, UNIX_APP)
        hc.check_request(host, UNIX_APP, f"hello from {U}")
    finally:
        host.run(f"sed -i 's/^module = slowfail:app$/module = app:app/' {ini}")
        ok(run_with(tmp_path, "crash-loop-back", BASE_APPS))


@pytest.mark.extended
def test_two_runs_at_once_take_turns_and_the_last_backlog_is_in_effect(host, tmp_path):
    """Two operators, 3 s apart, with different backlogs: the second waits for
    the first (the host's lock), then decides on the host as the first left it."""
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(run_with, tmp_path, "at-once-a", with_changes(**{U: {"listen": 3000}}))
            time.sleep(3)
            second = pool.submit(run_with, tmp_path, "at-once-b", with_changes(**{U: {"listen": 2500}}))
            ok(first.result(timeout=600))
            ok(second.result(timeout=600))
        ini = host.file(f"/etc/uwsgi/supervisor/{U}.socket.ini").content_string
        assert "listen = 2500" in ini
        hc.check_backlog(host, dict(UNIX_APP, listen=2500))
        assert not host.run("ls /etc/uwsgi/supervisor/ /etc/supervisor/conf.d/ | grep '~$'").stdout.strip()
        assert host.file("/run/backlogops-uwsgi/lock").content_string.strip() == "{}"
    finally:
        ok(run_with(tmp_path, "at-once-back", BASE_APPS))


@pytest.mark.extended
def test_a_program_written_but_never_loaded_is_loaded_by_the_next_run(host, tmp_path):
    """As a first deploy interrupted before `supervisorctl update` leaves it."""
    new = {"name": "lateapp", "module": "app:app", "chdir": "/srv/flaskapp", "listen": 512,
           "environment": {"APP_NAME": "lateapp"}}
    try:
        ok(run_with(tmp_path, "late-first", BASE_APPS + [new]))
        programs = "lateapp.a lateapp.b lateapp.socket"
        host.run_test(f"supervisorctl stop {programs} && supervisorctl remove {programs}")
        assert hc.supervisor_state(host, "lateapp")[0] == "missing"
        run = ok(run_with(tmp_path, "late-again", BASE_APPS + [new]))
        said = " ".join(hc.said(run).replace("''", "'").split())
        assert "lateapp: start its socket's pool and its first instance" in said, said[-3000:]
        hc.check_backlog(host, dict(new, socket="/run/uwsgi/lateapp.sock"))
        assert "hello from lateapp" in host.check_output("uwsgiprobe request /run/uwsgi/lateapp.sock /")
    finally:
        ok(run_with(tmp_path, "late-gone", BASE_APPS + [dict(new, state="absent")]))


@pytest.mark.extended
def test_an_app_with_a_mule_is_proven_with_its_workers_as_uwsgi_counts_them(host, tmp_path):
    try:
        run = ok(run_with(tmp_path, "mule", with_changes(**{U: {"options": {"mules": 1}}})))
        assert f"app {U}: RUNNING, backlog {UNIX_APP['listen']} on {UNIX_APP['socket']}, 2 workers" in hc.said(run)
        again = ok(run_with(tmp_path, "mule-again", with_changes(**{U: {"options": {"mules": 1}}})))
        assert hc.recap_changed(again.stdout) == {host.backend.get_hostname(): 0}, again.stdout[-3000:]
    finally:
        ok(run_with(tmp_path, "mule-back", BASE_APPS))
