#!/usr/bin/python
"""Move a beside app to a new instance started beside the serving one."""

from __future__ import annotations

DOCUMENTATION = r"""
module: uwsgi_switch
short_description: Start a backlogops.uwsgi app's new instance beside the serving one, then stop the old
description:
  - For each app of the beside layout (C(NAME.socket), the zerg pool that holds the socket; C(NAME.a) and
    C(NAME.b), two instances of the app), starts the instance that does not serve, waits until its master
    has loaded the app and forked its workers, then stops the serving one gracefully (SIGTERM and uWSGI's
    C(gracefully_kill_them_all) hook - its requests in flight finish, and what it no longer accepts the new
    instance does, from the one queue).
  - When the new instance does not get there within its timeout, it is stopped and the serving one, never
    touched, goes on; the app's result says why, with the end of the new instance's log.
  - A changed program (C(update)) reaches each instance while the other serves. Always changes the host;
    not run in check mode.
options:
  supervisorctl: {type: path, default: /usr/bin/supervisorctl, description: Supervisor's client.}
  log_dir: {type: path, required: true, description: Directory of the instances' logs.}
  apps:
    type: list
    elements: dict
    required: true
    description:
      - Each app to move (name, children - the master's children when loaded, timeout in seconds, update -
        its program file changed, pool_update - its pool's program changed, pool_restart - its socket moved, and
        the pool restarts to bind the new one).
author: backlogops
"""

RETURN = r"""
switched:
  description: Per app, name, ok, from (the instance that served), to (the one that serves now), seconds, why and log.
  returned: always
  type: list
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

try:
    import ansible.module_utils.uwsgi_host  # noqa: F401 pylint: disable=unused-import
except ImportError:  # pragma: no cover - outside Ansible's module packaging
    import importlib.util
    import sys

    _spec = importlib.util.spec_from_file_location(
        "ansible.module_utils.uwsgi_host",
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils", "uwsgi_host.py"))
    sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_spec.name])

from ansible.module_utils.uwsgi_host import log_tail, parse_proc_stat, parse_supervisor_status, read_log

GONE = ("STOPPED", "EXITED", "FATAL")


def switch_steps(item, programs):
    """The Supervisor steps that move app `item` to a new instance, from
    `supervisorctl status` as parsed (parse_supervisor_status): each step is
    (update, [programs]), (start, program), (wait, program) or (stop,
    program). `update` starts a changed program whose autostart is on (the
    pool, NAME.a): the `start` after it then finds it started."""
    name = item["name"]
    pool, first, second = name + ".socket", name + ".a", name + ".b"
    app = programs.get(name)
    if app is None:
        return [("update", [pool, first, second]), ("wait", first)]
    steps = [("stop", app["extra"])] if app.get("extra") else []
    if item.get("pool_restart"):
        # A new socket path: the pool binds it; the serving instance keeps the old one until it leaves.
        steps.append(("restart", pool))
    elif item.get("pool_update"):
        steps.append(("update", [pool]))
    elif (app.get("pool") or {}).get("state") != "RUNNING":
        steps.append(("start", pool))
    serving = app["program"] if app["state"] == "RUNNING" else None
    if serving is None:
        return steps + [("update", [first, second]), ("start", first), ("wait", first)]
    idle = app["idle"]
    if not item.get("update"):
        # The idle instance starts on its program as the file says (a no-op when Supervisor has it already).
        return steps + [("update", [idle]), ("start", idle), ("wait", idle), ("stop", serving)]
    # Each instance takes its new program while the other serves; NAME.a,
    # the one a boot starts, serves at the end.
    steps += [("update", [idle]), ("start", idle)]
    steps += [("wait", idle), ("stop", serving), ("update", [serving])]
    return steps + ([("wait", first), ("stop", second)] if serving == first else [])


def children(pid):
    """How many children the process has, from /proc."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry, encoding="utf-8", errors="replace") as handle:
                    stat_ = parse_proc_stat(handle.read())
            except OSError:
                continue
            count += bool(stat_ and stat_["ppid"] == pid)
    return count


class Switch:
    def __init__(self, module):
        self.module = module
        self.ctl = module.params["supervisorctl"]
        self.log_dir = module.params["log_dir"]

    def status(self):
        return parse_supervisor_status(self.module.run_command([self.ctl, "status"])[1])

    def run(self, *argv):
        rc, out, err = self.module.run_command([self.ctl] + list(argv))
        return rc, (out + err).strip()

    def log_size(self, program):
        try:
            return os.lstat(os.path.join(self.log_dir, program + ".log")).st_size
        except OSError:
            return 0

    def wait(self, program, item):
        """None once `program` runs with its workers; else why not."""
        deadline = time.monotonic() + float(item.get("timeout") or 60)
        first_pid = None
        while True:
            entry = self.status().get(program, {})
            pid = entry.get("pid") if entry.get("state") == "RUNNING" else None
            first_pid = first_pid or pid
            if pid and pid != first_pid:
                return "its master exited after it started, and Supervisor started it again"
            if pid and children(pid) >= int(item.get("children") or 1):
                return None
            if entry.get("state") == "FATAL" or (entry.get("state") in GONE and first_pid):
                return "Supervisor says %s" % entry.get("state")
            if time.monotonic() > deadline:
                return "its app was not loaded with its workers within %s s (Supervisor says %s)" % (
                    item.get("timeout"), entry.get("state", "not loaded"))
            time.sleep(0.2)

    def switch(self, item):
        started = time.monotonic()
        programs = self.status()
        before = programs.get(item["name"], {})
        result = {"name": item["name"], "ok": True, "log": [],
                  "from": before.get("program") if before.get("state") == "RUNNING" else None}
        offsets = {}
        for action, what in switch_steps(item, programs):
            if action == "wait":
                offset = offsets.get(what, 0)
                why = self.wait(what, item)
                if why:
                    self.run("stop", what)
                    text = read_log(os.path.join(self.log_dir, what + ".log"), offset,
                                    limit=65536)[0].decode("utf-8", "replace")
                    result.update(ok=False, why="%s: %s" % (what, why), log=log_tail(text))
                    break
                result["to"] = what
                continue
            for program in (what if isinstance(what, list) else [what]):
                offsets.setdefault(program, self.log_size(program))
            argv = [action] + (what if isinstance(what, list) else [what])
            rc, out = self.run(*argv)
            # `start` of an instance that `update` started already says so; `stop` of a stopped one too.
            if rc != 0 and action != "stop" and "already started" not in out:
                result.update(ok=False, why="supervisorctl %s: %s" % (" ".join(argv), out[-500:]))
                break
        result["seconds"] = round(time.monotonic() - started, 1)
        return result


def main():
    module = AnsibleModule(
        argument_spec={
            "supervisorctl": {"type": "path", "default": "/usr/bin/supervisorctl"},
            "log_dir": {"type": "path", "required": True},
            "apps": {"type": "list", "elements": "dict", "required": True},
        },
        supports_check_mode=False,
    )
    switch = Switch(module)
    results = [switch.switch(item) for item in module.params["apps"]]
    module.exit_json(changed=bool(results), switched=results)


if __name__ == "__main__":
    main()
