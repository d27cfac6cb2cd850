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
  setpriv: {type: path, default: /usr/bin/setpriv, description: Runs the listen helper as the app's user.}
  python: {type: path, default: /usr/bin/python3, description: The Python that runs the listen helper.}
  helper:
    type: path
    default: /usr/local/lib/uwsgi-role/uwsgi_listen.py
    description: The role's listen helper, which shares and steers a moving TCP app's port.
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

import json
import os
import pwd
import stat
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

# Ansible packs the role's module_utils with this module. A linter that loads
# the file by itself (ansible-lint's argument check) finds them beside it.
try:
    import ansible.module_utils.uwsgi_host  # noqa: F401 pylint: disable=unused-import
except ImportError:  # pragma: no cover - outside Ansible's module packaging
    import ansible.module_utils

    ansible.module_utils.__path__.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))

from ansible.module_utils.uwsgi_host import (
    STAGED_SUFFIX,
    listener_key,
    log_tail,
    parse_ss_listeners,
    parse_supervisor_status,
    parse_supervisord_log,
    process_ending,
    read_log,
    socket_key,
)
from ansible.module_utils.uwsgi_wait import children_of

GONE = ("STOPPED", "EXITED", "FATAL")
# Polls (0.2 s) an instance stopped from outside is given to be started again: a restart.
OUTSIDE_RESTART_POLLS = 50
# The steps the switch runs itself (Switch.step); the others are supervisorctl's verbs, and wait.
OWN_STEPS = ("share", "stage", "steer", "rename", "drain")


def adopt_steps(item, programs):
    """The steps that move app `item` from its 1.x program (one master that
    binds its own socket, loaded under the app's name) into the beside layout.
    A serving unix socket is never unlinked: the pool binds PATH.new (stage),
    an instance loads on it, PATH.new is renamed over PATH (rename), the old
    master serves what its queue still holds (drain) and then leaves. A TCP
    port cannot have two listeners, so the old master leaves first there."""
    name = item["name"]
    pool, first, second = name + ".socket", name + ".a", name + ".b"
    pool_state = (programs.get(pool) or {}).get("state")
    stage = programs[name]["state"] == "RUNNING" and bool(item.get("socket"))
    tcp = stage and not item["socket"].startswith("/")
    # TCP: the old master's socket lets the pool bind the port beside it; its
    # group's program sends new connections to the old one, then to the pool's.
    steps = [("share", name)] if tcp else [] if stage else [("update", [name])]
    if pool_state is None or pool_state != "RUNNING":
        steps.append(("stage", pool) if stage else ("update" if pool_state is None else "start", [pool]))
    steps += [("update", [first, second]), ("start", first), ("wait", first)]
    if not stage:
        return steps
    return steps + [("steer", name) if tcp else ("rename", pool), ("drain", name), ("update", [name])]


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
    if "slot" not in app:
        return adopt_steps(item, programs)
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
    if item.get("rebind") and item.get("socket"):
        # A new user: its pool binds PATH.new as that user, and the name moves over the path once
        # the idle instance, as that user too, has loaded; the serving one drains the old socket.
        steps = [s for s in steps if s[1] != [pool] and s[1] != pool] + [("stage", pool)]
        steps += [("update", [idle]), ("start", idle), ("wait", idle), ("rename", pool), ("drain", name)]
        steps.append(("stop", serving))
        if not item.get("update"):
            return steps  # the same programs (a lost socket): the idle instance serves on
        steps.append(("update", [serving]))
        return steps + ([("wait", first), ("stop", second)] if serving == first else [])
    if not item.get("update"):
        # The idle instance starts on its program as the file says (a no-op when Supervisor has it already).
        return steps + [("update", [idle]), ("start", idle), ("wait", idle), ("stop", serving)]
    # Each instance takes its new program while the other serves; NAME.a,
    # the one a boot starts, serves at the end.
    steps += [("update", [idle]), ("start", idle)]
    steps += [("wait", idle), ("stop", serving), ("update", [serving])]
    return steps + ([("wait", first), ("stop", second)] if serving == first else [])


class Switch:
    def __init__(self, module):
        self.module = module
        self.disturbed = []
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

    def ending(self, program, pid):
        """How `program`'s process `pid` ended, by supervisord's log (process_ending)."""
        rc, out = self.run("maintail", "-65536")
        return process_ending(parse_supervisord_log(out), program, pid) if rc == 0 else None

    def wait(self, program, item):
        """None once `program` runs with its workers; else why not. A restart
        someone else asked of Supervisor meanwhile (`supervisorctl restart`)
        is no failure of the app: its new process is waited for instead."""
        deadline = time.monotonic() + float(item.get("timeout") or 60)
        first_pid, outside_polls = None, 0
        while True:
            entry = self.status().get(program, {})
            state = entry.get("state")
            pid = entry.get("pid") if state == "RUNNING" else None
            first_pid = first_pid or pid
            if pid and pid != first_pid:
                if self.ending(program, first_pid) != "stopped":
                    return "its app did not load: its master exited after it started, and Supervisor started it again"
                self.disturbed.append("%s was restarted from outside this run (pid %d, then %d); its new process "
                                      "was proven instead" % (program, first_pid, pid))
                first_pid, outside_polls = pid, 0
            if pid and len(children_of([pid])[pid]) >= int(item.get("children") or 1):
                return None
            if state in GONE and first_pid and self.ending(program, first_pid) == "stopped":
                # `supervisorctl restart all` stops everything before it starts anything again.
                outside_polls += 1
                if outside_polls > OUTSIDE_RESTART_POLLS:
                    return ("it was stopped from outside this run (Supervisor says %s; supervisorctl stop?) before "
                            "it had its workers, so whether its app loads is not known; run again" % state)
            elif state == "FATAL" or (state in GONE and first_pid):
                return "its app did not load: Supervisor says %s" % state
            if time.monotonic() > deadline:
                return "its app was not loaded with its workers within %s s (Supervisor says %s)" % (
                    item.get("timeout"), state or "not loaded")
            time.sleep(0.2)

    def staged(self, item):
        """The pool's socket at PATH.new when it is a socket the app's user bound; else None."""
        path = item["socket"] + STAGED_SUFFIX
        try:
            st = os.lstat(path)
        except OSError:
            return None
        return path if stat.S_ISSOCK(st.st_mode) and st.st_uid == pwd.getpwnam(item["uid"]).pw_uid else None

    def stage(self, pool, item):
        """Start the pool with root's mark, so it binds PATH.new beside the
        served path; None once that socket is there, else why not."""
        mark = item["stage_mark"]
        folder = os.path.dirname(mark)
        if not os.path.lexists(folder):
            os.mkdir(folder, 0o755)
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            return "%s is not a directory that only root can write; remove it and run again" % folder
        tcp = not item["socket"].startswith("/")
        # TCP: the helper waits on the old master's socket and steers the port's new
        # connections to it the moment the pool's socket joins (see uwsgi_listen.py).
        waiter = subprocess.Popen(self.helper_argv(item, "--steer=0", "--when-joined=30"),  # noqa: S603
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) if tcp else None
        try:
            os.close(os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))
            before = self.status().get(pool, {})
            # A new user's pool program is changed: `update` stops the old pool (its instance
            # serves on, on the descriptor it holds) and starts the new one.
            verb = "update" if before.get("state") is None or item.get("rebind") else "start"
            rc, out = self.run(verb, pool)
            if rc == 0 and item.get("rebind") and before.get("pid") and self.status().get(pool, {}).get(
                    "pid") == before["pid"]:
                # Its program is the same (a lost socket): the pool binds again on a restart.
                verb = "restart"
                rc, out = self.run(verb, pool)
            if rc != 0 and "already started" not in out:
                return "supervisorctl %s %s: %s" % (verb, pool, out[-500:])
            deadline = time.monotonic() + 30
            while not (len(self.listeners(item)) > 1 if tcp else self.staged(item)):
                entry = self.status().get(pool, {})
                if entry.get("state") in GONE or time.monotonic() > deadline:
                    return "its pool did not bind %s (Supervisor says %s)" % (
                        item["socket"] + ("" if tcp else STAGED_SUFFIX), entry.get("state", "not loaded"))
                time.sleep(0.05)
            if tcp:
                # Until an instance has loaded, new connections go to the old master's socket.
                out, err = waiter.communicate(timeout=30)
                found = self.helper_result(waiter.returncode, out, err)
                return None if found["ok"] else "the listen helper could not steer %s: %s" % (
                    item["socket"], found.get("detail"))
            return None
        finally:
            if os.path.lexists(mark):
                os.unlink(mark)
            if waiter and waiter.poll() is None:
                waiter.kill()
                waiter.wait()

    def listeners(self, item):
        """The LISTEN sockets of the app's socket, as ss shows them now."""
        # Both families, so that ss prints its Netid column; not --extended for unix: with a
        # deep queue the kernel ends that dump early (uwsgi_host.with_extended).
        unix = item["socket"].startswith("/")
        _, out, _ = self.module.run_command(["ss", "-H", "--listening", "--numeric", "--unix", "--tcp"] + (
            [] if unix else ["--extended"]))
        if unix:
            # ss names a unix socket by the path it was bound with: once PATH.new is renamed over PATH,
            # a listener named PATH is the old master's.
            return [x for x in parse_ss_listeners(out) if x["local"] == item["socket"]]
        return [x for x in parse_ss_listeners(out) if listener_key(x) == socket_key(item["socket"])]

    def drain(self, item):
        """Wait until the old master's socket, no longer where clients
        connect, holds no queued connection (ss's Recv-Q), up to the app's
        timeout. A TCP socket is told from the pool's by its inode."""
        deadline = time.monotonic() + float(item.get("timeout") or 60)
        while time.monotonic() < deadline:
            old = [x for x in self.listeners(item) if item["socket"].startswith("/") or x.get("inode") == self.old_inode]
            if all(x["queue"] == 0 for x in old):
                return
            time.sleep(0.1)

    def helper_argv(self, item, *argv):
        p = self.module.params
        return [p["setpriv"], "--reuid=%s" % item["uid"], "--regid=%s" % item["gid"], "--init-groups", "--",
                p["python"], p["helper"], "--pid=%d" % self.old_pid, "--socket=%s" % item["socket"]] + list(argv)

    @staticmethod
    def helper_result(rc, out, err):
        try:
            found = json.loads(out)
        except ValueError:
            found = {"ok": False, "detail": (out + err)[-500:]}
        return found if rc == 0 and found.get("ok") else dict(found, ok=False)

    def helper(self, item, *argv):
        """The listen helper on the old master's socket, as the app's user; its JSON result."""
        return self.helper_result(*self.module.run_command(self.helper_argv(item, *argv)))

    def undo_stage(self, item):
        """A move that failed before the rename: the old master still serves
        the path; the pool goes, and its socket beside the path."""
        self.run("stop", item["name"] + ".socket")
        staged = self.staged(item)
        if staged:
            os.unlink(staged)
        elif not item["socket"].startswith("/"):
            self.steer(item, 0)

    def steer(self, item, index):
        found = self.helper(item, "--steer=%d" % index)
        return None if found["ok"] else "the listen helper could not steer %s: %s" % (
            item["socket"], found.get("detail"))

    def step(self, action, what, item):
        """Run one of the move's own steps; None, or why it failed."""
        if action == "share":
            found = self.helper(item, "--reuseport")
            self.old_inode = found.get("inode")
            return None if found["ok"] else "its old master's socket %s cannot take a second listener: %s" % (
                item["socket"], found.get("detail"))
        if action == "steer":
            return self.steer(item, 1)
        if action == "stage":
            return self.stage(what, item)
        if action == "rename":
            staged = self.staged(item)
            if staged:
                os.rename(staged, item["socket"])
            return None
        self.drain(item)
        return None

    def failed(self, result, item, program, why, offset):
        """A step that failed: the instance it started is stopped, and the
        result keeps why, with that program's log since the switch began."""
        if program in (item["name"] + ".a", item["name"] + ".b"):
            self.run("stop", program)
        text = read_log(os.path.join(self.log_dir, program + ".log"), offset, limit=65536)[0].decode("utf-8", "replace")
        result.update(ok=False, why=why, log=log_tail(text), log_program=program)

    def switch(self, item):
        started = time.monotonic()
        programs = self.status()
        before = programs.get(item["name"], {})
        result = {"name": item["name"], "ok": True, "log": [],
                  "from": (before.get("program") or item["name"]) if before.get("state") == "RUNNING" else None}
        offsets = {}
        renamed = False
        self.old_pid, self.old_inode = before.get("pid"), None
        for action, what in switch_steps(item, programs):
            if action in OWN_STEPS:
                why = self.step(action, what, item)
                renamed = renamed or action in ("rename", "steer")
                if why:
                    result.update(ok=False, why="%s: %s" % (what, why))
                    break
                continue
            if action == "wait":
                why = self.wait(what, item)
                if why:
                    self.failed(result, item, what, "%s: %s" % (what, why), offsets.get(what, 0))
                    if before and "slot" not in before and item.get("socket") and not renamed:
                        self.undo_stage(item)
                    break
                result["to"] = what
                continue
            for program in (what if isinstance(what, list) else [what]):
                offsets.setdefault(program, self.log_size(program))
            argv = [action] + (what if isinstance(what, list) else [what])
            rc, out = self.run(*argv)
            # `start` of an instance that `update` started already says so; `stop` of a stopped one too.
            if rc != 0 and action != "stop" and "already started" not in out:
                # A spawn error: the instance exited at once, and its log says why.
                self.failed(result, item, argv[-1], "supervisorctl %s: %s" % (" ".join(argv), out[-500:]),
                            offsets.get(argv[-1], 0))
                break
        result["seconds"] = round(time.monotonic() - started, 1)
        return result


def main():
    module = AnsibleModule(
        argument_spec={
            "supervisorctl": {"type": "path", "default": "/usr/bin/supervisorctl"},
            "log_dir": {"type": "path", "required": True},
            "apps": {"type": "list", "elements": "dict", "required": True},
            "setpriv": {"type": "path", "default": "/usr/bin/setpriv"},
            "python": {"type": "path", "default": "/usr/bin/python3"},
            "helper": {"type": "path", "default": "/usr/local/lib/uwsgi-role/uwsgi_listen.py"},
        },
        supports_check_mode=False,
    )
    switch = Switch(module)
    results = [switch.switch(item) for item in module.params["apps"]]
    if switch.disturbed:
        module.warn("; ".join(switch.disturbed))
    module.exit_json(changed=bool(results), switched=results, disturbed=switch.disturbed)


if __name__ == "__main__":
    main()
