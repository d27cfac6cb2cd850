"""The role's decisions, as pure functions of its variables and of what the
probe module read on the host. Unit-tested in tests/unit; the tasks only call
them and act on the result."""

from __future__ import annotations

import importlib.util
import hashlib
import json
import os
import posixpath
import re

DOCUMENTATION = ""

_spec = importlib.util.spec_from_file_location(
    "uwsgi_host", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils", "uwsgi_host.py"))
host = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(host)

# Keys of uwsgi.ini the role writes itself from its own variables: given in
# `options`, they would silently win over (or fight with) the role's value.
RESERVED_OPTIONS = {
    "socket": "socket", "uwsgi-socket": "socket", "http-socket": "socket and protocol: http",
    "https-socket": "socket", "shared-socket": "socket", "chmod-socket": "chmod_socket",
    "chown-socket": "uid and gid", "uid": "uid", "gid": "gid", "listen": "listen",
    "processes": "processes", "workers": "processes", "threads": "threads",
    "enable-threads": "threads", "master": "(always on)", "plugin": "uwsgi_plugins",
    "plugins": "uwsgi_plugins", "strict": "(always on)", "need-app": "(always on)",
    "vacuum": "(always on)", "die-on-term": "(a stop lets requests finish)", "home": "virtualenv",
    "virtualenv": "virtualenv", "venv": "virtualenv", "pyhome": "virtualenv", "chdir": "chdir",
    "module": "module", "wsgi": "module", "env": "environment", "daemonize": "(Supervisor runs the app)",
    "daemonize2": "(Supervisor runs the app)", "logto": "(Supervisor keeps the log)",
    "logto2": "(Supervisor keeps the log)", "ini": "(the role writes the app's ini files)",
}
APP_LOADERS = {"wsgi-file", "mount", "file", "eval", "callable"}
# Options that bind a socket or a port of their own: only the app's `socket`
# (with `protocol`) may, so that the role can keep two apps, and programs it
# does not own, off one socket path or port.
SOCKET_OPTIONS = {"http", "https", "http2", "shared-socket", "zerg", "zerg-server", "stats", "stats-server",
                  "master-fifo", "emperor", "fastrouter", "rawrouter", "sslrouter", "forkpty-router", "tuntap-router",
                  "http-socket", "https-socket", "uwsgi-socket", "socket"}
SOCKET_OPTION_PREFIXES = ("fastrouter", "rawrouter", "sslrouter", "corerouter", "legion", "subscription-server")
# Names Supervisor or supervisorctl give a meaning of their own: `all` is every
# program to supervisorctl, and supervisord's own log is supervisord.log.
RESERVED_NAMES = {"all", "supervisord", "supervisor", "supervisorctl"}
# The longest suffix the role adds to an app's name in one file name: a
# backup of its environment file (".env.ini." + pid + "." + time + "~"), and
# the temporary file its atomic write makes.
LONGEST_SUFFIX = len(".env.ini.4194304.2026-12-01@23:59:59~")
NAME_MAX = 255
# Directories that are never the role's own, whatever a tmpfiles.d line says.
SYSTEM_DIRS = {
    "/", "/bin", "/boot", "/dev", "/dev/shm", "/etc", "/home", "/lib", "/media", "/mnt", "/opt", "/proc",
    "/root", "/run", "/run/lock", "/run/user", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local",
    "/var", "/var/cache", "/var/lib", "/var/log", "/var/run", "/var/spool", "/var/tmp", "/var/www",
}
# Socket directories the role creates: group-writable for the apps that share
# them, and sticky, so that no app's user can remove, rename or replace
# another app's socket (as in /tmp).
SOCKET_DIR_MODE = "1775"
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")


def _pick(value, default):
    return default if value is None or value == "" else value


def uwsgi_normalize(apps, settings):
    """Each app with every key filled in from the role's defaults (`settings`:
    the role's uwsgi_* variables without the prefix)."""
    out = []
    for app in apps or []:
        name = str(app.get("name"))
        socket = str(_pick(app.get("socket"), "%s/%s.sock" % (settings["socket_dir"], name)))
        venv = _pick(app.get("virtualenv"), None)
        pip = settings.get("install_method") == "pip"
        uwsgi_venv = _pick(venv, settings.get("pip_virtualenv")) if pip else None
        out.append({
            "name": name,
            "state": _pick(app.get("state"), "present"),
            "module": _pick(app.get("module"), None),
            "chdir": _pick(app.get("chdir"), None),
            "virtualenv": venv,
            "socket": socket,
            "socket_kind": "unix" if socket.startswith("/") else "tcp",
            "socket_dir": posixpath.dirname(socket) if socket.startswith("/") else None,
            "protocol": _pick(app.get("protocol"), "uwsgi"),
            "processes": int(_pick(app.get("processes"), settings["processes"])),
            "threads": int(_pick(app.get("threads"), settings["threads"])),
            "listen": int(_pick(app.get("listen"), settings["listen"])),
            "uid": str(_pick(app.get("uid"), settings["user"])),
            "gid": str(_pick(app.get("gid"), settings["group"])),
            "chmod_socket": str(_pick(app.get("chmod_socket"), settings["chmod_socket"])),
            "startsecs": int(_pick(app.get("startsecs"), settings["startsecs"])),
            "ready_timeout": int(_pick(app.get("ready_timeout"), settings.get("ready_timeout", 60))),
            "check_path": _pick(app.get("check_path"), None),
            "packages": [str(p) for p in app.get("packages") or []] if isinstance(app.get("packages"), list)
            else app.get("packages") or [],
            "requirements": _pick(app.get("requirements"), None),
            "options": app.get("options") or {},
            "environment": app.get("environment") or {},
            "uwsgi_venv": uwsgi_venv,
            "binary": (uwsgi_venv + "/bin/uwsgi") if pip else settings["binary"],
        })
    return out


def uwsgi_public(apps):
    """The apps as loops may print them: environment values replaced by their keys."""
    return [dict(app, environment=sorted(app.get("environment") or {})) for app in apps]


def _where(index, app):
    return "uwsgi_apps[%d] (%s)" % (index, app["name"])


def _one_line(value):
    return isinstance(value, str) and "\n" not in value and "\r" not in value and "\0" not in value


# uWSGI reads an ini value through magic of its own: at file read `%X` is a
# magic variable (`%%` a literal %), then `$(VAR)` takes an environment
# variable, `@(FILE)` a file's content and `%(NAME)` another option's value;
# the ini parser strips blanks around a value. uwsgi_ini_escape writes a value
# so that uWSGI reads it back byte for byte, with the placeholders the role
# defines in every ini it writes (INI_PLACEHOLDERS).
INI_PLACEHOLDERS = {"uwsgi_role_dollar": "$", "uwsgi_role_at": "@", "uwsgi_role_empty": ""}
# Options every ini the role writes may set: a `%(NAME)` of one of these is
# always replaced by uWSGI, so a value holding it cannot be carried.
ROLE_INI_KEYS = {
    "plugins", "strict", "master", "processes", "threads", "enable-threads", "socket", "http-socket", "listen",
    "chmod-socket", "chdir", "home", "module", "vacuum", "hook-master-start", "need-app", "ini", "env",
    "set-placeholder",
} | set(INI_PLACEHOLDERS)
_PLACEHOLDER_REF = re.compile(r"%\(([^)]*)\)")


def uwsgi_ini_escape(value):
    """`value` as uwsgi.ini must hold it for uWSGI to read it back exactly."""
    out = str(value).replace("%", "%%").replace("$(", "%(uwsgi_role_dollar)(").replace("@(", "%(uwsgi_role_at)(")
    if out[:1] in (" ", "\t"):
        out = "%(uwsgi_role_empty)" + out
    if out[-1:] in (" ", "\t"):
        out += "%(uwsgi_role_empty)"
    return out


def _uncarried(value, names):
    """Why uWSGI cannot receive `value` exactly through an ini line, or None."""
    value = str(value)
    for char, what in (("\n", "a line break"), ("\r", "a carriage return"), ("\0", "a NUL")):
        if char in value:
            return "holds %s (%r), which no uwsgi.ini line can carry" % (what, char)
    for match in _PLACEHOLDER_REF.finditer(value):
        name = match.group(1)
        if name in names or " " in name or "(" in name:
            return ("holds %r, which uWSGI always replaces (with the value of option %s, or a sum of them) and "
                    "which no escape keeps" % (match.group(0), name))
    return None


# A pip requirement as one token: a project name, extras, a version specifier
# or a direct reference; never an option (-e, --index-url) and never blanks.
_PIP_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?([<>=!~]=?[A-Za-z0-9.*+!_-]+(,[<>=!~]=?[A-Za-z0-9.*+!_-]+)*"
                              r"|\s*@\s*[A-Za-z0-9+.:/_%?=&#-]+)?$")


def _dependency_errors(where, app, settings):
    """What is wrong with an app's `packages` and `requirements`."""
    errors = []
    packages, requirements = app.get("packages") or [], app.get("requirements")
    if not packages and not requirements:
        return errors
    if settings.get("install_method") != "pip":
        errors.append("%s: packages and requirements are installed into the app's virtualenv, which only "
                      "uwsgi_install_method: pip builds; with apt, install the app's dependencies with Debian's "
                      "packages (python3-...) or set uwsgi_install_method: pip." % where)
        return errors
    if not app.get("virtualenv"):
        errors.append("%s: packages and requirements need the app's own virtualenv (set virtualenv), so they never "
                      "change uwsgi_pip_virtualenv, which other apps share." % where)
    if not isinstance(packages, list):
        errors.append("%s: packages must be a list of pip requirements such as flask==3.0.3." % where)
    else:
        for package in packages:
            if not _PIP_REQUIREMENT.match(str(package)):
                errors.append("%s: packages entry %r is not one pip requirement (a name with an optional version "
                              "such as flask==3.0.3, no options and no blanks)." % (where, str(package)[:80]))
    if requirements is not None and not re.match(r"^/[A-Za-z0-9._/+@-]+$", str(requirements)):
        errors.append("%s: requirements %r must be the absolute path of a requirements file on the host (letters, "
                      "digits and . _ - / + @)." % (where, str(requirements)[:120]))
    return errors


# Where a changed set of packages is installed and tried before the serving
# apps' virtualenv takes it (a new virtualenv per venv, root's own).
STAGE_DIR = "/var/lib/uwsgi-role/staged-venvs"


def uwsgi_venv_plan(apps, probe, pin):
    """What each virtualenv needs before its apps start: uWSGI built at the
    pinned version (and with PCRE, for internal routing), and the apps'
    packages and requirements installed when they differ from what the role
    last installed there (a digest kept in the venv). Apps sharing a venv share
    its dependencies; each of them reloads when they change.

    A changed set for a virtualenv that apps already run from is staged:
    installed into a new virtualenv aside (`stage`), where the trial (when
    on) imports the apps from it; the serving venv takes exactly what was
    staged (pip freeze of the stage) only once the trial has passed, and
    keeps what it had for the rollback. A first install goes straight into
    the venv (nothing serves from it yet)."""
    seen = probe.get("venvs") or {}
    hashes = probe.get("requirements") or {}
    build, deps = [], []
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
        if found.get("deps") != digest:
            programs = probe.get("supervisor", {}).get("programs", {})
            serving = found.get("exists") and any(app["name"] in programs for app in members)
            stage = None
            if serving:
                stage = "%s/%s" % (STAGE_DIR, hashlib.sha256(venv.encode()).hexdigest()[:16])
            deps.append({"venv": venv, "packages": packages, "requirements": requirements, "digest": digest,
                         "apps": [app["name"] for app in members],
                         "missing": [path for path in requirements if hashes.get(path) is None],
                         "stage": stage, "target": stage or venv,
                         "system_site_packages": bool(found.get("system_site_packages"))})
    return {"build": build, "deps": deps}


def uwsgi_input_errors(apps, settings, sysctls):
    """Every input error the argument specs cannot express, each saying what to change.

    sysctls: the kernel limits the run persists (net.core.somaxconn, ...)."""
    errors = []
    somaxconn = int(sysctls["net.core.somaxconn"])
    syn = int(sysctls["net.ipv4.tcp_max_syn_backlog"])
    if somaxconn > 65535 and settings.get("somaxconn_explicit", True):
        errors.append("uwsgi_somaxconn (%d) is above 65535: set uwsgi_somaxconn to 65535 or less." % somaxconn)
    # Unset, it is derived from the largest listen, whose own rule names the app.
    if syn < 1:
        errors.append("uwsgi_tcp_max_syn_backlog (%d) must be at least 1." % syn)
    target = settings.get("target", "host")
    if target != "host" and settings.get("manage_sysctl"):
        errors.append("uwsgi_target is %s, and a container's net.core.somaxconn is set where the container is created "
                      "(docker run --sysctl, compose sysctls:, Kubernetes securityContext.sysctls), not from inside "
                      "it: set uwsgi_manage_sysctl: false." % target)
    if settings.get("install_method") == "pip" and settings.get("plugins"):
        errors.append("uwsgi_plugins (%s) cannot be loaded by a uWSGI built by pip, which has Python built in and no "
                      "plugin directory: leave uwsgi_plugins unset or set it to []." % ", ".join(settings["plugins"]))
    for var in ("socket_dir", "config_dir", "supervisor_conf_dir", "log_dir"):
        value = str(settings.get(var, "/"))
        if not re.match(r"^/[A-Za-z0-9._/+@-]*$", value):
            errors.append("uwsgi_%s %r must be an absolute path of letters, digits and . _ - / + @ only (it is "
                          "written into Supervisor, uWSGI and tmpfiles.d files)." % (var, value))
    names, sockets = set(), {}
    for index, app in enumerate(apps):
        where = _where(index, app)
        if not re.match(r"^[A-Za-z0-9_-]+$", app["name"]):
            errors.append('%s: name "%s" is used in file and program names; use letters, digits, _ and - only.'
                          % (where, app["name"]))
        if app["name"] in names:
            errors.append('%s: name "%s" is used by another app; give each app its own name.' % (where, app["name"]))
        if app["name"] == SAMPLER_PROGRAM:
            errors.append('%s: name "%s" is the Supervisor program of the role\'s listen-queue sampler; give the app '
                          'another name.' % (where, app["name"]))
        elif app["name"].lower() in RESERVED_NAMES:
            errors.append('%s: name "%s" means something of its own to Supervisor (supervisorctl takes "all" for '
                          "every program; supervisord's own files use its name); give the app another name."
                          % (where, app["name"]))
        longest = len(app["name"].encode()) + LONGEST_SUFFIX
        if longest > NAME_MAX:
            errors.append("%s: name is %d bytes long: the longest file name the role writes for it (a backup of its "
                          "environment file) would be %d bytes, above the %d a file name may have; use at most %d."
                          % (where, len(app["name"].encode()), longest, NAME_MAX, NAME_MAX - LONGEST_SUFFIX))
        names.add(app["name"])
        if app["state"] != "present":
            continue
        errors.extend(_dependency_errors(where, app, settings))
        listen = app["listen"]
        if listen < 1 or listen > 65535:
            errors.append("%s: listen (%d) must be between 1 and 65535." % (where, listen))
        elif listen > somaxconn:
            errors.append("%s: listen (%d) exceeds uwsgi_somaxconn (%d), so uWSGI would refuse to start; raise "
                          "uwsgi_somaxconn to at least %d (or leave it unset to derive it) or lower the listen."
                          % (where, listen, somaxconn, listen))
        socket = app["socket"]
        if app["socket_kind"] == "tcp":
            port = socket.rsplit(":", 1)[-1]
            if not re.match(r"^[^/\s]*:[0-9]{1,5}$", socket) or not 1 <= int(port or 0) <= 65535:
                errors.append('%s: socket "%s" is neither an absolute unix socket path nor host:port with a port '
                              "from 1 to 65535." % (where, socket))
        elif not re.match(r"^/[A-Za-z0-9._/@+-]+$", socket) or "/../" in socket + "/" or socket.endswith("/"):
            errors.append('%s: socket "%s" is not a plain absolute path; use letters, digits and . _ - / @ + only.'
                          % (where, socket))
        key = host.socket_key(socket)
        if key in sockets:
            errors.append('%s: socket "%s" is already used by app %s; give each app its own socket or port.'
                          % (where, socket, sockets[key]))
        sockets.setdefault(key, app["name"])
        if app["processes"] < 1 or app["threads"] < 1:
            errors.append("%s: processes (%d) and threads (%d) must each be at least 1."
                          % (where, app["processes"], app["threads"]))
        if not re.match(r"^[0-7]{3,4}$", app["chmod_socket"]):
            errors.append('%s: chmod_socket "%s" is not an octal mode such as "660".' % (where, app["chmod_socket"]))
        elif app["chmod_socket"][-1] in "2367" and not settings.get("allow_world_writable_socket"):
            errors.append("%s: chmod_socket %s lets every local user write to the socket; use 660 with a group the "
                          "web server is in, or set uwsgi_allow_world_writable_socket: true."
                          % (where, app["chmod_socket"]))
        for field in ("uid", "gid"):
            if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$", app[field]):
                errors.append('%s: %s "%s" is not a user or group name or number.' % (where, field, app[field]))
        if app["uid"] in ("root", "0") and not settings.get("allow_root"):
            errors.append("%s: uid %s runs the app as root; use an unprivileged user such as www-data, or set "
                          "uwsgi_allow_root: true if you really mean it." % (where, app["uid"]))
        options = app["options"]
        option_keys = {str(k).replace("_", "-").lower(): k for k in options}
        if not app["module"] and not APP_LOADERS.intersection(option_keys):
            errors.append("%s: no app to load; set module (for example myapp:app) or an extra option wsgi-file or "
                          "mount." % where)
        for key, original in sorted(option_keys.items()):
            if key not in RESERVED_OPTIONS and (key in SOCKET_OPTIONS or key.endswith("-socket")
                                                or key.startswith(SOCKET_OPTION_PREFIXES)):
                errors.append("%s: options.%s binds a socket or port of its own; only the app's socket (with "
                              "protocol) may, so that no two apps and no program the role does not own share a "
                              "socket path or port. Give this endpoint an app of its own." % (where, original))
                continue
            if key in RESERVED_OPTIONS:
                instead = RESERVED_OPTIONS[key]
                fix = ("use the app's %s instead" % instead) if not instead.startswith("(") else (
                    "the role handles it %s" % instead)
                errors.append("%s: options.%s is set by the role and cannot be overridden through options; %s."
                              % (where, original, fix))
                continue
            values = options[original] if isinstance(options[original], list) else [options[original]]
            for value in values:
                if isinstance(value, (dict, list)):
                    errors.append("%s: options.%s has a %s value, which uwsgi.ini cannot hold; give a string, a "
                                  "number, a boolean or a list of those." % (where, original, "dict" if isinstance(value, dict) else "list"))
                elif value is None:
                    errors.append("%s: options.%s has no value; give one, or remove the key." % (where, original))
                elif not _one_line(str(value)):
                    errors.append("%s: options.%s holds a line break or NUL, which would add lines to uwsgi.ini; "
                                  "give a single line." % (where, original))
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]*$", str(original)):
                errors.append('%s: options key "%s" is not a uWSGI option name.' % (where, original))
        ini_names = ROLE_INI_KEYS | set(option_keys) | set(map(str, options))
        for key, value in sorted((app["environment"] or {}).items()):
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(key)):
                errors.append('%s: environment key "%s" is not a variable name (letters, digits and _).'
                              % (where, key))
            elif str(key).upper().startswith("UWSGI_"):
                errors.append("%s: environment.%s: uWSGI reads UWSGI_* variables as its own options (at every "
                              "reload); set the option in options instead." % (where, key))
            if isinstance(value, (dict, list)) or value is None:
                errors.append("%s: environment.%s must be a string or a number." % (where, key))
            elif _uncarried(value, ini_names):
                errors.append("%s: environment.%s %s; remove it from the value."
                              % (where, key, _uncarried(value, ini_names)))
        if app.get("check_path") is not None and not re.match(r"^/[\x21-\x7e]*$", str(app["check_path"])):
            errors.append("%s: check_path %r must be a path starting with / without blanks." % (where, app["check_path"]))
        if app.get("ready_timeout", 1) < 1:
            errors.append("%s: ready_timeout (%d) must be at least 1 second." % (where, app["ready_timeout"]))
        for field in ("module", "chdir", "virtualenv"):
            value = app[field]
            if value is None:
                continue
            if _uncarried(value, ini_names):
                errors.append("%s: %s %s." % (where, field, _uncarried(value, ini_names)))
            elif field != "module" and (not str(value).startswith("/") or re.search(r"\s", str(value))):
                errors.append("%s: %s %r must be an absolute path without blanks." % (where, field, value))
            elif field == "module" and re.search(r"\s", str(value)):
                errors.append("%s: module %r holds blanks; give a module such as myapp:app." % (where, value))
    return errors


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


def uwsgi_host_plan(apps, probe, settings):
    """What this run does on the host, decided from the probe: errors found
    before any change, warnings, directories, tmpfiles entries, what to remove,
    and the identities the rollback restores."""
    errors, warnings = [], []
    managed = probe.get("managed", {})
    listed = {app["name"] for app in apps}
    present = [app for app in apps if app["state"] == "present"]
    unlisted = sorted(set(managed) - listed)
    policy = settings.get("unlisted_apps", "warn")

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
    kept = [name for name in unlisted if name not in removing]

    users, groups = probe.get("users", {}), probe.get("groups", {})
    dirs_info = probe.get("dirs", {})
    role_dirs = {}
    for index, app in enumerate(apps):
        if app["state"] != "present":
            continue
        where = _where(index, app)
        user, group = users.get(app["uid"], {}), groups.get(app["gid"], {})
        if not user.get("exists"):
            errors.append("%s: user %s does not exist on this host; create it first (ansible.builtin.user) or set "
                          "uid to an existing user." % (where, app["uid"]))
        if not group.get("exists"):
            errors.append("%s: group %s does not exist on this host; create it first (ansible.builtin.group) or set "
                          "gid to an existing group." % (where, app["gid"]))
        errors += _path_errors(where, app, probe.get("paths") or {}, settings)
        if not settings.get("allow_root"):
            if user.get("exists") and user.get("uid") == 0 and app["uid"] not in ("root", "0"):
                errors.append("%s: user %s has uid 0 on this host: it is root under another name; use an "
                              "unprivileged user, or set uwsgi_allow_root: true if you really mean it."
                              % (where, app["uid"]))
            if group.get("exists") and group.get("gid") == 0:
                errors.append("%s: group %s has gid 0 on this host (root's group); use an unprivileged group, or "
                              "set uwsgi_allow_root: true if you really mean it." % (where, app["gid"]))
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
        for holder in _holders(app, probe, removing):
            errors.append("%s: socket %s is already held by %s; stop or remove it first (for a program this "
                          "role manages, list it with state: absent or set uwsgi_unlisted_apps: remove), or give "
                          "this app another socket."
                          % (where, app["socket"], holder))
        if app["socket_kind"] != "unix":
            continue
        if len(app["socket"].encode()) > 102:
            errors.append("%s: socket path %s is %d bytes long; uWSGI and the kernel take at most 102; use a "
                          "shorter path." % (where, app["socket"], len(app["socket"].encode())))
        path = app["socket_dir"]
        info = dirs_info.get(path, {})
        if info.get("exists") and not _role_dir(path, probe):
            if not info.get("is_dir"):
                errors.append("%s: %s, the directory of socket %s, is not a directory." % (where, path, app["socket"]))
            elif user.get("exists") and group.get("exists") and not _writable(info, user, group):
                errors.append("%s: user %s (group %s) cannot create socket %s: %s is %s:%s %s and was not created by "
                              "this role, which leaves its owner and mode as they are. Give the app write access "
                              "there, or put the socket in a directory the role creates (such as %s/%s.sock)."
                              % (where, app["uid"], app["gid"], app["socket"], path, info["owner"], info["group"],
                                 info["mode"], settings["socket_dir"], app["name"]))
            continue
        if not info.get("exists") and path in SYSTEM_DIRS | {"/"}:
            errors.append("%s: %s is a system directory; put the socket in a directory of its own." % (where, path))
            continue
        if not info.get("exists") and not info.get("parent_exists", True):
            errors.append("%s: the parent of %s does not exist; the role creates only the socket's own directory."
                          % (where, path))
            continue
        if path in role_dirs and role_dirs[path]["group"] != app["gid"]:
            errors.append("%s: socket directory %s is shared with app %s of group %s; apps that share a directory "
                          "the role creates must share gid, or use separate directories."
                          % (where, path, role_dirs[path]["app"], role_dirs[path]["group"]))
            continue
        role_dirs.setdefault(path, {"path": path, "group": app["gid"], "app": app["name"],
                                    "exists": bool(info.get("exists")),
                                    "previous_group": info.get("group") if info.get("exists") else None})

    # Directories of managed apps that stay loaded but unlisted keep their entry.
    for name in kept:
        for sock in managed[name].get("sockets", []):
            path = posixpath.dirname(sock) if sock.startswith("/") else None
            if path and path not in role_dirs and _role_dir(path, probe):
                info = dirs_info.get(path, {})
                role_dirs[path] = {"path": path, "group": info.get("group") or managed[name].get("group")
                                   or settings["group"], "app": name, "exists": bool(info.get("exists")),
                                   "previous_group": info.get("group")}

    in_use = {host.socket_key(app["socket"]) for app in present}
    in_use.update(host.socket_key(s) for name in kept for s in managed[name].get("sockets", []))
    removals = []
    for name in sorted(removing):
        record = managed.get(name, {})
        sockets = [s for s in record.get("sockets", []) if s.startswith("/") and host.socket_key(s) not in in_use]
        removals.append({
            "name": name,
            "loaded": name in probe.get("supervisor", {}).get("programs", {}),
            "program_file": record.get("program_file") or "%s/%s.conf" % (settings["supervisor_conf_dir"], name),
            "files": ["%s/%s.ini" % (settings["config_dir"], name), "%s/%s.env.ini" % (settings["config_dir"], name)]
                     + sockets
                     + ["%s/%s.log" % (settings["log_dir"], name)]
                     + ["%s/%s.log.%d" % (settings["log_dir"], name, n) for n in range(1, 6)],
        })
    needed = set(role_dirs)
    stale_dirs = sorted(d for d in probe.get("tmpfiles_dirs", []) if d not in needed and _role_dir(d, probe))
    previous = {name: {"user": rec.get("user"), "group": rec.get("group") or rec.get("ini_group"),
                       "ini_group": rec.get("ini_group")} for name, rec in managed.items()}
    return {
        "errors": errors,
        "warnings": warnings,
        "dirs": [role_dirs[p] for p in sorted(role_dirs)],
        "stale_dirs": stale_dirs,
        "removals": removals,
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


def _int(value):
    try:
        return int(str(value).strip())
    except ValueError:
        return None


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
        others = [(path, _int(value)) for order, path, k, value in entries
                  if k == key and path != our_file and order <= our_name and _int(value) is not None]
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
            ours.setdefault(setting["key"], []).append(_int(setting["value"]))
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
        value_int = _int(value)
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
        live = _int((probe.get("sysctl_live") or {}).get("net.core.somaxconn"))
        if live is None or live < int(ctx["listen_max"]):
            errors.append(
                "uwsgi_manage_sysctl is false and the live net.core.somaxconn on %s is %s, below the largest listen "
                "(%s): uWSGI would refuse to start. Nothing was changed. Raise it where it is managed (a container: "
                "docker run --sysctl net.core.somaxconn=%s, compose sysctls: {net.core.somaxconn: %s}, Kubernetes "
                "securityContext.sysctls) or lower the listen."
                % (ctx["host"], live, ctx["listen_max"], ctx["listen_max"], ctx["listen_max"]))
    for deps in (ctx.get("venv_plan") or {}).get("deps", []):
        for path in deps.get("missing", []):
            errors.append("requirements file %s of %s does not exist on %s: create it before the run, or fix "
                          "requirements." % (path, ", ".join(deps["apps"]), ctx["host"]))
    return errors + list(plan.get("errors", []))


def _count(value):
    values = value if isinstance(value, list) else [value]
    return len(values)


def uwsgi_other_children(app):
    """How many of an app's master's children are not workers, from its
    options: mules (`mules: N`, or each `mule`), spoolers (each `spooler`
    directory, times `spooler-processes`) and attached daemons. The probe
    counts children; uWSGI's workers are what remains."""
    options = {str(k).replace("_", "-").lower(): v for k, v in (app.get("options") or {}).items()}
    extra = 0
    if "mules" in options:
        extra += _int(options["mules"]) or 0
    if "mule" in options:
        extra += _count(options["mule"])
    if "spooler" in options:
        extra += _count(options["spooler"]) * (_int(options.get("spooler-processes", 1)) or 1)
    for key, value in options.items():
        if key.startswith(("attach-daemon", "smart-attach-daemon", "attach-control-daemon")):
            extra += _count(value)
    return extra


def _workers(app, probe):
    """The app's worker count as uWSGI counts them: its master's children
    less its mules, spoolers and attached daemons (None when unknown)."""
    children = (probe.get("workers") or {}).get(app["name"])
    return None if children is None else max(children - uwsgi_other_children(app), 0)


def _socket_in_effect(app, probe, users=None):
    user = (users if users is not None else probe.get("users") or {}).get(app["uid"]) or {}
    return host.socket_in_effect(app["socket"], probe.get("listeners", []),
                                 (probe.get("socket_files") or {}).get(app["socket"]), user.get("uid"))


def uwsgi_proof(apps, probe, users=None):
    """Each present app's verdict after the handlers: RUNNING under Supervisor,
    its listen as the backlog in effect on its socket, its app loaded when it
    was started in this run, as many workers as `processes`, and a 2xx or 3xx
    answer on its check_path when it names one."""
    programs = probe.get("supervisor", {}).get("programs", {})
    verdicts = []
    for app in apps:
        if app["state"] != "present":
            continue
        name = app["name"]
        state = programs.get(name, {})
        listener, wrong = _socket_in_effect(app, probe, users)
        backlog = listener["backlog"] if listener and not wrong else None
        problems = []
        if state.get("state") != "RUNNING":
            problems.append("Supervisor says %s" % state.get("line", "no such program"))
        if wrong and listener:
            problems.append(wrong)
        if backlog != app["listen"] and not (wrong and listener):
            problems.append("ss shows %s" % ("no LISTEN socket" if backlog is None else "backlog %d" % backlog))
        ready = (probe.get("ready") or {}).get(name)
        if ready is not None and not ready["ok"]:
            problems.append("its app did not load: %s" % ready["why"])
        workers = _workers(app, probe)
        scaled = any(str(k).startswith("cheaper") for k in app.get("options") or {})
        if not problems and not scaled and workers != app["processes"]:
            problems.append("its master has %s workers, not %d" % (workers, app["processes"]))
        check = (probe.get("checks") or {}).get(name)
        if check is not None and not problems and not (check["status"] and 200 <= check["status"] < 400):
            problems.append("GET %s answered %s" % (app["check_path"], check["status"] or check["error"]))
        ok = not problems
        verdicts.append({
            "name": name, "ok": ok, "listen": app["listen"], "socket": app["socket"],
            "supervisor": state.get("line", "no such program"), "backlog": backlog,
            "message": ("app %s: RUNNING, backlog %d on %s, %d workers%s" % (
                name, app["listen"], app["socket"], app["processes"],
                ", GET %s answered %s" % (app["check_path"], check["status"]) if check else "")) if ok else (
                "app %s: expected RUNNING with a listen backlog of %d on %s and %d workers; %s"
                % (name, app["listen"], app["socket"], app["processes"], "; ".join(problems))),
        })
    return verdicts


def uwsgi_rollback_report(failed, restored, new, status, logs, log_dir, unserved=None):
    """One line per failed app: what the proof saw, what the rollback did and
    the app's own log lines from this run's failed start."""
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
        else:
            done = "its files did not change in this run, so there was nothing to restore"
        text = logs.get(name, "")
        # An app Supervisor started again after it gave up: show the attempt that failed.
        cut = text.rfind("GAME OVER")
        if cut >= 0:
            end = text.find("\n", cut)
            text = text[:end if end >= 0 else len(text)]
        tail = host.log_tail(text, 15)
        lines.append("%s; %s. Its log (%s/%s.log) during this run: %s" % (
            verdict["message"].replace("app %s: expected" % name, "app %s failed the proof: expected" % name),
            done, log_dir, name, " | ".join(tail) if tail else "(nothing new)"))
    return lines


def _pending(name, probe):
    """Whether an app's files changed after its master last read them (a run
    interrupted after writing them): the role's record of its last proven
    run, else when the master last (re)started, against the files' mtime."""
    record = probe.get("managed", {}).get(name, {})
    took = (probe.get("applied") or {}).get(name, record.get("started"))
    return bool(record.get("config_mtime") and took is not None and int(record["config_mtime"]) > int(took))


PROGRAM_MARGIN = 2.0


def _binary_pending(name, probe):
    """Whether the uwsgi binary an app's program runs was replaced after
    Supervisor started its master (a package upgrade, or a run interrupted
    after a pip build): the master still runs the old one."""
    record = probe.get("managed", {}).get(name, {})
    started = record.get("process_started")
    return bool(record.get("binary_mtime") and started is not None
                and float(record["binary_mtime"]) > float(started) + PROGRAM_MARGIN)


def _deps_pending(app, probe):
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


def _program_pending(name, probe):
    """Whether an app's Supervisor program file changed after Supervisor last
    (re)started its master: a run interrupted after writing it (a new uid)."""
    record = probe.get("managed", {}).get(name, {})
    started = record.get("process_started")
    # A process's start time from /proc is exact to about a second (the boot
    # time is whole seconds): a file written in the second before it counts as read.
    return bool(record.get("program_mtime") and started is not None
                and float(record["program_mtime"]) > float(started) + PROGRAM_MARGIN)


def uwsgi_trial_plan(apps, probe, paths, settings, installed=None, staged=None):
    """What the file write tries aside before it writes anything: every
    present app, with its files' paths, binary, user, group and bound. The
    module tries those whose files would change; `force` names why an app is
    tried even when they do not: its uwsgi binary or packages changed in this
    run (installed: {binaries, deps}), its packages were staged (staged: the
    venv plan's deps, whose stage the trial imports the app from), or its
    files changed after its master last read them. None with uwsgi_trial
    false."""
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
            reasons.append("its new packages, staged in %s" % home)
        elif name in installed.get("deps", []):
            reasons.append("its packages changed")
        if programs.get(name, {}).get("state") == "RUNNING" and _pending(name, probe):
            reasons.append("its files changed after its master last read them")
        if _program_pending(name, probe):
            reasons.append("its Supervisor program changed after its master started")
        if programs.get(name, {}).get("state") == "RUNNING" and _deps_pending(app, probe):
            reasons.append("its packages were installed after its master last loaded them")
        base = "%s/%s" % (paths["config_dir"], name)
        plan.append({"name": name, "ini": base + ".ini", "env": base + ".env.ini",
                     "program": "%s/%s.conf" % (paths["supervisor_conf_dir"], name),
                     "binary": app["binary"], "uid": app["uid"], "gid": app["gid"], "setpriv": settings["setpriv"],
                     "timeout": app["ready_timeout"], "force": "; ".join(reasons),
                     "chdir": app["chdir"], "module": app["module"], "home": home})
    return plan


def uwsgi_trial_line(trial):
    """One line of the run's output for an app tried aside."""
    if trial.get("ok") is None:
        return "%s: %s" % (trial["name"], trial["why"])
    return "%s: tried aside (%s): %s in %s s" % (
        trial["name"], trial.get("because", ""), trial["why"] if trial["ok"] else "FAILED, " + trial["why"],
        trial.get("seconds"))


def uwsgi_apply_plan(apps, changed, probe, strategy="graceful"):
    """How each present app takes what it is asked, the gentlest way that can:

    - load: its program file is new or changed (command, binary, user,
      group): `supervisorctl update` starts it, or stops and starts it;
    - start: it is stopped (by hand, or Supervisor gave up on it);
    - restart: its binary or socket path changed, or it is crash-looping, or
      uwsgi_apply_strategy is restart: a stop (requests finish) and a start;
    - listen: the backlog in effect differs from its listen: a new backlog on
      the open socket, as the app's user (restart where that cannot be done);
    - reload: its ini or environment changed in this run, or changed earlier
      and was never applied (an interrupted run), or its worker count differs:
      uWSGI's graceful reload, which keeps the socket and every queued request.

    changed: the apps whose files changed in this run (programs, inis, envs,
    binaries); probe: the host before this run."""
    programs = probe.get("supervisor", {}).get("programs", {})
    backlogs = host.backlogs_by_socket(probe.get("listeners", []))
    managed = probe.get("managed", {})
    plan = {"load": [], "start": [], "restart": [], "listen": [], "reload": [], "why": []}
    for app in apps:
        if app["state"] != "present":
            continue
        name = app["name"]
        state = programs.get(name, {}).get("state")
        record = managed.get(name, {})
        if name in changed.get("programs", []):
            plan["load"].append(name)
            plan["why"].append("%s: %s (its Supervisor program is %s)" % (
                name, "start" if state is None else "stop and start", "new" if state is None else "changed"))
            continue
        if state is None and name in managed:
            # Its program file is there but Supervisor never loaded it (a run
            # interrupted before `supervisorctl update`): `start` cannot find it.
            plan["load"].append(name)
            plan["why"].append("%s: start (its Supervisor program was written but never loaded)" % name)
            continue
        if state in ("RUNNING", "STARTING", "BACKOFF") and _program_pending(name, probe):
            plan["load"].append(name)
            plan["why"].append("%s: stop and start (its Supervisor program changed after its master started: %s)"
                               % (name, "an interrupted run left it"))
            continue
        if state in ("STOPPED", "EXITED", "FATAL") or state is None:
            plan["start"].append(name)
            plan["why"].append("%s: start (it was %s)" % (name, state or "not loaded"))
            continue
        files_changed = name in changed.get("inis", []) or name in changed.get("envs", [])
        deps_changed = name in changed.get("deps", [])
        deps_pending = state == "RUNNING" and not deps_changed and _deps_pending(app, probe)
        pending = _pending(name, probe)
        workers = _workers(app, probe)
        scaled = any(str(k).startswith("cheaper") for k in app.get("options") or {})
        wrong_workers = state == "RUNNING" and not scaled and workers is not None and workers != app["processes"]
        backlog = backlogs.get(host.socket_key(app["socket"]))
        moved = record.get("sockets") and [host.socket_key(x) for x in record["sockets"]] != [
            host.socket_key(app["socket"])]
        reasons = []
        if files_changed:
            reasons.append("its ini or environment changed")
        elif pending:
            reasons.append("its files changed after its master last read them")
        if deps_changed:
            reasons.append("its packages changed")
        elif deps_pending:
            reasons.append("its packages were installed after its master last loaded them")
        if wrong_workers:
            reasons.append("it runs %d workers, not %d" % (workers, app["processes"]))
        if backlog != app["listen"]:
            reasons.append("its backlog in effect is %s, not %d" % (backlog, app["listen"]))
        hard = []
        if name in changed.get("binaries", []):
            hard.append("its uwsgi binary changed")
        elif state == "RUNNING" and _binary_pending(name, probe):
            hard.append("its uwsgi binary changed after its master started (an upgrade, or an interrupted run)")
        if moved:
            hard.append("its socket moved")
        if state in ("STARTING", "BACKOFF"):
            hard.append("it is %s" % state)
        if backlog is None and state == "RUNNING" and not hard:
            hard.append("no socket of its is listening")
        if state == "RUNNING" and workers == 0 and not hard:
            hard.append("its master has no worker (still loading its app, or crash-looping)")
        listener, wrong = _socket_in_effect(app, probe)
        if state == "RUNNING" and listener and wrong and not hard:
            hard.append(wrong)
        if hard or (reasons and strategy == "restart"):
            plan["restart"].append(name)
            plan["why"].append("%s: stop and start (%s)" % (name, "; ".join(hard + reasons)))
            continue
        if backlog is not None and backlog != app["listen"]:
            plan["listen"].append({"name": name, "socket": app["socket"], "backlog": app["listen"],
                                   "pid": programs.get(name, {}).get("pid"), "uid": app["uid"], "gid": app["gid"],
                                   "was": backlog})
        if files_changed or deps_changed or deps_pending or pending or wrong_workers or (
                backlog is not None and backlog != app["listen"]):
            plan["reload"].append(name)
            plan["why"].append("%s: %sgraceful reload (%s)" % (
                name, "listen %s -> %d on the open socket, then " % (backlog, app["listen"])
                if backlog != app["listen"] else "", "; ".join(reasons)))
    return plan


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


def uwsgi_ready_item(app):
    """What the probe needs to tell that an app started in this run has loaded."""
    lazy = any(str(k).replace("_", "-") in ("lazy-apps", "lazy") for k in app.get("options") or {})
    return {"name": app["name"], "timeout": app["ready_timeout"],
            "processes": app["processes"] + uwsgi_other_children(app), "lazy": lazy}


def uwsgi_check_request(app):
    """The probe's request for an app's check_path."""
    return {"name": app["name"], "socket": app["socket"], "protocol": app["protocol"], "path": app["check_path"]}


def uwsgi_applied_record(verdicts, probe, previous=None):
    """What each app that passed the proof has taken: its config's mtime. Apps
    the run did not judge (unlisted ones it keeps) keep their earlier entry."""
    managed = probe.get("managed", {})
    record = {name: when for name, when in (previous or {}).items() if name in managed}
    record.update({v["name"]: int(managed[v["name"]]["config_mtime"]) for v in verdicts
                   if v["ok"] and managed.get(v["name"], {}).get("config_mtime")})
    return dict(sorted(record.items()))


# The Supervisor program of the listen-queue sampler (files/uwsgi_sampler.py).
SAMPLER_PROGRAM = "uwsgi-sampler"


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
    program, `restart` starts a new script or config (or a stopped sampler),
    "" when it runs as it should or is off."""
    if not on:
        return ""
    changed = set(changed_files or [])
    program = "%s/%s.conf" % (paths["supervisor_conf_dir"], SAMPLER_PROGRAM)
    status = (probe.get("supervisor") or {}).get("programs", {}).get(SAMPLER_PROGRAM)
    if program in changed or status is None:
        return "update"
    if changed & {paths["sampler"], paths["sampler_config"]} or status.get("state") != "RUNNING":
        return "restart"
    return ""


def uwsgi_file_plan(apps, plan, paths, environments, sampler=None):
    """Every file and directory the role writes for its present apps, for one
    run of the uwsgi_files action: the socket directories it owns and their
    tmpfiles.d entry, the config and helper directories, the helper, and per
    app its environment (secret: from `environments`, the apps with their
    values), its ini and its Supervisor program (from the public view)."""
    secret = {app["name"]: app for app in environments}
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
            {"src": "etc/uwsgi/app.ini.j2", "path": base + ".ini", "vars": {"item": app},
             "owner": "root", "group": app["gid"], "mode": "0640", "backup": True},
            {"src": "etc/supervisor/conf.d/program.conf.j2", "vars": {"item": app},
             "path": "%s/%s.conf" % (paths["supervisor_conf_dir"], app["name"]),
             "owner": "root", "group": "root", "mode": "0644", "backup": True},
        ]
    copies = [{"src": "uwsgi_listen.py", "path": paths["helper"], "owner": "root", "group": "root", "mode": "0755"}]
    contents = []
    if sampler:
        # The textfile directory keeps its owner (node_exporter's package may own it);
        # the sampler's group may replace files in it.
        textfile = {"path": sampler["textfile_dir"], "mode": "g+rwx"}
        if sampler.get("group"):
            textfile["group"] = sampler["group"]
        dirs.append(textfile)
        # Before the role first changes it, what the directory was: put back when the sampler goes.
        before = sampler.get("before") or {}
        if sampler.get("record") and not sampler.get("recorded") and before.get("exists"):
            contents.append({"path": sampler["record"], "owner": "root", "group": "root", "mode": "0600",
                             "content": json.dumps({"path": sampler["textfile_dir"], "group": before.get("group"),
                                                    "mode": before.get("mode")}, sort_keys=True) + "\n"})
        copies.append({"src": "uwsgi_sampler.py", "path": paths["sampler"], "owner": "root", "group": "root",
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
    if _pending(name, probe):
        return "its files had changed after its master last read them, so they never served"
    return None


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


# net.core.somaxconn's kernel defaults: 128 before Linux 5.4, 4096 since.
KERNEL_SOMAXCONN_DEFAULTS = (128, 4096)


def _table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header] + rows]


def uwsgi_report(probes):
    """The fleet's listen queues, from each host's probe (its sampler's
    metrics, its listening sockets and its kernel limits): per app the backlog,
    the peak queue and its share of the backlog, and the host's TCP overflows;
    and every listener capped at an older somaxconn (started before the raise,
    so a restart gives it the backlog it asks for)."""
    apps, capped, missing = [], [], []
    for hostname in sorted(probes):
        probe = probes[hostname]
        samples = probe.get("textfile_samples")
        if samples is None:
            missing.append(hostname)
            samples = []
        node = {s["name"]: s["value"] for s in samples if not s["labels"]}
        per_app = {}
        for sample in samples:
            app = sample["labels"].get("app")
            if app:
                per_app.setdefault((app, sample["labels"].get("socket", "")), {})[sample["name"]] = sample["value"]
        for (app, socket), values in sorted(per_app.items()):
            backlog = values.get("uwsgi_listen_backlog")
            peak = values.get("uwsgi_listen_queue_peak_length")
            apps.append({
                "host": hostname, "app": app, "socket": socket,
                "up": values.get("uwsgi_listen_socket_up") == 1,
                "backlog": int(backlog) if backlog is not None else None,
                "peak": int(peak) if peak is not None else None,
                "peak_pct": round(100.0 * peak / backlog, 1) if backlog and peak is not None else None,
                "overflows": int(node.get("uwsgi_sampler_tcp_listen_overflows_total", 0)),
            })
        live = (probe.get("sysctl_live") or {}).get("net.core.somaxconn")
        older = set(KERNEL_SOMAXCONN_DEFAULTS)
        older.update(v for v in (_int(s["value"]) for s in probe.get("sysctl_settings", [])
                                 if s["key"] == "net.core.somaxconn") if v is not None)
        app_sockets = {host.socket_key(socket) for _, socket in per_app}
        for listener in probe.get("listeners", []):
            backlog = listener["backlog"]
            if live is None or backlog >= live or backlog not in older:
                continue
            if host.listener_key(listener) in app_sockets:
                continue
            owners = sorted({name for name, _ in listener.get("processes", [])} | set(listener.get("programs", [])))
            capped.append({"host": hostname, "socket": listener["local"], "backlog": backlog, "somaxconn": live,
                           "owners": owners})
    lines = ["Listen queues (peak over the sampler's window):"]
    lines += _table(["host", "app", "socket", "backlog", "peak", "peak %", "tcp overflows"], [
        [a["host"], a["app"], a["socket"], a["backlog"] if a["up"] else "down", a["peak"],
         "" if a["peak_pct"] is None else "%.1f%%" % a["peak_pct"], a["overflows"]] for a in apps])
    if missing:
        lines.append("No sampler metrics on: %s (uwsgi_sampler off, or the sampler has not written yet)."
                     % ", ".join(missing))
    if capped:
        lines.append("Listeners capped by an older net.core.somaxconn: restart each to benefit from the raise:")
        lines += _table(["host", "socket", "backlog", "somaxconn now", "process"], [
            [c["host"], c["socket"], c["backlog"], c["somaxconn"], ", ".join(c["owners"]) or "?"] for c in capped])
    else:
        lines.append("No listener is capped by an older net.core.somaxconn.")
    return {"apps": apps, "capped": capped, "missing": missing, "lines": lines}


class FilterModule:
    def filters(self):
        return {
            "uwsgi_normalize": uwsgi_normalize,
            "uwsgi_public": uwsgi_public,
            "uwsgi_input_errors": uwsgi_input_errors,
            "uwsgi_host_plan": uwsgi_host_plan,
            "uwsgi_sysctl_overrides": uwsgi_sysctl_overrides,
            "uwsgi_sysctl_targets": uwsgi_sysctl_targets,
            "uwsgi_proof": uwsgi_proof,
            "uwsgi_rollback_report": uwsgi_rollback_report,
            "uwsgi_socket_key": host.socket_key,
            "uwsgi_ini_escape": uwsgi_ini_escape,
            "uwsgi_check_request": uwsgi_check_request,
            "uwsgi_ready_item": uwsgi_ready_item,
            "uwsgi_apply_plan": uwsgi_apply_plan,
            "uwsgi_trial_plan": uwsgi_trial_plan,
            "uwsgi_path_checks": uwsgi_path_checks,
            "uwsgi_trial_line": uwsgi_trial_line,
            "uwsgi_applied_record": uwsgi_applied_record,
            "uwsgi_listen_fallbacks": uwsgi_listen_fallbacks,
            "uwsgi_file_plan": uwsgi_file_plan,
            "uwsgi_changed_apps": uwsgi_changed_apps,
            "uwsgi_dirs_restored": uwsgi_dirs_restored,
            "uwsgi_rollback_files": uwsgi_rollback_files,
            "uwsgi_sampler_action": uwsgi_sampler_action,
            "uwsgi_report": uwsgi_report,
            "uwsgi_preflight_errors": uwsgi_preflight_errors,
            "uwsgi_venv_plan": uwsgi_venv_plan,
        }
