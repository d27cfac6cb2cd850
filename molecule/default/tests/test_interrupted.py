"""A run killed or disturbed half-way costs the serving app nothing, and the
next run finishes the job: a dead run's command still running on the host,
a trial killed with its controller, a read-only /etc, a full log disk and a
held dpkg lock, each against the converged, serving host of the default
scenario."""

import copy
import json
import os
import socket
import subprocess
import time

import pytest
import yaml

import hostchecks as hc

PLAYBOOK = hc.PROJECT / "playbooks" / "site.yml"
BASE_APPS = yaml.safe_load(PLAYBOOK.read_text())[0]["vars"]["uwsgi_apps"]
APPS = hc.apps_from_playbook(PLAYBOOK)
UNIX_APP = next(a for a in APPS if a["socket"].startswith("/"))
PORTS = {UNIX_APP["name"]: 8081}
LOCK = "/run/backlogops-uwsgi/lock"
SNAPSHOT = ("find /etc/sysctl.d /etc/supervisor /etc/uwsgi /etc/tmpfiles.d -type f -exec sha256sum {} + | sort;"
            " supervisorctl status | awk '{print $1, $2, $4}'")

pytestmark = pytest.mark.extended


def run_with(tmp_path, name, extra, *args):
    return hc.run_with(PLAYBOOK, tmp_path, name, extra, *args)


def with_env(**env):
    apps = copy.deepcopy(BASE_APPS)
    apps[0]["environment"] = dict(apps[0].get("environment") or {}, **env)
    return {"uwsgi_apps": apps}


def marked(host, name, value=""):
    """PIDs of the host's processes whose environment sets `name` (to `value` when given)."""
    out = host.run(f"grep -lsa -- '{name}={value}' /proc/[0-9]*/environ").stdout
    return sorted(int(path.split("/")[2]) for path in out.split())


def start_run(path, **pipes):
    """The playbook run with extra vars from `path`, in the background (to be killed or waited for)."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_ROLES_PATH=hc.roles_path())
    return subprocess.Popen(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(PLAYBOOK),
                             "-e", f"@{path}"], env=env, **(pipes or {"stdout": subprocess.DEVNULL,
                                                                      "stderr": subprocess.DEVNULL}))


def kill_run(host, run):
    """Kill a background run on the controller and whatever it runs on the host (kill -9 both)."""
    run.kill()
    run.wait()
    for pid in marked(host, "BACKLOGOPS_UWSGI_RUN"):
        host.run(f"kill -9 {pid}")


def test_a_dead_runs_command_keeps_the_lock_until_it_ends(host, tmp_path):
    """The controller is gone, but a command its run started on the host (it
    carries the run's id) still runs: the lock is not taken from it."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    holder = {"controller": socket.gethostname(), "pid": dead.pid, "started": 1.0,
              "id": f"{socket.gethostname()}:{dead.pid}:1.0", "taken": time.time()}
    host.run_test(f"install -d -m 0700 /run/backlogops-uwsgi && printf '%s' '{json.dumps(holder)}' > {LOCK}"
                  f" && chmod 0600 {LOCK}")
    host.run_test(f"BACKLOGOPS_UWSGI_RUN='{holder['id']}' setsid -f sleep 600 >/dev/null 2>&1")
    try:
        waited = run_with(tmp_path, "held", {"uwsgi_lock_wait": 3})
        said = hc.said(waited)
        assert waited.returncode != 0, said[-3000:]
        assert "its commands still run on this host: PID" in said and "(sleep 600)" in said, said[-3000:]
    finally:
        host.run("pkill -f '^sleep 600$'")
    taken = hc.ok(run_with(tmp_path, "taken", {}))
    assert "the run that held it is dead" in hc.said(taken), hc.said(taken)[-3000:]


def test_a_trial_killed_with_its_run_leaves_nothing_the_next_run_keeps(host, tmp_path):
    """The controller and the module on the host are killed in the trial of
    a slow import: the trial's uWSGI and its copy of the environment stay
    behind until the next run, which removes them and converges. The app
    serves throughout."""
    extra = tmp_path / "slow.json"
    extra.write_text(json.dumps(with_env(IMPORT_SECONDS="30")))
    with hc.Load(host, "killed-trial", PORTS) as load:
        run = start_run(extra)
        try:
            for _ in range(300):
                if host.run("ls -d /run/uwsgi-trial.*").rc == 0 and marked(host, "BACKLOGOPS_UWSGI_TRIAL"):
                    break
                time.sleep(0.2)
            else:
                raise AssertionError("the trial never started")
        finally:
            kill_run(host, run)
        left = host.run("ls -d /run/uwsgi-trial.*").stdout.split()
        assert left and host.file(f"{left[0]}/env.ini").exists
        assert marked(host, "BACKLOGOPS_UWSGI_TRIAL"), "the killed trial's uWSGI is expected to outlive its run"
        again = hc.ok(run_with(tmp_path, "after-kill", {"uwsgi_apps": BASE_APPS}))
    load.check()
    assert f"removed what a killed run left: {left[0]}" in hc.said(again), hc.said(again)[-3000:]
    assert host.run("ls -d /run/uwsgi-trial.*").rc != 0
    assert not marked(host, "BACKLOGOPS_UWSGI_TRIAL")
    assert "the run that held it is dead" in hc.said(again)
    hc.check_request(host, UNIX_APP, f"hello from {UNIX_APP['name']}")


def test_a_read_only_etc_is_refused_before_anything_is_written(host, tmp_path):
    before = host.check_output(SNAPSHOT)
    host.run_test("mount --bind /etc/uwsgi/supervisor /etc/uwsgi/supervisor"
                  " && mount -o remount,ro,bind /etc/uwsgi/supervisor")
    try:
        run = run_with(tmp_path, "read-only", with_env(NEW_SETTING="1"))
    finally:
        host.run("umount /etc/uwsgi/supervisor")
    said = hc.said(run)
    assert run.returncode != 0
    assert ("the run writes to /etc/uwsgi/supervisor, but /etc/uwsgi/supervisor is on a read-only file system: "
            "make room or make it writable, and run again.") in said, said[-3000:]
    assert "Nothing was changed" in said
    assert host.check_output(SNAPSHOT) == before
    hc.ok(run_with(tmp_path, "writable", {"uwsgi_apps": BASE_APPS}))


def test_a_full_log_disk_is_named_before_a_change_not_blamed_on_the_app(host, tmp_path):
    log_dir = "/var/log/supervisor"
    before = host.check_output(SNAPSHOT)
    host.run_test(f"mkdir -p /srv/full && mount -t tmpfs -o size=4m,mode=0755 tmpfs /srv/full"
                  f" && (dd if=/dev/zero of=/srv/full/fill bs=64k 2>/dev/null; true)"
                  f" && mount --bind /srv/full {log_dir}")
    try:
        run = run_with(tmp_path, "full-log", with_env(NEW_SETTING="1"))
    finally:
        host.run(f"umount {log_dir}; umount /srv/full")
    said = hc.said(run)
    assert run.returncode != 0
    assert f"the run writes to {log_dir}, but the file system of {log_dir} is full (0 kB free" in said, said[-3000:]
    assert "rolled back" not in said and "failed the proof" not in said
    assert host.check_output(SNAPSHOT) == before
    hc.ok(run_with(tmp_path, "log-room", {"uwsgi_apps": BASE_APPS}))


def test_a_held_dpkg_lock_is_waited_for_on_a_first_install(host, tmp_path):
    """python3-apt is gone and logrotate is wanted: the run installs both
    while apt holds dpkg's lock elsewhere for 15 s, waiting for it."""
    host.run_test("apt-get remove --yes --quiet python3-apt >/dev/null")
    holder = ("import fcntl, time\n"
              "handles = [open(p, 'w') for p in ('/var/lib/dpkg/lock-frontend', '/var/lib/dpkg/lock')]\n"
              "[fcntl.lockf(h, fcntl.LOCK_EX) for h in handles]\n"
              "open('/srv/dpkg-held', 'w').close()\ntime.sleep(15)\n")
    host.run_test(f"rm -f /srv/dpkg-held; setsid -f python3 -c \"{holder}\" >/dev/null 2>&1")
    for _ in range(50):
        if host.file("/srv/dpkg-held").exists:
            break
        time.sleep(0.1)
    try:
        run = hc.ok(run_with(tmp_path, "dpkg-held", {"uwsgi_apps": BASE_APPS, "uwsgi_logrotate": True}))
        assert "Install python3-apt for apt's module, waiting for dpkg's lock" in run.stdout
        assert host.package("python3-apt").is_installed and host.package("logrotate").is_installed
    finally:
        hc.ok(run_with(tmp_path, "no-logrotate", {"uwsgi_apps": BASE_APPS}))


def restart_all_during(host, extra, ready, never, settle=0):
    """A run with `extra` in the background, and `supervisorctl restart all`
    once `ready()` holds (then `settle` seconds more): its return code and output."""
    run = start_run(extra, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(600):
            if ready():
                break
            time.sleep(0.1)
        else:
            raise AssertionError(never)
        time.sleep(settle)
        # It starts every program, the stopped instance too; some may not reach RUNNING: its rc is not the run's.
        host.run("supervisorctl restart all")
        out, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    return run.returncode, " ".join(out.split())


def test_a_restart_of_everything_during_a_switch_is_not_the_changes_fault(host, tmp_path):
    """An operator's `supervisorctl restart all` while the new instance
    loads: the run proves the restarted instance instead of rolling back a
    config that loads, and says what happened."""
    name = UNIX_APP["name"]
    status = hc.parsers.parse_supervisor_status(host.run("supervisorctl status").stdout)
    idle = status[name]["idle"]
    extra = tmp_path / "restart-all.json"
    extra.write_text(json.dumps(with_env(IMPORT_SECONDS="6")))
    returncode, said = restart_all_during(
        host, extra, lambda: host.run(f"supervisorctl status {idle}").stdout.split()[1:2] == ["RUNNING"],
        "the new instance never started")
    assert returncode == 0, said[-3000:]
    assert f"{idle} was restarted from outside this run" in said, said[-3000:]
    assert "restored" not in said and "rolled back" not in said
    assert "IMPORT_SECONDS" in host.file(f"/etc/uwsgi/supervisor/{name}.env.ini").content_string
    hc.ok(run_with(tmp_path, "after-restart-all", {"uwsgi_apps": BASE_APPS}))
    hc.check_request(host, UNIX_APP, f"hello from {name}")


GRACEFUL_APP = {"name": "oldway", "module": "app:app", "chdir": BASE_APPS[0]["chdir"], "socket": "/run/uwsgi/oldway.sock",
                "listen": 256, "apply_strategy": "graceful", "environment": {"APP_NAME": "oldway"}}


def test_a_restart_of_everything_during_a_graceful_reload_is_not_the_changes_fault(host, tmp_path):
    """1.x's way (apply_strategy: graceful): `supervisorctl restart all`
    while the app imports again in its graceful reload. The config loads,
    so it is kept: no rollback, and the app serves it."""
    hc.ok(run_with(tmp_path, "graceful-base", {"uwsgi_apps": BASE_APPS + [GRACEFUL_APP]}))
    try:
        changed = dict(GRACEFUL_APP, environment=dict(GRACEFUL_APP["environment"], IMPORT_SECONDS="6"))
        extra = tmp_path / "graceful-restart-all.json"
        extra.write_text(json.dumps({"uwsgi_apps": BASE_APPS + [changed]}))
        returncode, said = restart_all_during(
            host, extra, lambda: "IMPORT_SECONDS" in host.run("cat /etc/uwsgi/supervisor/oldway.env.ini 2>/dev/null").stdout,
            "the change was never written", settle=1)
        assert returncode == 0, said[-3000:]
        assert "restored" not in said and "rolled back" not in said, said[-3000:]
        assert "IMPORT_SECONDS" in host.file("/etc/uwsgi/supervisor/oldway.env.ini").content_string
        assert hc.supervisor_state(host, "oldway")[0] == "RUNNING"
    finally:
        hc.ok(run_with(tmp_path, "graceful-gone", {"uwsgi_apps": BASE_APPS + [{"name": "oldway", "state": "absent"}]}))


def test_a_removal_killed_half_way_is_finished_by_the_next_run(host, tmp_path):
    """Four apps with secrets in their environment are removed (unlisted,
    uwsgi_unlisted_apps: remove); the run is killed, on the controller and on
    the host, while Supervisor stops them. Their program files go last, so
    the next run still sees them and leaves no file of theirs behind."""
    extra = [dict(copy.deepcopy(BASE_APPS[0]), name=f"gone{n}", socket=f"/run/uwsgi/gone{n}.sock", listen=128,
                  environment={"APP_NAME": f"gone{n}", "SECRET": f"s3cret-{n}"}) for n in range(4)]
    hc.ok(run_with(tmp_path, "four-more", {"uwsgi_apps": BASE_APPS + extra}))
    leftovers = ("ls /etc/uwsgi/supervisor /etc/supervisor/conf.d /var/log/supervisor /run/uwsgi"
                 " /var/lib/uwsgi-zerg | grep -c '^gone' || true")
    assert int(host.check_output(leftovers)) > 0
    removing = tmp_path / "removing.json"
    removing.write_text(json.dumps({"uwsgi_apps": BASE_APPS, "uwsgi_unlisted_apps": "remove"}))
    # A request in flight keeps gone0 stopping (its workers finish first): the run is killed inside the stop.
    host.run_test("setsid uwsgiprobe request /run/uwsgi/gone0.sock '/slow?t=8' >/dev/null 2>&1 < /dev/null &")
    with hc.Load(host, "killed-removal", PORTS) as load:
        run = start_run(removing)
        try:
            for _ in range(1200):
                if host.run("pgrep -f '[s]upervisorctl stop gone'").rc == 0:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the removal never stopped the apps")
        finally:
            kill_run(host, run)
        again = hc.ok(run_with(tmp_path, "removal-again", {"uwsgi_apps": BASE_APPS, "uwsgi_unlisted_apps": "remove"}))
    load.check()
    assert "the run that held it is dead" in hc.said(again)
    assert int(host.check_output(leftovers)) == 0, host.check_output(leftovers.replace(" | grep -c", " | grep"))
    assert "gone" not in host.run("supervisorctl status").stdout
    assert not host.run("grep -rls s3cret- /etc /var/log/supervisor /run").stdout.strip()


def test_a_switch_killed_while_the_new_instance_loads_is_finished_by_the_next_run(host, tmp_path):
    """The controller and the switch on the host are killed while the new
    instance imports: the serving instance goes on, and the next run finds
    two instances, keeps the one that served and starts the change again."""
    name = UNIX_APP["name"]
    idle = hc.parsers.parse_supervisor_status(host.run("supervisorctl status").stdout)[name]["idle"]
    extra = tmp_path / "killed-switch.json"
    extra.write_text(json.dumps(with_env(IMPORT_SECONDS="6", RELEASE="killed-switch")))
    with hc.Load(host, "killed-switch", PORTS) as load:
        run = start_run(extra)
        try:
            for _ in range(600):
                if host.run(f"supervisorctl status {idle}").stdout.split()[1:2] == ["RUNNING"]:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("the new instance never started")
        finally:
            kill_run(host, run)
        again = hc.ok(run_with(tmp_path, "after-killed-switch", with_env(IMPORT_SECONDS="6", RELEASE="killed-switch")))
    load.check()
    said = hc.said(again)
    assert "the run that held it is dead" in said, said[-3000:]
    running = [line for line in host.run("supervisorctl status").stdout.splitlines()
               if line.startswith(f"{name}.") and " RUNNING " in line and not line.startswith(f"{name}.socket")]
    assert len(running) == 1, running
    assert "killed-switch" in host.run(f"uwsgiprobe request {UNIX_APP['socket']} '/env?k=RELEASE'").stdout
    hc.ok(run_with(tmp_path, "after-killed-switch-back", {"uwsgi_apps": BASE_APPS}))
