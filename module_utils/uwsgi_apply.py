"""The apply plan: which apps are tried aside, and how each takes its change
(the gentlest action that converges it)."""

from __future__ import annotations

import json

from ansible.module_utils import uwsgi_host as host
from ansible.module_utils.uwsgi_input import uwsgi_other_children
from ansible.module_utils.uwsgi_state import (
    app_socket_in_effect,
    binary_replaced,
    deps_unloaded,
    files_unread,
    program_unread,
    with_plain_listeners,
    worker_count,
)


def uwsgi_trial_plan(apps, probe, paths, settings, installed=None, staged=None, code=None):
    """What the file write tries aside before it writes anything: every
    present app, with its files' paths, binary, user, group and bound. The
    module tries those whose files would change; `force` names why an app is
    tried even when they do not: its uwsgi binary or packages changed in this
    run (installed: {binaries, deps}), its packages were staged (staged: the
    venv plan's deps, whose stage the trial imports the app from), its files
    changed after its master last read them, or its code is new (code: from
    uwsgi_code_changes). Empty with uwsgi_trial false."""
    if not settings.get("trial", True):
        return []
    installed = installed or {}
    programs = probe.get("supervisor", {}).get("programs", {})
    stages = {d["venv"]: d["stage"] for d in staged or [] if d.get("stage")}
    plan = []
    for app in apps:
        if app["state"] != "present":
            continue
        name = app["name"]
        reasons = []
        if name in installed.get("binaries", []):
            reasons.append("its uwsgi binary changed")
        home = stages.get(app.get("uwsgi_venv")) if app.get("virtualenv") else None
        if home:
            reasons.append("its new packages, in their own home %s" % home)
        elif name in installed.get("deps", []):
            reasons.append("its packages changed")
        if programs.get(name, {}).get("state") == "RUNNING" and files_unread(name, probe):
            reasons.append("its files changed after its master last read them")
        if program_unread(name, probe):
            reasons.append("its Supervisor program changed after its master started")
        if programs.get(name, {}).get("state") == "RUNNING" and deps_unloaded(app, probe):
            reasons.append("its packages were installed after its master last loaded them")
        if name in (code or {}):
            reasons.append("its code is new: %s" % code[name])
        base = "%s/%s" % (paths["config_dir"], name)
        plan.append({"name": name, "ini": base + ".ini", "env": base + ".env.ini",
                     "program": "%s/%s.conf" % (paths["supervisor_conf_dir"], name),
                     "binary": app["binary"], "uid": app["uid"], "gid": app["gid"], "setpriv": settings["setpriv"],
                     "timeout": app["ready_timeout"], "force": "; ".join(reasons),
                     "chdir": app["chdir"], "module": app["module"], "home": home,
                     "check_path": app["check_path"]})
    return plan


def uwsgi_trial_line(trial):
    """One line of the run's output for an app tried aside."""
    if trial.get("ok") is None:
        return "%s: %s" % (trial["name"], trial["why"])
    return "%s: tried aside (%s): %s in %s s" % (
        trial["name"], trial.get("because", ""), trial["why"] if trial["ok"] else "FAILED, " + trial["why"],
        trial.get("seconds"))


def _program_step(plan, name, changed, probe):
    """Load or start an app whose program is new, changed, never loaded or not running; False otherwise."""
    state = probe.get("supervisor", {}).get("programs", {}).get(name, {}).get("state")
    if name in changed.get("programs", []):
        plan["load"].append(name)
        plan["why"].append("%s: %s (its Supervisor program is %s)" % (
            name, "start" if state is None else "stop and start", "new" if state is None else "changed"))
    elif state is None and name in probe.get("managed", {}):
        # Its program file is there but Supervisor never loaded it (a run
        # interrupted before `supervisorctl update`): `start` cannot find it.
        plan["load"].append(name)
        plan["why"].append("%s: start (its Supervisor program was written but never loaded)" % name)
    elif state in ("RUNNING", "STARTING", "BACKOFF") and program_unread(name, probe):
        plan["load"].append(name)
        plan["why"].append("%s: stop and start (its Supervisor program changed after its master started: %s)"
                           % (name, "an interrupted run left it"))
    elif state in ("STOPPED", "EXITED", "FATAL") or state is None:
        plan["start"].append(name)
        plan["why"].append("%s: start (it was %s)" % (name, state or "not loaded"))
    else:
        return False
    return True


def _soft_reasons(app, changed, probe, state, backlog):
    """Why a running app takes a graceful reload: (reasons, whether it must reload at all)."""
    name = app["name"]
    files_changed = name in changed.get("inis", []) or name in changed.get("envs", [])
    deps_changed = name in changed.get("deps", [])
    deps_pending = state == "RUNNING" and not deps_changed and deps_unloaded(app, probe)
    pending = files_unread(name, probe)
    workers = worker_count(app, probe)
    scaled = any(str(k).startswith("cheaper") for k in app.get("options") or {})
    wrong_workers = state == "RUNNING" and not scaled and workers is not None and workers != app["processes"]
    checks = [
        (files_changed, "its ini or environment changed", ()),
        (not files_changed and pending, "its files changed after its master last read them", ()),
        (deps_changed, "its packages changed", ()),
        (deps_pending, "its packages were installed after its master last loaded them", ()),
        (wrong_workers, "it runs %d workers, not %d", (workers, app["processes"])),
        (backlog != app["listen"], "its backlog in effect is %s, not %d", (backlog, app["listen"])),
    ]
    reload = files_changed or deps_changed or deps_pending or pending or wrong_workers or (
        backlog is not None and backlog != app["listen"])
    return [why % args if args else why for hit, why, args in checks if hit], reload


def _hard_reasons(app, changed, probe, state, backlog):
    """Why a running app must be stopped and started (empty: a reload will do)."""
    name = app["name"]
    record = probe.get("managed", {}).get(name, {})
    hard = []
    if name in changed.get("binaries", []):
        hard.append("its uwsgi binary changed")
    elif state == "RUNNING" and binary_replaced(name, probe):
        hard.append("its uwsgi binary changed after its master started (an upgrade, or an interrupted run)")
    if record.get("sockets") and [host.socket_key(x) for x in record["sockets"]] != [host.socket_key(app["socket"])]:
        hard.append("its socket moved")
    if state in ("STARTING", "BACKOFF"):
        hard.append("it is %s" % state)
    if backlog is None and state == "RUNNING" and not hard:
        hard.append("no socket of its is listening")
    if state == "RUNNING" and worker_count(app, probe) == 0 and not hard:
        hard.append("its master has no worker (still loading its app, or crash-looping)")
    listener, wrong = app_socket_in_effect(app, probe)
    if state == "RUNNING" and listener and wrong and not hard:
        hard.append(wrong)
    return hard


def _graceful_step(plan, app, changed, probe, strategy, code):
    """A running app of the graceful layout: chain, restart, a new backlog and a reload, or nothing."""
    name = app["name"]
    program = probe.get("supervisor", {}).get("programs", {}).get(name, {})
    state = program.get("state")
    backlog = host.backlogs_by_socket(probe.get("listeners", [])).get(host.socket_key(app["socket"]))
    reasons, reload = _soft_reasons(app, changed, probe, state, backlog)
    hard = _hard_reasons(app, changed, probe, state, backlog)
    if name in code:
        if not (reasons or hard) and app.get("chain") and strategy != "restart":
            plan["chain"].append(name)
            plan["why"].append("%s: chain reload, one worker at a time while the others serve (%s)" % (name, code[name]))
            return
        reasons.append("%s%s" % (code[name], "" if reasons or hard else (
            "; code_reload is graceful" if app.get("code_reload") != "chain"
            else "; it has mules, spoolers or daemons, which a chain reload would leave on the old code")))
        reload = True
    if hard or (reasons and strategy == "restart"):
        plan["restart"].append(name)
        plan["why"].append("%s: stop and start (%s)" % (name, "; ".join(hard + reasons)))
        return
    if backlog is not None and backlog != app["listen"]:
        plan["listen"].append({"name": name, "socket": app["socket"], "backlog": app["listen"],
                               "pid": program.get("pid"), "uid": app["uid"], "gid": app["gid"], "was": backlog})
    if reload:
        plan["reload"].append(name)
        plan["why"].append("%s: %sgraceful reload (%s)" % (
            name, "listen %s -> %d on the open socket, then " % (backlog, app["listen"])
            if backlog != app["listen"] else "", "; ".join(reasons)))


def uwsgi_apply_plan(apps, changed, probe, strategy="graceful", code=None):
    """How each present app takes what it is asked, the gentlest way that can:
    load, start, restart, listen, reload or chain (the table of docs/design.md,
    "Applying a change without losing a request"), or a new instance beside.
    changed: the apps whose files changed in this run (programs, inis, envs,
    binaries); probe: the host before this run."""
    code = code or {}
    probe = with_plain_listeners(probe)
    plan = {"load": [], "start": [], "restart": [], "listen": [], "reload": [], "chain": [], "switch": [], "why": []}
    for app in apps:
        if app["state"] != "present":
            continue
        if app.get("beside"):
            _beside_plan(plan, app, changed, probe, code)
        elif not _program_step(plan, app["name"], changed, probe):
            _graceful_step(plan, app, changed, probe, strategy, code)
    managed = probe.get("managed", {})
    # An app whose user changes: the socket its old master left belongs to the
    # old user, and in a sticky directory the new one cannot replace it. It is
    # stopped, and root removes that socket, before Supervisor starts it again.
    plan["handover"] = [{"name": app["name"], "socket": app["socket"]} for app in apps
                        if app["name"] in plan["load"] and app["socket_kind"] == "unix"
                        and managed.get(app["name"], {}).get("user") not in (None, app["uid"])]
    return plan


def _beside_reasons(app, changed, probe, code):
    """Why a beside app needs a new instance (empty: it serves as asked)."""
    name = app["name"]
    entry = probe.get("supervisor", {}).get("programs", {}).get(name) or {}
    workers = worker_count(app, probe)
    scaled = any(str(k).startswith("cheaper") for k in app.get("options") or {})
    checks = [
        (name in changed.get("programs", []), "its Supervisor program changed"),
        (name in changed.get("inis", []) or name in changed.get("envs", []), "its ini or environment changed"),
        (name in changed.get("deps", []), "its packages changed"),
        (name in changed.get("binaries", []), "its uwsgi binary changed"),
        (entry.get("state") != "RUNNING", "no instance of it serves (%s)" % entry.get("state", "not loaded")),
        (bool(entry.get("extra")), "two instances of it run (a switch that did not finish)"),
        (entry.get("state") == "RUNNING" and files_unread(name, probe), "its files changed after its instance started"),
        (entry.get("state") == "RUNNING" and program_unread(name, probe),
         "its Supervisor program changed after its instance started"),
        (entry.get("state") == "RUNNING" and binary_replaced(name, probe),
         "its uwsgi binary changed after its instance started"),
        (entry.get("state") == "RUNNING" and deps_unloaded(app, probe),
         "its packages were installed after its instance started"),
        (entry.get("state") == "RUNNING" and not scaled and workers is not None and workers != app["processes"],
         "it runs %s workers, not %s" % (workers, app["processes"])),
        (name in (code or {}), (code or {}).get(name)),
    ]
    return [why for hit, why in checks if hit]


def _beside_plan(plan, app, changed, probe, code):
    """A beside app's part of the plan: a new backlog on the pool's open
    socket, and a new instance started beside the serving one for anything
    else (uwsgi_switch)."""
    name = app["name"]
    entry = probe.get("supervisor", {}).get("programs", {}).get(name)
    backlog = host.backlogs_by_socket(probe.get("listeners", [])).get(host.socket_key(app["socket"]))
    record = probe.get("managed", {}).get(name, {})
    moved = bool(record.get("sockets")) and [host.socket_key(x) for x in record["sockets"]] != [
        host.socket_key(app["socket"])]
    pool = (entry or {}).get("pool") or {}
    if backlog is not None and backlog != app["listen"] and pool.get("pid") and not moved:
        plan["listen"].append({"name": name, "socket": app["socket"], "backlog": app["listen"], "pid": pool["pid"],
                               "uid": app["uid"], "gid": app["gid"], "was": backlog})
        plan["why"].append("%s: listen %s -> %d on the open socket" % (name, backlog, app["listen"]))
    # Its 1.x program is loaded under its name: the switch moves it into the layout (adopt_steps).
    adopt = entry is not None and "slot" not in entry
    new_user = not adopt and entry is not None and record.get("user") not in (None, app["uid"])
    # The pool listens, but the file at the path is gone or another's: clients cannot reach it.
    lost = _lost_socket(app, probe, pool) if not adopt and entry is not None and not new_user and not moved else None
    reasons = [] if entry is None else _beside_reasons(app, changed, probe, code) + (
        ["its socket moved: its pool binds the new one"] if moved else []) + (
        ["its user is now %s: a new pool binds %s%s as that user, then takes the path" % (
            app["uid"], app["socket"], host.STAGED_SUFFIX)] if new_user else []) + (
        ["%s: its pool binds %s%s again, then takes the path" % (lost, app["socket"], host.STAGED_SUFFIX)]
        if lost else [])
    # A new user, or a lost socket: a new pool binds beside the path (switch_steps).
    rebind = new_user or bool(lost)
    if entry is None or reasons or adopt:
        plan["switch"].append({"name": name, "children": 1 if any(str(k).startswith("cheaper") for k in app.get(
            "options") or {}) else app["processes"] + uwsgi_other_children(app), "timeout": app["ready_timeout"],
            "update": name in changed.get("programs", []), "pool_restart": moved and entry is not None and not adopt,
            "adopt": adopt, "uid": app["uid"], "gid": app["gid"], "stage_mark": app["stage_mark"], "rebind": rebind,
            "socket": None if moved else app["socket"]})
        plan["why"].append("%s: %s" % (name, _beside_why(app, entry, adopt, moved, reasons)))


def _lost_socket(app, probe, pool):
    """Why a running pool's unix socket no longer serves its path (the file
    was deleted or replaced), else None."""
    if app["socket_kind"] != "unix" or pool.get("state") != "RUNNING":
        return None
    listener, wrong = app_socket_in_effect(app, probe)
    return wrong if listener else None


def _beside_why(app, entry, adopt, moved, reasons):
    if entry is None:
        return "start its socket's pool and its first instance"
    if not adopt:
        return "a new instance beside the serving one (%s)" % "; ".join(reasons)
    if entry.get("state") != "RUNNING":
        return "into the beside layout: its pool and first instance replace its program (%s)" % entry.get("state")
    if moved:
        return "into the beside layout on its new socket %s; its old master leaves first" % app["socket"]
    if app["socket_kind"] == "unix":
        return ("into the beside layout: its pool binds %s%s, an instance loads there, the name is moved over the "
                "served socket, and the old master leaves once its queue is empty" % (app["socket"], host.STAGED_SUFFIX))
    return ("into the beside layout: its pool binds port %s beside the old master (SO_REUSEPORT), new connections "
            "go to the old master until an instance has loaded, then to it, and the old master leaves once its "
            "queue is empty" % app["socket"].rsplit(":", 1)[-1])


# Docker's default seccomp profile refuses pidfd_getfd with EPERM: what a
# container needs for a live listen change instead of a restart.
CONTAINER_SECCOMP = (
    "; in a container, Docker's default seccomp profile refuses pidfd_getfd: give the container a seccomp "
    "profile that allows it (Docker's default profile with pidfd_open and pidfd_getfd added; compose: "
    "security_opt: [\"seccomp=PROFILE.json\"]), or accept a restart for each listen change")


def uwsgi_listen_fallbacks(plan, results, target="host"):
    """Apps whose live listen change failed: they are restarted instead, with
    a line each that says why and what clients will see."""
    failed, lines = [], []
    for item, result in zip(plan["listen"], results):
        try:
            outcome = json.loads(result.get("stdout") or "{}")
        except ValueError:
            outcome = {}
        if result.get("rc") == 0 and outcome.get("ok"):
            continue
        failed.append(item["name"])
        lines.append("%s: listen %s -> %d could not be applied to the open socket (%s: %s); restarting it instead, "
                     "which refuses new connections for about a second and drops those waiting in its backlog%s"
                     % (item["name"], item["was"], item["backlog"], outcome.get("reason", "error"),
                        outcome.get("detail") or (result.get("stderr") or result.get("msg") or "").strip()[:200],
                        CONTAINER_SECCOMP if target == "container" and outcome.get("reason") == "permission" else ""))
    return {"restart": failed, "warnings": lines}
