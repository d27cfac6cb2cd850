"""The look on the probe's fingerprints: what the probe says of each file the
role writes, and when that is enough to know nothing would change."""

import os

import pytest

from conftest import filters as f
from conftest import uwsgi_host as h
from test_decisions import SETTINGS, apps, probe
from test_file_plan import PATHS, SAMPLER

KEY = "k3y"
ALL_PATHS = dict(PATHS, zerg_dir="/var/lib/uwsgi-zerg", logrotate="/etc/logrotate.d/backlogops-uwsgi")


def plan_of(logrotate=True, sampler=True, beside=False):
    full = [dict(a, beside=beside) for a in apps()]
    present = [a for a in f.uwsgi_public(full) if a["state"] == "present"]
    sampler_ = dict(SAMPLER, record="/etc/uwsgi/supervisor/.textfile-dir.json") if sampler else None
    return present, f.uwsgi_file_plan(present, f.uwsgi_host_plan(present, probe(), SETTINGS), ALL_PATHS, full,
                                      sampler_, logrotate)


@pytest.mark.parametrize("beside", [False, True])
def test_the_probe_fingerprints_every_path_the_file_plan_names(beside):
    present, plan = plan_of(beside=beside)
    planned = {entry["path"] for kind in plan.values() for entry in kind}
    paths = f.uwsgi_file_paths(present, ALL_PATHS, [SAMPLER["textfile_dir"], "/etc/uwsgi/supervisor/.textfile-dir.json"])
    assert planned <= set(paths), planned - set(paths)


def seen_as_written(plan, contents):
    """Fingerprints of a host where every file and directory is as the plan says."""
    seen = {}
    for spec in plan["dirs"]:
        mode = 0o775 if spec.get("mode") == "g+rwx" else int(spec["mode"], 8)
        seen[spec["path"]] = {"kind": "dir", "owner": spec.get("owner", "prometheus"), "group": spec.get("group", "root"),
                              "uid": 0, "gid": 0, "mode": mode}
    for spec, content in contents:
        seen[spec["path"]] = {"kind": "file", "owner": spec["owner"], "group": spec["group"], "uid": 0, "gid": 0,
                              "mode": int(spec["mode"], 8), "digest": h.digest(KEY, content)}
    return seen


def files_of(plan):
    return [(spec, ("content of %s" % spec["path"]).encode()) for kind in ("templates", "copies", "contents")
            for spec in plan[kind]]


def as_written(plan, files, seen):
    return f.files_as_written(plan["dirs"], files, seen, lambda data: h.digest(KEY, data))


def test_a_host_as_the_plan_says_needs_no_module_run():
    _, plan = plan_of()
    files = files_of(plan)
    assert as_written(plan, files, seen_as_written(plan, files))


@pytest.mark.parametrize("change", [
    "content", "mode", "owner", "group", "a symlink", "missing", "no fingerprint", "dir mode", "dir gone",
    "g+rwx lost", "too large"])
def test_anything_else_goes_to_the_module(change):
    _, plan = plan_of()
    files = files_of(plan)
    seen = seen_as_written(plan, files)
    env = next(spec["path"] for spec, _ in files if spec["path"].endswith(".env.ini"))
    textfile = SAMPLER["textfile_dir"]
    socket_dir = next(d["path"] for d in plan["dirs"] if d.get("mode") == "1775")
    edits = {
        "content": lambda: seen[env].update(digest=h.digest(KEY, b"TOKEN=guessed")),
        "mode": lambda: seen[env].update(mode=0o644),
        "owner": lambda: seen[env].update(owner="mallory", uid=1001),
        "group": lambda: seen[env].update(group="www-data", gid=33),
        "a symlink": lambda: seen[env].update(kind="other"),
        "missing": lambda: seen[env].update(kind=None),
        "no fingerprint": lambda: seen.pop(env),
        "dir mode": lambda: seen[socket_dir].update(mode=0o777),
        "dir gone": lambda: seen.pop(socket_dir),
        "g+rwx lost": lambda: seen[textfile].update(mode=0o755),
        "too large": lambda: seen[env].update(digest=None),
    }
    edits[change]()
    assert not as_written(plan, files, seen)


def test_a_mode_the_look_cannot_judge_goes_to_the_module():
    spec = {"path": "/x", "mode": "u=rw,g-w"}
    assert not f.files_as_written([spec], [], {"/x": {"kind": "dir", "mode": 0o640}}, None)


def test_a_fingerprint_reads_the_file_as_the_role_reads_it(tmp_path):
    regular = tmp_path / "app.env.ini"
    regular.write_bytes(b"[uwsgi]\nenv = TOKEN=1\n")
    os.chmod(regular, 0o400)
    (tmp_path / "link").symlink_to(regular)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"x" * 31)
    seen = {name: h.fingerprint(str(tmp_path / name), KEY, 30) for name in ("app.env.ini", "link", "fifo", "big", "gone")}
    assert seen["app.env.ini"]["kind"] == "file" and seen["app.env.ini"]["mode"] == 0o400
    assert seen["app.env.ini"]["digest"] == h.digest(KEY, b"[uwsgi]\nenv = TOKEN=1\n") != h.digest("other", b"[uwsgi]\nenv = TOKEN=1\n")
    assert seen["link"]["kind"] == "other" and seen["fifo"]["kind"] == "other"
    assert seen["big"]["kind"] == "file" and seen["big"]["digest"] is None
    assert seen["gone"] == {"kind": None}
    assert h.fingerprint(str(tmp_path), KEY, 30)["kind"] == "dir"
