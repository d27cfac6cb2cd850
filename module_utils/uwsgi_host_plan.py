"""The host plan: what the preflight's probe says the host rules out or
needs (users, groups, directories, sockets held, paths, programs the role
did not write, virtualenvs, kernel limits), before anything is changed."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re

from ansible.module_utils import uwsgi_host as host
from ansible.module_utils.uwsgi_input import app_label, as_int
from ansible.module_utils.uwsgi_state import with_plain_listeners


# Directories that are never the role's own, whatever a tmpfiles.d line says.
SYSTEM_DIRS = {
    "/", "/bin", "/boot", "/dev", "/dev/shm", "/etc", "/home", "/lib", "/media", "/mnt", "/opt", "/proc",
    "/root", "/run", "/run/lock", "/run/user", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local",
    "/var", "/var/cache", "/var/lib", "/var/log", "/var/run", "/var/spool", "/var/tmp", "/var/www",
}
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")


# Where a changed set of packages for a serving virtualenv goes: a new
# virtualenv of its own per set (root's), which the apps' instances take as
# their `home`. A serving environment is never changed in place.
HOMES_DIR = "/var/lib/uwsgi-role/venvs"


def venv_home(venv, digest):
    """The home of the set `digest` for virtualenv `venv`: named by both, so a
    run finds a set that an earlier one installed completely."""
    return "%s/%s-%s" % (HOMES_DIR, hashlib.sha256(venv.encode()).hexdigest()[:12], digest.split(":")[-1][:16])


def uwsgi_venv_plan(apps, probe, pin):
    """What each virtualenv needs before its apps start: uWSGI built at the
    pinned version, and the apps' packages where they differ from the set the
    role last installed. A changed set for a venv that apps run from goes into
    a new home of its own (`stage`; docs/design.md, "pip packages"), which
    `homes` names for its apps; `stale`: the homes nothing takes any more."""
    seen = probe.get("venvs") or {}
    hashes = probe.get("requirements") or {}
    programs = probe.get("supervisor", {}).get("programs", {})
    build, deps, homes = [], [], {}
    by_venv = {}
    for app in apps:
        if app.get("state", "present") == "present" and app.get("uwsgi_venv"):
            by_venv.setdefault(app["uwsgi_venv"], []).append(app)
    for venv in sorted(by_venv):
        found = seen.get(venv) or {}
        # previous: the version its apps run now, put back when the new one fails its trial.
        if found.get("uwsgi") != str(pin):
            build.append({"venv": venv, "force": False, "previous": found.get("uwsgi")})
        elif not found.get("pcre"):
            build.append({"venv": venv, "force": True, "previous": None})
        members = by_venv[venv]
        packages = sorted({p for app in members for p in app.get("packages") or []})
        requirements = sorted({app["requirements"] for app in members if app.get("requirements")})
        if not packages and not requirements:
            continue
        digest_input = json.dumps({"packages": packages,
                                   "requirements": {path: hashes.get(path) for path in requirements}}, sort_keys=True)
        digest = "sha256:" + hashlib.sha256(digest_input.encode()).hexdigest()
        ready = sorted(path for path, took in (found.get("homes") or {}).items() if took == digest)
        if found.get("deps") == digest and not found.get("damaged"):
            homes[venv] = venv
            continue
        if ready:
            homes[venv] = ready[0]
            continue
        serving = found.get("exists") and any(app["name"] in programs for app in members)
        stage = venv_home(venv, digest) if serving or found.get("damaged") else None
        homes[venv] = stage or venv
        deps.append({"venv": venv, "packages": packages, "requirements": requirements, "digest": digest,
                     "apps": [app["name"] for app in members],
                     "missing": [path for path in requirements if hashes.get(path) is None],
                     "stage": stage, "target": stage or venv,
                     "system_site_packages": bool(found.get("system_site_packages"))})
    named = {(entry or {}).get("home") for entry in (probe.get("managed") or {}).values()}
    # A switch that did not finish may leave an instance on an older home: kept until it is gone.
    settled = [venv for venv in by_venv if not any((programs.get(app["name"]) or {}).get("extra")
                                                   for app in by_venv[venv])]
    stale = sorted(path for venv in settled for path in ((seen.get(venv) or {}).get("homes") or {})
                   if path not in homes.values() and path not in named)
    return {"build": build, "deps": deps, "homes": homes, "stale": stale}


def _writable(info, user, group):
    """Whether a process of `user` (uid, groups) with primary group `group` may
    create files in a directory described by `info` (a probe dir entry)."""
    if user.get("uid") == 0:
        return True
    mode = int(info["mode"], 8)
    if info["uid"] == user.get("uid"):
        return mode & 0o300 == 0o300
    if info["gid"] == group.get("gid") or info["gid"] in user.get("groups", []):
        return mode & 0o030 == 0o030
    return mode & 0o003 == 0o003


def _role_dir(path, probe):
    return path in probe.get("tmpfiles_dirs", []) and path not in SYSTEM_DIRS and path.count("/") >= 2


def _holders(app, probe, removing):
    """Who listens on the app's socket now, other than the app itself and the
    programs this run removes: a list of phrases naming them."""
    key = host.socket_key(app["socket"])
    programs = probe.get("supervisor", {}).get("programs", {})
    managed = probe.get("managed", {})
    found = []
    for listener in probe.get("listeners", []):
        if host.listener_key(listener) != key:
            continue
        owners = listener.get("programs") or []
        if not owners and listener.get("processes"):
            # ss named the processes and none is a Supervisor program's.
            found.append(", ".join("process %s (pid %d)" % (n, pid) for n, pid in listener["processes"]))
            continue
        if not owners:
            # Supervisor names no pid for a program that is STARTING (a master
            # still loading its app, or crash-looping): its ini's socket is its own.
            owners = [name for name, rec in managed.items()
                      if key in [host.socket_key(s) for s in rec.get("sockets", [])]
                      and programs.get(name, {}).get("state") in ("RUNNING", "STARTING", "BACKOFF", "STOPPING")]
        if app["name"] in owners:
            continue
        others = [name for name in owners if name not in removing]
        if others:
            for name in others:
                what = "a program this role manages" if name in managed else "a Supervisor program"
                found.append('Supervisor program "%s" (%s, %s)' % (
                    name, what, programs.get(name, {}).get("line", "state unknown")))
        elif owners:
            continue
        elif programs.get(app["name"], {}).get("state") != "RUNNING":
            found.append("a process that ss cannot name")
    return found


# Options that put more directories on Python's path: with one of them, where
# the app's module comes from cannot be known before uWSGI starts.
PYTHON_PATH_OPTIONS = {"pythonpath", "python-path", "pp", "wsgi-file", "file", "mount", "eval", "pymodule-alias",
                       "import", "pyimport", "python-import", "shared-import", "shared-pyimport", "spooler-import"}
# Where a module installed for the system's Python (Debian's or pip's) lives.
SYSTEM_PYTHON_DIRS = ("/usr/lib/python3/dist-packages", "/usr/local/lib/python3*/dist-packages", "/usr/lib/python3.*")


def _module_globs(app, settings):
    """Where the app's module can be, as globs, or None when that cannot be
    known before uWSGI starts (no chdir, packages the run installs, an option
    that adds to Python's path)."""
    options = {str(k).replace("_", "-") for k in app.get("options") or {}}
    if not app.get("chdir") or not app.get("module") or options & PYTHON_PATH_OPTIONS:
        return None
    if app.get("packages") or app.get("requirements"):
        return None
    top = app["module"].split(":", 1)[0].split(".", 1)[0].strip()
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", top):
        return None
    dirs = [app["chdir"].rstrip("/") or "/"]
    venvs = [v for v in (app.get("virtualenv"), app.get("uwsgi_venv")) if v]
    dirs += ["%s/lib/python3*/site-packages" % v.rstrip("/") for v in venvs]
    # A venv without the system's packages imports none of them; the shared
    # pip venv and apt's uWSGI do.
    if not app.get("virtualenv") or settings.get("install_method") == "apt":
        dirs += list(SYSTEM_PYTHON_DIRS)
    return ["%s/%s%s" % (d, top, suffix) for d in dirs for suffix in (".py", "/", ".*.so", ".so", ".pyc")]


def uwsgi_path_checks(apps, settings):
    """The paths the preflight asks the probe about (globs; a trailing / is a
    directory): each app's chdir, an apt-mode virtualenv, and where its
    module's file can be."""
    paths = set()
    for app in apps:
        if app.get("state", "present") != "present":
            continue
        if app.get("chdir"):
            paths.add(app["chdir"].rstrip("/") + "/")
        if app.get("virtualenv") and settings.get("install_method") != "pip":
            paths.add(app["virtualenv"].rstrip("/") + "/")
        paths.update(_module_globs(app, settings) or [])
    return sorted(paths)


def _path_errors(where, app, found, settings):
    """What the cheap checks find missing for one app (found: glob -> bool)."""
    errors = []
    if app.get("chdir") and found.get(app["chdir"].rstrip("/") + "/") is False:
        errors.append("%s: chdir %s is not a directory on this host; put the app there first, or fix chdir."
                      % (where, app["chdir"]))
        return errors
    if app.get("virtualenv") and settings.get("install_method") != "pip" \
            and found.get(app["virtualenv"].rstrip("/") + "/") is False:
        errors.append("%s: virtualenv %s is not a directory on this host; create it first (python3 -m venv), or fix "
                      "virtualenv (with uwsgi_install_method: pip the role creates it)." % (where, app["virtualenv"]))
    globs = _module_globs(app, settings)
    if globs and all(g in found for g in globs) and not any(found[g] for g in globs):
        top = app["module"].split(":", 1)[0].split(".", 1)[0]
        errors.append("%s: module %s: there is no %s.py nor package %s/ in chdir %s%s; fix module or chdir, or put "
                      "the code there first." % (where, app["module"], top, top, app["chdir"],
                                                 ", its virtualenv or the system's Python" if len(globs) > 5 else ""))
    return errors


def _layout_errors(where, app, record):
    """An app the role runs in the beside layout (a pool and two instances)
    cannot be moved out of it, nor its pool to another user, yet; moving
    into it is the switch's (adopt_steps)."""
    if record and app.get("beside") and record.get("beside") and record.get("user") not in (None, app["uid"]) \
            and app["socket_kind"] == "tcp":
        return ["%s: its pool holds TCP port %s as user %s, and a pool of another user cannot bind it beside; keep "
                "uid %s, or remove it first (state: absent) and add it back." % (
                    where, app["socket"].rsplit(":", 1)[-1], record["user"], record["user"])]
    if not record or bool(record.get("beside")) == bool(app.get("beside")) or app.get("beside"):
        return []
    return ["%s: it runs with apply_strategy beside, and this release cannot move a serving app out of the beside "
            "layout without freeing its socket; keep apply_strategy beside, or remove it first (state: absent) and "
            "add it back." % where]


def _unlisted(apps, managed, policy):
    """Managed programs no longer listed: (removing, kept, errors, warnings) by uwsgi_unlisted_apps."""
    errors, warnings = [], []
    unlisted = sorted(set(managed) - {app["name"] for app in apps})
    removing = {app["name"] for app in apps if app["state"] == "absent"}
    if unlisted and policy == "remove":
        removing.update(unlisted)
    elif unlisted and policy == "fail":
        errors.append("programs managed by this role are not listed in uwsgi_apps: %s. List each (state: absent "
                      "removes it), or set uwsgi_unlisted_apps: warn to keep them, or remove to remove them."
                      % ", ".join(unlisted))
    elif unlisted:
        warnings.append("programs managed by this role are not listed in uwsgi_apps and keep running as they are: "
                        "%s. List each (state: absent removes it), or set uwsgi_unlisted_apps: remove."
                        % ", ".join(unlisted))
    return unlisted, removing, [name for name in unlisted if name not in removing], errors, warnings


def _identity_errors(where, app, user, group, settings):
    """The app's user and group exist, and neither is root under another name."""
    errors = []
    if not user.get("exists"):
        errors.append("%s: user %s does not exist on this host; create it first (ansible.builtin.user) or set "
                      "uid to an existing user." % (where, app["uid"]))
    if not group.get("exists"):
        errors.append("%s: group %s does not exist on this host; create it first (ansible.builtin.group) or set "
                      "gid to an existing group." % (where, app["gid"]))
    if settings.get("allow_root"):
        return errors
    if user.get("exists") and user.get("uid") == 0 and app["uid"] not in ("root", "0"):
        errors.append("%s: user %s has uid 0 on this host: it is root under another name; use an "
                      "unprivileged user, or set uwsgi_allow_root: true if you really mean it." % (where, app["uid"]))
    if group.get("exists") and group.get("gid") == 0:
        errors.append("%s: group %s has gid 0 on this host (root's group); use an unprivileged group, or "
                      "set uwsgi_allow_root: true if you really mean it." % (where, app["gid"]))
    return errors


def _trust_errors(where, app, probe, managed):
    """What root would run or read that others can change, and a program the role does not own."""
    errors = []
    venv = (probe.get("venvs") or {}).get(app.get("uwsgi_venv")) or {}
    if venv.get("writable_by"):
        errors.append("%s: virtualenv %s can be changed by someone other than root: %s. The role runs its pip "
                      "and builds uWSGI there as root, so it must be root's alone (chown -R root:root and no "
                      "group or other write, on it and the directories above it), or choose another "
                      "virtualenv." % (where, app["uwsgi_venv"], venv["writable_by"]))
    requirements = (probe.get("requirements_writable_by") or {}).get(app.get("requirements"))
    if requirements:
        errors.append("%s: requirements file %s can be changed by someone other than root: %s. Root's pip reads "
                      "it, so it must be root's alone (and the directories above it), or copy it somewhere that "
                      "is." % (where, app["requirements"], requirements))
    foreign = probe.get("foreign_programs") or {}
    if app["name"] in foreign and app["name"] not in managed:
        errors.append("%s: Supervisor already has a program %s that this role did not write (%s); the role "
                      "never takes over or restarts a program it does not own. Give the app another name, or "
                      "remove that program first." % (where, app["name"], foreign[app["name"]]))
    return errors


def _unix_socket_errors(where, app, user, group, probe, settings, role_dirs):
    """A unix socket's path length and its directory."""
    errors = []
    if len(app["socket"].encode()) > 102:
        errors.append("%s: socket path %s is %d bytes long; uWSGI and the kernel take at most 102; use a "
                      "shorter path." % (where, app["socket"], len(app["socket"].encode())))
    return errors + _socket_dir_errors(where, app, user, group, probe, settings, role_dirs)


def _socket_dir_errors(where, app, user, group, probe, settings, role_dirs):
    """A unix socket's directory; one the role creates is added to role_dirs."""
    path = app["socket_dir"]
    info = probe.get("dirs", {}).get(path, {})
    if info.get("exists") and not _role_dir(path, probe):
        if not info.get("is_dir"):
            return ["%s: %s, the directory of socket %s, is not a directory." % (where, path, app["socket"])]
        if user.get("exists") and group.get("exists") and not _writable(info, user, group):
            return ["%s: user %s (group %s) cannot create socket %s: %s is %s:%s %s and was not created by "
                    "this role, which leaves its owner and mode as they are. Give the app write access "
                    "there, or put the socket in a directory the role creates (such as %s/%s.sock)."
                    % (where, app["uid"], app["gid"], app["socket"], path, info["owner"], info["group"],
                       info["mode"], settings["socket_dir"], app["name"])]
        return []
    if not info.get("exists") and path in SYSTEM_DIRS | {"/"}:
        return ["%s: %s is a system directory; put the socket in a directory of its own." % (where, path)]
    if not info.get("exists") and not info.get("parent_exists", True):
        return ["%s: the parent of %s does not exist; the role creates only the socket's own directory."
                % (where, path)]
    if path in role_dirs and role_dirs[path]["group"] != app["gid"]:
        return ["%s: socket directory %s is shared with app %s of group %s; apps that share a directory "
                "the role creates must share gid, or use separate directories."
                % (where, path, role_dirs[path]["app"], role_dirs[path]["group"])]
    role_dirs.setdefault(path, {"path": path, "group": app["gid"], "app": app["name"],
                                "exists": bool(info.get("exists")),
                                "previous_group": info.get("group") if info.get("exists") else None})
    return []


def _app_errors(where, app, probe, settings, removing, role_dirs):
    """Everything the host rules out for one present app."""
    managed = probe.get("managed", {})
    user, group = probe.get("users", {}).get(app["uid"], {}), probe.get("groups", {}).get(app["gid"], {})
    errors = _identity_errors(where, app, user, group, settings)
    errors += _path_errors(where, app, probe.get("paths") or {}, settings)
    errors += _trust_errors(where, app, probe, managed)
    errors += _layout_errors(where, app, managed.get(app["name"]))
    errors += ["%s: socket %s is already held by %s; stop or remove it first (for a program this role manages, "
               "list it with state: absent or set uwsgi_unlisted_apps: remove), or give this app another socket."
               % (where, app["socket"], holder) for holder in _holders(app, probe, removing)]
    if app["socket_kind"] == "unix":
        errors += _unix_socket_errors(where, app, user, group, probe, settings, role_dirs)
    return errors


def _client_errors(present, probe, settings):
    """The proof checks that the web server's user may connect to each unix socket."""
    client = settings.get("socket_client")
    unix = [app["name"] for app in present if app.get("socket_kind") == "unix"]
    if client and unix and not (probe.get("socket_client") or {}).get("exists"):
        return ["uwsgi_socket_client: user %s does not exist on this host, so the proof cannot tell whether the "
                "web server may connect to the unix socket of %s. Create it first (install the web server "
                "before this role runs), or set uwsgi_socket_client to the user the web server runs as (an "
                "empty uwsgi_socket_client leaves the check out)." % (client, ", ".join(unix))]
    return []


def _kept_dirs(kept, probe, settings, role_dirs):
    """Directories of managed apps that stay loaded but unlisted keep their entry."""
    managed = probe.get("managed", {})
    for name in kept:
        for sock in managed[name].get("sockets", []):
            path = posixpath.dirname(sock) if sock.startswith("/") else None
            if path and path not in role_dirs and _role_dir(path, probe):
                info = probe.get("dirs", {}).get(path, {})
                role_dirs[path] = {"path": path, "group": info.get("group") or managed[name].get("group")
                                   or settings["group"], "app": name, "exists": bool(info.get("exists")),
                                   "previous_group": info.get("group")}


def _removal(name, probe, settings, in_use):
    """What removing one app stops and deletes: its programs, its files, its sockets and its logs."""
    record = probe.get("managed", {}).get(name, {})
    sockets = [s for s in record.get("sockets", []) if s.startswith("/") and host.socket_key(s) not in in_use]
    # The beside layout's programs: the pool and two instances, each with its log.
    programs = ["%s.%s" % (name, part) for part in ("socket", "a", "b")] if record.get("beside") else [name]
    return {
        "name": name,
        "loaded": name in probe.get("supervisor", {}).get("programs", {}),
        "programs": programs,
        "program_file": record.get("program_file") or "%s/%s.conf" % (settings["supervisor_conf_dir"], name),
        "files": ["%s/%s.%s" % (settings["config_dir"], name, kind) for kind in ("env.ini", "ini", "reload", "socket.ini")]
                 + sockets
                 + (["%s/%s" % (settings["zerg_dir"], name)] if record.get("beside") else [])
                 + ["%s/%s.log%s" % (settings["log_dir"], program, suffix) for program in programs
                    for suffix in [""] + [".%d" % n for n in range(1, 6)]],
    }


def uwsgi_host_plan(apps, probe, settings):
    """What this run does on the host, decided from the probe: errors found
    before any change, warnings, directories, tmpfiles entries, what to remove,
    and the identities the rollback restores."""
    managed = probe.get("managed", {})
    present = [app for app in apps if app["state"] == "present"]
    unlisted, removing, kept, errors, warnings = _unlisted(apps, managed, settings.get("unlisted_apps", "warn"))
    role_dirs = {}
    for index, app in enumerate(apps):
        if app["state"] == "present":
            errors += _app_errors(app_label(index, app), app, probe, settings, removing, role_dirs)
    errors += _client_errors(present, probe, settings)
    _kept_dirs(kept, probe, settings, role_dirs)
    in_use = {host.socket_key(app["socket"]) for app in present}
    in_use.update(host.socket_key(s) for name in kept for s in managed[name].get("sockets", []))
    # The unix sockets present apps bound before this run and no app binds now
    # (a socket moved): removed, with a directory the role made for them, once
    # the apps are proven on their new ones (library/uwsgi_cleanup.py).
    moved = [{"name": app["name"], "path": sock} for app in present
             for sock in managed.get(app["name"], {}).get("sockets", [])
             if sock.startswith("/") and host.socket_key(sock) not in in_use]
    stale_dirs = sorted(d for d in probe.get("tmpfiles_dirs", []) if d not in role_dirs and _role_dir(d, probe))
    previous = {name: {"user": rec.get("user"), "group": rec.get("group") or rec.get("ini_group"),
                       "ini_group": rec.get("ini_group")} for name, rec in managed.items()}
    return {
        "errors": errors,
        "warnings": warnings,
        "dirs": [role_dirs[p] for p in sorted(role_dirs)],
        "stale_dirs": stale_dirs,
        "moved_sockets": moved,
        "removals": [_removal(name, probe, settings, in_use) for name in sorted(removing)],
        "unlisted": unlisted,
        "kept": kept,
        # Unlisted apps that keep running, with the socket their ini binds (the sampler watches them too).
        "kept_apps": [{"name": name, "socket": (managed[name].get("sockets") or [None])[0]} for name in kept
                      if (managed[name].get("sockets") or [None])[0]],
        "previous": previous,
        "empty": not present and not kept,
    }


def _sysctl_entries(settings, keys):
    """(order, path, key, value) of the settings in effect at boot: a file name
    in a stronger directory masks the same name in later ones; /etc/sysctl.conf
    is read last."""
    entries, strongest = [], {}
    for setting in settings or []:
        path, key, value = setting["path"], setting["key"], setting["value"]
        if key not in keys:
            continue
        directory, _, name = path.rpartition("/")
        if path == "/etc/sysctl.conf":
            entries.append(("\uffff", None, path, key, value))
        elif directory in SYSCTL_DIRS and name.endswith(".conf"):
            # systemd-sysctl reads only *.conf there (not a .conf.dpkg-old, a .conf~).
            rank = SYSCTL_DIRS.index(directory)
            strongest[name] = min(rank, strongest.get(name, rank))
            entries.append((name, rank, path, key, value))
    return [(order, path, key, value) for order, rank, path, key, value in entries
            if rank is None or rank == strongest[order]]



def uwsgi_sysctl_targets(wanted, probe, our_file, explicit, allow_lower):
    """The value to persist and apply for each kernel limit: what the apps need,
    but never below the live value nor below what the host's other sysctl files
    persist (unless an explicit value is allowed to lower it). With a line that
    says what happened to each, and the keys whose live or persisted value
    differs from their target (pending: the only ones the run writes)."""
    our_name = our_file.rsplit("/", 1)[-1]
    entries = _sysctl_entries(probe.get("sysctl_settings", []), wanted)
    targets, notes = {}, []
    for key, want in wanted.items():
        want = int(want)
        live = probe.get("sysctl_live", {}).get(key)
        others = [(path, as_int(value)) for order, path, k, value in entries
                  if k == key and path != our_file and order <= our_name and as_int(value) is not None]
        floor_from = [("live", live)] if live is not None else []
        floor_from += others
        floor = max([v for _, v in floor_from] + [0])
        if want >= floor:
            targets[key] = want
            notes.append("%s = %d, as the apps need (%s)" % (
                key, want, "already live" if live == want else "raised from %s" % live))
        elif allow_lower and key in explicit:
            targets[key] = want
            notes.append("%s = %d: LOWERED from %d as uwsgi_sysctl_allow_lower allows (%s)"
                         % (key, want, floor, ", ".join("%s %s" % (w, v) for w, v in floor_from)))
        else:
            targets[key] = floor
            notes.append("%s = %d kept: the host already has more than the %d the apps need (%s); the role never "
                         "lowers it" % (key, floor, want, ", ".join("%s %s" % (w, v) for w, v in floor_from)))
    ours = {}
    for setting in probe.get("sysctl_settings", []):
        if setting["path"] == our_file:
            ours.setdefault(setting["key"], []).append(as_int(setting["value"]))
    pending = [key for key, target in targets.items()
               if probe.get("sysctl_live", {}).get(key) != target or ours.get(key) != [target]]
    return {"values": targets, "notes": notes, "pending": pending}


def uwsgi_sysctl_overrides(settings, our_file, wanted):
    """Settings that would win over ours at the next boot with a lower value.

    settings: the probe's sysctl_settings ({path, key, value}). Files apply in
    file-name order, whatever their directory, and /etc/sysctl.conf last; so a
    file whose name sorts after ours, or /etc/sysctl.conf, wins. A file name in
    a stronger directory masks the same name in later ones.
    """
    our_name = our_file.rsplit("/", 1)[-1]
    wanted = {key: int(value) for key, value in wanted.items()}
    overrides = []
    for order, path, key, value in _sysctl_entries(settings, wanted):
        if path == our_file or order <= our_name:
            continue
        value_int = as_int(value)
        if value_int is None or value_int < wanted[key]:
            overrides.append({"file": path, "key": key, "value": value, "wanted": wanted[key]})
    return overrides


def uwsgi_preflight_errors(plan, probe, ctx):
    """Everything the host rules out, before any change, each saying what to
    do: a read-only /proc/sys, a live limit managed elsewhere below the
    largest listen, a later sysctl file that would win at boot, and the host
    plan's errors (users, groups, sockets held, directories).

    ctx: host, target (host, container or image), install_packages,
    manage_sysctl, somaxconn (the target), listen_max, sysctl_file, sysctls
    (the limits the run persists)."""
    errors = []
    target = ctx.get("target", "host")
    if probe.get("binary_problem") and not ctx.get("install_packages"):
        errors.append("%s, so no app could start: reinstall uWSGI (apt-get install --reinstall uwsgi-core), or set "
                      "uwsgi_install_packages: true and the role reinstalls it. Nothing was changed."
                      % probe["binary_problem"])
    if probe.get("log_dir_writable_by"):
        errors.append(
            "uwsgi_log_dir %s can be changed by someone other than root: %s. Supervisor opens the apps' logs there "
            "as root, so whoever can write there can swap a log for a symlink and have root create or append to "
            "any file. Make it root's alone (chown root:root, no group or other write, on it and the directories "
            "above it), or choose another directory, such as the default /var/log/supervisor."
            % (ctx.get("log_dir", "the log directory"), probe["log_dir_writable_by"]))
    for path, why in sorted((probe.get("write_problems") or {}).items()):
        errors.append("the run writes to %s, but %s: make room or make it writable, and run again." % (path, why))
    if target == "host" and ctx.get("install_packages") and probe.get("systemd") is False:
        errors.append(
            "no systemd runs on %s, so nothing would keep Supervisor running. Nothing was changed. In a container "
            "without systemd set uwsgi_target: container (the role starts supervisord when it does not run; the "
            "container's command should be supervisord -n); while building an image, uwsgi_target: image. Either "
            "way set uwsgi_manage_sysctl: false and give the container its sysctls where it is created."
            % ctx["host"])
    if ctx["manage_sysctl"]:
        if not probe.get("proc_sys_writable"):
            errors.append(
                "/proc/sys is read-only on %s (an unprivileged container?), so net.core.somaxconn cannot be raised "
                "to %s from inside. Nothing was changed. Either set it where the container is created (docker run "
                "--sysctl net.core.somaxconn=%s; docker-compose: sysctls: {net.core.somaxconn: %s}) and set "
                "uwsgi_manage_sysctl: false, or give the container a writable /proc/sys."
                % (ctx["host"], ctx["somaxconn"], ctx["somaxconn"], ctx["somaxconn"]))
        overrides = uwsgi_sysctl_overrides(probe.get("sysctl_settings", []), ctx["sysctl_file"], ctx["sysctls"])
        persisted = ctx.get("persisted") or {}
        if overrides:
            errors.append(
                "".join("%s sets %s = %s, below the %s the apps need (this role persists %s in %s); it is read later, "
                        "so it would win at the next boot and uWSGI would refuse to start. "
                        % (o["file"], o["key"], o["value"], o["wanted"], persisted.get(o["key"], o["wanted"]),
                           ctx["sysctl_file"])
                        for o in overrides)
                + "Remove or raise those settings, or give uwsgi_sysctl_file a name that sorts after them.")
    elif target != "image":
        # An image's containers get their sysctls when they are created, not
        # from the build: an image build does not check them.
        live = as_int((probe.get("sysctl_live") or {}).get("net.core.somaxconn"))
        if live is None or live < int(ctx["listen_max"]):
            errors.append(
                "uwsgi_manage_sysctl is false and the live net.core.somaxconn on %s is %s, below the largest listen "
                "(%s): uWSGI would refuse to start. Nothing was changed. Raise it where it is managed (a container: "
                "docker run --sysctl net.core.somaxconn=%s, compose sysctls: {net.core.somaxconn: %s}, Kubernetes "
                "securityContext.sysctls) or lower the listen."
                % (ctx["host"], live, ctx["listen_max"], ctx["listen_max"], ctx["listen_max"]))
    for deps in (ctx.get("venv_plan") or {}).get("deps", []):
        for path in [p for p in deps.get("missing", []) if not (probe.get("requirements_writable_by") or {}).get(p)]:
            errors.append("requirements file %s of %s does not exist on %s: create it before the run, or fix "
                          "requirements." % (path, ", ".join(deps["apps"]), ctx["host"]))
    return errors + list(plan.get("errors", []))


def uwsgi_host_needs(probe, ctx):
    """What the run has to do on the host beyond the apps' files, from the
    preflight's probe: the packages missing, whether Supervisor is up (on a
    host its unit active and enabled; in a container supervisord running; an
    image build starts nothing), whether install.yml has anything to do, and
    whether remove.yml has (backups left by an interrupted run, removals,
    directories no app uses, a sampler turned off, a host with no app left).

    ctx: packages, venv_plan, target, plan (uwsgi_host_plan), sampler_on,
    sampler_program."""
    installed = {name for name, present in (probe.get("packages") or {}).items() if present}
    missing = [name for name in ctx["packages"] if name not in installed]
    service = probe.get("service") or {}
    running = bool((probe.get("supervisor") or {}).get("running"))
    if ctx["target"] == "host":
        up = bool(service.get("active") and service.get("enabled"))
    else:
        up = running or ctx["target"] == "image"
    venv_plan, plan = ctx.get("venv_plan") or {}, ctx.get("plan") or {}
    programs = (probe.get("supervisor") or {}).get("programs") or {}
    remove = bool(probe.get("backups") or plan.get("removals") or plan.get("stale_dirs") or venv_plan.get("stale")
                  or (not plan.get("dirs") and probe.get("tmpfiles_dirs"))
                  or (not ctx["sampler_on"] and ctx["sampler_program"] in programs)
                  or (plan.get("empty") and probe.get("config_dir_files") is not None))
    # A binary gone behind the role's back comes back with its package, before any app is touched.
    reinstall = ([ctx["binary_package"]] if probe.get("binary_problem") and ctx.get("binary_package")
                 and ctx.get("install_packages", True) and ctx["binary_package"] not in missing else [])
    return {"missing_packages": missing, "reinstall_packages": reinstall, "supervisor_up": up,
            "install": bool(missing or reinstall or venv_plan.get("build") or venv_plan.get("deps") or not up),
            "remove": remove}

def uwsgi_decisions(apps, probe, ctx):
    """Everything the run decides from its probe, in one call, each decision
    fed to the next: the plan (uwsgi_host_plan), the kernel limits to set
    (uwsgi_sysctl_targets), the virtualenvs' plan (uwsgi_venv_plan), what
    else the host needs (uwsgi_host_needs) and what the host rules out
    (uwsgi_preflight_errors). ctx: the arguments those take, by name."""
    present = [app for app in apps if app.get("state", "present") == "present"]
    probe = with_plain_listeners(probe)
    plan = uwsgi_host_plan(apps, probe, ctx["settings"])
    sysctl = uwsgi_sysctl_targets(ctx["sysctls"], probe, ctx["sysctl_file"], ctx["explicit_sysctls"],
                                  ctx["allow_lower"])
    venv_plan = uwsgi_venv_plan(present, probe, ctx["pip_version"])
    # The sampler runs only while the role has an app on the host.
    sampler_on = bool(ctx["needs"]["sampler"]) and not plan.get("empty")
    needs = uwsgi_host_needs(probe, dict(ctx["needs"], venv_plan=venv_plan, plan=plan, sampler_on=sampler_on))
    errors = uwsgi_preflight_errors(plan, probe, dict(ctx["preflight"], venv_plan=venv_plan,
                                                      persisted=sysctl.get("values", {})))
    return {"plan": plan, "sysctl_targets": sysctl, "venv_plan": venv_plan, "needs": needs, "errors": errors}


def uwsgi_unsettled(seen):
    """Why this run has to change the host: empty when the host is as the
    play says, and the run then takes no lock and ends after its proof.
    `seen`: the probe's lock (holder, moved), needs (uwsgi_host_needs), the
    sysctl keys pending, the files' check-mode look (changed_files, trials),
    the apply plan on no changed file, the sampler's action, a killed run's
    trial directories, the sockets and directories to clean up, whether the
    sampler's user is missing, whether the logrotate file goes, the
    verdicts on the probe, and whether the applied record would change."""
    lock = seen.get("lock") or {}
    look = seen.get("look") or {}
    steps = seen.get("apply") or {}
    checks = [
        (lock.get("holder", {}).get("id"), "another run holds the host's lock, or left it"),
        (lock.get("moved"), "another run took or gave back the host's lock while it was read"),
        ((seen.get("needs") or {}).get("install"), "packages or Supervisor to install or start"),
        ((seen.get("needs") or {}).get("remove"), "something to remove"),
        (seen.get("sysctl_pending"), "kernel listen limits to raise"),
        # A look that failed (failed_when: false keeps the run going) says nothing of the files.
        ("changed_files" not in look, "files the look could not compare (%s)" % look.get("msg")),
        (look.get("changed_files"), "files to write"),
        (look.get("trials"), "apps to try aside"),
        (any(steps.get(key) for key in ("load", "start", "restart", "listen", "reload", "chain", "switch",
                                         "handover")), "apps to start, reload or restart"),
        (seen.get("sampler_action"), "the listen-queue sampler to start"),
        (seen.get("leftovers"), "a killed run's trials to remove"),
        (seen.get("cleanup"), "sockets or directories to clean up"),
        (seen.get("sampler_user_missing"), "the sampler's user to create"),
        (seen.get("logrotate_gone"), "the logrotate file to remove"),
        (any(not verdict.get("ok") for verdict in seen.get("verdicts") or []), "an app fails its proof"),
        (seen.get("record_changed"), "the applied record to update"),
    ]
    return [why for hit, why in checks if hit]


def uwsgi_socket_key(socket):
    """A socket's key in the probe's reports (uwsgi_host.socket_key)."""
    return host.socket_key(socket)
