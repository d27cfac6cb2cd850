"""Take or give back the host's lock for this run (library/uwsgi_lock.py).

The holder is this run of ansible-playbook: its controller, its PID (the
parent of this worker process) and that process's start time. Before taking
the lock, the holder on the host is read: when it is a run of this same
controller whose process is gone (or is another process now), it is dead,
and the lock is taken over at once.

Arguments: state (acquired or released), path, wait, stale_after.
"""

from __future__ import annotations

import os
import socket

from ansible.plugins.action import ActionBase
from ansible.plugins.loader import filter_loader

# The controller gets the role's Python from its filter file (filter_plugins/uwsgi.py,
# docs/design.md "Where the Python is"): loading one of its filters makes it importable.
filter_loader.get("uwsgi_socket_key")
from ansible.module_utils import uwsgi_host as host  # noqa: E402 pylint: disable=wrong-import-position


def process_started(pid):
    """A process's start time on this controller (Linux /proc), or None."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii") as handle:
            stat_ = host.parse_proc_stat(handle.read())
        with open("/proc/stat", encoding="ascii") as handle:
            boot = host.parse_btime(handle.read())
    except OSError:
        return None
    return round(boot + stat_["start_ticks"] / os.sysconf("SC_CLK_TCK"), 2) if stat_ and boot is not None else None


def this_run():
    pid = os.getppid()
    controller = socket.gethostname()
    started = process_started(pid)
    return {"controller": controller, "pid": pid, "started": started, "id": "%s:%d:%s" % (controller, pid, started)}


def is_dead(holder):
    """Whether a holder is a run of this controller that no longer runs."""
    if holder.get("controller") != socket.gethostname() or not holder.get("pid"):
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    started = holder.get("started")
    return started is not None and process_started(int(holder["pid"])) not in (None, started)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("state", "path", "wait", "stale_after"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        me = this_run()
        module_args = {"path": args["path"], "state": args.get("state", "acquired"), "holder": me,
                       "wait": int(args.get("wait", 300)), "stale_after": int(args.get("stale_after", 7200))}
        if module_args["state"] == "acquired":
            # A free lock (the usual case) is taken at once; a held one is
            # looked at here: a dead run of this controller gives it up at once.
            first = self._execute_module(module_name="uwsgi_lock", task_vars=task_vars,
                                         module_args=dict(module_args, wait=0))
            holder = first.get("holder") or {}
            if not first.get("failed"):
                result.update(first, run_id=me["id"])
                return result
            if holder.get("id") and is_dead(holder):
                module_args["stale"] = holder["id"]
        result.update(self._execute_module(module_name="uwsgi_lock", module_args=module_args, task_vars=task_vars))
        result["run_id"] = me["id"]
        return result
