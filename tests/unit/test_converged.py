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
    ("look", {"failed": False, "msg": "chgrp failed: failed to look up group uwsgi-sampler"},
     "could not compare (chgrp failed"),
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


def test_one_call_decides_the_plan_the_kernel_limits_the_needs_and_the_refusals():
    """Each decision feeds the next within the call: a host whose live
    somaxconn is 128 and which lacks uwsgi-core."""
    from test_decisions import SETTINGS, apps, probe as host_probe

    seen = host_probe(packages={"supervisor": True, "uwsgi-core": False}, service={"active": True, "enabled": True},
                      backups=[], config_dir_files=["flaskapp.ini"], proc_sys_writable=True,
                      sysctl_live={"net.core.somaxconn": 128, "net.ipv4.tcp_max_syn_backlog": 4096},
                      sysctl_settings=[{"path": "/etc/sysctl.d/60-uwsgi-backlog.conf",
                                        "key": "net.ipv4.tcp_max_syn_backlog", "value": "4096"}])
    sysctls = {"net.core.somaxconn": 4096, "net.ipv4.tcp_max_syn_backlog": 4096}
    ctx = {"settings": SETTINGS, "sysctls": sysctls, "sysctl_file": "/etc/sysctl.d/60-uwsgi-backlog.conf",
           "explicit_sysctls": [], "allow_lower": False, "pip_version": "2.0.28",
           "needs": {"packages": ["supervisor", "uwsgi-core"], "target": "host", "sampler": True,
                     "sampler_program": "uwsgi-sampler", "binary_package": "uwsgi-core", "install_packages": True},
           "preflight": {"host": "web1", "target": "host", "install_packages": True, "log_dir": "/var/log/supervisor",
                         "manage_sysctl": True, "somaxconn": 4096, "listen_max": 4096,
                         "sysctl_file": "/etc/sysctl.d/60-uwsgi-backlog.conf", "sysctls": sysctls}}
    decided = f.uwsgi_decisions(f.uwsgi_public(apps()), seen, ctx)
    assert decided["sysctl_targets"]["pending"] == ["net.core.somaxconn"]
    assert decided["needs"]["missing_packages"] == ["uwsgi-core"] and decided["needs"]["install"]
    assert decided["needs"]["remove"] is False
    assert decided["venv_plan"] == {"build": [], "deps": [], "homes": {}, "stale": []}
    assert decided["plan"]["errors"] == [] and decided["errors"] == []
