#!/usr/bin/python
"""Read, in one module run, everything the role decides on: never changes the host."""

from __future__ import annotations

DOCUMENTATION = r"""
module: uwsgi_probe
short_description: Read the host's state for the backlogops.uwsgi role, changing nothing
description:
  - Reads the kernel's limits, the sysctl files, Supervisor's programs and the role's own
    program files, the listening sockets with their backlog in effect, users, groups,
    socket directories and log sizes, in one run.
  - With O(wait_for), first waits (up to O(wait_timeout) seconds) until none of those
    programs is still starting or backing off.
options:
  supervisorctl: {type: path, default: /usr/bin/supervisorctl, description: Supervisor's client.}
  supervisor_conf_dir: {type: path, required: true, description: Directory of the program files.}
  config_dir: {type: path, required: true, description: Directory of the apps' ini files.}
  log_dir: {type: path, required: true, description: Directory of the apps' logs.}
  tmpfiles_file: {type: path, required: true, description: The role's tmpfiles.d file.}
  users: {type: list, elements: str, default: [], description: Users to look up.}
  groups: {type: list, elements: str, default: [], description: Groups to look up.}
  dirs: {type: list, elements: path, default: [], description: Socket directories to stat.}
  sysctl_keys: {type: list, elements: str, default: [], description: Kernel settings to read live.}
  sysctl_paths: {type: list, elements: path, default: [], description: Files and directories to scan for them.}
  packages: {type: list, elements: str, default: [], description: Debian packages whose installed state to report.}
  log_names: {type: list, elements: str, default: [], description: Apps whose log to return from its offset on.}
  log_offsets: {type: dict, default: {}, description: App name to a log size (missing names start at 0).}
  wait_for: {type: list, elements: str, default: [], description: Programs to wait for.}
  applied_file: {type: path, description: The role's record of the config each app last took (JSON).}
  wait_timeout: {type: int, default: 30, description: Seconds to wait for them at most.}
  ready:
    type: list
    elements: dict
    default: []
    description:
      - Apps started in this run (name, timeout in seconds), with O(log_offsets). Waits until each app's log
        since its offset says its app is loaded, or it gave up (exit, game over, a new master), or the timeout.
  since: {type: float, description: Epoch seconds when this run began (workers forked later are new).}
  fresh:
    type: list
    elements: dict
    default: []
    description:
      - Apps chain-reloaded in this run (name, since in seconds after boot, timeout in seconds, processes). Waits
        until every worker of each started after its since, or the timeout; reports the workers left behind.
  service: {type: str, description: A systemd unit whose active and enabled state to report.}
  venvs:
    type: list
    elements: path
    default: []
    description: Virtualenvs whose uWSGI (version, built with PCRE) and the role's digest of their packages to report.
  requirements: {type: list, elements: path, default: [], description: Requirements files whose sha256 to report.}
  textfile: {type: path, description: The sampler's metrics file (Prometheus text) to read and parse.}
  textfile_record:
    type: path
    description: The role's record (JSON) of the textfile directory's group and mode before the role changed them.
  venv_homes_dir: {type: path, description: Where the role keeps each virtualenv's package sets (their homes).}
  fingerprints:
    type: list
    elements: path
    default: []
    description: Files and directories the role writes, each returned with its kind, owner, group, mode and digest.
  digest_key: {type: str, no_log: true, description: The run's key for the fingerprints' HMAC-SHA256 digests.}
  lock_file:
    type: path
    description:
      - The role's lock, whose holder to report (read before and after the rest, never taken), as C(lock.holder)
        and C(lock.moved) (whether it was taken or given back meanwhile).
  write_dirs:
    type: list
    elements: path
    default: []
    description: Directories the run writes to; each that is read-only, full or not writable is reported.
  socket_files:
    type: list
    elements: path
    default: []
    description: Unix socket paths whose inode, device and owner to report (lstat; nothing is opened).
  binary:
    type: path
    description: The uwsgi binary the apps' programs run (an apt install); the result says what keeps it from starting.
  paths:
    type: list
    elements: str
    default: []
    description: Globs whose match to report (a trailing / matches directories only); nothing is opened or read.
  checks:
    type: list
    elements: dict
    default: []
    description: Requests to make once ready (name, socket, protocol uwsgi or http, path); returns each status.
  socket_client:
    type: str
    description:
      - The user the apps' unix sockets are for (the web server's). For each of O(socket_files) that is a socket,
        a child process with that user's identity alone (uid, gid, groups) says whether it may connect, with the
        owner, group and mode of the socket and of each directory on its path; O(checks) on a unix socket are made
        by such a child. TCP sockets are not checked (anyone can connect).
author: backlogops
"""

RETURN = r"""
probe:
  description: What the host said; see the role's README for each key.
  returned: always
  type: dict
"""

import glob
import grp
import hashlib
import json
import os
import pwd
import re
import stat
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
    NOT_REGULAR,
    NOT_ROOT,
    as_user,
    FILE_LIMIT,
    client_request,
    fingerprint,
    is_roles_program,
    may_connect,
    parse_ini_home,
    parse_ini_sockets,
    path_chain,
    parse_program_file,
    parse_ss_listeners,
    parse_supervisor_sections,
    parse_supervisor_status,
    parse_prometheus_text,
    parse_proc_stat,
    parse_sysctl_grep,
    parse_tmpfiles_dirs,
    program_of_pid,
    read_log,
    read_text,
    read_untrusted,
    requirements_digest,
    requirements_files,
    slot_app,
    supervisor_rpc,
    supervisor_serverurl,
    supervisor_status_text,
    ss_device,
    untrusted_by,
    moved_in,
    with_extended,
)
from ansible.module_utils.uwsgi_wait import children_of, log_since, settle, started_at, uptime

BACKUP = re.compile(r"^(?P<name>.+)\.\d+\.\d{4}-\d{2}-\d{2}@\d{2}:\d{2}:\d{2}~$")


def lock_look(path):
    """The role's lock as it is, read without taking it: (holder, stamp).
    A holder that is not root's own small regular file counts as held
    (taking the lock names what is wrong with it)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {"id": "unreadable (%s)" % exc.strerror}, None
    stamp = [st.st_ino, st.st_mtime_ns, st.st_size]
    if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        return {"id": "not root's own file"}, stamp
    try:
        holder = json.loads(read_text(path, "", limit=65536) or "{}")
    except ValueError:
        holder = {"id": "unreadable"}
    return (holder if isinstance(holder, dict) else {"id": "unreadable"}), stamp


def socket_file(path):
    """What is at a unix socket's path: its inode and device (as ss
    --extended prints a bound socket's) and its owner, the user that bound it."""
    try:
        st = os.lstat(path)
    except OSError:
        return {"exists": False}
    return {"exists": True, "is_socket": stat.S_ISSOCK(st.st_mode), "ino": st.st_ino, "uid": st.st_uid,
            "dev": ss_device(st.st_dev)}


# A directory the run writes to needs at least this much room: its files are
# small, but a log that cannot grow hides why an app does not start.
FREE_MIN = 1024 * 1024


def write_problem(path):
    """Why a run could not write in directory `path` (or, when it does not
    exist yet, in the directory it would be made in): a read-only or full
    file system, or no write for root; None when it can."""
    here = path
    while not os.path.isdir(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    try:
        st = os.statvfs(here)
    except OSError as exc:
        return "%s: %s" % (here, exc.strerror)
    if st.f_flag & os.ST_RDONLY:
        return "%s is on a read-only file system" % here
    if st.f_bavail * st.f_frsize < FREE_MIN or st.f_favail == 0:
        return "the file system of %s is full (%d kB free, %d inodes)" % (
            here, st.f_bavail * st.f_frsize // 1024, st.f_favail)
    if not os.access(here, os.W_OK):
        return "%s is not writable, even by root (immutable?)" % here
    return None


def user_info(name):
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        return {"exists": False}
    return {"exists": True, "uid": entry.pw_uid, "gid": entry.pw_gid, "name": entry.pw_name,
            "groups": sorted(os.getgrouplist(entry.pw_name, entry.pw_gid))}


def group_info(name):
    try:
        entry = grp.getgrgid(int(name)) if name.isdigit() else grp.getgrnam(name)
    except (KeyError, ValueError):
        return {"exists": False}
    return {"exists": True, "gid": entry.gr_gid, "name": entry.gr_name}


def name_of(table, ident):
    try:
        return (pwd.getpwuid if table == "user" else grp.getgrgid)(ident)[0]
    except KeyError:
        return str(ident)


def dir_info(path):
    try:
        st = os.stat(path)
    except OSError:
        parent = os.path.dirname(path.rstrip("/")) or "/"
        return {"exists": False, "parent_exists": os.path.isdir(parent)}
    return {"exists": True, "is_dir": stat.S_ISDIR(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
            "owner": name_of("user", st.st_uid), "group": name_of("group", st.st_gid),
            "mode": "%04o" % stat.S_IMODE(st.st_mode)}


def parents_of(pids):
    """pid -> parent pid for the given pids and their ancestors (/proc/PID/stat
    is readable for every process, unlike its fds)."""
    parents = {}
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in parents or pid <= 1:
            continue
        stat_ = parse_proc_stat(read_text("/proc/%d/stat" % pid, ""))
        parents[pid] = stat_["ppid"] if stat_ else 0
        todo.append(parents[pid])
    return parents


# Where supervisorctl looks for its config, the ones that do not depend on its working directory.
SUPERVISORD_CONFS = ("/etc/supervisord.conf", "/etc/supervisor/supervisord.conf")


def supervisor_status(module, supervisorctl):
    if not os.path.exists(supervisorctl):
        return {"running": False, "programs": {}}
    # supervisord's socket answers in milliseconds; starting supervisorctl takes 0.2 s.
    conf = next((path for path in SUPERVISORD_CONFS if os.path.exists(path)), None)
    socket_path = supervisor_serverurl(read_text(conf, "")) if conf else None
    infos = supervisor_rpc(socket_path, "supervisor.getAllProcessInfo") if socket_path else None
    if isinstance(infos, list):
        return {"running": True, "programs": parse_supervisor_status(supervisor_status_text(infos)), "error": "",
                "source": "rpc"}
    rc, out, err = module.run_command([supervisorctl, "status"])
    # 0: all RUNNING, 3: some program is not; anything else: no answer.
    return {"running": rc in (0, 3), "programs": parse_supervisor_status(out), "error": "" if rc in (0, 3) else (out + err).strip(),
            "source": "supervisorctl"}


BANNER = re.compile(r"\*\*\* Starting uWSGI .* on \[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\] \*\*\*")


def last_start(log_dir, name, pid):
    """When the app's master last (re)read its config: the last banner in its
    log (uWSGI prints it at every start and graceful reload, after reading its
    ini), else the process's start time."""
    try:
        tail = read_log(os.path.join(log_dir, "%s.log" % name), limit=262144)[0].decode("utf-8", "replace")
        found = BANNER.findall(tail)
        if found:
            return time.mktime(time.strptime(" ".join(found[-1].split()), "%a %b %d %H:%M:%S %Y"))
    except (OSError, ValueError):
        pass
    return started_at(pid) if pid else None


def mtime(*paths):
    times = []
    for path in paths:
        try:
            times.append(os.stat(path).st_mtime)
        except OSError:
            pass
    return max(times) if times else None


def ctime(path):
    try:
        return os.stat(path).st_ctime
    except OSError:
        return None


def managed_apps(conf_dir, config_dir, log_dir, programs):
    apps = {}
    for path in sorted(glob.glob(os.path.join(conf_dir, "*.conf"))):
        program = parse_program_file(read_text(path, ""))
        if not is_roles_program(program, config_dir):
            continue
        ini = program["ini"] or os.path.join(config_dir, program["name"] + ".ini")
        ini_text = read_text(ini)
        try:
            ini_group = name_of("group", os.stat(ini).st_gid)
        except OSError:
            ini_group = None
        name = program["name"]
        # A beside app's socket is its pool's.
        pool_text = read_text(os.path.join(config_dir, name + ".socket.ini"), "") if program.get("beside") else None
        program.update({"program_file": path, "ini_exists": ini_text is not None, "ini_group": ini_group,
                        "sockets": parse_ini_sockets(ini_text if pool_text is None else pool_text),
                        "home": parse_ini_home(ini_text),
                        "config_mtime": mtime(ini, os.path.join(config_dir, name + ".env.ini")),
                        "program_mtime": mtime(path),
                        # When the uwsgi binary its program runs was put in place (a package or
                        # pip upgrade replaces it): its ctime, since dpkg keeps a file's mtime.
                        "binary_mtime": ctime(program_binary(program["command"])),
                        # When Supervisor started the master (a graceful reload keeps it).
                        "process_started": started_at(programs[name]["pid"]) if programs.get(name, {}).get("pid")
                        else None,
                        "started": last_start(log_dir, name, programs.get(name, {}).get("pid"))
                        if programs.get(name, {}).get("state") == "RUNNING" else None})
        apps[program["name"]] = program
    return apps


def binary_problem(path):
    """What keeps `path` (the uwsgi the programs run) from starting, or None."""
    if not os.path.lexists(path):
        return "%s is missing" % path
    target = os.path.realpath(path)
    if not os.path.isfile(target):
        return "%s points to %s, which is missing" % (path, target)
    if not os.access(target, os.X_OK):
        return "%s is not executable" % target
    return None


def program_binary(command):
    """The uwsgi binary a program's command runs (after setpriv's `--`)."""
    argv = (command or "").split()
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    return argv[0] if argv else ""


def foreign_programs(conf_dir, managed, programs):
    """Supervisor programs and groups the role did not write: each name, and
    where it was found (a file of the config directory, or supervisorctl)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(conf_dir, "*.conf"))):
        for section in parse_supervisor_sections(read_text(path, "")):
            name = slot_app(section) if managed.get(slot_app(section) or "", {}).get("beside") else section
            if name not in managed or managed[name]["program_file"] != path:
                found.setdefault(section, path)
    for name in programs:
        if name not in managed and not managed.get(slot_app(name) or "", {}).get("beside"):
            found.setdefault(name, "loaded in supervisord")
    return found


def pip_version(venv, project):
    """The version of a project installed in a virtualenv, from its dist-info
    directory (what pip itself reads); None when it is not installed."""
    wanted = project.lower().replace("-", "_")
    for info in glob.glob(os.path.join(venv, "lib", "python3*", "site-packages", "*.dist-info")):
        name, _, version = os.path.basename(info)[:-len(".dist-info")].rpartition("-")
        if name.lower().replace("-", "_") == wanted:
            return version
    return None


# The role's record, inside a virtualenv, of the packages it last installed there.
DEPS_MARKER = ".backlogops-uwsgi-deps"


def deps_record(venv):
    """The digest of the packages the role last installed in `venv` (None when it has none)."""
    deps = read_untrusted(os.path.join(venv, DEPS_MARKER), 4096)
    return deps.decode("ascii", "replace").strip() or None if deps and deps != NOT_REGULAR else None


def venv_homes(venv, homes_dir):
    """The homes the role made for `venv`'s package sets (uwsgi_host_plan
    venv_home): each path with the digest of the set it holds, None when its
    install never finished."""
    prefix = hashlib.sha256(venv.encode()).hexdigest()[:12] + "-"
    found = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(homes_dir), prefix + "*"))):
        if os.path.isdir(path) and not os.path.islink(path):
            found[path] = deps_record(path) if not pip_leftovers(path) else None
    return found


def pip_leftovers(venv):
    """What a killed pip install leaves in a virtualenv: its site-packages'
    names that start with `~` (pip renames what it replaces so)."""
    return sorted(os.path.join(site, name) for site in glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))
                  for name in os.listdir(site) if name.startswith("~"))[:5]


def venv_info(venv, homes_dir=None):
    """A virtualenv's uWSGI: its version, whether it was built with PCRE (the
    binary needs libpcre2 or libpcre, which internal routing requires), the
    digest of the packages the role last installed there, and who besides
    root could change it (the role runs its pip and uWSGI as root). Nothing in
    it is followed through a symlink or read beyond a bound."""
    binary = os.path.join(venv, "bin", "uwsgi")
    data = read_untrusted(binary, 64 * 1024 * 1024) or b""  # NOT_REGULAR holds neither library name
    pcre = b"libpcre2-8.so" in data or b"libpcre.so" in data
    deps = deps_record(venv)
    cfg = read_untrusted(os.path.join(venv, "pyvenv.cfg"), 65536) or b""
    cfg = "" if cfg == NOT_REGULAR else cfg.decode("utf-8", "replace")
    system = any(line.replace(" ", "").lower() == "include-system-site-packages=true" for line in cfg.splitlines())
    others = None
    for path in (venv, os.path.join(venv, "bin"), binary, os.path.join(venv, "bin", "pip"),
                 os.path.join(venv, "bin", "python")):
        others = others or untrusted_by(path)
    for path in glob.glob(os.path.join(venv, "lib", "python3*", "site-packages")):
        others = others or untrusted_by(path)
    try:
        deps_mtime = os.lstat(os.path.join(venv, DEPS_MARKER)).st_mtime
    except OSError:
        deps_mtime = None
    return {"uwsgi": pip_version(venv, "uwsgi"), "pcre": pcre, "deps": deps or None, "deps_mtime": deps_mtime,
            "exists": os.path.isfile(os.path.join(venv, "pyvenv.cfg")), "system_site_packages": system,
            "writable_by": others, "damaged": pip_leftovers(venv),
            "homes": venv_homes(venv, homes_dir) if homes_dir else {}}


def applied_record(path):
    import json  # pylint: disable=import-outside-toplevel
    try:
        record = json.loads(read_text(path, "") or "{}") if path else {}
    except ValueError:
        record = {}
    return record if isinstance(record, dict) else {}


def backups(dirs):
    found = []
    for directory in dirs:
        for path in sorted(glob.glob(os.path.join(directory, "*~"))):
            if BACKUP.match(os.path.basename(path)):
                found.append(path)
    return found


def read_listeners(module, supervisor):
    """ss's listening sockets, each with the programs that hold it."""
    ss = module.get_bin_path("ss")
    if not ss:
        return []
    # Two reads: --extended drops unix listeners under a deep queue (see with_extended).
    _, out, _ = module.run_command([ss, "-H", "--listening", "--numeric", "--unix", "--tcp", "--processes"])
    _, extended, _ = module.run_command([ss, "-H", "--listening", "--numeric", "--unix", "--tcp", "--extended"])
    listeners = with_extended(parse_ss_listeners(out), extended)
    # A beside app's instances and pool hold its socket: each counts as the app.
    program_pids = {s["pid"]: slot_app(name) if slot_app(name) in supervisor["programs"] else name
                    for name, s in supervisor["programs"].items() if s["pid"]}
    parents = parents_of([pid for lst in listeners for _, pid in lst["processes"]])
    for listener in listeners:
        listener["programs"] = sorted({
            prog for prog in (program_of_pid(pid, parents, program_pids) for _, pid in listener["processes"]) if prog})
    return listeners


def read_sysctls(module, p):
    """The kernel's live values of sysctl_keys, and every file line under sysctl_paths that sets one."""
    live = {}
    for key in p["sysctl_keys"]:
        value = read_text("/proc/sys/" + key.replace(".", "/"), limit=65536)
        live[key] = int(value) if value and value.strip().isdigit() else None
    if not p["sysctl_paths"]:
        return live, []
    keys = "|".join(re.escape(k).replace(r"\.", "[./]") for k in p["sysctl_keys"])
    _, out, _ = module.run_command(["grep", "-RHsE", r"^[[:space:]]*-?(%s)[[:space:]]*=" % keys] + p["sysctl_paths"])
    return live, parse_sysctl_grep(out)


def read_packages(module, p):
    """Which of `packages` dpkg has installed, and whether python3-apt imports (Ansible's apt needs it)."""
    packages = {}
    if p["packages"]:
        _, out, _ = module.run_command(["dpkg-query", "-W", "-f", "${Package}\\t${db:Status-Abbrev}\\n"] + p["packages"])
        installed = {line.split("\t")[0] for line in out.splitlines() if line.split("\t")[-1].startswith("ii")}
        packages = {name: name in installed for name in p["packages"]}
    try:
        import apt  # noqa: F401 pylint: disable=unused-import,import-outside-toplevel
    except ImportError:
        return packages, False
    return packages, True


def log_sizes(log_dir):
    """The size of each regular *.log in log_dir, by its name without .log."""
    sizes = {}
    for path in glob.glob(os.path.join(log_dir, "*.log")):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            sizes[os.path.basename(path)[:-4]] = st.st_size
    return sizes


def read_sockets(p):
    """What the apps' sockets mean to their client: whether it may connect,
    and a check_path request on a unix socket made as that user (the web
    server's). (client, socket_files, checks)"""
    client = user_info(p["socket_client"]) if p["socket_client"] else None
    if client and client["exists"]:
        client["group_names"] = [name_of("group", gid) for gid in client["groups"]]
    socket_files = {path: socket_file(path) for path in p["socket_files"]}
    for path, found in socket_files.items():
        if client and client["exists"] and found.get("is_socket"):
            found["client"] = dict(as_user(client, lambda path=path: may_connect(path)), chain=path_chain(path))
    return client, socket_files, {c["name"]: client_request(c, client) for c in p["checks"]}


def read_service(module, name):
    """Whether systemd has Supervisor's service active and enabled (None without systemctl)."""
    systemctl = module.get_bin_path("systemctl")
    if not systemctl:
        return None
    return {"active": module.run_command([systemctl, "is-active", "--quiet", name])[0] == 0,
            "enabled": module.run_command([systemctl, "is-enabled", "--quiet", name])[0] == 0}


def main():
    module = AnsibleModule(
        argument_spec={
            "supervisorctl": {"type": "path", "default": "/usr/bin/supervisorctl"},
            "supervisor_conf_dir": {"type": "path", "required": True},
            "config_dir": {"type": "path", "required": True},
            "log_dir": {"type": "path", "required": True},
            "tmpfiles_file": {"type": "path", "required": True},
            "users": {"type": "list", "elements": "str", "default": []},
            "groups": {"type": "list", "elements": "str", "default": []},
            "dirs": {"type": "list", "elements": "path", "default": []},
            "sysctl_keys": {"type": "list", "elements": "str", "default": []},
            "sysctl_paths": {"type": "list", "elements": "path", "default": []},
            "packages": {"type": "list", "elements": "str", "default": []},
            "log_names": {"type": "list", "elements": "str", "default": []},
            "log_offsets": {"type": "dict", "default": {}},
            "wait_for": {"type": "list", "elements": "str", "default": []},
            "applied_file": {"type": "path"},
            "wait_timeout": {"type": "int", "default": 30},
            "ready": {"type": "list", "elements": "dict", "default": []},
            "checks": {"type": "list", "elements": "dict", "default": []},
            "socket_client": {"type": "str"},
            "since": {"type": "float"},
            "fresh": {"type": "list", "elements": "dict", "default": []},
            "service": {"type": "str"},
            "venvs": {"type": "list", "elements": "path", "default": []},
            "requirements": {"type": "list", "elements": "path", "default": []},
            "textfile": {"type": "path"},
            "paths": {"type": "list", "elements": "str", "default": []},
            "write_dirs": {"type": "list", "elements": "path", "default": []},
            "venv_homes_dir": {"type": "path"},
            "socket_files": {"type": "list", "elements": "path", "default": []},
            "binary": {"type": "path"},
            "textfile_record": {"type": "path"},
            "lock_file": {"type": "path"},
            "fingerprints": {"type": "list", "elements": "path", "default": []},
            "digest_key": {"type": "str", "no_log": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    if os.geteuid() != 0:
        module.fail_json(msg=NOT_ROOT % os.geteuid())
    lock_before = lock_look(p["lock_file"]) if p["lock_file"] else ({}, None)
    supervisor, waited, ready, fresh = settle(p, lambda: supervisor_status(module, p["supervisorctl"]))
    listeners = read_listeners(module, supervisor)
    sysctl_live, sysctl_settings = read_sysctls(module, p)
    packages, python_apt = read_packages(module, p)
    logs = {name: log_since(p["log_dir"], name, p["log_offsets"].get(name, 0))[-4096:] for name in p["log_names"]}
    children = children_of([s["pid"] for s in supervisor["programs"].values() if s["pid"]])
    workers = {name: len(children.get(state["pid"], [])) for name, state in supervisor["programs"].items()
               if state["pid"]}
    client, socket_files, checks = read_sockets(p)
    listeners = moved_in(listeners, socket_files)
    # sd_booted(): systemd runs as the init system.
    systemd = os.path.isdir("/run/systemd/system")
    service = read_service(module, p["service"]) if p["service"] and systemd else None

    managed = managed_apps(p["supervisor_conf_dir"], p["config_dir"], p["log_dir"], supervisor["programs"])
    foreign = foreign_programs(p["supervisor_conf_dir"], managed, supervisor["programs"])
    result = {
        "now": time.time(),
        # Seconds since boot, as the workers' start times count (a chain reload's since).
        "uptime": uptime(),
        "proc_sys_writable": os.access("/proc/sys/net/core/somaxconn", os.W_OK),
        "sysctl_live": sysctl_live,
        "sysctl_settings": sysctl_settings,
        "supervisor": supervisor,
        "waited": waited,
        "ready": ready,
        "fresh": fresh,
        "workers": workers,
        "checks": checks,
        "listeners": listeners,
        "users": {name: user_info(name) for name in p["users"]},
        "socket_client": client,
        "groups": {name: group_info(name) for name in p["groups"]},
        "dirs": {path: dir_info(path) for path in p["dirs"]},
        "managed": managed,
        "foreign_programs": foreign,
        "tmpfiles_dirs": parse_tmpfiles_dirs(read_text(p["tmpfiles_file"], "")),
        "config_dir_files": sorted(os.listdir(p["config_dir"])) if os.path.isdir(p["config_dir"]) else None,
        "backups": backups([p["config_dir"], p["supervisor_conf_dir"]]),
        "applied": applied_record(p["applied_file"]),
        "log_sizes": log_sizes(p["log_dir"]),
        # Supervisor (root) opens the logs there: an app user who could swap one for a symlink steers root's writes.
        "log_dir_writable_by": untrusted_by(p["log_dir"]),
        "logs": logs,
        "packages": packages,
        "python_apt": python_apt,
        "service": service,
        "systemd": systemd,
        "venvs": {venv: venv_info(venv, p["venv_homes_dir"]) for venv in p["venvs"]},
        # Each requirements file's digest covers the files it includes (-r, -c).
        "requirements": {path: requirements_digest(path) for path in p["requirements"]},
        "requirements_writable_by": {path: next((who for who in (untrusted_by(name) for name, _ in
                                                                  requirements_files(path)) if who), None)
                                     for path in p["requirements"]},
        "socket_files": socket_files,
        "binary_problem": binary_problem(p["binary"]) if p["binary"] else None,
        # What the textfile directory was before the role gave the sampler's group write there.
        "textfile_record": applied_record(p["textfile_record"]) if p["textfile_record"] else {},
        # Whether anything matches each glob (a trailing / matches directories only).
        "paths": {pattern: bool(glob.glob(pattern)) for pattern in p["paths"]},
        "write_problems": {path: why for path, why in ((d, write_problem(d)) for d in p["write_dirs"]) if why},
        # The look compares the files the run would write with these, on the controller.
        "files": {path: fingerprint(path, p["digest_key"], FILE_LIMIT) for path in p["fingerprints"]}
        if p["digest_key"] else {},
    }
    if p["lock_file"]:
        # Read before and after the rest: a run that took or gave back the lock meanwhile shows.
        lock_after = lock_look(p["lock_file"])
        result["lock"] = {"holder": lock_before[0] or lock_after[0], "moved": lock_before[1] != lock_after[1]}
    if p["textfile"]:
        text = read_text(p["textfile"])
        try:
            result["textfile_samples"] = None if text is None else parse_prometheus_text(text)
        except ValueError as exc:
            module.fail_json(msg="%s: %s" % (p["textfile"], exc))
    module.exit_json(changed=False, probe=result)


if __name__ == "__main__":
    main()
