"""The model of an app's state: what the host runs against what its files
say and what the role last recorded (files its master never read, a program
or binary changed after its master started, packages never loaded, the
socket at its path, its workers as uWSGI counts them, whether it served)."""

from __future__ import annotations


from ansible.module_utils import uwsgi_host as host
from ansible.module_utils.uwsgi_input import uwsgi_other_children




def worker_count(app, probe):
    """The app's worker count as uWSGI counts them: its master's children
    less its mules, spoolers and attached daemons (None when unknown)."""
    children = (probe.get("workers") or {}).get(app["name"])
    return None if children is None else max(children - uwsgi_other_children(app), 0)


def with_plain_listeners(probe):
    """The probe with its listeners read once into plain dicts: Ansible hands
    a filter containers that template an element on every read, and each
    app's socket is looked up among every listener (14,000 reads for 40 apps)."""
    return dict(probe, listeners=[dict(listener) for listener in probe.get("listeners") or []])


def app_socket_in_effect(app, probe, users=None):
    user = (users if users is not None else probe.get("users") or {}).get(app["uid"]) or {}
    return host.socket_in_effect(app["socket"], probe.get("listeners", []),
                                 (probe.get("socket_files") or {}).get(app["socket"]), user.get("uid"))


def files_unread(name, probe):
    """Whether an app's files changed after its master last read them (a run
    interrupted after writing them): the role's record of its last proven
    run, else when the master last (re)started, against the files' mtime."""
    record = probe.get("managed", {}).get(name, {})
    took = uwsgi_applied(name, probe).get("config_mtime", record.get("started"))
    return bool(record.get("config_mtime") and took is not None and int(record["config_mtime"]) > int(took))


def uwsgi_applied(name, probe):
    """What the role's record says an app last took: {config_mtime, revision}
    ({} when it has no entry). A record from before revisions holds the
    config's mtime alone."""
    entry = (probe.get("applied") or {}).get(name)
    if entry is None:
        return {}
    return dict(entry) if isinstance(entry, dict) else {"config_mtime": entry}


def uwsgi_code_changes(apps, probe, notified=False, only=None):
    """The present apps whose code is new, each with why: its `revision`
    differs from the one it last took (an app without a revision, or one the
    record has never seen running, is not judged by it), or the play notified
    `uwsgi reload` (narrowed to `only` when given)."""
    programs = probe.get("supervisor", {}).get("programs", {})
    code = {}
    for app in apps:
        if app["state"] != "present":
            continue
        name = app["name"]
        took = uwsgi_applied(name, probe)
        if notified and (not only or name in only):
            code[name] = "the play notified uwsgi reload"
        elif app.get("revision") is not None and name in programs and took.get("revision") != app["revision"]:
            code[name] = "its revision is %s, it last took %s" % (app["revision"], took.get("revision") or "none")
    return code


PROGRAM_MARGIN = 2.0


def binary_replaced(name, probe):
    """Whether the uwsgi binary an app's program runs was replaced after
    Supervisor started its master (a package upgrade, or a run interrupted
    after a pip build): the master still runs the old one."""
    record = probe.get("managed", {}).get(name, {})
    started = record.get("process_started")
    return bool(record.get("binary_mtime") and started is not None
                and float(record["binary_mtime"]) > float(started) + PROGRAM_MARGIN)


def deps_unloaded(app, probe):
    """Whether the packages the role recorded in an app's virtualenv were
    installed after its master last loaded its app (a run interrupted between
    the install and the reload): the record's mtime against the master's last
    banner, which a graceful reload prints again."""
    if not (app.get("packages") or app.get("requirements")):
        return False
    venv = (probe.get("venvs") or {}).get(app.get("uwsgi_venv")) or {}
    started = (probe.get("managed", {}).get(app["name"]) or {}).get("started")
    return bool(venv.get("deps_mtime") and started is not None
                and float(venv["deps_mtime"]) > float(started) + PROGRAM_MARGIN)


def program_unread(name, probe):
    """Whether an app's Supervisor program file changed after Supervisor last
    (re)started its master: a run interrupted after writing it (a new uid)."""
    record = probe.get("managed", {}).get(name, {})
    started = record.get("process_started")
    # A process's start time from /proc is exact to about a second (the boot
    # time is whole seconds): a file written in the second before it counts as read.
    return bool(record.get("program_mtime") and started is not None
                and float(record["program_mtime"]) > float(started) + PROGRAM_MARGIN)


def uwsgi_unserved(name, probe):
    """Why an app was not serving when `probe` read the host (None when it
    was): not RUNNING, a master with no worker (still loading its app, or
    crash-looping), no socket listening, or files its master never read (an
    interrupted run left them, so they never served)."""
    state = probe.get("supervisor", {}).get("programs", {}).get(name)
    if not state:
        return "it was not loaded in Supervisor"
    if state.get("state") != "RUNNING":
        return "Supervisor said %s" % state.get("state")
    if (probe.get("workers") or {}).get(name) == 0:
        return "its master had no worker (it was still loading its app, or crash-looping)"
    sockets = (probe.get("managed", {}).get(name) or {}).get("sockets") or []
    backlogs = host.backlogs_by_socket(probe.get("listeners", []))
    if sockets and all(host.socket_key(s) not in backlogs for s in sockets):
        return "no socket of its was listening"
    if files_unread(name, probe):
        return "its files had changed after its master last read them, so they never served"
    return None
