"""The venv scenario's proof: README's virtualenv playbook (uwsgi_install_method
pip) on a bare Debian host, one app per socket kind."""

import concurrent.futures
import json
import shlex

import pytest
import yaml

import hostchecks as hc

PLAYBOOK = hc.PROJECT / "playbooks" / "venv.yml"
PLAY_VARS = yaml.safe_load(PLAYBOOK.read_text())[0]["vars"]
VERSION = PLAY_VARS["uwsgi_pip_version"]
SHARED_VENV = PLAY_VARS.get("uwsgi_pip_virtualenv", "/opt/uwsgi/venv")  # the documented default
APPS = hc.apps_from_playbook(PLAYBOOK)
LIMIT = hc.derived_limit(APPS)
APP_IDS = [a["name"] for a in APPS]


def venv_of(app):
    return app["virtualenv"] or SHARED_VENV


def kind(app):
    if app["socket"].startswith("/"):
        return "unix"
    return "tcp-" + app["protocol"]


VENV = "/srv/venvapp/venv"
# A virtualenv's later package sets, each a virtualenv of its own (filter uwsgi_venv_plan's HOMES_DIR).
HOMES = "/var/lib/uwsgi-role/venvs"


def test_playbook_covers_every_socket_kind_and_both_venvs():
    assert PLAY_VARS["uwsgi_install_method"] == "pip"
    assert sorted(kind(a) for a in APPS) == ["tcp-http", "tcp-uwsgi", "unix"]
    assert {bool(a["virtualenv"]) for a in APPS} == {True, False}
    assert min(a["listen"] for a in APPS) > 128


def test_sysctls_live_equal_persisted(host):
    hc.check_sysctls(host, LIMIT)


@pytest.mark.parametrize("app", APPS, ids=APP_IDS)
def test_backlog_in_effect_equals_listen(host, app):
    hc.check_backlog(host, app)


@pytest.mark.parametrize("app", APPS, ids=APP_IDS)
def test_running_as_unprivileged_user(host, app):
    hc.check_running_as(host, app)


@pytest.mark.parametrize("app", APPS, ids=APP_IDS)
def test_real_request(host, app):
    hc.check_request(host, app, f"hello from {app['name']}")


@pytest.mark.parametrize("app", APPS, ids=APP_IDS)
def test_master_is_the_pinned_uwsgi_of_its_venv(host, app):
    binary = f"{venv_of(app)}/bin/uwsgi"
    hc.check_master_binary(host, app, binary)
    assert host.check_output(f"{binary} --version") == VERSION


@pytest.mark.parametrize("app", APPS, ids=APP_IDS)
def test_app_imports_from_its_venv(host, app):
    """An app with a virtualenv gets its venv's Flask (uWSGI's home); one
    without runs from the shared venv and gets the system's Flask."""
    seen = hc.about(host, app)
    ini = host.file(f"/etc/uwsgi/supervisor/{app['name']}.ini").content_string
    assert "plugins" not in ini  # Python is built into a pip build
    assert seen["prefix"] == venv_of(app), seen
    venv_flask = host.run(f"{venv_of(app)}/bin/python -c 'import importlib.metadata as m; print(m.version(\"flask\"))'")
    system_flask = host.check_output("python3 -c 'import importlib.metadata as m; print(m.version(\"flask\"))'")
    if app["virtualenv"]:
        assert f"home = {app['virtualenv']}" in ini
        assert seen["flask"] == venv_flask.stdout.strip() != system_flask, seen
    else:
        assert "home =" not in ini
        assert seen["flask"] == system_flask, seen


@pytest.mark.parametrize("app", [a for a in APPS if a["socket"].startswith("/")], ids=lambda a: a["name"])
def test_burst_of_listen_connections_while_busy_is_not_refused(host, app):
    hc.check_burst(host, app)


def test_check_diff_on_converged_host_changes_nothing():
    run = hc.run_playbook(PLAYBOOK, "--check", "--diff")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    changed = hc.recap_changed(run.stdout)
    assert changed and all(v == 0 for v in changed.values()), run.stdout[-3000:]


def run_with(tmp_path, extra):
    path = tmp_path / "extra.json"
    path.write_text(json.dumps(extra))
    run = hc.run_playbook(PLAYBOOK, "-e", f"@{path}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return run


def test_plugins_with_pip_are_refused_before_any_change(tmp_path):
    path = tmp_path / "plugins.json"
    path.write_text(json.dumps({"uwsgi_plugins": ["python3"]}))
    run = hc.run_playbook(PLAYBOOK, "-e", f"@{path}")
    assert run.returncode != 0
    assert "uwsgi_plugins (python3) cannot be loaded by a uWSGI built by pip" in hc.said(run), hc.said(run)[-2500:]


@pytest.mark.extended
def test_new_uwsgi_release_is_built_and_every_app_restarted_on_it(host, tmp_path):
    """Another uwsgi_pip_version rebuilds each venv's uwsgi and really restarts
    the apps on the new binary; the old release comes back the same way."""
    other = "2.0.30"
    supervisord = hc.supervisord_pid(host)
    pids = {a["name"]: hc.supervisor_state(host, a["name"])[1] for a in APPS}
    try:
        run_with(tmp_path, {"uwsgi_pip_version": other})
        for app in APPS:
            assert host.check_output(f"{venv_of(app)}/bin/uwsgi --version") == other
            state, pid = hc.supervisor_state(host, app["name"])
            assert state == "RUNNING" and pid != pids[app["name"]], (app["name"], state, pid)
            hc.check_backlog(host, app)
    finally:
        run_with(tmp_path, {})
    for app in APPS:
        assert host.check_output(f"{venv_of(app)}/bin/uwsgi --version") == VERSION
        hc.check_master_binary(host, app, f"{venv_of(app)}/bin/uwsgi")
        hc.check_backlog(host, app)
        hc.check_request(host, app, f"hello from {app['name']}")
    assert hc.supervisord_pid(host) == supervisord


ROUTED = next(a for a in APPS if a["name"] == "venvapp")
BASE_APPS = PLAY_VARS["uwsgi_apps"]


def with_apps(**per_app):
    """The playbook's apps, with some keys changed per app name."""
    return [dict(app, **per_app.get(app["name"], {})) for app in BASE_APPS]


def test_a_route_option_works_in_the_pip_build(host):
    """uWSGI is built with PCRE: internal routing answers, and the log never
    says it lacks routing support."""
    out = host.run(f"uwsgiprobe request {ROUTED['socket']} /routed --protocol {ROUTED['protocol']}").stdout
    assert out.splitlines()[0].split()[1] == "204", out
    log = host.file(hc.app_log(host, ROUTED["name"])).content_string
    assert "no internal routing support" not in log
    assert "libpcre2-8.so" in host.check_output(f"ldd {venv_of(ROUTED)}/bin/uwsgi")


def test_the_apps_packages_were_installed_by_the_role_before_their_first_start(host):
    """prepare made no virtualenv: the role built it, installed uWSGI, then the
    apps' packages and requirements, and recorded what it installed."""
    venv = "/srv/venvapp/venv"
    flask = host.check_output(f"{venv}/bin/python -c 'import importlib.metadata as m; print(m.version(\"flask\"))'")
    assert flask == "3.0.3"
    assert host.file(f"{venv}/.backlogops-uwsgi-deps").content_string.startswith("sha256:")


def test_a_package_change_reloads_the_apps_and_a_pip_error_changes_nothing(host, tmp_path):
    venv_apps = [a for a in APPS if a["virtualenv"]]
    pids = {a["name"]: hc.supervisor_state(host, a["name"])[1] for a in venv_apps}
    files = "sha256sum /etc/uwsgi/supervisor/*.ini /etc/supervisor/conf.d/*.conf /srv/venvapp/venv/.backlogops-uwsgi-deps"
    requirements = host.file("/srv/venvapp/requirements.txt").content_string
    try:
        # pip's resolver refuses two pins of one project: its own words come back.
        before = host.check_output(files)
        path = tmp_path / "conflict.json"
        path.write_text(json.dumps({"uwsgi_apps": with_apps(venvapp={"packages": ["flask==3.0.2"]})}))
        run = hc.run_playbook(PLAYBOOK, "-e", f"@{path}")
        output = hc.said(run)
        assert run.returncode != 0
        assert "pip could not install" in output and "conflicting dependencies" in output, output[-3000:]
        assert host.check_output(files) == before
        assert {a["name"]: hc.supervisor_state(host, a["name"])[1] for a in venv_apps} == pids
        # Both pins move: installed, and each app of the venv takes them as a new instance (same pool).
        pools = {a["name"]: hc.pool_pid(host, a["name"]) for a in venv_apps}
        before_digest = host.file(f"{VENV}/.backlogops-uwsgi-deps").content_string
        host.check_output("echo flask==3.0.2 > /srv/venvapp/requirements.txt")
        changed = run_with(tmp_path, {"uwsgi_apps": with_apps(venvapp={"packages": ["flask==3.0.2"]})})
        said = hc.said(changed)
        assert "a new instance beside the serving one (" in said and "its packages changed" in said, said[-3000:]
        # The serving virtualenv was never changed: the new set is a home of its own, which the ini names.
        assert host.file(f"{VENV}/.backlogops-uwsgi-deps").content_string == before_digest
        home = hc.parsers.parse_ini_home(host.file("/etc/uwsgi/supervisor/venvapp.ini").content_string)
        assert home.startswith(f"{HOMES}/") and host.file(f"{home}/.backlogops-uwsgi-deps").exists
        for app in venv_apps:
            assert hc.about(host, app)["flask"] == "3.0.2"
            state, pid = hc.supervisor_state(host, app["name"])
            assert state == "RUNNING" and pid != pids[app["name"]]
            assert hc.pool_pid(host, app["name"]) == pools[app["name"]] is not None
    finally:
        host.check_output(f"echo {shlex.quote(requirements.strip())} > /srv/venvapp/requirements.txt")
        run_with(tmp_path, {})
    for app in venv_apps:
        assert hc.about(host, app)["flask"] == "3.0.3"


# The dependency keys' bad inputs, each refused before anything on the host
# changes (every one is also a unit case in tests/unit/test_venv_plan.py).
DEPENDENCY_CASES = {
    "shared-venv": ({"venvhttp": {"packages": ["six==1.16.0"]}}, "packages and requirements need the app's own virtualenv"),
    "option-as-package": ({"venvapp": {"packages": ["--index-url=http://mirror.invalid/simple"]}},
                          "is not one pip requirement"),
    "requirements-relative": ({"venvapp": {"requirements": "requirements.txt"}},
                              "must be the absolute path of a requirements file"),
    "requirements-missing": ({"venvapp": {"requirements": "/srv/venvapp/nosuch.txt"}},
                             "requirements file /srv/venvapp/nosuch.txt of venvapp, venvapi does not exist"),
}


@pytest.fixture(scope="module")
def dependency_runs(host, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deps")
    snapshot = "sha256sum /etc/uwsgi/supervisor/*.ini /etc/supervisor/conf.d/*.conf /srv/venvapp/venv/.backlogops-uwsgi-deps"
    before = host.check_output(snapshot)

    def run(case):
        path = tmp / f"{case}.json"
        path.write_text(json.dumps({"uwsgi_apps": with_apps(**DEPENDENCY_CASES[case][0])}))
        return hc.run_playbook(PLAYBOOK, "-e", f"@{path}")

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = dict(zip(DEPENDENCY_CASES, pool.map(run, DEPENDENCY_CASES)))
    return runs, before, host.check_output(snapshot)


@pytest.mark.parametrize("case", list(DEPENDENCY_CASES))
def test_bad_dependencies_are_refused_before_any_change(dependency_runs, case):
    run = dependency_runs[0][case]
    assert run.returncode != 0
    assert DEPENDENCY_CASES[case][1] in hc.said(run), hc.said(run)[-2500:]
    assert "Install the apps' packages and requirements" not in run.stdout


def test_bad_dependencies_changed_nothing(dependency_runs):
    assert dependency_runs[1] == dependency_runs[2]


DIGEST = f"{VENV}/.backlogops-uwsgi-deps"
# Flask 1.1.4 installs on Python 3.11, and its import fails there (its Jinja2
# 2.x imports what MarkupSafe no longer has).
BREAKING = "flask==1.1.4"


def breaking_set(host):
    host.check_output(f"echo {BREAKING} > /srv/venvapp/requirements.txt")
    return with_apps(venvapp={"packages": [BREAKING]})


@pytest.fixture()
def requirements_kept(host, tmp_path):
    """The requirements file as prepare wrote it, and the playbook's apps, after the test."""
    requirements = host.file("/srv/venvapp/requirements.txt").content_string
    yield
    host.check_output(f"echo {shlex.quote(requirements.strip())} > /srv/venvapp/requirements.txt")
    run_with(tmp_path, {})


def test_packages_that_install_but_break_the_import_are_refused_before_the_venv_changes(host, tmp_path,
                                                                                        requirements_kept):
    """Staged in a virtualenv aside and tried there: refused with the import
    error, under a request stream through nginx that loses nothing; the
    serving virtualenv, its record and the masters are as they were."""
    venv_apps = [a for a in APPS if a["virtualenv"]]
    pids = {a["name"]: hc.supervisor_state(host, a["name"])[1] for a in venv_apps}
    digest = host.file(DIGEST).content_string
    homes = set(host.run(f"ls -A {HOMES}").stdout.split())
    path = tmp_path / "breaking.json"
    path.write_text(json.dumps({"uwsgi_apps": breaking_set(host)}))
    with hc.Load(host, "breaking", {"venvapp": 8091}) as load:
        run = hc.run_playbook(PLAYBOOK, "-e", f"@{path}")
    said = hc.said(run)
    assert run.returncode != 0, said[-3000:]
    assert "was tried aside" in said and "its new packages, in their own home" in said, said[-3000:]
    assert "ImportError" in said and "soft_unicode" in said, said[-3000:]
    load.check()
    assert {a["name"]: hc.supervisor_state(host, a["name"])[1] for a in venv_apps} == pids
    assert host.file(DIGEST).content_string == digest
    # An earlier set's home that no app names may go in the same run (remove.yml): only a new one is a leftover.
    left = set(host.run(f"ls -A {HOMES}").stdout.split()) - homes
    assert not left, f"the refused set's home was left: {left}"
    for app in venv_apps:
        assert hc.about(host, app)["flask"] == "3.0.3"


@pytest.mark.extended
def test_without_the_trial_a_breaking_set_is_rolled_back_to_the_packages_that_served(host, tmp_path,
                                                                                     requirements_kept):
    """The rollback is the last line of defence: the serving virtualenv took
    the set, the proof failed it, and the packages it had come back."""
    digest = host.file(DIGEST).content_string
    path = tmp_path / "breaking-untried.json"
    path.write_text(json.dumps({"uwsgi_apps": breaking_set(host), "uwsgi_trial": False}))
    run = hc.run_playbook(PLAYBOOK, "-e", f"@{path}")
    said = hc.said(run)
    assert run.returncode != 0 and "failed the proof" in said, said[-3000:]
    assert host.file(DIGEST).content_string == digest
    for app in [a for a in APPS if a["virtualenv"]]:
        hc.wait_until_serving(host, [app], timeout=60)
        assert hc.about(host, app)["flask"] == "3.0.3"


def test_a_virtualenv_and_requirements_an_app_user_owns_are_refused_and_nothing_of_them_runs_as_root(host, tmp_path):
    """alice owns her virtualenv and requirements file and plants in them what
    root would run or read: a pip wrapper, `-r /etc/shadow`, the role's digest
    file as a symlink to /etc/shadow, and a FIFO as the uwsgi binary. The run is
    refused before any change, nothing of hers ran as root, nothing root-only
    was printed, and nothing hung."""
    host.run("id alice || useradd --system --gid www-data --no-create-home --shell /usr/sbin/nologin alice")
    host.run_test("rm -rf /srv/alice && mkdir /srv/alice && chown alice /srv/alice && "
                  "runuser -u alice -- python3 -m venv --without-pip /srv/alice/venv && cd /srv/alice/venv && "
                  "runuser -u alice -- sh -c 'printf \"#!/bin/sh\\nid > /tmp/pwned-by-pip\\n\" > bin/pip && "
                  "chmod +x bin/pip && mkfifo bin/uwsgi && ln -s /etc/shadow .backlogops-uwsgi-deps && "
                  "echo \"-r /etc/shadow\" > /srv/alice/requirements.txt'")
    app = {"name": "aliceapp", "module": "app:app", "chdir": "/srv/venvapp", "virtualenv": "/srv/alice/venv",
           "requirements": "/srv/alice/requirements.txt", "uid": "alice", "socket": "/run/uwsgi/aliceapp.sock"}
    snapshot = ("sha256sum /etc/uwsgi/supervisor/*.ini /etc/supervisor/conf.d/*.conf;"
                " supervisorctl status | awk '{print $1, $2, $4}'")
    before = host.check_output(snapshot)
    try:
        path = tmp_path / "alice.json"
        path.write_text(json.dumps({"uwsgi_apps": BASE_APPS + [app]}))
        run = hc.run_playbook(PLAYBOOK, "-e", f"@{path}", "-v", timeout=300)
        said = hc.said(run)
        assert run.returncode != 0
        assert "virtualenv /srv/alice/venv can be changed by someone other than root: /srv/alice" in said, said[-3000:]
        assert "requirements file /srv/alice/requirements.txt can be changed by someone other than root" in said
        assert host.check_output("grep '^root:' /etc/shadow") not in said and "/etc/shadow" not in said, said[-3000:]
        assert not host.file("/tmp/pwned-by-pip").exists
        assert host.check_output(snapshot) == before
    finally:
        host.run("rm -rf /srv/alice /tmp/pwned-by-pip; userdel alice")


@pytest.mark.extended
def test_a_beside_app_runs_on_the_pip_build_over_http_on_tcp(host, tmp_path):
    """apply_strategy beside with a uWSGI built by pip (its zergpool is built
    in, no plugin to load): the pool holds a TCP socket, the instances speak
    HTTP on it, and a change starts a new instance beside the serving one."""
    app = {"name": "venvzerg", "module": "app:app", "chdir": "/srv/venvapp", "socket": "127.0.0.1:8190",
           "protocol": "http", "listen": 512, "processes": 2, "apply_strategy": "beside",
           "environment": {"APP_NAME": "venvzerg"}}
    try:
        run_with(tmp_path, {"uwsgi_apps": BASE_APPS + [app]})
        assert hc.supervisor_state(host, "venvzerg.socket")[0] == "RUNNING"
        first = hc.supervisor_state(host, "venvzerg.a")
        assert first[0] == "RUNNING"
        assert hc.listen_backlogs(host)["127.0.0.1:8190"] == 512
        program = host.file("/etc/supervisor/conf.d/venvzerg.conf").content_string
        assert f"{SHARED_VENV}/bin/uwsgi --ini /etc/uwsgi/supervisor/venvzerg.socket.ini" in program
        out = host.run("uwsgiprobe request 127.0.0.1:8190 / --protocol http").stdout
        assert out.splitlines()[0].split()[1] == "200" and "hello from venvzerg" in out, out
        changed = run_with(tmp_path, {"uwsgi_apps": BASE_APPS + [dict(app, processes=3)]})
        assert ("venvzerg: a new instance beside the serving one (its ini or environment changed; it runs 2 workers,"
                " not 3)") in hc.said(changed), hc.said(changed)[-3000:]
        assert hc.supervisor_state(host, "venvzerg.a") == ("STOPPED", None)
        master = hc.supervisor_state(host, "venvzerg.b")[1]
        assert len(host.check_output(f"ps -o pid= --ppid {master}").split()) == 3
        out = host.run("uwsgiprobe request 127.0.0.1:8190 / --protocol http").stdout
        assert "hello from venvzerg" in out, out
    finally:
        run_with(tmp_path, {"uwsgi_apps": BASE_APPS + [{"name": "venvzerg", "state": "absent"}]})
    assert host.run("supervisorctl status venvzerg.a").stdout.count("no such process") == 1


@pytest.mark.extended
def test_a_pip_install_killed_half_way_leaves_the_serving_virtualenv_whole(host, tmp_path, requirements_kept):
    """The controller and pip are killed (kill -9) while a new set installs:
    the serving virtualenv was never its target, so every request through
    nginx is still answered by the set that served; the next run installs
    the set anew in its home and the apps take it."""
    import os
    import subprocess
    import time

    digest = host.file(DIGEST).content_string
    host.check_output("echo flask==3.0.2 > /srv/venvapp/requirements.txt")
    extra = tmp_path / "killed-pip.json"
    extra.write_text(json.dumps({"uwsgi_apps": with_apps(venvapp={"packages": ["flask==3.0.2"]})}))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_ROLES_PATH=hc.roles_path())
    with hc.Load(host, "killed-pip", {"venvapp": 8091}) as load:
        run = subprocess.Popen(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(PLAYBOOK),
                                "-e", f"@{extra}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(1200):
                if host.run(f"pgrep -f '^{HOMES}/.*/bin/python.* install'").rc == 0:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("pip never ran into a new home")
        finally:
            run.kill()
            run.wait()
        host.run(f"pkill -9 -f '^{HOMES}/.*/bin/python.* install'")
        for pid in host.run("grep -las BACKLOGOPS_UWSGI_RUN= /proc/[0-9]*/environ").stdout.split():
            host.run(f"kill -9 {pid.split('/')[2]}")
        assert host.file(DIGEST).content_string == digest
        for app in [a for a in APPS if a["virtualenv"]]:
            assert hc.about(host, app)["flask"] == "3.0.3"
        again = run_with(tmp_path, {"uwsgi_apps": with_apps(venvapp={"packages": ["flask==3.0.2"]})})
    load.check()
    assert "its packages changed" in hc.said(again)
    for app in [a for a in APPS if a["virtualenv"]]:
        assert hc.about(host, app)["flask"] == "3.0.2"
    assert host.file(DIGEST).content_string == digest
