#!/usr/bin/python
"""One changing run of the role at a time per host: take, or give back, the
host's lock (a small JSON file naming its holder, changed under flock)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: uwsgi_lock
short_description: Take or give back the backlogops.uwsgi role's lock on a host
description:
  - O(state=acquired) takes the lock for O(holder), waiting up to O(wait) seconds while another
    run holds it, and fails naming that run (its controller, PID and start time) when it is still
    held. A holder whose run is known to be dead (O(stale)) or older than O(stale_after) seconds
    is taken over, and the result says so, unless a process that run started still runs on the
    host (it carries C(BACKLOGOPS_UWSGI_RUN) set to the holder's id), which is waited for.
  - O(state=released) gives the lock back when O(holder) holds it.
  - O(state=read) only reports the holder. The file is never followed through a symlink.
options:
  path: {type: path, required: true, description: The lock file.}
  state: {type: str, choices: [acquired, released, read], default: acquired, description: What to do.}
  holder: {type: dict, default: {}, description: This run (controller, pid, started, id).}
  wait: {type: int, default: 300, description: Seconds to wait for another run to finish.}
  stale_after: {type: int, default: 7200, description: Seconds after which a holder counts as dead.}
  stale: {type: str, description: The id of a holder the controller knows to be dead.}
author: backlogops
"""

RETURN = r"""
holder:
  description: Who held the lock before this call (empty when nobody did).
  returned: always
  type: dict
taken_over:
  description: Why a holder was taken over (dead, or too old), or empty.
  returned: always
  type: str
"""

import fcntl
import json
import os
import stat
import time

from ansible.module_utils.basic import AnsibleModule

# Ansible packs the role's module_utils with this module. A linter that loads
# the file by itself (ansible-lint's argument check) finds them beside it.
try:
    import ansible.module_utils.uwsgi_host  # noqa: F401 pylint: disable=unused-import
except ImportError:  # pragma: no cover - outside Ansible's module packaging
    import ansible.module_utils

    ansible.module_utils.__path__.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))

from ansible.module_utils.uwsgi_host import NOT_ROOT, lock_decision, marked_processes, untrusted_by

UNTRUSTED = ("the role's lock %s is not root's alone (%s): something other than the role made it. Find out what "
             "did, remove it, and run again; nothing was changed.")
HOLDER_LIMIT = 65536
# Every task of a run that holds the lock sets this to the run's id (the
# role's `environment`): its modules and the commands they start carry it.
RUN_MARKER = "BACKLOGOPS_UWSGI_RUN"


def run_processes(run_id):
    """The processes on this host that run `run_id` started: [{pid, command}]."""
    return marked_processes(RUN_MARKER, run_id)


def read_holder(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, HOLDER_LIMIT)
    try:
        holder = json.loads(data.decode("utf-8")) if data.strip() else {}
    except ValueError:
        holder = {}
    return holder if isinstance(holder, dict) else {}


def write_holder(fd, holder):
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(holder, sort_keys=True) + "\n").encode())
    os.fsync(fd)


def host_clock():
    """This boot's id and the seconds since it (CLOCK_BOOTTIME: no wall clock step moves it)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot_id = handle.read().strip()
    except OSError:
        boot_id = ""
    return {"boot_id": boot_id, "uptime": round(time.clock_gettime(time.CLOCK_BOOTTIME), 2)}


def open_lock(module, path, create):
    """The lock file, in a directory only root can write (made 0700 when
    missing); None in check mode when it does not exist yet. A file or a
    directory anyone else could have made or changed is never trusted."""
    directory = os.path.dirname(path)
    if create:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
    others = untrusted_by(directory)
    if others:
        module.fail_json(msg=UNTRUSTED % (path, others))
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        return None
    except OSError as exc:
        module.fail_json(msg="cannot open the role's lock %s: %s. Nothing was changed." % (path, exc))
    st = os.fstat(fd)
    others = untrusted_by(path)
    if others or not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        os.close(fd)
        module.fail_json(msg=UNTRUSTED % (
            path, others or "owner uid %d, mode %o" % (st.st_uid, stat.S_IMODE(st.st_mode))))
    return fd


def flock_until(fd, deadline):
    """Take the file's flock (only the role's own calls take it, briefly), giving up at `deadline`."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


def decide(module, fd, p):
    """One look at the holder under the file's flock: exits the module when done, else returns the decision."""
    current = read_holder(fd)
    if p["state"] == "read" or module.check_mode:
        module.exit_json(changed=False, holder=current, taken_over="")
    if p["state"] == "released":
        mine = current.get("id") == p["holder"].get("id")
        if mine:
            write_holder(fd, {})
        module.exit_json(changed=mine, holder=current, taken_over="")
    clock = host_clock()
    # A dead run's commands may still change the host: its lock is not taken from them.
    working = run_processes(current["id"]) if current.get("id") and current["id"] != p["holder"].get("id") else []
    decision = lock_decision(current, p["holder"], time.time(), p["stale_after"], p["stale"], clock, working)
    if decision["take"]:
        write_holder(fd, dict(p["holder"], taken=time.time(), **clock))
        module.exit_json(changed=True, holder=current, taken_over=decision["why"])
    return current, decision


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["acquired", "released", "read"], "default": "acquired"},
            "holder": {"type": "dict", "default": {}},
            "wait": {"type": "int", "default": 300},
            "stale_after": {"type": "int", "default": 7200},
            "stale": {"type": "str"},
        },
        supports_check_mode=True,
    )
    p = module.params
    if os.geteuid() != 0:
        module.fail_json(msg=NOT_ROOT % os.geteuid())
    fd = open_lock(module, p["path"], create=not module.check_mode)
    if fd is None:
        module.exit_json(changed=False, holder={}, taken_over="")
    deadline = time.monotonic() + max(p["wait"], 0)
    try:
        while True:
            if not flock_until(fd, deadline):
                module.fail_json(msg="the role's lock %s stayed busy for %d s (uwsgi_lock_wait). Run again."
                                 % (p["path"], p["wait"]))
            current, decision = decide(module, fd, p)
            fcntl.flock(fd, fcntl.LOCK_UN)
            if time.monotonic() >= deadline:
                module.fail_json(msg="another run of the role is changing this host: %s. It was waited for %d s "
                                 "(uwsgi_lock_wait). Let it finish and run again; if that run is dead, the lock "
                                 "is taken over once it is %d s old (uwsgi_lock_stale_after), or at once from "
                                 "its own controller." % (decision["who"], p["wait"], p["stale_after"]),
                                 holder=current)
            time.sleep(1)
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
