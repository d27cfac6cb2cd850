"""The files a run writes: every file and directory of the present apps, the
listen-queue sampler's, and which apps' files changed."""

from __future__ import annotations

import json
import posixpath
import re

from ansible.module_utils.uwsgi_input import SAMPLER_PROGRAM


def uwsgi_sampler_config(apps, settings, kept=None):
    """The sampler's config (JSON): the socket of every present app and of
    every unlisted app the role keeps running, and where and how often it
    writes."""
    return {
        "apps": sorted([{"name": app["name"], "socket": app["socket"]} for app in apps] + list(kept or []),
                       key=lambda a: a["name"]),
        "interval": float(settings["interval"]),
        "window": float(settings["window"]),
        "alert_ratio": float(settings["alert_ratio"]),
        "output": settings["textfile_dir"].rstrip("/") + "/uwsgi.prom",
    }


def uwsgi_sampler_action(on, changed_files, probe, paths):
    """How the sampler takes this run's change: `update` loads a new or changed
    program, `restart` starts a new script, codec or config (or a stopped sampler),
    "" when it runs as it should or is off."""
    if not on:
        return ""
    changed = set(changed_files or [])
    program = "%s/%s.conf" % (paths["supervisor_conf_dir"], SAMPLER_PROGRAM)
    status = (probe.get("supervisor") or {}).get("programs", {}).get(SAMPLER_PROGRAM)
    if program in changed or status is None:
        return "update"
    if changed & {paths["sampler"], paths["netlink"], paths["sampler_config"]} or status.get("state") != "RUNNING":
        return "restart"
    return ""
# Socket directories the role creates: group-writable for the apps that share
# them, and sticky, so that no app's user can remove, rename or replace
# another app's socket (as in /tmp).
SOCKET_DIR_MODE = "1775"


CHAIN_FILE = ("# backlogops.uwsgi touches this file to chain-reload %s (its touch-chain-reload): one worker at a "
              "time loads the code on disk while the others serve.\n")


def uwsgi_file_plan(apps, plan, paths, environments, sampler=None, logrotate=False, homes=None):
    """Every file and directory the role writes for its present apps, for one
    run of the uwsgi_files action: the socket directories it owns and their
    tmpfiles.d entry, the config and helper directories, the helper, and per
    app its environment (secret: from `environments`, the apps with their
    values), its ini and its Supervisor program (from the public view); with
    logrotate, the logrotate file that names every app's log. `homes`: where
    each virtualenv's apps import their packages from (uwsgi_venv_plan)."""
    secret = {app["name"]: app for app in environments}
    homes = homes or {}
    if plan.get("empty"):
        return {"dirs": [], "templates": [], "copies": [], "contents": []}
    dirs = [{"path": d["path"], "owner": "root", "group": d["group"], "mode": SOCKET_DIR_MODE} for d in plan.get("dirs", [])]
    dirs += [{"path": path, "owner": "root", "group": "root", "mode": "0755"}
             for path in (paths["config_dir"], paths["helper"].rsplit("/", 1)[0])]
    templates = []
    if plan.get("dirs"):
        # tmpfiles.d is systemd's: a container without systemd may lack it. The
        # file is also the role's record of the directories it created.
        dirs.append({"path": paths["tmpfiles"].rsplit("/", 1)[0], "owner": "root", "group": "root", "mode": "0755"})
        templates.append({"src": "etc/tmpfiles.d/uwsgi.conf.j2", "path": paths["tmpfiles"],
                          "owner": "root", "group": "root", "mode": "0644"})
    for app in apps:
        base = "%s/%s" % (paths["config_dir"], app["name"])
        templates += [
            # The environment (secrets): the app's own user alone reads it (uWSGI reads
            # it as that user); not its group, which the web server and other apps share.
            {"src": "etc/uwsgi/app.env.ini.j2", "path": base + ".env.ini", "secret": True,
             "vars": {"item": secret[app["name"]]},
             "owner": app["uid"], "group": "root", "mode": "0400", "backup": True},
            {"src": "etc/uwsgi/app.ini.j2", "path": base + ".ini",
             "vars": {"item": dict(app, home=homes.get(app.get("virtualenv")) or app.get("virtualenv"))},
             "owner": "root", "group": app["gid"], "mode": "0640", "backup": True},
            {"src": "etc/supervisor/conf.d/program.conf.j2", "vars": {"item": app},
             "path": "%s/%s.conf" % (paths["supervisor_conf_dir"], app["name"]),
             "owner": "root", "group": "root", "mode": "0644", "backup": True},
        ]
    beside = [app for app in apps if app.get("beside")]
    if beside:
        dirs.append({"path": paths["zerg_dir"], "owner": "root", "group": "root", "mode": "0755"})
    for app in beside:
        # The pool's socket hands out the app's listening socket: its directory is the app user's alone.
        dirs.append({"path": "%s/%s" % (paths["zerg_dir"], app["name"]), "owner": app["uid"], "group": app["gid"],
                     "mode": "0700"})
        templates.append({"src": "etc/uwsgi/pool.ini.j2", "path": "%s/%s.socket.ini" % (paths["config_dir"], app["name"]),
                          "vars": {"item": app}, "owner": "root", "group": app["gid"], "mode": "0640", "backup": True})
    if logrotate and apps:
        templates.append({"src": "etc/logrotate.d/backlogops-uwsgi.j2", "path": paths["logrotate"],
                          "owner": "root", "group": "root", "mode": "0644"})
    copies = [{"src": "uwsgi_listen.py", "path": paths["helper"], "owner": "root", "group": "root", "mode": "0755"}]
    # A chain-reloaded app's touch-chain-reload file: root's, in root's directory;
    # uWSGI only stats it, and the role touches it to start a chain reload.
    contents = [{"path": "%s/%s.reload" % (paths["config_dir"], app["name"]), "owner": "root", "group": "root",
                 "mode": "0644", "content": CHAIN_FILE % app["name"]} for app in apps if app.get("chain")]
    if sampler:
        # The textfile directory keeps its owner (node_exporter's package may own it);
        # the sampler's group may replace files in it.
        textfile = {"path": sampler["textfile_dir"], "mode": "g+rwx"}
        if sampler.get("group"):
            textfile["group"] = sampler["group"]
        dirs.append(textfile)
        # Before the role first changes it, what the directory was (or that the role
        # created it): put back when the sampler goes.
        before = sampler.get("before") or {}
        if sampler.get("record") and not sampler.get("recorded"):
            was = ({"group": before.get("group"), "mode": before.get("mode")} if before.get("exists")
                   else {"created": True})
            contents.append({"path": sampler["record"], "owner": "root", "group": "root", "mode": "0600",
                             "content": json.dumps(dict(was, path=sampler["textfile_dir"]), sort_keys=True) + "\n"})
        copies.append({"src": "uwsgi_sampler.py", "path": paths["sampler"], "owner": "root", "group": "root",
                       "mode": "0755"})
        # The script imports its netlink codec from its own directory: root's, as the script is.
        copies.append({"src": "uwsgi_netlink.py", "path": paths["netlink"], "owner": "root", "group": "root",
                       "mode": "0755"})
        contents.append({"path": paths["sampler_config"], "owner": "root", "group": "root", "mode": "0644",
                         "content": json.dumps(uwsgi_sampler_config(apps, sampler, plan.get("kept_apps")), indent=2,
                                               sort_keys=True) + "\n"})
        templates.append({"src": "etc/supervisor/conf.d/sampler.conf.j2", "owner": "root", "group": "root",
                          "mode": "0644", "path": "%s/%s.conf" % (paths["supervisor_conf_dir"], SAMPLER_PROGRAM)})
    return {"dirs": dirs, "templates": templates, "copies": copies, "contents": contents}


def uwsgi_dirs_restored(dirs, failed):
    """The role's socket directories as a rollback leaves them: those of the
    failed apps back in the group they had before this run."""
    return [dict(d, group=d["previous_group"]) if d.get("app") in failed and d.get("previous_group") else d
            for d in dirs]


def uwsgi_changed_apps(apps, changed_files, paths):
    """Which apps' program, ini and environment files the run changed."""
    changed = set(changed_files or [])
    return {
        "programs": [a["name"] for a in apps if "%s/%s.conf" % (paths["supervisor_conf_dir"], a["name"]) in changed],
        "inis": [a["name"] for a in apps if "%s/%s.ini" % (paths["config_dir"], a["name"]) in changed],
        "envs": [a["name"] for a in apps if "%s/%s.env.ini" % (paths["config_dir"], a["name"]) in changed],
    }


def uwsgi_changed_envs(changed, probe):
    """The apps whose environment this run changed, to say so: not a new app
    (its first environment is not a change, nor is an empty one)."""
    return [name for name in changed.get("envs", []) if name in (probe.get("managed") or {})]


def uwsgi_sampler_files(settings, probe, check_mode=False):
    """What the file plan writes for the sampler (None when it is off): its
    textfile directory, interval, window and alert ratio; its group (left out
    in check mode on a host where its user does not exist yet); and what the
    textfile directory was before the role first changed it, to record.

    settings: on, textfile_dir, interval, window, alert_ratio, user, record."""
    if not settings.get("on"):
        return None
    user_exists = ((probe.get("users") or {}).get(settings["user"]) or {}).get("exists")
    return {"textfile_dir": settings["textfile_dir"], "interval": settings["interval"], "window": settings["window"],
            "alert_ratio": settings["alert_ratio"],
            "group": settings["user"] if user_exists or not check_mode else None,
            "before": (probe.get("dirs") or {}).get(settings["textfile_dir"]) or {}, "record": settings["record"],
            "recorded": probe.get("textfile_record") or {}}



def uwsgi_file_paths(apps, paths, extra=()):
    """Every path uwsgi_file_plan may name for these apps, known before the
    probe (which fingerprints them for the look), with `extra` (the sampler's
    textfile directory and record)."""
    names = set(extra)
    for app in apps:
        base = "%s/%s" % (paths["config_dir"], app["name"])
        names.update([base + ".env.ini", base + ".ini", base + ".socket.ini", base + ".reload",
                      "%s/%s.conf" % (paths["supervisor_conf_dir"], app["name"]),
                      "%s/%s" % (paths["zerg_dir"], app["name"])])
        if app.get("socket_dir"):
            names.add(app["socket_dir"])
    names.update([paths["config_dir"], posixpath.dirname(paths["helper"]), posixpath.dirname(paths["tmpfiles"]),
                  paths["tmpfiles"], paths["zerg_dir"], paths["logrotate"], paths["helper"], paths["sampler"],
                  paths["netlink"], paths["sampler_config"],
                  "%s/%s.conf" % (paths["supervisor_conf_dir"], SAMPLER_PROGRAM)])
    return sorted(name for name in names if name)


# A symbolic mode the look can judge: who (u, g, o) gains which of r, w, x.
_GAINS = re.compile(r"^([ugo]+)\+([rwx]+)$")
_SHIFT = {"u": 6, "g": 3, "o": 0}
_BITS = {"r": 4, "w": 2, "x": 1}


def _mode_holds(want, mode):
    """Whether a fingerprint's mode is the spec's: an octal mode exactly, a
    symbolic one such as g+rwx when it has those bits; anything else cannot
    be told here (None)."""
    if want is None:
        return True
    text = str(want)
    if re.fullmatch(r"0?[0-7]{3,4}", text):
        return int(text, 8) == mode
    clauses = [_GAINS.match(clause) for clause in text.split(",")]
    if not all(clauses):
        return None
    bits = sum(_BITS[perm] << _SHIFT[who] for clause in clauses for who in clause.group(1) for perm in set(clause.group(2)))
    return mode & bits == bits


def _as_spec(spec, found, kind, digest=None):
    if not found or found.get("kind") != kind or (kind == "file" and (found.get("digest") is None
                                                                     or found["digest"] != digest)):
        return False
    for field, ident in (("owner", "uid"), ("group", "gid")):
        want = spec.get(field)
        if want is not None and str(want) not in (found.get(field), str(found.get(ident))):
            return False
    return _mode_holds(spec.get("mode"), found.get("mode")) is True


def files_as_written(dirs, files, seen, digest_of):
    """Whether every directory and file (spec, content) of a file plan is on
    the host as the role would write it, by the probe's fingerprints: then the
    look needs no module run. False wherever a fingerprint is missing or says
    something else (the module then compares, and says what differs)."""
    return (all(_as_spec(spec, seen.get(spec["path"]), "dir") for spec in dirs)
            and all(_as_spec(spec, seen.get(spec["path"]), "file", digest_of(content)) for spec, content in files))
