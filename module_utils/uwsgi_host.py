"""The host's own reports, shared by the role's modules, the test harness and
the benchmarks: parsers that take the text a command printed or a file holds
and return plain data, and the few reads and checks made as an app's user."""

from __future__ import annotations

import os
import re
import socket as sockmod
import stat
import time

# Written into every Supervisor program file the role manages, so that a later
# run knows the program is its own even when the app is no longer listed.
MANAGED_MARKER = "; managed by backlogops.uwsgi:"

_SS_USER = re.compile(r'\("([^"]*)",pid=(\d+),fd=\d+\)')
# ss --extended: a unix socket's bound file (inode, device major/minor), a TCP socket's owner.
_SS_VFS = re.compile(r"<-> ino:(\d+) dev:(\d+)/(\d+)")
_SS_UID = re.compile(r"\buid:(\d+)\b")
_SS_INO = re.compile(r"\bino:(\d+)\b")


def parse_ss_listeners(ss_stdout):
    """The LISTEN sockets of `ss -H --listening --numeric --unix --tcp [--processes] [--extended]`.

    Each is a dict: kind (unix or tcp), local (as ss prints it), port (TCP),
    queue (Recv-Q: connections waiting now), backlog (Send-Q: the backlog in
    effect), processes ([name, pid] pairs, when ss could read them), and with
    --extended the file a unix socket is bound to (vfs: inode and device as
    "major/minor"; the path ss prints is the name it was bound with, even once
    that file is deleted or replaced) and a TCP socket's owner (uid) and inode.
    """
    listeners = []
    for line in (ss_stdout or "").splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[1] != "LISTEN":
            continue
        netid = fields[0]
        if netid.startswith("u_"):
            kind = "unix"
        elif netid.startswith("tcp"):
            kind = "tcp"
        else:
            continue
        try:
            queue, backlog = int(fields[2]), int(fields[3])
        except ValueError:
            continue
        local = fields[4]
        port = None
        if kind == "tcp":
            try:
                port = int(local.rsplit(":", 1)[-1])
            except ValueError:
                continue
        listeners.append({
            "kind": kind,
            "local": local,
            "port": port,
            "queue": queue,
            "backlog": backlog,
            "processes": [[name, int(pid)] for name, pid in _SS_USER.findall(line)],
        })
        if kind == "unix" and len(fields) > 5 and fields[5].isdigit():
            listeners[-1]["inode"] = int(fields[5])
        vfs = _SS_VFS.search(line) if kind == "unix" else None
        if vfs:
            listeners[-1]["vfs"] = {"ino": int(vfs.group(1)), "dev": "%s/%s" % (vfs.group(2), vfs.group(3))}
        uid = _SS_UID.search(line) if kind == "tcp" else None
        if uid:
            listeners[-1]["uid"] = int(uid.group(1))
        ino = _SS_INO.search(line) if kind == "tcp" else None
        if ino:
            listeners[-1]["inode"] = int(ino.group(1))
    return listeners


def with_extended(listeners, extended_stdout):
    """The listeners of a plain `ss` read, each given what `ss --extended`
    printed for the same socket (a unix socket's vfs, a TCP socket's uid).

    ss --extended asks the kernel for every connection queued on a unix
    listener; with about a thousand queued, that listener's reply no longer
    fits and the kernel ends the dump there, dropping it and every unix
    listener after it. So which sockets listen, and their queue and backlog,
    come from the plain read, which stays whole under a burst."""
    extra = parse_ss_listeners(extended_stdout)
    unix = {item["inode"]: item for item in extra if "inode" in item}
    tcp = {item["local"]: item for item in extra if item["kind"] == "tcp"}
    for listener in listeners:
        found = unix.get(listener.get("inode")) if listener["kind"] == "unix" else tcp.get(listener["local"])
        for key in ("vfs", "uid"):
            if found and key in found:
                listener[key] = found[key]
    return listeners


# A beside app's pool that takes over a path another master serves binds it
# under this name first; the switch renames it over the path once an instance
# has loaded (docs/zerg.md). ss and getsockname() go on naming it so.
STAGED_SUFFIX = ".new"


def moved_in(listeners, socket_files):
    """The listeners, with each unix socket bound as PATH.new (STAGED_SUFFIX)
    and since renamed over PATH named PATH (`bound_as` keeps what ss said),
    first: `socket_files` is what the probe found at each path (socket_file).
    Only the file's inode and device, against ss --extended's, tell that."""
    moved = []
    for listener in listeners:
        name = listener["local"]
        path = name[:-len(STAGED_SUFFIX)]
        found = socket_files.get(path) if listener["kind"] == "unix" and name.endswith(STAGED_SUFFIX) else None
        if found and found.get("exists") and listener.get("vfs") == {"ino": found["ino"], "dev": found["dev"]}:
            listener.update(local=path, bound_as=name)
            moved.append(listener)
    return moved + [item for item in listeners if item not in moved]


def socket_key(socket):
    """How an app's socket is matched against listeners: a unix path, or ':port'."""
    socket = str(socket)
    if socket.startswith("/"):
        return socket
    return ":" + socket.rsplit(":", 1)[-1]


def listener_key(listener):
    return listener["local"] if listener["kind"] == "unix" else ":%d" % listener["port"]


def backlogs_by_socket(listeners):
    """Backlog in effect by socket key; a TCP port bound on several addresses
    keeps the first one ss lists."""
    backlogs = {}
    for listener in listeners:
        backlogs.setdefault(listener_key(listener), listener["backlog"])
    return backlogs


SLOTS = ("a", "b")
POOL = "socket"
_UPTIME = re.compile(r"uptime (?:(\d+) days?, )?(\d+):(\d\d):(\d\d)")


def slot_app(program):
    """The app a program of the beside layout belongs to (NAME.a, NAME.b,
    NAME.socket), or None: app names never hold a dot."""
    base, dot, part = program.rpartition(".")
    return base if dot and base and part in SLOTS + (POOL,) else None


def _uptime(entry):
    match = _UPTIME.search(entry.get("line", ""))
    if not match:
        return 0
    days, hours, minutes, seconds = (int(x or 0) for x in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def serving_slots(states):
    """Each beside app as one entry under its own name: the instance that
    serves (the RUNNING slot; of two, the one that ran first, since the other
    is a switch's and unproven), with `slot`, `program`, `idle` (the other
    slot's program), `extra` (the other slot when it runs too) and `pool`
    (the pool's entry)."""
    apps = {}
    for name in states:
        app = slot_app(name)
        if app and name.endswith(".a") and app + ".b" in states and app not in states:
            slots = [app + "." + s for s in SLOTS]
            running = sorted((n for n in slots if states[n]["state"] == "RUNNING"), key=lambda n: -_uptime(states[n]))
            settling = [n for n in slots if states[n]["state"] in ("STARTING", "BACKOFF")]
            serving = (running or settling or slots)[0]
            other = slots[1 - slots.index(serving)]
            apps[app] = dict(states[serving], slot=serving.rpartition(".")[2], program=serving, idle=other,
                             extra=other if other in running else None, pool=states.get(app + "." + POOL))
    return apps


# supervisord's own log (`supervisorctl maintail`): how each process of a
# program started and ended.
_SUPERVISORD_EVENT = re.compile(
    r"^\S+ \S+ [A-Z]+ (?:spawned: '(?P<spawned>[^']+)' with pid (?P<pid>\d+)"
    r"|stopped: (?P<stopped>\S+) \("
    r"|exited: (?P<exited>\S+) \(.*; (?P<expected>not expected|expected)\))")


def parse_supervisord_log(text):
    """supervisord's log as events: {program, event (spawned, stopped: it
    was told to stop, exited: it ended by itself), pid, expected}."""
    events = []
    for line in (text or "").splitlines():
        match = _SUPERVISORD_EVENT.match(line)
        if not match:
            continue
        if match.group("spawned"):
            events.append({"program": match.group("spawned"), "event": "spawned", "pid": int(match.group("pid"))})
        elif match.group("stopped"):
            events.append({"program": match.group("stopped"), "event": "stopped"})
        else:
            events.append({"program": match.group("exited"), "event": "exited",
                           "expected": match.group("expected") == "expected"})
    return events


def process_ending(events, program, pid):
    """How `program`'s process `pid` ended, by supervisord's log: stopped
    (someone told Supervisor to stop or restart it), exited (by itself), or
    None when the log does not say."""
    started = False
    for event in events:
        if event["program"] != program:
            continue
        if event["event"] == "spawned":
            started = event["pid"] == pid
        elif started:
            return event["event"]
    return None


def parse_supervisor_status(status_stdout):
    """Each program in `supervisorctl status` output: state, pid and the line;
    a beside app also under its own name, as its serving instance (serving_slots)."""
    states = {}
    for line in (status_stdout or "").splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[1] not in {
                "STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN"}:
            continue
        pid = None
        if len(fields) >= 4 and fields[2] == "pid":
            pid = int(fields[3].rstrip(","))
        states[fields[0]] = {"state": fields[1], "pid": pid, "line": " ".join(fields)}
    states.update(serving_slots(states))
    return states



def supervisor_status_text(infos):
    """Supervisor's getAllProcessInfo as the lines `supervisorctl status`
    prints (NAME or GROUP:NAME, the state, the description), for its parser."""
    lines = []
    for info in infos:
        name = info["name"] if info["name"] == info["group"] else "%s:%s" % (info["group"], info["name"])
        lines.append(" ".join([name, info["statename"], info.get("description") or ""]).rstrip())
    return "\n".join(lines) + "\n"


def supervisor_serverurl(conf_text):
    """The unix socket supervisorctl talks to, from supervisord.conf's
    [supervisorctl] section; None when it needs a password, is not a unix
    socket, or the file does not say (supervisorctl itself then answers)."""
    import configparser  # pylint: disable=import-outside-toplevel
    parser = configparser.RawConfigParser(strict=False, inline_comment_prefixes=(";",))
    try:
        parser.read_string(conf_text)
    except configparser.Error:
        return None
    if not parser.has_section("supervisorctl"):
        return None
    section = dict(parser.items("supervisorctl"))
    url = (section.get("serverurl") or "").strip()
    if section.get("username") or section.get("password") or not url.startswith("unix://"):
        return None
    return url[len("unix://"):] or None


def supervisor_rpc(path, method, timeout=10.0):
    """One XML-RPC call to supervisord over its unix socket (what supervisorctl
    does, without starting a Python of its own). Root's socket only: None when
    it is not a socket root owns, or on any error."""
    import http.client  # pylint: disable=import-outside-toplevel
    import xmlrpc.client  # pylint: disable=import-outside-toplevel

    class Connection(http.client.HTTPConnection):
        def connect(self):
            self.sock = sockmod.socket(sockmod.AF_UNIX, sockmod.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)

    class Transport(xmlrpc.client.Transport):
        def make_connection(self, host):
            return Connection("localhost", timeout=timeout)

    try:
        found = os.lstat(path)
        if not stat.S_ISSOCK(found.st_mode) or found.st_uid != 0:
            return None
        proxy = xmlrpc.client.ServerProxy("http://localhost", transport=Transport())
        return getattr(proxy, method)()
    except (OSError, xmlrpc.client.Error, http.client.HTTPException, ValueError):
        return None

def parse_sysctl_grep(grep_stdout):
    """`grep -RHs` lines 'FILE:key = value' over the sysctl files."""
    settings = []
    for line in (grep_stdout or "").splitlines():
        path, sep, setting = line.partition(":")
        if not sep or "=" not in setting:
            continue
        key, _, value = (part.strip() for part in setting.partition("="))
        settings.append({"path": path, "key": key.lstrip("-").replace("/", "."), "value": value})
    return settings


def parse_program_file(text):
    """What a Supervisor program file the role wrote says about its app: its
    name, the ini it runs, and the user and group it runs as. None for a file
    the role does not manage."""
    name = command = None
    managed = False
    user = group = None
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith(MANAGED_MARKER):
            managed = True
        match = re.match(r"^\[program:([^\]]+)\]$", line)
        if match:
            name = match.group(1)
        elif line.startswith("command="):
            command = line[len("command="):].strip()
        elif line.startswith("user="):
            user = line[len("user="):].strip()
    if not name or not command:
        return None
    argv = command.split()
    ini = argv[argv.index("--ini") + 1] if "--ini" in argv[:-1] else None
    for arg in argv:
        if arg.startswith("--reuid="):
            user = arg.split("=", 1)[1]
        elif arg.startswith("--regid="):
            group = arg.split("=", 1)[1]
    beside = bool(slot_app(name) and ini and ini.endswith("/%s.ini" % slot_app(name)))
    if beside:
        # The beside layout's file: the pool's and two instances' programs, the last one NAME.b.
        name = slot_app(name)
    if not managed and not (ini and ini.endswith("/%s.ini" % name)):
        return None
    return {"name": name, "command": command, "ini": ini, "user": user, "group": group, "marked": managed,
            "beside": beside}


def is_roles_program(program, config_dir):
    """A program is the role's own only when the role wrote it: its file
    parses as one of the role's (the role's mark, or an earlier version's
    layout) and the ini it runs is NAME.ini in the role's config directory."""
    return bool(program and program.get("ini")
                and program["ini"] == "%s/%s.ini" % (config_dir.rstrip("/"), program["name"]))


_SECTION = re.compile(r"^\s*\[(program|fcgi-program|eventlistener|group):([^\]]+)\]\s*$")


def parse_supervisor_sections(text):
    """The names a Supervisor config file gives its programs and groups."""
    return [match.group(2).strip() for match in map(_SECTION.match, (text or "").splitlines()) if match]


def parse_ini_sockets(text):
    """The sockets a uwsgi.ini binds (socket, http-socket and the like)."""
    sockets = []
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("socket", "http-socket", "uwsgi-socket", "https-socket"):
            sockets.append(value.strip().split(",")[0])
        elif sep and key.strip() in ("zergpool", "zerg-pool"):
            # A pool's `zergpool = POOL:SOCKET` (the beside layout's NAME.socket.ini); the
            # name it binds while it moves in (PATH.new) is the same socket.
            bound = value.strip().split(":", 1)[-1]
            bound = bound[:-len(STAGED_SUFFIX)] if bound.endswith(STAGED_SUFFIX) else bound
            if bound not in sockets:
                sockets.append(bound)
    return sockets


def parse_ini_home(text):
    """The `home` (the virtualenv its Python runs from) a uwsgi.ini names, or None."""
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("home", "virtualenv", "venv", "pyhome"):
            return value.strip()
    return None


def parse_tmpfiles_dirs(text):
    """The directories (type d or D) a tmpfiles.d file creates."""
    dirs = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] in ("d", "D"):
            dirs.append(fields[1])
    return dirs


def program_of_pid(pid, parents, program_pids):
    """The Supervisor program whose process is `pid` or one of its ancestors.

    parents: pid -> parent pid; program_pids: pid -> program name.
    """
    seen = set()
    while pid and pid not in seen:
        if pid in program_pids:
            return program_pids[pid]
        seen.add(pid)
        pid = parents.get(pid)
    return None


def log_tail(text, lines=20):
    """The last `lines` non-empty lines of a log excerpt."""
    kept = [line.rstrip() for line in (text or "").splitlines() if line.strip()]
    return kept[-lines:]


_PROM_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$')
_PROM_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse_prometheus_text(text):
    """The samples of a Prometheus text exposition (what the role's sampler
    writes for node_exporter): a list of {name, labels, value}. Comments and
    blank lines are skipped; a line that is not a sample raises ValueError."""
    samples = []
    for number, line in enumerate((text or "").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _PROM_SAMPLE.match(line)
        if not match:
            raise ValueError("line %d is not a Prometheus sample: %r" % (number, line))
        name, label_text, value = match.groups()
        labels, pos = {}, 0
        label_text = label_text or ""
        while pos < len(label_text):
            label = _PROM_LABEL.match(label_text, pos)
            if not label or label.end() == pos:
                raise ValueError("line %d has malformed labels: %r" % (number, line))
            labels[label.group(1)] = re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), label.group(2))
            pos = label.end()
        samples.append({"name": name, "labels": labels, "value": float(value)})
    return samples


# What read_untrusted returns for a symlink, a FIFO, a device, a directory, a
# file it may not open, or one larger than its bound: it differs from
# anything the role would write, and holds nothing the role uses.
NOT_REGULAR = b"\0(not a regular file within bounds)"
# A file the role reads to compare is read up to this size (an environment
# file belongs to its app's user, who may make it any size): a larger one
# differs from whatever the role writes.
FILE_LIMIT = 4 * 1024 * 1024


def read_untrusted(path, limit):
    """A file in a place someone other than root may write (a virtualenv, an
    app user's environment file): never through a symlink, never a FIFO or a
    device, at most `limit` bytes. None when it does not exist, NOT_REGULAR
    when it cannot be read that way."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError:
        return NOT_REGULAR
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return NOT_REGULAR
        data = handle.read(limit + 1)
    return data if len(data) <= limit else NOT_REGULAR



def digest(key, data):
    """A file's content as the look compares it: HMAC-SHA256 under the run's
    own key, so that what the probe returns says nothing of a secret file."""
    import hashlib  # pylint: disable=import-outside-toplevel
    import hmac  # pylint: disable=import-outside-toplevel
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()


def fingerprint(path, key, limit):
    """What the look needs to know a file or directory is as the role would
    write it: its kind, owner, group and mode, and a file's digest (None for a
    file that is not regular within `limit`, read as the role reads it)."""
    import grp  # pylint: disable=import-outside-toplevel
    import pwd  # pylint: disable=import-outside-toplevel
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return {"kind": None}
    except OSError:
        return {"kind": "other"}
    kind = "dir" if stat.S_ISDIR(found.st_mode) else "file" if stat.S_ISREG(found.st_mode) else "other"
    seen = {"kind": kind, "uid": found.st_uid, "gid": found.st_gid, "mode": stat.S_IMODE(found.st_mode)}
    for field, table, ident in (("owner", pwd.getpwuid, found.st_uid), ("group", grp.getgrgid, found.st_gid)):
        try:
            seen[field] = table(ident)[0]
        except KeyError:
            seen[field] = None
    if kind == "file":
        data = read_untrusted(path, limit)
        seen["digest"] = None if data in (None, NOT_REGULAR) else digest(key, data)
    return seen

def read_text(path, default=None, limit=1024 * 1024):
    """A file's text; `default` when it is missing, a symlink, not a regular file or above `limit`."""
    data = read_untrusted(path, limit)
    return default if data in (None, NOT_REGULAR) else data.decode("utf-8", "replace")


def read_log(path, offset=0, limit=1024 * 1024):
    """An app's log from `offset` (all of it when it is shorter, as after a
    rotation), at most its last `limit` bytes, and its size: never through a
    symlink, never a FIFO or a device (those read as empty, size None), so
    that nothing an app user puts at a log's path can hang or redirect root."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b"", None
    try:
        size = os.fstat(fd).st_size
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b"", None
        start = max(offset if size >= offset else 0, size - limit)
        os.lseek(fd, start, os.SEEK_SET)
        chunks, left = [], size - start
        while left > 0:
            chunk = os.read(fd, min(left, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), size
    finally:
        os.close(fd)


def untrusted_by(path):
    """Who else than root could change what is at `path`: the first of it and
    its parent directories that is not root's, or is writable by its group or
    by others (a sticky directory aside), or a symlink on the way, as
    "PATH (owner UID, mode MODE)"; None when only root can. The walk stops at
    the first part that does not exist."""
    parts = os.path.abspath(path).split("/")
    for end in range(2, len(parts) + 1):
        here = "/".join(parts[:end])
        try:
            st = os.lstat(here)
        except OSError:
            return None
        mode = stat.S_IMODE(st.st_mode)
        link = stat.S_ISLNK(st.st_mode)
        # A symlink's own mode means nothing (always 0777): its owner and where it sits do.
        writable = not link and mode & 0o022 and not (stat.S_ISDIR(st.st_mode) and mode & stat.S_ISVTX)
        if st.st_uid != 0 or writable or (link and end < len(parts)):
            return "%s (owner uid %d, mode %04o%s)" % (here, st.st_uid, mode,
                                                       ", a symlink" if stat.S_ISLNK(st.st_mode) else "")
    return None


def ss_device(st_dev):
    """A file's device (stat's st_dev) as `ss --extended` prints a bound unix
    socket's: the kernel reports its own dev_t (major << 20 | minor), which ss
    splits with the C library's major() and minor(); the two agree with the
    real numbers only for major 0 (tmpfs, overlayfs), not for a disk."""
    kernel = (os.major(st_dev) << 20) | os.minor(st_dev)
    return "%d/%d" % (os.major(kernel), os.minor(kernel))


def socket_in_effect(socket, listeners, socket_file=None, uid=None):
    """The listener that serves an app's socket, and what is wrong with it.

    (listener or None, problem or None). A unix socket serves only when the
    file at its path is the one a listener is bound to (ss --extended's
    inode and device, against the path's, `socket_file`), and was bound by
    the app's user (the file's owner, `uid`): a deleted file, or another
    process's socket in its place, does not serve the app whatever ss's name
    says. A TCP listener on the port with another owner is not the app's."""
    key = socket_key(socket)
    found = [item for item in listeners if listener_key(item) == key]
    if not found:
        return None, "no LISTEN socket"
    if not str(socket).startswith("/"):
        if uid is not None and all("uid" in item and item["uid"] != uid for item in found):
            return found[0], "the socket on that port is held by uid %d, not the app's user" % found[0]["uid"]
        return found[0], None
    if socket_file is None or not any("vfs" in item for item in found):
        return found[0], None  # nothing to tell them apart by: ss without --extended
    if not socket_file.get("exists"):
        return found[0], "its socket file %s is gone (the master still listens on the deleted file)" % socket
    mine = [item for item in found if item.get("vfs") == {"ino": socket_file["ino"], "dev": socket_file["dev"]}]
    if not mine:
        return found[0], "%s is not the socket its master listens on (the file was replaced)" % socket
    if uid is not None and socket_file.get("uid") != uid:
        return mine[0], "%s was bound by uid %s, not by the app's user" % (socket, socket_file.get("uid"))
    return mine[0], None


def check_request(check):
    """One GET of check['path'] on the app's socket; the HTTP status it answers."""
    address, path = check["socket"], check.get("path") or "/"
    try:
        if address.startswith("/"):
            conn = sockmod.socket(sockmod.AF_UNIX, sockmod.SOCK_STREAM)
            target = address
        else:
            # Over the socket's own family: [::1]:8002 is IPv6, localhost whatever it resolves to.
            host_part, _, port = address.rpartition(":")
            host_part = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "[::]": "::1"}.get(
                host_part, host_part.strip("[]"))
            conn = None
            for family, kind, proto, _, target in sockmod.getaddrinfo(host_part, int(port), type=sockmod.SOCK_STREAM):
                conn = sockmod.socket(family, kind, proto)
                conn.settimeout(float(check.get("timeout") or 10))
                try:
                    conn.connect(target)
                    break
                except OSError:
                    conn.close()
                    conn = None
            if conn is None:
                raise OSError("cannot connect to %s" % address)
        if address.startswith("/"):
            conn.settimeout(float(check.get("timeout") or 10))
            conn.connect(target)
        if check.get("protocol") == "http":
            conn.sendall(("GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n" % path).encode())
        else:
            path_info, _, query = path.partition("?")
            env = {"REQUEST_METHOD": "GET", "REQUEST_URI": path, "PATH_INFO": path_info, "QUERY_STRING": query,
                   "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                   "HTTP_HOST": "localhost", "REMOTE_ADDR": "127.0.0.1"}
            body = b"".join(len(k).to_bytes(2, "little") + k + len(v).to_bytes(2, "little") + v
                            for k, v in ((k.encode(), v.encode()) for k, v in env.items()))
            conn.sendall(b"\0" + len(body).to_bytes(2, "little") + b"\0" + body)
        head = b""
        while b"\n" not in head and len(head) < 4096:
            chunk = conn.recv(1024)
            if not chunk:
                break
            head += chunk
        conn.close()
        fields = head.split(b"\n", 1)[0].split()
        status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
        return {"status": status, "error": None if status else "no HTTP status in %r" % head[:80]}
    except (OSError, ValueError) as exc:
        return {"status": None, "error": str(exc)}


def client_request(check, client):
    """A check_path request: on a unix socket, made by a child with the
    socket client's identity (what the web server would get); on TCP, here."""
    if not client or not client["exists"] or not str(check["socket"]).startswith("/"):
        return check_request(check)
    answer = as_user(client, lambda: check_request(check))
    return {"status": answer.get("status"), "error": answer.get("error"), "as": client["name"]}


def path_chain(path):
    """Each directory on a unix socket's path from /, then the socket, as
    lstat reads them: their owner, group and mode decide who may connect
    (search on every directory, write on the socket). The walk stops at the
    first part that does not exist."""
    import grp  # pylint: disable=import-outside-toplevel
    import pwd  # pylint: disable=import-outside-toplevel

    def name(lookup, ident):
        try:
            return lookup(ident)[0]
        except KeyError:
            return str(ident)

    parts = [part for part in os.path.abspath(path).split("/") if part]
    chain = []
    for end in range(len(parts) + 1):
        here = "/" + "/".join(parts[:end])
        try:
            st = os.lstat(here)
        except OSError:
            break
        chain.append({"path": here, "uid": st.st_uid, "gid": st.st_gid, "owner": name(pwd.getpwuid, st.st_uid),
                      "group": name(grp.getgrgid, st.st_gid), "mode": "%04o" % stat.S_IMODE(st.st_mode),
                      "link": stat.S_ISLNK(st.st_mode)})
    return chain


def may_connect(path):
    """Whether this process may connect to the unix socket at `path`: what
    connect() checks before it reaches the listener, search on each
    directory and write on the socket (access(2), by this process's own
    identity; nothing is opened)."""
    try:
        os.stat(path)
    except OSError as exc:
        return {"ok": False, "error": exc.strerror}
    allowed = os.access(path, os.W_OK)
    return {"ok": allowed, "error": None if allowed else os.strerror(13)}


def as_user(user, func, timeout=30.0):
    """What func() returns (JSON data) when a child process runs it with
    `user`'s identity alone (uid, gid and groups, as user_info gives them):
    the kernel then decides what it may do, as for that user's own
    processes, and this process keeps its own. {"error": ...} when the child
    cannot take that identity or does not answer within `timeout`."""
    import json  # pylint: disable=import-outside-toplevel
    import select  # pylint: disable=import-outside-toplevel
    import signal  # pylint: disable=import-outside-toplevel

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: it never returns, nor runs its parent's exit handlers
        try:
            os.close(read_fd)
            os.setgroups(user["groups"])
            os.setgid(user["gid"])
            os.setuid(user["uid"])
            data = json.dumps(func())
        except BaseException as exc:  # pylint: disable=broad-except
            data = json.dumps({"error": "cannot act as %s: %s" % (user.get("name"), exc)})
        try:
            os.write(write_fd, data.encode())
        finally:
            os._exit(0)  # pylint: disable=protected-access
    os.close(write_fd)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_fd], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                return {"error": "no answer as %s within %g s" % (user.get("name"), timeout)}
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks).decode("utf-8", "replace"))
    except ValueError:
        return {"error": "no answer as %s" % user.get("name")}


_NESTED = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+)(\S+)")


def requirements_files(path, limit=1024 * 1024, depth=5):
    """A requirements file and every file it includes (-r, -c, nested, as
    pip reads them, relative to the including file), in order, each once:
    [(path, content or None)], content read as read_untrusted reads it, and
    None for a file someone other than root could change (never read)."""
    seen, order = set(), []

    def visit(current, level):
        current = os.path.normpath(current)
        if current in seen or level > depth:
            return
        seen.add(current)
        # Root reads, and follows the includes of, only a file only root can change.
        data = None if untrusted_by(current) else read_untrusted(current, limit)
        data = None if data in (None, NOT_REGULAR) else data
        order.append((current, data))
        for line in (data or b"").decode("utf-8", "replace").splitlines():
            match = _NESTED.match(line)
            if match and "://" not in match.group(1):
                visit(os.path.join(os.path.dirname(current), match.group(1)), level + 1)

    visit(path, 0)
    return order


def requirements_digest(path):
    """The sha256 of a requirements file and of every file it includes; None
    when the file itself cannot be read."""
    import hashlib  # pylint: disable=import-outside-toplevel
    files = requirements_files(path)
    if not files or files[0][1] is None:
        return None
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode() + b"\0" + (data if data is not None else b"(missing)") + b"\0")
    return digest.hexdigest()


def lock_holder_text(holder):
    """A lock's holder as a person reads it."""
    if not holder.get("id"):
        return "nobody"
    when = holder.get("taken")
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when)) if when else "an unknown time"
    started = holder.get("started")
    return "ansible-playbook PID %s on %s, started %s, holding the lock since %s" % (
        holder.get("pid"), holder.get("controller"),
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if started else "at an unknown time", since)


def lock_age(current, now, clock=None):
    """How long (seconds) a holder has held the lock, or why its age cannot
    be trusted. The host's boot id and CLOCK_BOOTTIME (`clock`) count it
    when the holder has them: a step of the wall clock moves neither."""
    clock = clock or {}
    if current.get("boot_id") and clock.get("boot_id"):
        if current["boot_id"] != clock["boot_id"]:
            return None, "it was taken before the host's last boot"
        return float(clock["uptime"]) - float(current.get("uptime", 0)), ""
    taken = current.get("taken")
    if taken is None:
        return None, ""
    if float(taken) > now + 60:
        return None, "its time (%s) lies in the future" % time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(taken)))
    return now - float(taken), ""


def lock_decision(current, me, now, stale_after, stale_id=None, clock=None, working=None):
    """Whether this run (`me`) takes the host's lock from its `current`
    holder: {take, why (a takeover's reason), who (the holder, when it
    waits)}. Free, or its own, it takes it; it takes it over from a run its
    controller knows to be dead (stale_id), one from before the host's last
    boot or dated in the future, or one that took it more than stale_after
    seconds ago, unless processes that run started still run on the host
    (`working`: [{pid, command}]); otherwise it waits."""
    if not current.get("id") or current.get("id") == me.get("id"):
        return {"take": True, "why": "", "who": ""}
    who = lock_holder_text(current)
    if working:
        return {"take": False, "why": "", "who": "%s; its commands still run on this host: %s" % (
            who, ", ".join("PID %d (%s)" % (w["pid"], w["command"]) for w in working[:3]))}
    if stale_id and current.get("id") == stale_id:
        return {"take": True, "why": "the run that held it is dead (%s)" % who, "who": who}
    age, untrusted = lock_age(current, now, clock)
    if untrusted:
        return {"take": True, "why": "%s (%s)" % (untrusted, who), "who": who}
    if age is not None and age > stale_after:
        return {"take": True, "why": "it was held for more than %d s (%s)" % (stale_after, who), "who": who}
    return {"take": False, "why": "", "who": who}


NOT_ROOT = ("this run is not root on the host (uid %d): the role writes system files and starts programs "
            "as their users, so it needs root. Set `become: true` on the play (or connect as root). Nothing "
            "was changed.")


ENVIRON_LIMIT = 1 << 20


def marked_processes(name, value, proc="/proc"):
    """The processes whose environment sets `name` to `value` (a run's or a
    trial's marker, inherited by whatever they start): [{pid, command}],
    this process aside."""
    marker = ("%s=%s" % (name, value)).encode()
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(os.path.join(proc, entry, "environ"), "rb") as handle:
                if marker not in handle.read(ENVIRON_LIMIT).split(b"\0"):
                    continue
            with open(os.path.join(proc, entry, "cmdline"), "rb") as handle:
                command = handle.read(4096).replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue  # gone, or a kernel thread
        found.append({"pid": int(entry), "command": command[:200]})
    return found


def parse_proc_stat(text):
    """A /proc/PID/stat line's parent pid and start time (clock ticks after
    boot), or None. The command name between the parentheses may hold
    blanks and parentheses itself, so the fields are counted from its last
    closing one."""
    rest = (text or "").rpartition(")")[2].split()
    try:
        return {"ppid": int(rest[1]), "start_ticks": int(rest[19])}
    except (IndexError, ValueError):
        return None


def parse_btime(text):
    """The boot time (epoch seconds) in /proc/stat's `btime` line, or None."""
    for line in (text or "").splitlines():
        if line.startswith("btime "):
            try:
                return float(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def workers_left_behind(workers, since, processes=None):
    """After a chain reload began at `since` (seconds after boot): the
    workers (dicts with pid and started, seconds after boot) that still run
    the code from before it, oldest first; and whether the master has its
    whole set of workers again (None when `processes` is not known, as with
    the cheaper)."""
    old = sorted((w for w in workers if w.get("started") is None or w["started"] < since),
                 key=lambda w: (w.get("started") is None, w.get("started") or 0))
    return {"old": old, "complete": None if not processes else len(workers) >= int(processes)}

