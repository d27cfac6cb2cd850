"""The proof: each app's verdict after the change, the record of what it
took, and what a rollback restores and says."""

from __future__ import annotations


from ansible.module_utils import uwsgi_host as host
from ansible.module_utils.uwsgi_input import uwsgi_other_children
from ansible.module_utils.uwsgi_state import app_socket_in_effect, uwsgi_unserved, with_plain_listeners, worker_count


def uwsgi_proof(apps, probe, users=None, switched=None):
    """Each present app's verdict after the change: RUNNING under Supervisor,
    its listen as the backlog in effect on its socket, its app loaded when it
    was started in this run, as many workers as `processes`, and a 2xx or 3xx
    answer on its check_path when it names one."""
    probe = with_plain_listeners(probe)
    programs = probe.get("supervisor", {}).get("programs", {})
    verdicts = []
    for app in apps:
        if app["state"] != "present":
            continue
        name = app["name"]
        state = programs.get(name, {})
        listener, wrong = app_socket_in_effect(app, probe, users)
        backlog = listener["backlog"] if listener and not wrong else None
        problems = []
        switch = next((s for s in switched or [] if s["name"] == name), None)
        if switch and not switch["ok"]:
            problems.append("its new instance did not serve (%s); %s serves on" % (
                switch["why"], switch.get("from") or "no instance"))
        if state.get("state") != "RUNNING":
            problems.append("Supervisor says %s" % state.get("line", "no such program"))
        if wrong and listener:
            problems.append(wrong)
        if backlog != app["listen"] and not (wrong and listener):
            problems.append("ss shows %s" % ("no LISTEN socket" if backlog is None else "backlog %d" % backlog))
        ready = (probe.get("ready") or {}).get(name)
        if ready is not None and not ready["ok"]:
            problems.append("its app did not load: %s" % ready["why"])
        fresh = (probe.get("fresh") or {}).get(name)
        if fresh is not None and not fresh["ok"]:
            problems.append(uwsgi_chain_problem(fresh))
        workers = worker_count(app, probe)
        scaled = any(str(k).startswith("cheaper") for k in app.get("options") or {})
        if not problems and not scaled and workers != app["processes"]:
            problems.append("its master has %s workers, not %d" % (workers, app["processes"]))
        # Its socket's client (uwsgi_socket_client, the web server's user) must be able to connect: a unix
        # socket only, since anyone may connect to a TCP one.
        client = ((probe.get("socket_files") or {}).get(app["socket"]) or {}).get("client") \
            if app.get("socket_kind") == "unix" else None
        if client is not None and not client.get("ok") and not problems:
            problems.append(uwsgi_client_problem(app, client, probe.get("socket_client") or {}))
        check = (probe.get("checks") or {}).get(name)
        if check is not None and not problems and not (check["status"] and 200 <= check["status"] < 400):
            problems.append("GET %s answered %s" % (app["check_path"], check["status"] or check["error"]))
        ok = not problems
        # A failed new instance's own log is what the rollback report quotes.
        evidence = {"log": switch.get("log") or [], "log_program": switch["log_program"]} if (
            switch and not switch["ok"] and switch.get("log_program")) else {}
        verdicts.append(dict(evidence, **{
            "name": name, "ok": ok, "listen": app["listen"], "socket": app["socket"], "revision": app.get("revision"),
            "supervisor": state.get("line", "no such program"), "backlog": backlog,
            "message": ("app %s: RUNNING, backlog %d on %s, %d workers%s" % (
                name, app["listen"], app["socket"], app["processes"],
                ", GET %s answered %s%s" % (app["check_path"], check["status"], " as %s" % check["as"]
                                            if check.get("as") else "") if check else "")) if ok else (
                "app %s: expected RUNNING with a listen backlog of %d on %s and %d workers; %s"
                % (name, app["listen"], app["socket"], app["processes"], "; ".join(problems))),
        }))
    return verdicts


def uwsgi_socket_blocker(user, chain, socket):
    """What keeps `user` (uid, groups) from connecting to the unix socket
    `socket` under its path's modes (chain: each directory from /, then the
    socket, as the probe's lstat read them): the first directory it may not
    search, or the socket it may not write to, with the class of the modes
    that decided (owner, group or other, tried in that order as the kernel
    does); (None, None) when nothing does. Root may always."""
    if user.get("uid") == 0:
        return None, None
    for entry in chain:
        last = entry["path"] == socket
        if entry.get("link") and not last:
            continue  # the kernel follows it; a symlink's own mode means nothing
        bits = 0o2 if last else 0o1
        mode = int(entry["mode"], 8)
        if entry["uid"] == user.get("uid"):
            who, allowed = "owner", mode >> 6 & bits
        elif entry["gid"] in user.get("groups", []):
            who, allowed = "group", mode >> 3 & bits
        else:
            who, allowed = "other", mode & bits
        if not allowed:
            return entry, who
    return None, None


def uwsgi_client_problem(app, client, user):
    """Why the socket's client (uwsgi_socket_client: the web server's user,
    `user` as the probe found it) may not connect to an app's unix socket
    (`client`: what a child with its identity found, with the path's
    owners, groups and modes): the entry that stops it and what to change."""
    name, sock = user.get("name") or "?", app["socket"]
    error = client.get("error") or "refused"
    if error.startswith(("cannot act as", "no answer as")):
        return "the proof could not check whether its socket client %s (uwsgi_socket_client) may connect: %s" % (
            name, error)
    chain = client.get("chain") or []
    entry, who = uwsgi_socket_blocker(user, chain, sock)
    groups = "groups %s" % ", ".join(str(g) for g in user.get("group_names") or user.get("groups") or []) \
        if user.get("groups") else "no groups"
    if entry is None:
        last = chain[-1] if chain else {}
        why = ("the kernel refuses it (%s) though the modes allow it (the socket is %s:%s %s): an ACL or a security "
               "module decides" % (error, last.get("owner"), last.get("group"), last.get("mode")))
        fix = "find what refuses it"
    else:
        socket_entry = entry["path"] == sock
        right = "write" if socket_entry else "search (x)"
        what = "the socket" if socket_entry else "directory %s" % entry["path"]
        relation = {"owner": "%s owns it and its mode gives the owner no %s" % (name, right),
                    "group": "%s is in its group %s and its mode gives the group no %s" % (name, entry["group"], right),
                    "other": "%s is neither its owner nor in its group %s, and its mode gives others no %s"
                             % (name, entry["group"], right)}[who]
        why = "%s is %s:%s %s, and %s" % (what, entry["owner"], entry["group"], entry["mode"], relation)
        if not socket_entry:
            fix = ("let %s search %s (a group it is in, or o+x), or put the socket in a directory the role creates"
                   % (name, entry["path"]))
        elif who == "other":
            fix = "give the app a gid %s is in (its socket takes the group of the app)" % name
        else:
            fix = "give the app a chmod_socket that lets its %s write (such as 660)" % who
    return ("its socket client %s (uwsgi_socket_client, %s) may not connect to %s: %s; a web server running as %s "
            "gets %s and answers 502. To fix it, %s, or set uwsgi_socket_client to the user the web server runs as"
            % (name, groups, sock, why, name, error, fix))


def uwsgi_chain_problem(fresh):
    """Why a chain reload did not prove the new code: the workers still on
    the code from before (started before the reload began), or a master
    short of workers."""
    if fresh["old"]:
        return ("its chain reload did not finish within %s s: %d worker%s still run%s the code from before it (%s); "
                "uWSGI replaces one worker at a time and waits for each to load the app, so a worker that hangs "
                "loading it, or in a request, stops the chain there (its log says \"chain is still waiting\")" % (
                    fresh["seconds"], len(fresh["old"]), "" if len(fresh["old"]) == 1 else "s",
                    "s" if len(fresh["old"]) == 1 else "",
                    ", ".join("pid %s, started %s s before the check" % (
                        w["pid"], "?" if w.get("started") is None or fresh.get("now") is None
                        else round(fresh["now"] - w["started"])) for w in fresh["old"])))
    return "its master has %d workers after its chain reload, fewer than it should (within %s s)" % (
        len(fresh.get("workers") or []), fresh["seconds"])


def uwsgi_fresh_items(apps, chain, since):
    """What the probe needs to tell that each chain-reloaded app's workers
    all run the new code: every worker started after `since` (seconds after
    boot, read before the code was tried). A chain reload replaces its
    workers one after another, each in up to ready_timeout."""
    return [{"name": app["name"], "since": since, "processes": None if _scaled(app) else app["processes"],
             "timeout": app["ready_timeout"] * app["processes"] + 30} for app in apps if app["name"] in chain]


def _scaled(app):
    return any(str(k).startswith("cheaper") for k in app.get("options") or {})


def uwsgi_ready_item(app):
    """What the probe needs to tell that an app started in this run has loaded."""
    lazy = app.get("chain") or any(str(k).replace("_", "-") in ("lazy-apps", "lazy") for k in app.get("options") or {})
    return {"name": app["name"], "timeout": app["ready_timeout"],
            "processes": app["processes"] + uwsgi_other_children(app), "lazy": lazy}


def uwsgi_check_request(app):
    """The probe's request for an app's check_path."""
    return {"name": app["name"], "socket": app["socket"], "protocol": app["protocol"], "path": app["check_path"]}


def uwsgi_applied_record(verdicts, probe, previous=None):
    """What each app that passed the proof has taken: its config's mtime and
    its code's revision (the one recorded before when the run gives none,
    null when none ever was). Apps the run did not judge
    (unlisted ones it keeps), and apps that failed it, keep their earlier
    entry, so that the next run takes their change again."""
    managed = probe.get("managed", {})
    record = {name: entry for name, entry in (previous or {}).items() if name in managed}
    for verdict in verdicts:
        name = verdict["name"]
        if not verdict["ok"] or not managed.get(name, {}).get("config_mtime"):
            continue
        # A run that gives no revision (a config change outside a deploy) keeps the one the app runs.
        before = record.get(name) if isinstance(record.get(name), dict) else {}
        revision = verdict.get("revision") if verdict.get("revision") is not None else before.get("revision")
        record[name] = {"config_mtime": int(managed[name]["config_mtime"]), "revision": revision}
    return dict(sorted(record.items()))


def uwsgi_rollback_files(apps, failed, changed_files, backups, paths, previous, probe=None, changed_apps=None):
    """For the apps that failed the proof: the files to put back from this
    run's backups (with the owner, group and mode they had), the apps that
    had no program before this run (their files are removed instead), and the
    apps that were not serving before it (probe: the host then): what they
    had never served, so it is not restored; their new files stay. `changed`:
    the failed apps whose files or binary this run changed (changed_apps, from
    uwsgi_changed_apps), that are restarted on what they had."""
    changed, restore, new, unserved = set(changed_files or []), [], [], {}
    for app in apps:
        name = app["name"]
        if name not in failed:
            continue
        program = "%s/%s.conf" % (paths["supervisor_conf_dir"], name)
        if program in changed and program not in backups:
            new.append(name)
            continue
        why = uwsgi_unserved(name, probe) if probe is not None else None
        if why:
            unserved[name] = why
            continue
        group = (previous.get(name) or {}).get("ini_group") or app["gid"]
        user = (previous.get(name) or {}).get("user") or app["uid"]
        for kind, path, owner, file_group, mode in (
                ("ini", "%s/%s.ini" % (paths["config_dir"], name), "root", group, "0640"),
                ("env", "%s/%s.env.ini" % (paths["config_dir"], name), user, "root", "0400"),
                ("program", program, "root", "root", "0644")):
            if path in backups:
                restore.append({"name": name, "kind": kind, "path": path, "backup": backups[path],
                                "owner": owner, "group": file_group, "mode": mode})
    touched = set()
    for key in ("programs", "inis", "envs", "binaries", "deps"):
        touched.update((changed_apps or {}).get(key, []))
    return {"restore": restore, "new": new, "unserved": unserved,
            "changed": [a["name"] for a in apps if a["name"] in failed and a["name"] in touched
                        and a["name"] not in unserved],
            "programs": sorted({r["name"] for r in restore if r["kind"] == "program"})}


def _failed_start(text):
    """The last lines of an app's log; of an app Supervisor started again
    after it gave up, those of the attempt that failed."""
    cut = text.rfind("GAME OVER")
    if cut >= 0:
        end = text.find("\n", cut)
        text = text[:end if end >= 0 else len(text)]
    return host.log_tail(text, 15)


def uwsgi_rollback_report(failed, restored, new, status, logs, log_dir, unserved=None, code=None):
    """One line per failed app: what the proof saw, what the rollback did and
    the app's own log lines from this run's failed start. `code`: the apps
    whose code was new in this run (the role keeps no build to go back to)."""
    code = code or {}
    lines = []
    states = status.get("supervisor", {}).get("programs", {}) if status else {}
    for verdict in failed:
        name = verdict["name"]
        if name in new:
            done = "it never ran before, so its program and ini were removed again"
        elif name in (unserved or {}):
            done = ("it was not serving before this run (%s), so its previous files were not restored: nothing they "
                    "held had served. Its new files stay; fix what its log says and run again" % unserved[name])
        elif name in restored:
            done = "its previous ini and program file were restored and it is %s again on them" % (
                states.get(name, {}).get("state", "UNKNOWN"))
        elif name in code:
            done = ("its code was new in this run (%s), and the role keeps no earlier build: put the previous build "
                    "back in place (its release directory, or the revision before) and run again, or fix this one; "
                    "its record keeps the revision it last took, so the next run reloads it again" % code[name])
        else:
            done = "its files did not change in this run, so there was nothing to restore"
        tail = verdict["log"][-15:] if "log_program" in verdict else _failed_start(logs.get(name, ""))
        lines.append("%s; %s. Its log (%s/%s.log) during this run: %s" % (
            verdict["message"].replace("app %s: expected" % name, "app %s failed the proof: expected" % name),
            done, log_dir, verdict.get("log_program", name), " | ".join(tail) if tail else "(nothing new)"))
    return lines


def uwsgi_prove_live(apps, changed_files, touched, apply, sampler_action):
    """Whether the proof reads the host again: this run changed, started or
    reloaded something, or an app names a check_path. Otherwise it judges
    what the preflight's probe read at the start of the run (nothing was
    done since)."""
    return bool(changed_files or touched or (apply or {}).get("listen") or (apply or {}).get("chain")
                or (apply or {}).get("switch") or sampler_action
                or any(app.get("check_path") for app in apps))
