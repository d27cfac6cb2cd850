"""A converged host takes no lock: the probe's look at the lock, and the
reasons (filter uwsgi_unsettled) that send a run through the locked path."""

import json
import os

import pytest

from conftest import filters as f, load

probe = load("uwsgi_probe_module", "library/uwsgi_probe.py")

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="the lock is root's own file: these cases run as root")

SETTLED = {"lock": {"holder": {}, "moved": False}, "needs": {"install": False, "remove": False},
           "sysctl_pending": [], "look": {"changed_files": [], "trials": []},
           "apply": {"load": [], "start": [], "restart": [], "listen": [], "reload": [], "chain": [], "switch": [],
                     "handover": [], "why": []},
           "sampler_action": "", "leftovers": False, "cleanup": False, "sampler_user_missing": False,
           "logrotate_gone": False, "verdicts": [{"name": "a", "ok": True}], "record_changed": False}


def test_a_host_as_the_play_says_needs_nothing():
    assert f.uwsgi_unsettled(SETTLED) == []


@pytest.mark.parametrize("key, value, why", [
    ("lock", {"holder": {"id": "ctl:1:2.0"}, "moved": False}, "another run holds the host's lock"),
    ("lock", {"holder": {}, "moved": True}, "took or gave back the host's lock"),
    ("needs", {"install": True, "remove": False}, "to install or start"),
    ("needs", {"install": False, "remove": True}, "something to remove"),
    ("sysctl_pending", ["net.core.somaxconn"], "kernel listen limits"),
    ("look", {"changed_files": ["/etc/uwsgi/supervisor/a.ini"], "trials": []}, "files to write"),
    ("look", {"changed_files": [], "trials": [{"name": "a", "ok": None}]}, "apps to try aside"),
    ("apply", dict(SETTLED["apply"], chain=["a"]), "apps to start, reload or restart"),
    ("apply", dict(SETTLED["apply"], listen=["a"]), "apps to start, reload or restart"),
    ("sampler_action", "restart", "sampler to start"),
    ("leftovers", True, "a killed run's trials"),
    ("cleanup", True, "sockets or directories"),
    ("sampler_user_missing", True, "the sampler's user"),
    ("logrotate_gone", True, "the logrotate file"),
    ("verdicts", [{"name": "a", "ok": False}], "fails its proof"),
    ("record_changed", True, "the applied record"),
])
def test_each_difference_sends_the_run_through_the_lock(key, value, why):
    reasons = f.uwsgi_unsettled(dict(SETTLED, **{key: value}))
    assert len(reasons) == 1 and why in reasons[0], reasons


@AS_ROOT
def test_the_probe_reads_a_free_a_held_and_a_missing_lock(tmp_path):
    path = tmp_path / "lock"
    assert probe.lock_look(str(path)) == ({}, None)
    path.write_text("{}\n")
    os.chmod(path, 0o600)
    holder, stamp = probe.lock_look(str(path))
    assert holder == {} and stamp is not None
    path.write_text(json.dumps({"id": "ctl:1:2.0"}))
    assert probe.lock_look(str(path))[0] == {"id": "ctl:1:2.0"}


@AS_ROOT
def test_a_lock_that_is_not_root_s_own_file_counts_as_held(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("{}")
    link = tmp_path / "lock"
    link.symlink_to(target)
    assert probe.lock_look(str(link))[0]["id"] == "not root's own file"
    link.unlink()
    link.write_text("{}")
    os.chmod(link, 0o666)
    assert probe.lock_look(str(link))[0]["id"] == "not root's own file"
    os.mkfifo(tmp_path / "fifo")
    assert probe.lock_look(str(tmp_path / "fifo"))[0]["id"] == "not root's own file"


@AS_ROOT
def test_a_lock_that_is_not_json_counts_as_held(tmp_path):
    path = tmp_path / "lock"
    path.write_text("garbage")
    os.chmod(path, 0o600)
    assert probe.lock_look(str(path))[0]["id"] == "unreadable"
