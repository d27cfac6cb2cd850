"""Never make a host worse: bad input, a read-only /proc/sys, a sysctl file that
would win at boot, a broken update, a killed master and app removal, each
against the converged, serving host of the default scenario."""

import concurrent.futures
import copy

import pytest
import yaml

import hostchecks as hc

PLAYBOOK = hc.PROJECT / "playbooks" / "site.yml"
BASE_APPS = yaml.safe_load(PLAYBOOK.read_text())[0]["vars"]["uwsgi_apps"]
APPS = hc.apps_from_playbook(PLAYBOOK)
UNIX_APP = next(a for a in APPS if a["socket"].startswith("/"))
TCP_APP = next(a for a in APPS if not a["socket"].startswith("/"))

SNAPSHOT = (
    "find /etc/sysctl.d /etc/supervisor /etc/uwsgi /etc/tmpfiles.d -type f -exec sha256sum {} + | sort;"
    " cat /proc/sys/net/core/somaxconn /proc/sys/net/ipv4/tcp_max_syn_backlog /run/supervisord.pid;"
    " supervisorctl status | awk '{print $1, $2, $4}'"
)


def apps_with(index, **changes):
    apps = copy.deepcopy(BASE_APPS)
    apps[index].update(changes)
    return apps


def app_without(index, key):
    apps = copy.deepcopy(BASE_APPS)
    apps[index].pop(key)
    return apps


# (id, extra vars, words the error must contain: the variable and the fix)
BAD_INPUTS = [
    ("unknown-key", {"uwsgi_apps": apps_with(0, proceses=4)}, ["proceses", "uwsgi_apps"]),
    ("listen-not-int", {"uwsgi_apps": apps_with(0, listen="many")}, ["listen", "int"]),
    ("state-choice", {"uwsgi_apps": apps_with(0, state="gone")}, ["state", "present, absent"]),
    ("name-missing", {"uwsgi_apps": app_without(0, "name")}, ["name", "uwsgi_apps"]),
    ("name-dotdot", {"uwsgi_apps": apps_with(0, name="../x")}, ["name", "letters, digits"]),
    ("name-space", {"uwsgi_apps": apps_with(0, name="a b")}, ["name", "letters, digits"]),
    ("name-slash", {"uwsgi_apps": apps_with(0, name="a/b")}, ["name", "letters, digits"]),
    ("name-duplicate", {"uwsgi_apps": apps_with(1, name=BASE_APPS[0]["name"])}, ["used by another app"]),
    ("listen-above-somaxconn", {"uwsgi_somaxconn": 1024}, ["listen (4096) exceeds uwsgi_somaxconn (1024)", "raise uwsgi_somaxconn"]),
    ("somaxconn-too-big", {"uwsgi_somaxconn": 70000}, ["uwsgi_somaxconn (70000)", "65535"]),
    ("listen-too-big", {"uwsgi_apps": apps_with(0, listen=70000), "uwsgi_somaxconn": 65535}, ["listen (70000)", "65535"]),
    ("socket-relative", {"uwsgi_apps": apps_with(0, socket="run/app.sock")}, ["socket", "absolute unix socket path"]),
    ("socket-port-range", {"uwsgi_apps": apps_with(1, socket="127.0.0.1:99999")}, ["socket", "port from 1 to 65535"]),
    ("socket-port-name", {"uwsgi_apps": apps_with(1, socket="127.0.0.1:http")}, ["socket", "host:port"]),
    ("socket-shared", {"uwsgi_apps": apps_with(1, socket=BASE_APPS[0]["socket"])}, ["is already used by app flaskapp", "give each app its own socket"]),
    ("processes-zero", {"uwsgi_apps": apps_with(0, processes=0)}, ["processes (0)", "at least 1"]),
    ("threads-zero", {"uwsgi_apps": apps_with(1, threads=0)}, ["threads (0)", "at least 1"]),
    ("chmod-not-octal", {"uwsgi_apps": apps_with(0, chmod_socket="999")}, ["chmod_socket", "octal mode"]),
    ("chmod-world-writable", {"uwsgi_apps": apps_with(0, chmod_socket="666")}, ["chmod_socket 666", "uwsgi_allow_world_writable_socket"]),
    ("uid-root", {"uwsgi_apps": apps_with(0, uid="root")}, ["runs the app as root", "uwsgi_allow_root"]),
    ("no-module", {"uwsgi_apps": app_without(0, "module")}, ["no app to load", "module"]),
    ("apps-not-list", {"uwsgi_apps": "flaskapp"}, ["uwsgi_apps", "dict"]),
    ("listen-default-not-int", {"uwsgi_listen": "lots"}, ["uwsgi_listen", "int"]),
    ("syn-backlog-zero", {"uwsgi_tcp_max_syn_backlog": 0}, ["uwsgi_tcp_max_syn_backlog (0)", "at least 1"]),
    # Keys the role writes itself cannot come back through options.
    ("options-chmod-socket", {"uwsgi_apps": apps_with(0, options={"chmod-socket": 666})},
     ["options.chmod-socket is set by the role", "chmod_socket instead"]),
    ("options-uid", {"uwsgi_apps": apps_with(0, options={"uid": "root"})}, ["options.uid is set by the role", "uid instead"]),
    ("options-processes", {"uwsgi_apps": apps_with(1, options={"processes": 7})}, ["options.processes", "processes instead"]),
    ("options-listen", {"uwsgi_apps": apps_with(1, options={"listen": 100})}, ["options.listen", "listen instead"]),
    ("options-env", {"uwsgi_apps": apps_with(0, options={"env": "TOKEN=x"})}, ["options.env", "environment instead"]),
    ("options-dict-value", {"uwsgi_apps": apps_with(0, options={"harakiri": {"seconds": 30}})},
     ["options.harakiri has a dict value", "give a string"]),
    ("option-newline", {"uwsgi_apps": apps_with(0, options={"harakiri": "30\nprocesses = 7"})},
     ["options.harakiri holds a line break"]),
    ("environment-newline", {"uwsgi_apps": apps_with(0, environment={"TOKEN": "abc\nprocesses = 7"})},
     ["environment.TOKEN holds a line break"]),
    # Checked against the host, still before anything changes.
    ("user-missing", {"uwsgi_apps": apps_with(0, uid="nosuchuser")}, ["user nosuchuser does not exist", "ansible.builtin.user"]),
    ("group-missing", {"uwsgi_apps": apps_with(1, gid="nosuchgroup")}, ["group nosuchgroup does not exist"]),
    ("socket-dir-not-writable", {"uwsgi_apps": apps_with(0, socket="/srv/flaskapp/flaskapp.sock")},
     ["cannot create socket /srv/flaskapp/flaskapp.sock", "root:root 0755", "was not created by this role"]),
    ("socket-path-too-long", {"uwsgi_apps": apps_with(0, socket="/run/uwsgi/" + "x" * 100 + ".sock")},
     ["is 116 bytes long", "at most 102"]),
    ("socket-held-by-another-app", {"uwsgi_apps": [dict(BASE_APPS[0], name="renamed")]},
     ['socket /run/uwsgi/flaskapp.sock is already held by Supervisor program "flaskapp"', "uwsgi_unlisted_apps: remove"]),
    ("unlisted-fail", {"uwsgi_apps": BASE_APPS[:1], "uwsgi_unlisted_apps": "fail"},
     ["not listed in uwsgi_apps: flaskapi"]),
    # The dependency and container keys (their pip-mode and container cases
    # run end to end in the venv and container scenarios).
    ("packages-apt-mode", {"uwsgi_apps": apps_with(0, packages=["flask==3.0.3"], virtualenv="/srv/flaskapp/venv")},
     ["packages and requirements are installed into the app's virtualenv", "set uwsgi_install_method: pip"]),
    ("target-choice", {"uwsgi_target": "docker"}, ["uwsgi_target", "host, container, image"]),
    ("target-image-managing-sysctl", {"uwsgi_target": "image"}, ["uwsgi_target is image", "set uwsgi_manage_sysctl: false"]),
]


def run_with(tmp_path, name, extra, *args):
    return hc.run_with(PLAYBOOK, tmp_path, name, extra, *args)


# A tag subset runs the validation and the preflight too (they are tagged
# `always`): bad input is refused whatever the operator selects.
TAGGED = [
    ("tags-apps-unknown-key", {"uwsgi_apps": apps_with(0, proceses=4)}, ["proceses", "uwsgi_apps"], "uwsgi_apps"),
    ("tags-sysctl-somaxconn", {"uwsgi_somaxconn": 1024}, ["exceeds uwsgi_somaxconn (1024)"], "uwsgi_sysctl"),
    ("tags-install-held-socket", {"uwsgi_apps": [dict(BASE_APPS[0], name="renamed")]},
     ["is already held by Supervisor program"], "uwsgi_install"),
    ("tags-apps-target-container", {"uwsgi_target": "container"}, ["uwsgi_target is container"], "uwsgi_apps"),
]


@pytest.fixture(scope="module")
def bad_input_runs(host, tmp_path_factory):
    """Every bad input against the serving host, four at a time, with a
    snapshot of the host before and after."""
    tmp = tmp_path_factory.mktemp("bad")
    before = host.check_output(SNAPSHOT)
    cases = [(name, extra, ()) for name, extra, _ in BAD_INPUTS]
    cases += [(name, extra, ("--tags", tag)) for name, extra, _, tag in TAGGED]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = dict(zip(
            [case[0] for case in cases],
            pool.map(lambda case: run_with(tmp, case[0], case[1], *case[2]), cases),
        ))
    after = host.check_output(SNAPSHOT)
    return runs, before, after


# Every case below is also a unit case (tests/unit/test_decisions.py); these run
# end to end, one of each kind: the contract, a rule across variables, the
# options guard, a value no route carries, and what only the host can say.
END_TO_END = {"unknown-key", "listen-not-int", "name-duplicate", "listen-above-somaxconn", "socket-port-range",
              "chmod-world-writable", "uid-root", "options-chmod-socket", "options-dict-value",
              "environment-newline", "user-missing", "socket-dir-not-writable", "socket-path-too-long",
              "socket-held-by-another-app", "unlisted-fail", "apps-not-list", "packages-apt-mode", "target-choice",
              "target-image-managing-sysctl"}
BAD_INPUTS = [case for case in BAD_INPUTS if case[0] in END_TO_END]


def test_every_end_to_end_case_is_known():
    assert len(BAD_INPUTS) == len(END_TO_END)


@pytest.mark.parametrize("case", BAD_INPUTS + [c[:3] for c in TAGGED], ids=[c[0] for c in BAD_INPUTS + TAGGED])
def test_bad_input_fails_with_a_message_that_says_what_to_change(bad_input_runs, case):
    name, _, words = case
    run = bad_input_runs[0][name]
    output = hc.said(run)
    assert run.returncode != 0, output[-2000:]
    for word in words:
        assert word in output, f"{name}: {word!r} missing from:\n{output[-2500:]}"
    # Refused before any task that touches the host.
    assert "Persist and apply the kernel's listen limits" not in output


def test_bad_inputs_changed_nothing_on_the_host(bad_input_runs):
    _, before, after = bad_input_runs
    assert before == after


def failing_task_output(run) -> str:
    """What the failing task printed: its part of stdout (its TASK line to the
    PLAY RECAP) and stderr, where display_failed_stderr (molecule's setting)
    sends the failure itself."""
    output = run.stdout
    recap = output.index("PLAY RECAP")
    return output[output.rindex("TASK [", 0, recap):recap] + run.stderr


def test_a_mistyped_app_key_fails_in_one_short_message_and_changes_nothing(host, tmp_path):
    """ansible-core's own check of a role prints the role's whole
    specification (16 kB for one typo); the role's own names the key."""
    before = host.check_output(SNAPSHOT)
    run = run_with(tmp_path, "listn", {"uwsgi_apps": apps_with(0, listn=300)})
    after = host.check_output(SNAPSHOT)
    assert run.returncode != 0
    printed = failing_task_output(run)
    assert len(printed) < 1000, printed
    assert f"uwsgi_apps[0] ({BASE_APPS[0]['name']}): unknown key 'listn'; did you mean 'listen'?" in printed, printed
    assert "argument_spec_data" not in run.stdout + run.stderr
    assert "Persist and apply the kernel's listen limits" not in run.stdout
    assert before == after


@pytest.mark.extended
def test_a_play_that_sets_uwsgi_app_instead_of_uwsgi_apps_is_warned(host, tmp_path):
    """No app listed is a warning naming uwsgi_apps, and the run goes on: the
    apps it no longer lists keep running (uwsgi_unlisted_apps: warn)."""
    play = yaml.safe_load(PLAYBOOK.read_text())
    play[0]["vars"]["uwsgi_app"] = play[0]["vars"].pop("uwsgi_apps")
    playbook = tmp_path / "uwsgi_app.yml"
    playbook.write_text(yaml.safe_dump(play))
    pids = {a["name"]: hc.supervisor_state(host, a["name"])[1] for a in APPS}
    try:
        run = hc.run_playbook(playbook)
        output = hc.said(run)
        assert run.returncode == 0, run.stdout[-3000:]
        assert "uwsgi_app is set, but the role has no variable of that name and ignores it; did you mean uwsgi_apps?" in output, output[-3000:]
        assert "uwsgi_apps lists no app, so this run configures none" in output, output[-3000:]
        assert {a["name"]: hc.supervisor_state(host, a["name"]) for a in APPS} == {
            name: ("RUNNING", pid) for name, pid in pids.items()}
    finally:
        restored = run_with(tmp_path, "restore-apps", {})
    assert restored.returncode == 0, restored.stdout[-3000:]
    for app in APPS:
        hc.check_running_as(host, app)


def test_read_only_proc_sys_stops_with_the_container_fix(host, tmp_path):
    before = host.check_output(SNAPSHOT)
    # A bind remount changes this mount point's flags only: a plain remount
    # reconfigures proc itself, which Debian 13's mount refuses while systemd
    # runs ("mount point is busy").
    host.check_output("mount -o remount,bind,ro /proc/sys")
    try:
        run = run_with(tmp_path, "ro", {})
        managed_elsewhere = run_with(tmp_path, "ro-elsewhere", {"uwsgi_manage_sysctl": False})
        too_low = run_with(tmp_path, "ro-low", {"uwsgi_manage_sysctl": False,
                                                "uwsgi_apps": apps_with(0, listen=8192)})
    finally:
        host.check_output("mount -o remount,bind,rw /proc/sys")
    assert run.returncode != 0
    assert "/proc/sys is read-only" in hc.said(run) and "--sysctl net.core.somaxconn=4096" in hc.said(run)
    assert managed_elsewhere.returncode == 0, managed_elsewhere.stdout[-2500:]
    assert too_low.returncode != 0 and "live net.core.somaxconn on " in hc.said(too_low) and "is 4096, below" in hc.said(too_low), hc.said(too_low)[-2500:]
    assert host.check_output(SNAPSHOT) == before


def test_later_sysctl_file_that_would_win_at_boot_is_reported(host, tmp_path):
    low = "/etc/sysctl.d/99-zz-low.conf"
    host.run_test(f"echo 'net.core.somaxconn = 1024' > {low}")
    try:
        before = host.check_output(SNAPSHOT)
        run = run_with(tmp_path, "override", {})
        after = host.check_output(SNAPSHOT)
    finally:
        host.run_test(f"rm -f {low}")
    assert run.returncode != 0
    assert f"{low} sets net.core.somaxconn = 1024" in hc.said(run), hc.said(run)[-2500:]
    assert before == after


@pytest.mark.extended
def test_a_tag_subset_that_changes_an_app_still_proves_it_and_rolls_it_back(host, tmp_path):
    """With the trial turned off, the proof and the rollback are the last line
    of defence, and a tag subset keeps them."""
    ini = f"/etc/uwsgi/supervisor/{TCP_APP['name']}.ini"
    ini_before = host.file(ini).sha256sum
    run = run_with(tmp_path, "broken-tagged", {"uwsgi_apps": apps_with(1, options={"no-such-option": "1"}),
                                               "uwsgi_trial": False}, "--tags", "uwsgi_apps")
    output = hc.said(run)
    assert run.returncode != 0
    assert f"app {TCP_APP['name']} failed the proof" in output, output[-3000:]
    assert "previous ini and program file were restored and it is RUNNING" in output, output[-3000:]
    # The log lines of the failed start, read before the restore, say why.
    assert "unknown config directive: no-such-option" in output, output[-3000:]
    assert host.file(ini).sha256sum == ini_before
    assert not host.run("ls /etc/uwsgi/supervisor/ /etc/supervisor/conf.d/ | grep '~$'").stdout.strip(), "backup files left"
    hc.check_running_as(host, TCP_APP)
    hc.check_backlog(host, TCP_APP)
    hc.check_request(host, TCP_APP, f"hello from {TCP_APP['name']}")


def test_broken_update_is_refused_by_its_trial_and_the_app_keeps_serving(host, tmp_path):
    """The same broken option under a tag subset, with the trial on (the
    default): refused before any file is written or any master touched."""
    ini = f"/etc/uwsgi/supervisor/{TCP_APP['name']}.ini"
    ini_before = host.file(ini).sha256sum
    pids = {a["name"]: hc.supervisor_state(host, a["name"])[1] for a in APPS}
    run = run_with(tmp_path, "broken", {"uwsgi_apps": apps_with(1, options={"no-such-option": "1"})},
                   "--tags", "uwsgi_apps")
    assert run.returncode != 0
    output = hc.said(run)
    assert f"app {TCP_APP['name']} (its ini changed) was tried aside" in output, output[-3000:]
    assert "unknown config directive: no-such-option" in output, output[-3000:]
    assert "Nothing was written and no app was touched" in output
    assert host.file(ini).sha256sum == ini_before
    assert not host.run("ls /etc/uwsgi/supervisor/ /etc/supervisor/conf.d/ | grep '~$'").stdout.strip(), "backup files left"
    assert {a["name"]: hc.supervisor_state(host, a["name"])[1] for a in APPS} == pids
    hc.check_request(host, TCP_APP, f"hello from {TCP_APP['name']}")


@pytest.mark.parametrize("trial", [True, pytest.param(False, marks=pytest.mark.extended)])
def test_new_app_that_never_starts_never_stays(host, tmp_path, trial):
    """Tried aside, it is refused before its files are written; without the
    trial, the proof fails it and its files are removed again."""
    apps = copy.deepcopy(BASE_APPS) + [{"name": "brokenapp", "module": "no_such_module:app",
                                        "chdir": "/srv/flaskapp", "listen": 512,
                                        "options": {"pythonpath": "/srv/lib"}}]
    pids = {a["name"]: hc.supervisor_state(host, a["name"])[1] for a in APPS}
    run = run_with(tmp_path, f"newbroken-{trial}", {"uwsgi_apps": apps, "uwsgi_trial": trial})
    assert run.returncode != 0
    output = hc.said(run)
    if trial:
        assert "app brokenapp (it is new) was tried aside" in output, output[-3000:]
        assert "No module named 'no_such_module'" in output, output[-3000:]
    else:
        assert "app brokenapp failed the proof" in output and "removed again" in output, output[-3000:]
    assert not host.file("/etc/supervisor/conf.d/brokenapp.conf").exists
    assert not host.file("/etc/uwsgi/supervisor/brokenapp.ini").exists
    assert not host.run("ls /var/log/supervisor/ | grep ^brokenapp").stdout, "a log of brokenapp left"
    assert "brokenapp" not in host.run("supervisorctl status").stdout
    for app in APPS:
        assert hc.supervisor_state(host, app["name"]) == ("RUNNING", pids[app["name"]])


def test_killed_master_comes_back_with_the_same_backlog(host):
    _, pid = hc.supervisor_state(host, UNIX_APP["name"])
    host.run_test(f"kill -9 {pid}")
    hc.wait_until_serving(host, APPS, timeout=60)
    _, new_pid = hc.supervisor_state(host, UNIX_APP["name"])
    assert new_pid != pid
    hc.check_backlog(host, UNIX_APP)
    hc.check_request(host, UNIX_APP, f"hello from {UNIX_APP['name']}")


@pytest.mark.extended
def test_absent_app_leaves_nothing_and_restarts_nothing_else(host, tmp_path):
    pid = hc.supervisor_state(host, UNIX_APP["name"])[1]
    supervisord = hc.supervisord_pid(host)
    try:
        run = run_with(tmp_path, "absent", {"uwsgi_apps": apps_with(1, state="absent")})
        assert run.returncode == 0, run.stdout[-3000:]
        assert not host.file(f"/etc/supervisor/conf.d/{TCP_APP['name']}.conf").exists
        assert not host.file(f"/etc/uwsgi/supervisor/{TCP_APP['name']}.ini").exists
        assert TCP_APP["name"] not in host.run("supervisorctl status").stdout
        assert not any(k.endswith(":" + TCP_APP["socket"].rsplit(":", 1)[1]) for k in hc.listen_backlogs(host))
        assert hc.supervisor_state(host, UNIX_APP["name"]) == ("RUNNING", pid)
        assert hc.supervisord_pid(host) == supervisord
        again = run_with(tmp_path, "absent-again", {"uwsgi_apps": apps_with(1, state="absent")})
        assert again.returncode == 0 and hc.recap_changed(again.stdout) == {host.backend.get_hostname(): 0}
    finally:
        restored = run_with(tmp_path, "restore", {})
    assert restored.returncode == 0, restored.stdout[-3000:]
    hc.check_running_as(host, TCP_APP)
    assert hc.supervisor_state(host, UNIX_APP["name"]) == ("RUNNING", pid)
