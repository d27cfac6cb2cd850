"""The preflight refuses a directory the run writes to when it is read-only,
full or not writable (library/uwsgi_probe.py write_problem), before
anything is written."""

import collections
import os

from conftest import filters as f, load

probe = load("uwsgi_probe_module", "library/uwsgi_probe.py")
Statvfs = collections.namedtuple("Statvfs", "f_flag f_bavail f_frsize f_favail")
CTX = {"host": "web-1", "manage_sysctl": False, "target": "image"}


def test_a_writable_directory_or_one_still_to_be_made_in_it_is_fine(tmp_path):
    assert probe.write_problem(str(tmp_path)) is None
    assert probe.write_problem(str(tmp_path / "etc" / "uwsgi" / "supervisor")) is None


def test_a_read_only_file_system_is_named_by_the_directory_that_holds_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(probe.os, "statvfs", lambda path: Statvfs(os.ST_RDONLY, 10 ** 6, 4096, 1000))
    assert probe.write_problem(str(tmp_path / "supervisor")) == "%s is on a read-only file system" % tmp_path


def test_a_full_file_system_says_how_full(tmp_path, monkeypatch):
    monkeypatch.setattr(probe.os, "statvfs", lambda path: Statvfs(0, 3, 4096, 1000))
    assert probe.write_problem(str(tmp_path)) == "the file system of %s is full (12 kB free, 1000 inodes)" % tmp_path
    monkeypatch.setattr(probe.os, "statvfs", lambda path: Statvfs(0, 10 ** 6, 4096, 0))
    assert "is full" in probe.write_problem(str(tmp_path))


def test_each_problem_is_a_refusal_that_says_what_to_do():
    found = f.uwsgi_preflight_errors({"errors": []}, {"proc_sys_writable": True, "sysctl_settings": [], "write_problems": {
        "/etc/uwsgi/supervisor": "/etc is on a read-only file system"}}, CTX)
    assert found == ["the run writes to /etc/uwsgi/supervisor, but /etc is on a read-only file system: make room or "
                     "make it writable, and run again."]
