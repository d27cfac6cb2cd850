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
    is taken over, and the result says so.
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
import time

from ansible.module_utils.basic import AnsibleModule

# Ansible packs the role's module_utils with this module. A linter that loads
# the file by itself (ansible-lint's argument check, in a project that installs
# the role) finds them beside it.
try:
    import ansible.module_utils.uwsgi_host  # noqa: F401 pylint: disable=unused-import
except ImportError:  # pragma: no cover - outside Ansible's module packaging
    import importlib.util
    import sys

    for _name in ("uwsgi_host",):
        _spec = importlib.util.spec_from_file_location(
            "ansible.module_utils." + _name,
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils", _name + ".py"))
        sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(sys.modules[_spec.name])

from ansible.module_utils.uwsgi_host import lock_decision


def read_holder(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 65536)
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
    directory = os.path.dirname(p["path"])
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    deadline = time.monotonic() + max(p["wait"], 0)
    while True:
        fd = os.open(p["path"], os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = read_holder(fd)
            if p["state"] == "read" or module.check_mode:
                module.exit_json(changed=False, holder=current, taken_over="")
            if p["state"] == "released":
                mine = current.get("id") == p["holder"].get("id")
                if mine:
                    write_holder(fd, {})
                module.exit_json(changed=mine, holder=current, taken_over="")
            decision = lock_decision(current, p["holder"], time.time(), p["stale_after"], p["stale"])
            if decision["take"]:
                write_holder(fd, dict(p["holder"], taken=time.time()))
                module.exit_json(changed=True, holder=current, taken_over=decision["why"])
        finally:
            os.close(fd)
        if time.monotonic() >= deadline:
            module.fail_json(msg="another run of the role is changing this host: %s. It was waited for %d s "
                             "(uwsgi_lock_wait). Let it finish and run again; if that run is dead, the lock is "
                             "taken over once it is %d s old (uwsgi_lock_stale_after), or at once from its own "
                             "controller." % (decision["who"], p["wait"], p["stale_after"]), holder=current)
        time.sleep(1)


if __name__ == "__main__":
    main()
