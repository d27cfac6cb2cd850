"""The host's lock module (library/uwsgi_lock.py), run in this process as
root against a lock in a temporary directory: who may have made it, how long
it waits, and what a non-root run leaves."""

import fcntl
import json
import subprocess
import os
import time

import pytest
from ansible.module_utils.testing import patch_module_args

from conftest import ROOT, load, uwsgi_host as h

lock = load("uwsgi_lock_module", "library/uwsgi_lock.py")
ME = {"controller": "ctl-b", "pid": 200, "started": 1003.0, "id": "ctl-b:200:1003.0"}
OTHER = {"controller": "ctl-a", "pid": 100, "started": 1000.0, "id": "ctl-a:100:1000.0"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lock is root's: these cases run as root")


def run_module(capsys, **args):
    with patch_module_args(args), pytest.raises(SystemExit):
        lock.main()
    return json.loads(capsys.readouterr().out)


def test_the_lock_lives_in_a_directory_it_makes_root_s_alone(tmp_path, capsys):
    path = tmp_path / "backlogops-uwsgi" / "lock"
    result = run_module(capsys, path=str(path), holder=ME, wait=0)
    assert not result.get("failed") and result["changed"]
    assert oct(os.stat(path.parent).st_mode & 0o777) == "0o700" and os.stat(path).st_uid == 0
    assert json.loads(path.read_text())["id"] == ME["id"]


def test_a_lock_directory_an_app_user_owns_is_never_trusted(tmp_path, capsys):
    directory = tmp_path / "backlogops-uwsgi"
    directory.mkdir(mode=0o755)
    os.chown(directory, 33, 33)
    result = run_module(capsys, path=str(directory / "lock"), holder=ME, wait=0)
    assert result["failed"] and "is not root's alone" in result["msg"] and "33" in result["msg"]
    assert not (directory / "lock").exists()


def test_a_lock_file_an_app_user_made_is_never_trusted(tmp_path, capsys):
    directory = tmp_path / "backlogops-uwsgi"
    directory.mkdir(mode=0o700)
    (directory / "lock").write_text(json.dumps(dict(OTHER, taken=time.time() + 86400)))
    os.chown(directory / "lock", 33, 33)
    result = run_module(capsys, path=str(directory / "lock"), holder=ME, wait=0)
    assert result["failed"] and "is not root's alone" in result["msg"]


def test_a_symlink_at_the_lock_s_path_is_not_followed(tmp_path, capsys):
    directory = tmp_path / "backlogops-uwsgi"
    directory.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (directory / "lock").symlink_to(target)
    result = run_module(capsys, path=str(directory / "lock"), holder=ME, wait=0)
    assert result["failed"] and target.read_text() == "keep"


def test_a_flock_held_elsewhere_is_waited_for_only_until_the_deadline(tmp_path, capsys):
    path = tmp_path / "backlogops-uwsgi" / "lock"
    run_module(capsys, path=str(path), holder=ME, state="released")
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        started = time.monotonic()
        result = run_module(capsys, path=str(path), holder=ME, wait=2)
        assert result["failed"] and "stayed busy for 2 s" in result["msg"]
        assert time.monotonic() - started < 10
    finally:
        os.close(fd)


def test_a_holder_dated_in_the_future_is_taken_over(tmp_path, capsys):
    path = tmp_path / "backlogops-uwsgi" / "lock"
    run_module(capsys, path=str(path), holder=OTHER, wait=0)
    path.write_text(json.dumps(dict(OTHER, taken=time.time() + 86400)))
    result = run_module(capsys, path=str(path), holder=ME, wait=0)
    assert not result.get("failed") and "lies in the future" in result["taken_over"]


def test_a_live_holder_of_this_boot_is_waited_for_and_named(tmp_path, capsys):
    path = tmp_path / "backlogops-uwsgi" / "lock"
    run_module(capsys, path=str(path), holder=OTHER, wait=0)
    result = run_module(capsys, path=str(path), holder=ME, wait=1)
    assert result["failed"] and "ansible-playbook PID 100 on ctl-a" in result["msg"]


def test_a_run_that_is_not_root_says_become_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(lock.os, "geteuid", lambda: 1000)
    path = tmp_path / "backlogops-uwsgi" / "lock"
    result = run_module(capsys, path=str(path), holder=ME, wait=0)
    assert result["failed"] and "become: true" in result["msg"] and "uid 1000" in result["msg"]
    assert not path.parent.exists()


def test_the_age_of_a_holder_counts_on_the_boot_clock():
    clock = {"boot_id": "b1", "uptime": 5000.0}
    holder = dict(OTHER, taken=1001.0, boot_id="b1", uptime=4000.0)
    # The wall clock stepped a day back: the boot clock still says 1000 s.
    assert not h.lock_decision(holder, ME, 1001.0 - 86400, 7200, clock=clock)["take"]
    assert h.lock_decision(holder, ME, 0, 900, clock=clock)["take"]
    before_boot = h.lock_decision(dict(holder, boot_id="b0"), ME, 0, 7200, clock=clock)
    assert before_boot["take"] and "before the host's last boot" in before_boot["why"]


def test_the_module_file_is_found_where_the_role_ships_it():
    assert (ROOT / "library" / "uwsgi_lock.py").is_file()


def started(argv, env, **kwargs):
    """A process that has exec'd `argv` (its /proc environ is its own from then on)."""
    proc = subprocess.Popen(argv, env=env, **kwargs)
    for _ in range(200):
        with open("/proc/%d/cmdline" % proc.pid, "rb") as handle:
            if handle.read().split(b"\0")[0] == argv[0].encode():
                return proc
        time.sleep(0.01)
    return proc


def test_a_dead_run_whose_commands_still_run_keeps_its_lock_until_they_end(tmp_path, capsys):
    """Its controller is gone, but a command it started on the host (it
    carries the run's id) goes on changing the host: the lock waits for it."""
    path = tmp_path / "backlogops-uwsgi" / "lock"
    run_module(capsys, path=str(path), holder=OTHER, wait=0)
    command = started(["sleep", "30"], {lock.RUN_MARKER: OTHER["id"], "PATH": os.environ["PATH"]})
    try:
        assert [p["pid"] for p in lock.run_processes(OTHER["id"])] == [command.pid]
        result = run_module(capsys, path=str(path), holder=ME, wait=1, stale=OTHER["id"])
        assert result["failed"] and "its commands still run on this host: PID %d (sleep 30)" % command.pid in result["msg"]
    finally:
        command.kill()
        command.wait()
    result = run_module(capsys, path=str(path), holder=ME, wait=0, stale=OTHER["id"])
    assert not result.get("failed") and "the run that held it is dead" in result["taken_over"]


def test_another_runs_marker_or_none_is_not_the_holders():
    command = started(["sleep", "30"], {lock.RUN_MARKER: OTHER["id"] + "9", "PATH": os.environ["PATH"]})
    try:
        assert lock.run_processes(OTHER["id"]) == []
    finally:
        command.kill()
        command.wait()
    working = [{"pid": 7, "command": "supervisorctl update p00"}]
    assert not h.lock_decision(OTHER, ME, 0, 7200, stale_id=OTHER["id"], working=working)["take"]
    assert h.lock_decision(OTHER, ME, 0, 7200, stale_id=OTHER["id"], working=[])["take"]
