"""New code reaches a serving app with no request lost and no capacity gap,
as a new instance beside the serving one (the default layout). The
unix-socket app runs 4 workers from /srv/current, a release symlink, and
its import takes 3 s (IMPORT_SECONDS); a request stream runs through nginx to
/build (the build each worker imported) for the whole of every run."""

import json

import pytest

import hostchecks as hc
from test_apply import BASE_APPS, PORTS, U, UNIX_APP, ok, run_with, with_changes

IMPORT_SECONDS = 3
UNIX_SOCKET = UNIX_APP["socket"]
RELEASES = "/srv/releases"
CURRENT = "/srv/current"
DEPLOYED = {"chdir": CURRENT, "processes": 4, "check_path": "/build",
            "environment": {"APP_NAME": U, "IMPORT_SECONDS": str(IMPORT_SECONDS)}}


def deployed(revision):
    return with_changes(**{U: dict(DEPLOYED, revision=revision)})


def put_in_place(host, build):
    host.run_test(f"ln -sfn {RELEASES}/{build} {CURRENT}.new && mv -T {CURRENT}.new {CURRENT}")


def master_and_workers(host):
    master = hc.supervisor_state(host, U)[1]
    workers = sorted(int(p) for p in host.check_output(f"ps -o pid= --ppid {master}").split())
    return master, workers


def worker_dirs(host, workers):
    """Each worker's working directory, read as the app's user (root in a
    container without CAP_SYS_PTRACE may not read another user's)."""
    return {pid: host.run(f"setpriv --reuid=www-data --regid=www-data --clear-groups readlink /proc/{pid}/cwd")
            .stdout.strip() for pid in workers}


def builds(host, count=40):
    """What `count` requests through nginx answer."""
    seen = {}
    for _ in range(count):
        body = host.run("python3 -c \"import urllib.request;print(urllib.request.urlopen("
                        f"'http://127.0.0.1:{PORTS[U]}/build', timeout=10).read().decode().strip())\"").stdout.strip()
        seen[body] = seen.get(body, 0) + 1
    return seen


def under_load(host, tag, run):
    before, pool = master_and_workers(host), hc.pool_pid(host, U)
    with hc.Load(host, tag, {U: PORTS[U]}, path="/build", bodies=True) as load:
        result = run()
    return {"run": result, "load": load, "stats": load.results[U], "before": before, "after": master_and_workers(host),
            "pools": (pool, hc.pool_pid(host, U))}


@pytest.fixture(scope="module")
def releases(host, tmp_path_factory):
    """Builds b1-b3 of the app, and b4, whose import raises; the app serving b1."""
    for build in ("b1", "b2", "b3", "b4"):
        host.run_test(f"mkdir -p {RELEASES}/{build} && cp /srv/flaskapp/app.py {RELEASES}/{build}/ "
                      f"&& echo {build} > {RELEASES}/{build}/BUILD")
    host.run_test(f"echo 'raise RuntimeError(\"broken build b4: SETTINGS_MODULE is not set\")' "
                  f">> {RELEASES}/b4/app.py")
    put_in_place(host, "b1")
    tmp = tmp_path_factory.mktemp("deploy")
    ok(run_with(tmp, "deploy-base", deployed("b1")))
    hc.wait_until_serving(host, [a for a in hc.apps_from_playbook(hc.PROJECT / "playbooks" / "site.yml")])
    yield tmp
    put_in_place(host, "b1")
    ok(run_with(tmp, "deploy-cleanup", BASE_APPS))


def check_new_build_everywhere(host, seen, build):
    ok(seen["run"])
    stats = seen["stats"]
    seen["load"].check()
    # No request waited for an import: some workers served while each loaded.
    assert stats["latency"]["max"] < IMPORT_SECONDS / 2, stats
    assert stats["last_body"] == build, stats
    master, workers = seen["after"]
    # A new instance serves; the pool that holds the socket stayed.
    assert master != seen["before"][0], "the serving instance was kept"
    assert seen["pools"][0] is not None and seen["pools"][0] == seen["pools"][1], seen["pools"]
    assert len(workers) == 4 and not set(workers) & set(seen["before"][1]), (seen["before"], seen["after"])
    assert set(worker_dirs(host, workers).values()) == {f"{RELEASES}/{build}"}
    assert builds(host) == {build: 40}


def test_a_new_revision_is_a_new_instance_no_request_waits_for_the_import(host, releases):
    put_in_place(host, "b2")
    seen = under_load(host, "deploy-b2", lambda: run_with(releases, "deploy-b2", deployed("b2")))
    check_new_build_everywhere(host, seen, "b2")
    said = hc.said(seen["run"])
    assert f"{U}: a new instance beside the serving one (its revision is b2, it last took b1)" in said, said[-3000:]
    assert f"{U}: tried aside (its code is new: its revision is b2, it last took b1)" in said
    assert f"app {U}: RUNNING, backlog 4096 on {UNIX_SOCKET}, 4 workers, GET /build answered 200" in said
    record = json.loads(host.check_output("cat /etc/uwsgi/supervisor/.applied.json"))
    assert record[U]["revision"] == "b2"


HANDLER_PLAY = """
- name: Deploy build b3 with the play's own task; the role's handler reloads the app
  hosts: all
  become: true
  tasks:
    - name: Apply the role (import_role; the README's variant has it in roles:)
      ansible.builtin.import_role:
        name: backlogops.uwsgi

    - name: Put build b3 in place
      ansible.builtin.file:
        src: {releases}/b3
        dest: {current}
        state: link
        force: true
      notify: uwsgi reload
"""


def test_the_handler_reloads_the_named_app_onto_the_code_the_play_put_in_place(host, releases):
    playbook = releases / "handler.yml"
    playbook.write_text(HANDLER_PLAY.format(releases=RELEASES, current=CURRENT))
    other = hc.supervisor_state(host, "flaskapi")[1]
    other_workers = host.check_output(f"ps -o pid= --ppid {other}").split()
    # The revision stays b2: only the handler says the code is new.
    seen = under_load(host, "deploy-handler", lambda: hc.run_with(
        playbook, releases, "handler", {"uwsgi_apps": deployed("b2"), "uwsgi_reload_apps": [U]}))
    check_new_build_everywhere(host, seen, "b3")
    handler = seen["run"].stdout.split("RUNNING HANDLER", 1)[1]
    said = " ".join(handler.split())
    assert f"{U}: tried aside (its code is new: the play notified uwsgi reload)" in said, said[-3000:]
    assert f"{U}: a new instance beside the serving one (the play notified uwsgi reload)" in said, said[-3000:]
    assert f"app {U}: RUNNING, backlog 4096 on {UNIX_SOCKET}, 4 workers, GET /build answered 200" in said
    # The short path: the role's run in this play settled the rest, so the
    # handler neither checks the input again nor writes a file.
    for step in ("Check the types, choices and keys", "Persist and apply the kernel's listen limits",
                 "Write the socket directories, the helpers and each app's files"):
        assert f"RUNNING HANDLER [backlogops.uwsgi : {step}" not in handler, handler
    assert "included: " not in handler.split("Take the role's whole path")[1], "the whole path ran"
    # uwsgi_reload_apps narrowed it: the other app's workers were not replaced.
    assert host.check_output(f"ps -o pid= --ppid {other}").split() == other_workers


def test_a_broken_build_fails_the_run_with_its_exception_and_the_previous_build_keeps_serving(host, releases):
    put_in_place(host, "b4")
    try:
        seen = under_load(host, "deploy-b4", lambda: run_with(releases, "deploy-b4", deployed("b4")))
    finally:
        put_in_place(host, "b3")
    assert seen["run"].returncode != 0
    said = hc.said(seen["run"])
    assert "RuntimeError: broken build b4: SETTINGS_MODULE is not set" in said, said[-3000:]
    seen["load"].check()
    assert seen["stats"]["bodies"] == {"b3": seen["stats"]["ok"]}, seen["stats"]
    # No serving worker was touched.
    assert seen["after"] == seen["before"]
    assert builds(host) == {"b3": 40}
    record = json.loads(host.check_output("cat /etc/uwsgi/supervisor/.applied.json"))
    assert record[U]["revision"] == "b2", "a build that failed is not recorded as taken"


HANG = ("import uwsgi  # noqa\nif uwsgi.worker_id() >= 2:  # the trial imports it in a master (0); worker 2 hangs\n"
        "    import time\n    time.sleep(3600)\n")


# 1.x's way (apply_strategy graceful, code_reload chain): an app of its own beside the README's.
CHAIN_APP = {"name": "chainapp", "module": "app:app", "chdir": CURRENT, "socket": "/run/uwsgi/chainapp.sock",
             "processes": 4, "apply_strategy": "graceful", "revision": "b3", "environment": {"APP_NAME": "chainapp"}}


@pytest.mark.extended
def test_a_chain_that_stops_halfway_fails_the_run_naming_the_workers_on_the_old_code(host, releases):
    """A build whose import hangs in a worker (not in the trial): uWSGI's
    chain waits for worker 2 forever; the proof gives up after its bound
    (4 x ready_timeout + 30 s) and names the workers still on the old code."""
    host.run_test(f"mkdir -p {RELEASES}/b5 && echo b5 > {RELEASES}/b5/BUILD")
    host.run_test(f"cat > {RELEASES}/b5/app.py <<'EOF'\n{HANG}EOF\ncat {RELEASES}/b3/app.py >> {RELEASES}/b5/app.py")
    ok(run_with(releases, "chain-base", deployed("b2") + [CHAIN_APP]))
    master = hc.supervisor_state(host, "chainapp")[1]
    before = sorted(int(p) for p in host.check_output(f"ps -o pid= --ppid {master}").split())
    put_in_place(host, "b5")
    try:
        run = run_with(releases, "deploy-b5", deployed("b2") + [dict(CHAIN_APP, revision="b5", ready_timeout=5)])
        said = hc.said(run)
        assert run.returncode != 0
        assert "its chain reload did not finish within" in said, said[-3000:]
        old = [pid for pid in before if f"pid {pid}," in said]
        assert len(old) >= 2, said[-3000:]
        assert "and the role keeps no earlier build" in said
    finally:
        put_in_place(host, "b3")
        host.run_test("supervisorctl restart chainapp")
        ok(run_with(releases, "chain-cleanup", deployed("b2") + [{"name": "chainapp", "state": "absent"}]))
