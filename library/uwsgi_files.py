#!/usr/bin/python
"""Write every file the role renders, in one module run: directories first,
then each file atomically (a temporary file in the same directory, renamed over
the old one), with a backup of what it replaces."""

from __future__ import annotations

DOCUMENTATION = r"""
module: uwsgi_files
short_description: Write the backlogops.uwsgi role's rendered files in one run
description:
  - Ensures O(dirs) exist with their owner, group and mode, then writes each of O(files) and
    O(secret_files) whose content, owner, group or mode differs. A file is replaced
    atomically (a temporary file in its directory is renamed over it), after a backup of the
    old one when O(files[].backup) is set.
  - >-
    Before anything is written, each app of O(trials) whose ini, environment or program would
    change (or that names a O(trials[].force) reason) is started aside with its new files: its
    own binary, user and group, on a private socket, until uWSGI has loaded the app or gave up.
    When a trial fails, the module fails naming the app and uWSGI's own lines, and writes
    nothing.
  - Supports check mode and diff mode (no trial runs in check mode). O(secret_files) are never
    shown, in diffs or logs.
  - >-
    With O(write=false) it tries, and reports in C(changed_files) what would change, writing
    nothing (changed is false): the role tries every host of a batch before any of them writes,
    so that a host refused by its trial stops the batch before the others are touched.
options:
  write:
    type: bool
    default: true
    description: Write the files (false - try the apps and report what would change).
  dirs:
    type: list
    elements: dict
    default: []
    description: Directories (path, owner, group, mode) to create or correct, in order.
  files:
    type: list
    elements: dict
    default: []
    description: Files (path, content, owner, group, mode, backup) to write.
  secret_files:
    type: list
    elements: dict
    default: []
    description: Like O(files), for content that must never be shown; their content is O(secret_contents).
  secret_contents:
    type: list
    elements: str
    default: []
    description: The content of each of O(secret_files), in order; never logged or shown.
  trials:
    type: list
    elements: dict
    default: []
    description:
      - >-
        Apps to try aside before their files are written (name, ini, env, program: the paths of
        its files among O(files) and O(secret_files); binary, uid, gid, setpriv, timeout; force:
        a reason to try it even when its files do not change; chdir and module, to name them in a
        failure; home, a virtualenv to import the app from instead of its own; check_path, a path
        the loaded trial must answer 2xx or 3xx on its private socket).
author: backlogops
"""

RETURN = r"""
changed_files:
  description: Paths whose content or attributes changed (or would, in check mode).
  returned: always
  type: list
backups:
  description: Each replaced file's backup (path to backup), kept until the change is proven.
  returned: always
  type: dict
trials:
  description: Each app tried aside (name, ok, why, seconds, lines), in check mode each that would be.
  returned: always
  type: list
swept:
  description: The trial directories a killed run left, removed with what their trials still ran.
  returned: when not in check mode
  type: list
"""

import grp
import hashlib
import os
import pwd
import shutil
import signal
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes

# Ansible packs the role's module_utils with this module. A linter that loads
# the file by itself (ansible-lint's argument check) finds them beside it.
try:
    import ansible.module_utils.uwsgi_host  # noqa: F401 pylint: disable=unused-import
except ImportError:  # pragma: no cover - outside Ansible's module packaging
    import ansible.module_utils

    ansible.module_utils.__path__.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))

from ansible.module_utils.uwsgi_host import FILE_LIMIT, NOT_REGULAR, as_user, check_request, marked_processes, read_untrusted
from ansible.module_utils.uwsgi_trial import TRIAL_MARKER, run_all, trial_ini, verdict


# A trial's environment when the app has none written: as the role writes it
# for an app without environment (templates/etc/uwsgi/app.env.ini.j2), with an
# option in its section, since uWSGI warns about a section that sets nothing.
EMPTY_ENV = b"[uwsgi]\nset-placeholder = uwsgi_role_empty=\n"


# Trials run in a directory of their own under /run (only root writes there).
RUN_DIR = "/run"
TRIAL_PREFIX = "uwsgi-trial."


def sweep_dead_trials(run_dir=RUN_DIR):
    """What a killed run's trials left: their directories (each holds a copy
    of an app's environment) and whatever they still run. A run sweeps only
    while it holds the host's lock, and its own trials are gone by the time
    it writes: any found are a dead run's. The paths removed. (Its backups
    go in remove.yml, from the probe's list.)"""
    swept = []
    for name in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []:
        path = os.path.join(run_dir, name)
        if not name.startswith(TRIAL_PREFIX):
            continue
        for process in marked_processes(TRIAL_MARKER, path):
            try:
                os.kill(process["pid"], signal.SIGKILL)
            except OSError:
                pass
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)  # fd-based: never follows a link inside
        else:
            os.unlink(path)
        swept.append(path)
    return swept


def read_bytes(path):
    """A file's content, None when it does not exist (NOT_REGULAR for a
    symlink, a FIFO, a device or a file above FILE_LIMIT)."""
    return read_untrusted(path, FILE_LIMIT)


def attrs(module, spec, path):
    return module.load_file_common_arguments(
        {"path": path, "owner": spec.get("owner"), "group": spec.get("group"), "mode": spec.get("mode")})


def ensure_dir(module, spec, result):
    path = spec["path"]
    diff = {"before": {"path": path}, "after": {"path": path}}
    changed = False
    if not os.path.isdir(path):
        changed = True
        diff["before"]["state"], diff["after"]["state"] = "absent", "directory"
        if not module.check_mode:
            os.makedirs(path)
    if os.path.isdir(path):
        changed = module.set_fs_attributes_if_different(attrs(module, spec, path), changed, diff)
    if changed:
        result["changed_files"].append(path)
        result["diff"].append(diff)


def summarised(data):
    """A file's content as a diff names it: its sha256 and size."""
    return "sha256 %s, %d bytes\n" % (hashlib.sha256(data).hexdigest(), len(data))


def write_file(module, spec, secret, result):
    path = spec["path"]
    content = to_bytes(spec["content"])
    before = read_bytes(path)
    if before != content:
        # The role's helper scripts (summary) are named by their checksum, not shown line by line.
        show = summarised if spec.get("summary") else (lambda data: data.decode("utf-8", "replace"))
        diff = {"before_header": path, "after_header": path,
                "before": "" if before is None else "(not a regular file within bounds)\n" if before == NOT_REGULAR
                else show(before), "after": show(content)}
        if not module.check_mode:
            if before not in (None, NOT_REGULAR) and spec.get("backup"):
                result["backups"][path] = backup(path)
            try:
                replace(module, spec, path, content)
            except OSError:
                # The file was not replaced: its fresh backup would only be left behind.
                if path in result["backups"]:
                    os.unlink(result["backups"].pop(path))
                raise
            result["undo"].append((path, result["backups"].get(path), before is None))
    else:
        diff = {"before": {"path": path}, "after": {"path": path}}
        if not module.set_fs_attributes_if_different(attrs(module, spec, path), False, diff):
            return
    result["changed_files"].append(path)
    if not secret:
        result["diff"].append(diff)


def backup(path):
    """A copy of `path` beside it (named as Ansible's backups are); a copy
    that fails half-way is removed before the error goes on."""
    dest = "%s.%s.%s" % (path, os.getpid(), time.strftime("%Y-%m-%d@%H:%M:%S~"))
    try:
        shutil.copy2(path, dest, follow_symlinks=False)
    except OSError:
        if os.path.lexists(dest):
            os.unlink(dest)
        raise
    return dest


def undo_writes(undo):
    """Put back every file a failed write replaced (its backup takes its name
    again) and remove the ones it created: a write stopped half-way (a full
    disk) leaves the files as they were, and no backup behind."""
    left = []
    for path, backup, created in reversed(undo):
        try:
            if backup:
                os.replace(backup, path)
            elif created:
                os.unlink(path)
        except OSError as exc:
            left.append("%s (%s)" % (path, exc.strerror))
    if left:
        return "These files could not be put back: %s." % ", ".join(left)
    return "Every file this run had written was put back; nothing else was changed."


def replace(module, spec, path, content):
    """The new file, complete and with its owner, group and mode, takes the old
    one's name in one rename: a reader sees the old file or the new one."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        module.set_fs_attributes_if_different(attrs(module, spec, tmp), False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _numeric(name, lookup, field):
    return int(name) if str(name).isdigit() else getattr(lookup(str(name)), field)


def _write_private(path, content, uid, gid):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        os.fchown(handle.fileno(), uid, gid)


def prepare_trial(spec, contents):
    """A private directory, owned by the app's user, with the trial's ini and
    a copy of the new environment file; the argv that starts uWSGI on it."""
    uid = _numeric(spec["uid"], pwd.getpwnam, "pw_uid")
    gid = _numeric(spec["gid"], grp.getgrnam, "gr_gid")
    directory = tempfile.mkdtemp(prefix=TRIAL_PREFIX, dir=RUN_DIR if os.path.isdir(RUN_DIR) else None)
    ini = contents.get(spec["ini"])
    env = contents.get(spec["env"])
    if ini is None:
        ini = read_bytes(spec["ini"]) or b""
    if env is None:
        env = read_bytes(spec["env"]) or EMPTY_ENV
    env_path, ini_path = os.path.join(directory, "env.ini"), os.path.join(directory, "trial.ini")
    _write_private(env_path, env, uid, gid)
    sock = os.path.join(directory, "trial.sock")
    text = trial_ini(ini.decode("utf-8", "replace"), env_path, sock, spec.get("home"), serve=bool(spec.get("check_path")))
    _write_private(ini_path, to_bytes(text), uid, gid)
    os.chown(directory, uid, gid)
    argv = [spec["setpriv"], "--reuid=%s" % spec["uid"], "--regid=%s" % spec["gid"], "--init-groups", "--",
            spec["binary"], "--ini", ini_path]
    trial = {"argv": argv, "timeout": int(spec.get("timeout") or 60), "marker": directory}
    if spec.get("check_path"):
        # Asked as the app's user: root never connects to a path in a directory that user owns.
        try:
            groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
        except KeyError:
            groups = [gid]
        trial["check"] = {"socket": sock, "protocol": "uwsgi", "path": spec["check_path"],
                          "user": {"name": spec["uid"], "uid": uid, "gid": gid, "groups": groups}}
    return directory, trial


def ask_as_its_user(check):
    """The trial's check_path request, made by a child with the app user's identity."""
    return as_user(check["user"], lambda: check_request(check), timeout=float(check["timeout"]) + 5)


def try_apps(module, trials, contents, result):
    """Start each app that would load something new aside; fail, writing
    nothing, when one does not load."""
    wanted = []
    for spec in trials:
        paths = [spec.get(key) for key in ("ini", "env", "program") if spec.get(key)]
        before = {p: read_bytes(p) for p in paths}
        changes = [p for p in paths if p in contents and contents[p] != before[p]]
        if changes and all(before[p] is None for p in paths):
            why = "it is new"
        elif changes:
            why = "its %s changed" % ", ".join({"ini": "ini", "env": "environment", "program": "program"}[k]
                                               for k in ("ini", "env", "program") if spec.get(k) in changes)
        else:
            why = ""
        why = "; ".join(x for x in (why, spec.get("force")) if x)
        if why:
            wanted.append((spec, why))
    if not wanted:
        return
    if module.check_mode:
        result["trials"] = [{"name": s["name"], "ok": None, "why": "would be tried aside: %s" % why}
                            for s, why in wanted]
        return
    prepared, failures = [], []
    try:
        for spec, why in wanted:
            try:
                prepared.append((spec, why) + prepare_trial(spec, contents))
            except (KeyError, OSError) as exc:
                failures.append("app %s: its trial could not be prepared: %s" % (spec["name"], exc))
        if not failures:
            outcomes = run_all([p[3] for p in prepared], ask=ask_as_its_user)
            for (spec, why, _directory, _trial), (output, code, timed_out, seconds, answer) in zip(prepared, outcomes):
                seen = verdict(output, code, timed_out, spec.get("timeout"), spec, answer)
                result["trials"].append({"name": spec["name"], "ok": seen["ok"], "because": why,
                                         "why": seen["why"], "seconds": round(seconds, 1), "lines": seen["lines"]})
                if not seen["ok"]:
                    # An answer comes only from a trial that loaded.
                    failed = "did not load" if answer is None else "did not answer"
                    failures.append("app %s (%s) was tried aside with its new config, as %s, and %s: %s. "
                                    "uWSGI said: %s." % (spec["name"], why, spec["uid"], failed, seen["why"],
                                                         " | ".join(seen["lines"]) or "(nothing)"))
    finally:
        for entry in prepared:
            shutil.rmtree(entry[2], ignore_errors=True)
    if failures:
        module.fail_json(msg=" ".join(failures) + " Nothing was written and no app was touched: every app keeps "
                         "serving its previous config. Fix what uWSGI names and run again.", refused=True, **result)


def main():
    file_spec = {
        "path": {"type": "path", "required": True},
        "content": {"type": "str"},
        "owner": {"type": "str"},
        "group": {"type": "str"},
        "mode": {"type": "raw"},
        "backup": {"type": "bool", "default": False},
        "summary": {"type": "bool", "default": False},
    }
    module = AnsibleModule(
        argument_spec={
            "dirs": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True},
                "owner": {"type": "str"},
                "group": {"type": "str"},
                "mode": {"type": "raw"},
            }},
            "files": {"type": "list", "elements": "dict", "default": [], "options": file_spec},
            # Only the contents are secret: paths, owners and modes stay readable in the output.
            "secret_files": {"type": "list", "elements": "dict", "default": [], "options": file_spec},
            "secret_contents": {"type": "list", "elements": "str", "default": [], "no_log": True},
            "write": {"type": "bool", "default": True},
            "trials": {"type": "list", "elements": "dict", "default": [], "options": {
                "name": {"type": "str", "required": True},
                "ini": {"type": "path", "required": True},
                "env": {"type": "path", "required": True},
                "program": {"type": "path"},
                "binary": {"type": "str", "required": True},
                "uid": {"type": "str", "required": True},
                "gid": {"type": "str", "required": True},
                "setpriv": {"type": "str", "default": "/usr/bin/setpriv"},
                "timeout": {"type": "int", "default": 60},
                "force": {"type": "str", "default": ""},
                "chdir": {"type": "str"},
                "module": {"type": "str"},
                "home": {"type": "path"},
                "check_path": {"type": "str"},
            }},
        },
        supports_check_mode=True,
    )
    result = {"changed_files": [], "backups": {}, "diff": [], "trials": [], "undo": []}
    secrets = module.params["secret_contents"]
    if len(secrets) != len(module.params["secret_files"]):
        module.fail_json(msg="secret_contents must hold one content for each of secret_files")
    contents = {spec["path"]: to_bytes(spec["content"]) for spec in module.params["files"]}
    contents.update({spec["path"]: to_bytes(content) for spec, content in zip(module.params["secret_files"], secrets)})
    if not module.check_mode:
        result["swept"] = sweep_dead_trials()
    try_apps(module, module.params["trials"], contents, result)
    write = module.params["write"]
    if not write:
        # Tried only: what would change is reported, and written by the task that follows.
        module.check_mode = True
    try:
        for spec in module.params["dirs"]:
            ensure_dir(module, spec, result)
        for spec in module.params["files"]:
            write_file(module, spec, False, result)
        for spec, content in zip(module.params["secret_files"], secrets):
            write_file(module, dict(spec, content=content), True, result)
    except OSError as exc:
        module.fail_json(msg="cannot write %s: %s. %s" % (
            getattr(exc, "filename", None) or "the apps' files", exc.strerror or exc, undo_writes(result["undo"])))
    result.pop("undo")
    diff = result.pop("diff")
    if module._diff and diff and write:  # pylint: disable=protected-access
        result["diff"] = diff
    module.exit_json(changed=bool(result["changed_files"]) and write or bool(result.get("swept")), **result)


if __name__ == "__main__":
    main()
