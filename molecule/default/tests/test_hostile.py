"""What a local app user (www-data, owner of an app's files) can no longer do
to the role, and what a failed or non-root run leaves: each against the
converged, serving host of the default scenario."""

import copy
import re
import time

import yaml

import pytest

import hostchecks as hc
from hostchecks import ok

PLAYBOOK = hc.PROJECT / "playbooks" / "site.yml"
BASE_APPS = yaml.safe_load(PLAYBOOK.read_text())[0]["vars"]["uwsgi_apps"]
APPS = hc.apps_from_playbook(PLAYBOOK)
UNIX_APP = next(a for a in APPS if a["socket"].startswith("/"))
U = UNIX_APP["name"]
LOCK = "/run/backlogops-uwsgi/lock"
AS_WWW = "setpriv --reuid=www-data --regid=www-data --init-groups --"
CONFIG = "/etc/uwsgi/supervisor"


def run_with(tmp_path, name, extra, *args):
    return hc.run_with(PLAYBOOK, tmp_path, name, extra, *args)


def changed_app(**changes):
    apps = copy.deepcopy(BASE_APPS)
    apps[0].update(changes)
    return {"uwsgi_apps": apps}


def lock_is_free(host):
    # A run that found nothing to change never made it.
    if not host.file(LOCK).exists:
        return
    assert host.file(LOCK).content_string.strip() == "{}"
    assert host.file(LOCK).user == "root" and host.file(LOCK).mode == 0o600


def test_a_lock_an_app_user_holds_in_run_lock_does_not_block_the_run(host, tmp_path):
    """www-data takes the old lock path in the world-writable /run/lock and holds
    an flock on it, and tries to make the role's own directory first."""
    host.check_output(f"{AS_WWW} sh -c 'echo {{}} > /run/lock/backlogops-uwsgi.lock'")
    host.check_output(f"{AS_WWW} sh -c 'nohup flock /run/lock/backlogops-uwsgi.lock sleep 600 >/dev/null 2>&1 &'")
    taken = host.run(f"{AS_WWW} mkdir /run/backlogops-uwsgi-x /run/backlogops-uwsgi/x")
    try:
        assert taken.rc != 0
        run = ok(run_with(tmp_path, "lock-held-by-www", {}))
        assert "another run of the role" not in hc.said(run)
        lock_is_free(host)
    finally:
        host.run("pkill -u www-data -f 'flock /run/lock/backlogops-uwsgi.lock'; rm -f /run/lock/backlogops-uwsgi.lock")


def test_a_run_stopped_by_a_full_disk_gives_the_lock_back_and_leaves_no_backup(host, tmp_path):
    """The ini directory fills up while a change is written (one inode left:
    preflight sees room, the write takes it): every file is put back, no
    backup stays, and the lock is free for any controller at once."""
    before = host.check_output(f"sha256sum {CONFIG}/*")
    host.check_output(f"mkdir -p /tmp/cfg && cp -a {CONFIG}/. /tmp/cfg/"
                      f" && mount -t tmpfs -o size=4m,nr_inodes=2000 tmpfs {CONFIG} && cp -a /tmp/cfg/. {CONFIG}/"
                      f" && {{ i=0; while [ $i -lt 3000 ] && touch {CONFIG}/.fill$i 2>/dev/null; do i=$((i+1)); done;"
                      f" rm {CONFIG}/.fill0; }}")
    try:
        run = run_with(tmp_path, "enospc", changed_app(listen=3000))
        said = hc.said(run)
        assert run.returncode != 0 and "No space left on device" in said, said[-2500:]
        assert "Every file this run had written was put back" in said, said[-2500:]
        lock_is_free(host)
        assert not host.run(f"ls -a {CONFIG} /etc/supervisor/conf.d | grep '~$'").stdout.strip()
        host.check_output(f"rm -f {CONFIG}/.fill*")
        assert host.check_output(f"sha256sum {CONFIG}/*") == before
    finally:
        host.run(f"umount {CONFIG}; rm -rf /tmp/cfg")
    hc.check_backlog(host, UNIX_APP)


def test_a_log_directory_an_app_user_owns_is_refused_before_any_change(host, tmp_path):
    host.check_output("install -d -o www-data -g www-data -m 0755 /srv/applogs")
    before = host.check_output(f"sha256sum /etc/supervisor/conf.d/* {CONFIG}/*")
    try:
        run = run_with(tmp_path, "app-log-dir", {"uwsgi_log_dir": "/srv/applogs"})
        said = hc.said(run)
        assert run.returncode != 0
        assert "uwsgi_log_dir /srv/applogs can be changed by someone other than root" in said, said[-2500:]
        assert host.check_output(f"sha256sum /etc/supervisor/conf.d/* {CONFIG}/*") == before
        lock_is_free(host)
    finally:
        host.run("rm -rf /srv/applogs")


def test_a_fifo_at_an_app_s_log_path_does_not_hang_the_run(host, tmp_path):
    log = hc.app_log(host, U)
    host.check_output(f"mv {log} {log}.kept && mkfifo {log}")
    try:
        run = ok(hc.run_playbook(PLAYBOOK, timeout=300))
        assert hc.recap_changed(run.stdout) == {host.backend.get_hostname(): 0}, run.stdout[-3000:]
    finally:
        host.run(f"rm -f {log} && mv {log}.kept {log}")


DAEMON_IMPORT = """\
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.closerange(3, 65536)
        time.sleep(600)
    os._exit(0)
from app import app  # noqa: E402
"""


@pytest.mark.extended
def test_a_trial_whose_import_starts_a_daemon_leaves_nothing_and_ends_with_the_import(host, tmp_path):
    host.check_output(f"cat > /srv/flaskapp/daemonapp.py <<'EOF'\n{DAEMON_IMPORT}EOF")
    try:
        run = ok(run_with(tmp_path, "daemon-import", changed_app(module="daemonapp:app")))
        said = hc.said(run)
        tried = re.search(rf"{U}: tried aside \([^)]*\): the app loaded in ([0-9.]+) s", said)
        # Its import takes no time: the trial ends with it, not at ready_timeout (60 s).
        assert tried and float(tried.group(1)) < 20, said[-2500:]
        assert not host.run("pgrep -af '[u]wsgi-trial'").stdout.strip()
    finally:
        ok(run_with(tmp_path, "daemon-import-back", {}))
        host.run("pkill -f 'uwsgi --ini /etc/uwsgi/supervisor' -u www-data --parent 1; rm -f /srv/flaskapp/daemonapp.py")
    hc.check_request(host, UNIX_APP, f"hello from {U}")


@pytest.mark.extended
def test_a_removed_uwsgi_binary_is_reinstalled_and_the_apps_restarted_onto_it(host, tmp_path):
    before = {app["name"]: hc.supervisor_state(host, app["name"])[1] for app in APPS}
    host.check_output("rm -f /usr/bin/uwsgi-core")
    run = ok(run_with(tmp_path, "binary-gone", {}))
    said = hc.said(run)
    assert "Reinstall the package whose uwsgi binary is gone (/usr/bin/uwsgi points to" in said, said[-2500:]
    assert host.file("/usr/bin/uwsgi-core").is_file
    hc.wait_until_serving(host, APPS)
    for app in APPS:
        state, pid = hc.supervisor_state(host, app["name"])
        assert state == "RUNNING" and pid != before[app["name"]], f"{app['name']}: {state} {pid}"
    again = ok(run_with(tmp_path, "binary-back", {}))
    assert hc.recap_changed(again.stdout) == {host.backend.get_hostname(): 0}, again.stdout[-3000:]


def test_a_run_without_become_says_so_and_writes_nothing(host, tmp_path):
    host.check_output("rm -rf /run/backlogops-uwsgi && touch /run/before-plain-user")
    run = hc.run_playbook(PLAYBOOK, "-e", "ansible_user=www-data", "-e", "ansible_become=false",
                          "-e", "ansible_remote_tmp=/tmp/.ansible-www")
    said = hc.said(run)
    assert run.returncode != 0
    # Not the preflight's explanation of a read-only /proc/sys (Ansible quotes the task's own lines too).
    assert "become: true" in said and "/proc/sys is read-only" not in said, said[-2500:]
    assert not host.file("/run/backlogops-uwsgi").exists
    assert not host.run("find /run /etc /var/log -user www-data ! -type s -newer /run/before-plain-user").stdout.strip()
    ok(run_with(tmp_path, "root-again", {}))
    lock_is_free(host)


def test_the_lock_waits_at_most_its_deadline(host, tmp_path):
    """A held flock on the role's own lock (only root can take it) is waited
    for until uwsgi_lock_wait, then named, by a run with something to change;
    a run that finds the host as it asks takes no lock and ends."""
    ok(run_with(tmp_path, "lock-made", changed_app(listen=3000)))
    host.check_output(f"nohup flock {LOCK} sleep 120 >/dev/null 2>&1 &")
    time.sleep(1)
    try:
        converged = ok(run_with(tmp_path, "lock-busy-converged", dict(changed_app(listen=3000), uwsgi_lock_wait=3)))
        assert hc.recap_changed(converged.stdout) == {host.backend.get_hostname(): 0}, converged.stdout[-3000:]
        assert "Take the host's lock" not in converged.stdout
        started = time.monotonic()
        run = run_with(tmp_path, "lock-busy", {"uwsgi_lock_wait": 3})
        assert run.returncode != 0 and "stayed busy for 3 s (uwsgi_lock_wait)" in hc.said(run), hc.said(run)[-2000:]
        assert time.monotonic() - started < 120
    finally:
        host.run(f"pkill -f 'flock {LOCK}'")
    ok(run_with(tmp_path, "lock-free-again", {}))
