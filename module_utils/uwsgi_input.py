"""The role's input stage: the contract of its variables and of each app
(meta/argument_specs.yml, checked by ansible-core's own validator, one short
line per mistake), each app with its defaults filled in, and every rule across
variables that the argument specs cannot express, each error saying what to
change. Pure functions of the role's variables."""

from __future__ import annotations

import difflib
import os
import posixpath
import re
from collections.abc import Mapping

import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.errors import ArgumentValueError

from ansible.module_utils import uwsgi_host as host


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
    "lazy-apps": "code_reload (chain turns lazy-apps on)", "lazy": "code_reload (chain turns lazy-apps on)",
    "touch-chain-reload": "revision, or the handler uwsgi reload",
    "disable-logging": "request_logging",
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


# The contract. ansible-core checks a role's `main` entry point by itself
# before the role's first task, and a failure prints the whole specification
# (16 kB for one mistyped key). So `main` lists no options: the role's
# variables are the entry point `variables`, each app's keys the entry point
# `app`, and the role checks them here, with ansible-core's own validator,
# one short line per mistake.
SPECS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "meta", "argument_specs.yml")
_SPECS = {}
# Words that are an app key by another name.
APP_KEY_SYNONYMS = {"user": "uid", "group": "gid", "workers": "processes", "backlog": "listen", "venv": "virtualenv",
                    "home": "virtualenv", "env": "environment", "wsgi": "module"}
# App keys whose values may hold secrets: a message names their kind only.
_UNSHOWN_KEYS = {"environment", "options"}
_KINDS = {"int": "an int", "bool": "a bool (true or false)", "float": "a number", "dict": "a dict", "list": "a list",
          "str": "a string", "path": "a path (a string)", "raw": "a value"}
# How close a mistyped name must be to a known one to be named (difflib's ratio).
CLOSE = 0.8


def uwsgi_specs():
    """The role's argument specs (meta/argument_specs.yml), by entry point."""
    if not _SPECS:
        with open(SPECS_FILE, encoding="utf-8") as handle:
            # libyaml's loader where PyYAML has it: this file is read in every task that checks input.
            _SPECS.update(yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))["argument_specs"])
    return _SPECS


def _kind_of(value):
    for kind, name in ((bool, "a bool"), (int, "an int"), (float, "a number"), (str, "a string"), (dict, "a dict"),
                       (list, "a list")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else "a %s" % type(value).__name__


def _shown(key, value):
    """A value as a message may quote it: short scalars only, never a secret."""
    if key in _UNSHOWN_KEYS or not isinstance(value, (str, int, float)):
        return "(%s)" % _kind_of(value)
    text = repr(str(value)) if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:56] + "...'"


def _closest(key, known, synonyms=None):
    """The name in `known` a mistyped `key` most likely meant, or None; the
    role's prefix uwsgi_ counts for nothing in the comparison."""
    word = str(key).lower().replace("-", "_")
    bare = {(name[6:] if name.startswith("uwsgi_") else name): name for name in known}
    word = word[6:] if word.startswith("uwsgi_") else word
    if word in bare:
        return bare[word]
    if synonyms and word in synonyms:
        return synonyms[word]
    match = difflib.get_close_matches(word, list(bare), n=1, cutoff=CLOSE)
    return bare[match[0]] if match else None


def _value_errors(label, key, spec, value):
    """What ansible-core's validator finds wrong with one value against its
    spec (type, elements, choices), as one short line after `label`. A dict
    or a list must be one: the role reads the value as given, never the
    validator's conversion of a string."""
    container = {"dict": dict, "list": list}.get(spec.get("type"))
    if container and value is not None and not isinstance(value, container):
        found = [TypeError()]
    else:
        bare = {k: spec[k] for k in ("type", "elements", "choices") if k in spec}
        found = ArgumentSpecValidator({key: bare}).validate({key: value}).errors.errors
    if not found:
        return []
    if any(isinstance(error, ArgumentValueError) for error in found) and "choices" in spec:
        return ["%s %s is not one of %s." % (label, _shown(key, value), ", ".join(map(str, spec["choices"])))]
    kind = _KINDS.get(spec.get("type", "str"), spec.get("type"))
    if "elements" in spec:
        kind += " of %s values" % spec["elements"]
    return ["%s %s is not %s." % (label, _shown(key, value), kind)]


def _spec_where(index, app):
    name = app.get("name")
    if isinstance(name, str) and name:
        return "uwsgi_apps[%d] (%s)" % (index, name if len(name) <= 40 else name[:37] + "...")
    return "uwsgi_apps[%d]" % index


def _unknown_key(where, key, spec):
    shown = repr(str(key)) if len(str(key)) <= 60 else repr(str(key)[:56] + "...")
    close = _closest(key, spec, APP_KEY_SYNONYMS)
    if close:
        return "%s: unknown key %s; did you mean '%s'?" % (where, shown, close)
    return "%s: unknown key %s; an app's keys are %s." % (where, shown, ", ".join(sorted(spec)))


def _app_spec_errors(index, app, spec):
    """Unknown keys, wrong types and choices, and a missing required key of one app."""
    if not isinstance(app, dict):
        return ["uwsgi_apps[%d] is %s, not an app: each app is a dict of its keys (name, module, listen ...)."
                % (index, _kind_of(app))]
    where = _spec_where(index, app)
    errors = []
    for key, value in app.items():
        if str(key) not in spec:
            errors.append(_unknown_key(where, key, spec))
        else:
            errors.extend(_value_errors("%s: %s" % (where, key), str(key), spec[str(key)], value))
    for key, item in spec.items():
        if item.get("required") and app.get(key) in (None, ""):
            errors.append("%s: %s is missing; every app needs one." % (where, key))
    return errors


def uwsgi_role_variables(names, specs=None):
    """Of the variable names given (those a play defines), the role's own."""
    variables = (specs or uwsgi_specs())["variables"]["options"]
    return sorted(name for name in names if name in variables)


def _plain(value):
    """`value` as plain dicts and lists, each element read once: Ansible hands
    a filter containers that template an element on every read, and the
    validator copies and reads each many times (5 s for 40 apps)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def uwsgi_spec_errors(values, specs=None):
    """Every type, choice and unknown-key mistake in the role's variables
    (`values`: those the play defines, by name) and in each app of
    uwsgi_apps, one short line each, found by ansible-core's own validator
    against the specs' entry points `variables` and `app`."""
    values = _plain(values)
    specs = specs or uwsgi_specs()
    variables, app_spec = specs["variables"]["options"], specs["app"]["options"]
    errors = []
    for name in sorted(values):
        if name in variables and name != "uwsgi_apps":
            errors.extend(_value_errors(name, name, variables[name], values[name]))
    apps = values.get("uwsgi_apps")
    if apps is not None and not isinstance(apps, list):
        return errors + ["uwsgi_apps must be a list of apps, each a dict of its keys (name, module, listen ...); it "
                         "is %s." % _kind_of(apps)]
    for index, app in enumerate(apps or []):
        errors.extend(_app_spec_errors(index, app, app_spec))
    return errors


def uwsgi_input_warnings(defined, apps, specs=None):
    """What the play may mean but the role never reads: a defined uwsgi_*
    variable the role has not, when its name is close to one of the role's
    (named), and an empty uwsgi_apps. Warnings: the run goes on."""
    variables = (specs or uwsgi_specs())["variables"]["options"]
    warnings = []
    for name in sorted(set(defined) - set(variables)):
        close = _closest(name, variables)
        if close:
            warnings.append("%s is set, but the role has no variable of that name and ignores it; did you mean %s?"
                            % (name, close))
    if not apps:
        warnings.append("uwsgi_apps lists no app, so this run configures none; it still installs uWSGI and "
                        "Supervisor and, unless uwsgi_manage_sysctl is false, sets the kernel's listen limits. List "
                        "the apps in uwsgi_apps (each with at least name and module).")
    return warnings


def _pick(value, default):
    return default if value is None or value == "" else value


def _count(value):
    return len(value if isinstance(value, list) else [value])


def as_int(value):
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def uwsgi_other_children(app):
    """How many of an app's master's children are not workers, from its
    options: mules (`mules: N`, or each `mule`), spoolers (each `spooler`
    directory, times `spooler-processes`) and attached daemons. The probe
    counts children; uWSGI's workers are what remains."""
    options = {str(k).replace("_", "-").lower(): v for k, v in (app.get("options") or {}).items()}
    extra = 0
    if "mules" in options:
        extra += as_int(options["mules"]) or 0
    if "mule" in options:
        extra += _count(options["mule"])
    if "spooler" in options:
        extra += _count(options["spooler"]) * (as_int(options.get("spooler-processes", 1)) or 1)
    for key, value in options.items():
        if key.startswith(("attach-daemon", "smart-attach-daemon", "attach-control-daemon")):
            extra += _count(value)
    return extra


def _chain(app, code_reload):
    """Whether new code reaches the app by a chain reload: code_reload chain,
    and a master whose children are all workers (a chain reload replaces
    workers only; mules, spoolers and daemons would keep the old code)."""
    return code_reload == "chain" and uwsgi_other_children(app) == 0


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
        strategy = str(_pick(app.get("apply_strategy"), settings.get("apply_strategy", "beside")))
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
            "revision": None if _pick(app.get("revision"), None) is None else str(app["revision"]),
            "log_max_bytes": str(_pick(app.get("log_max_bytes"), settings.get("log_max_bytes", "50MB"))),
            "log_backups": int(_pick(app.get("log_backups"), settings.get("log_backups", 10))),
            "request_logging": str(_pick(app.get("request_logging"), settings.get("request_logging", "errors"))),
            "code_reload": str(_pick(app.get("code_reload"), settings.get("code_reload", "chain"))),
            "apply_strategy": strategy,
            # Beside: prefork instances started beside the serving one (docs/zerg.md); no chain reload.
            "beside": strategy == "beside",
            # The pool's own socket, that only the app's user reaches: its instances attach there.
            "zerg": "%s/%s/pool.zerg" % (settings.get("zerg_dir", "/var/lib/uwsgi-zerg"), name),
            # Root's mark that the pool binds its socket beside the path (a move in progress).
            "stage_mark": "%s/%s" % (settings.get("stage_dir", "/run/backlogops-uwsgi-stage"), name),
            "chain": strategy != "beside" and _chain(
                app, str(_pick(app.get("code_reload"), settings.get("code_reload", "chain")))),
            "uwsgi_venv": uwsgi_venv,
            "binary": (uwsgi_venv + "/bin/uwsgi") if pip else settings["binary"],
        })
    return out


def uwsgi_public(apps):
    """The apps as loops may print them: environment values replaced by their keys."""
    return [dict(app, environment=sorted(app.get("environment") or {})) for app in apps]


def uwsgi_input(values, defined, settings, specs=None):
    """The role's input, checked and filled in, in one call: `errors`, the
    spec mistakes (uwsgi_spec_errors); `warnings` (uwsgi_input_warnings, and
    deprecated variables); with no error, `apps` (uwsgi_normalize), `public`
    (uwsgi_public), `present`, the public apps whose state is present, and
    `settings`, read once.

    values: the role's variables the play defines, by name; defined: the
    names of every uwsgi_* variable it defines. `settings` is read only when
    the specs find nothing wrong, so a mistyped value fails here, not in a
    template."""
    values = _plain(values)
    errors = uwsgi_spec_errors(values, specs)
    warnings = uwsgi_input_warnings(defined, values.get("uwsgi_apps"), specs)
    if "uwsgi_verify_retries" in values:
        warnings.append("uwsgi_verify_retries is deprecated and will be removed in 2.0.0: set uwsgi_verify_timeout "
                        "(%s seconds, as before) instead." % values["uwsgi_verify_retries"])
    if errors:
        return {"errors": errors, "warnings": warnings, "apps": [], "public": [], "present": []}
    settings = _plain(settings)
    apps = uwsgi_normalize(values.get("uwsgi_apps"), settings)
    public = uwsgi_public(apps)
    return {"errors": [], "warnings": warnings, "apps": apps, "public": public,
            "present": [app for app in public if app["state"] == "present"], "settings": settings}


def app_label(index, app):
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
    "set-placeholder", "lazy-apps", "touch-chain-reload", "hook-post-fork", "disable-logging", "log-5xx",
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


def _setting_errors(settings, sysctls):
    """The role-wide variables' errors."""
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
    return errors


def _name_errors(where, app, names):
    """An app's name: its characters, unique, not Supervisor's or the sampler's, short enough."""
    errors = []
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
    return errors


def _listen_errors(where, app, ctx):
    listen, somaxconn = app["listen"], ctx["somaxconn"]
    if listen < 1 or listen > 65535:
        return ["%s: listen (%d) must be between 1 and 65535." % (where, listen)]
    if listen > somaxconn:
        return ["%s: listen (%d) exceeds uwsgi_somaxconn (%d), so uWSGI would refuse to start; raise "
                "uwsgi_somaxconn to at least %d (or leave it unset to derive it) or lower the listen."
                % (where, listen, somaxconn, listen)]
    return []


def _socket_errors(where, app, ctx):
    """The socket's form, and no socket or port of another app (ctx["sockets"] collects them)."""
    errors = []
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
    if key in ctx["sockets"]:
        errors.append('%s: socket "%s" is already used by app %s; give each app its own socket or port.'
                      % (where, socket, ctx["sockets"][key]))
    ctx["sockets"].setdefault(key, app["name"])
    return errors


def _worker_errors(where, app, _ctx):
    if app["processes"] < 1 or app["threads"] < 1:
        return ["%s: processes (%d) and threads (%d) must each be at least 1."
                % (where, app["processes"], app["threads"])]
    return []


def _chmod_errors(where, app, ctx):
    if not re.match(r"^[0-7]{3,4}$", app["chmod_socket"]):
        return ['%s: chmod_socket "%s" is not an octal mode such as "660".' % (where, app["chmod_socket"])]
    if app["chmod_socket"][-1] in "2367" and not ctx["settings"].get("allow_world_writable_socket"):
        return ["%s: chmod_socket %s lets every local user write to the socket; use 660 with a group the "
                "web server is in, or set uwsgi_allow_world_writable_socket: true." % (where, app["chmod_socket"])]
    return []


def _identity_errors(where, app, ctx):
    errors = ['%s: %s "%s" is not a user or group name or number.' % (where, field, app[field])
              for field in ("uid", "gid") if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$", app[field])]
    if app["uid"] in ("root", "0") and not ctx["settings"].get("allow_root"):
        errors.append("%s: uid %s runs the app as root; use an unprivileged user such as www-data, or set "
                      "uwsgi_allow_root: true if you really mean it." % (where, app["uid"]))
    return errors


def _option_keys(app):
    """An app's options by their uWSGI spelling (lower case, - for _): {spelling: key as given}."""
    return {str(k).replace("_", "-").lower(): k for k in app["options"]}


def _loader_errors(where, app, _ctx):
    if not app["module"] and not APP_LOADERS.intersection(_option_keys(app)):
        return ["%s: no app to load; set module (for example myapp:app) or an extra option wsgi-file or mount."
                % where]
    return []


def _option_value_errors(where, original, value):
    if isinstance(value, (dict, list)):
        return ["%s: options.%s has a %s value, which uwsgi.ini cannot hold; give a string, a number, a boolean "
                "or a list of those." % (where, original, "dict" if isinstance(value, dict) else "list")]
    if value is None:
        return ["%s: options.%s has no value; give one, or remove the key." % (where, original)]
    if not _one_line(str(value)):
        return ["%s: options.%s holds a line break or NUL, which would add lines to uwsgi.ini; give a single line."
                % (where, original)]
    return []


def _option_errors(where, app, _ctx):
    """Each extra option: no socket of its own, none the role sets, values one ini line can hold."""
    errors = []
    options = app["options"]
    for key, original in sorted(_option_keys(app).items()):
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
            errors.extend(_option_value_errors(where, original, value))
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]*$", str(original)):
            errors.append('%s: options key "%s" is not a uWSGI option name.' % (where, original))
    return errors


def _ini_names(app):
    """The option names an app's ini may set: a `%(NAME)` of one is replaced by uWSGI."""
    return ROLE_INI_KEYS | set(_option_keys(app)) | set(map(str, app["options"]))


def _environment_errors(where, app, _ctx):
    errors = []
    ini_names = _ini_names(app)
    for key, value in sorted((app["environment"] or {}).items()):
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(key)):
            errors.append('%s: environment key "%s" is not a variable name (letters, digits and _).' % (where, key))
        elif str(key).upper().startswith("UWSGI_"):
            errors.append("%s: environment.%s: uWSGI reads UWSGI_* variables as its own options (at every "
                          "reload); set the option in options instead." % (where, key))
        if isinstance(value, (dict, list)) or value is None:
            errors.append("%s: environment.%s must be a string or a number." % (where, key))
        elif _uncarried(value, ini_names):
            errors.append("%s: environment.%s %s; remove it from the value." % (where, key, _uncarried(value, ini_names)))
    return errors


def _field_errors(where, app, _ctx):
    """The single-value fields: check_path, log rotation, revision, ready_timeout."""
    errors = []
    if app.get("check_path") is not None and not re.match(r"^/[\x21-\x7e]*$", str(app["check_path"])):
        errors.append("%s: check_path %r must be a path starting with / without blanks." % (where, app["check_path"]))
    if not re.match(r"^\d+(KB|MB|GB)?$", str(app.get("log_max_bytes", "50MB"))):
        errors.append("%s: log_max_bytes %r is not a size Supervisor reads; give bytes, or a number with KB, MB "
                      "or GB, such as 50MB." % (where, app.get("log_max_bytes")))
    if app.get("log_backups", 0) < 0:
        errors.append("%s: log_backups (%d) must be 0 or more." % (where, app["log_backups"]))
    if app.get("revision") is not None and not re.match(r"^[\x21-\x7e]{1,200}$", app["revision"]):
        errors.append("%s: revision %r must be one word of printable characters (a git SHA, a tag, a release "
                      "name), at most 200." % (where, app["revision"]))
    if app.get("ready_timeout", 1) < 1:
        errors.append("%s: ready_timeout (%d) must be at least 1 second." % (where, app["ready_timeout"]))
    return errors


def _path_errors(where, app, _ctx):
    """module, chdir and virtualenv: values an ini line carries; the two paths absolute, none with blanks."""
    errors = []
    ini_names = _ini_names(app)
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


def _dependency_rule(where, app, ctx):
    return _dependency_errors(where, app, ctx["settings"])


# The rules of a present app, in the order their errors are listed.
APP_RULES = (_dependency_rule, _listen_errors, _socket_errors, _worker_errors, _chmod_errors, _identity_errors,
             _loader_errors, _option_errors, _environment_errors, _field_errors, _path_errors)


def _list_errors(apps, settings):
    """uwsgi_logrotate_options and uwsgi_reload_apps."""
    errors = []
    for option in settings.get("logrotate_options") or []:
        if not _one_line(str(option)) or re.search(r"[{}]", str(option)):
            errors.append("uwsgi_logrotate_options: %r must be one logrotate directive on one line, without braces."
                          % (option,))
    present = {app["name"] for app in apps if app["state"] == "present"}
    unknown = [str(n) for n in settings.get("reload_apps") or [] if str(n) not in present]
    if unknown:
        errors.append("uwsgi_reload_apps names %s, which %s no present app in uwsgi_apps; name apps from uwsgi_apps "
                      "(%s), or leave it empty for all of them." % (", ".join(unknown), "is" if len(unknown) == 1
                                                                    else "are", ", ".join(sorted(present)) or "none"))
    return errors


def uwsgi_input_errors(apps, settings, sysctls):
    """Every input error the argument specs cannot express, each saying what to change.

    sysctls: the kernel limits the run persists (net.core.somaxconn, ...)."""
    errors = _setting_errors(settings, sysctls)
    ctx = {"settings": settings, "somaxconn": int(sysctls["net.core.somaxconn"]), "sockets": {}}
    names = set()
    for index, app in enumerate(apps):
        where = app_label(index, app)
        errors.extend(_name_errors(where, app, names))
        names.add(app["name"])
        if app["state"] == "present":
            for rule in APP_RULES:
                errors.extend(rule(where, app, ctx))
    return errors + _list_errors(apps, settings)


# The Supervisor program of the listen-queue sampler (files/uwsgi_sampler.py).
SAMPLER_PROGRAM = "uwsgi-sampler"
