#!/usr/bin/python3
"""Sample the listen queue of uWSGI apps' sockets for Prometheus.

    uwsgi_sampler.py [--config PATH] [--output PATH] [--once | --bench SECONDS]

uWSGI's stats server cannot tell how many connections wait in a unix socket's
listen queue; the kernel's sock_diag netlink interface can, for unix and TCP
sockets alike, without privileges: for a LISTEN socket it reports the
connections waiting now (what `ss -l` shows as Recv-Q) and the backlog in
effect (Send-Q). This samples it every `interval` seconds (one dump per address
family per sample, on a netlink socket kept open), keeps each app's peak over
the last `window` seconds, and every second writes the metrics in Prometheus's
text format, atomically, for node_exporter's textfile collector. It logs to
stdout when an app's queue reaches `alert_ratio` of its backlog, when a socket
is found or lost, and when an error starts or ends.

The config is a JSON file (default /etc/uwsgi/sampler.json):

    {"apps": [{"name": "flaskapp", "socket": "/run/uwsgi/flaskapp.sock"},
              {"name": "flaskapi", "socket": "127.0.0.1:8001"}],
     "interval": 0.1, "window": 15, "alert_ratio": 0.9,
     "output": "/var/lib/prometheus/node-exporter/uwsgi.prom"}

A socket is an absolute unix path, @name (an abstract unix socket), host:port
(an IPv4 address or localhost), [IPv6]:port, or :port, *:port, 0.0.0.0:port or
[::]:port (any address: these match a socket listening on 0.0.0.0 or ::).

--once takes one sample, writes the file, prints the metrics and exits (1 if
the sample or the write failed). --bench SECONDS runs the loop that long and
prints one JSON line: samples, writes, errors and the CPU seconds used.
Exits 0 on SIGTERM or SIGINT, 2 on a bad config or command line.

The metrics, each app's with the labels app and socket (as in the config):
  uwsgi_listen_queue_length       connections waiting to be accepted now (Recv-Q)
  uwsgi_listen_queue_peak_length  highest queue length sampled in the last `window` s
  uwsgi_listen_backlog            the backlog in effect (Send-Q): what the queue holds
  uwsgi_listen_socket_up          1 if found listening at the last sample, else 0
(queue and backlog only while the socket is up; the peak while the window holds
a sample; several listeners of one socket, SO_REUSEPORT, add up), and:
  uwsgi_sampler_tcp_listen_overflows_total, uwsgi_sampler_tcp_listen_drops_total
                                  TcpExt ListenOverflows and ListenDrops of the
                                  sampler's network namespace (/proc/net/netstat)
  uwsgi_sampler_samples_total     samples taken (a failed netlink dump is no sample)
  uwsgi_sampler_errors_total{kind="netlink|output|netstat|internal"}
  uwsgi_sampler_last_sample_timestamp_seconds

The netlink codec is uwsgi_netlink.py, beside this script. Python 3.9 or
later, standard library only. Part of the backlogops.uwsgi Ansible role.
"""

import argparse
import collections
import json
import os
import resource
import select
import signal
import socket
import stat
import sys
import time
import traceback

# The sock_diag codec, installed beside this script (Python puts the script's
# directory first on sys.path).
from uwsgi_netlink import INET_DIAG_MSG_LEN, PAIR, PORT, TCP_LISTEN, DiagSocket, unix_fields, unix_vfs

DEFAULT_CONFIG = "/etc/uwsgi/sampler.json"
DEFAULTS = {
    "interval": 0.1,
    "window": 15.0,
    "output": "/var/lib/prometheus/node-exporter/uwsgi.prom",
    "alert_ratio": 0.9,
}
WRITE_INTERVAL = 1.0  # seconds between writes of the metrics file
ALERT_REPEAT = 10.0  # at most one alert line per app in this many seconds
NETSTAT = "/proc/net/netstat"
ERROR_KINDS = ("netlink", "output", "netstat", "internal")


class ConfigError(Exception):
    """A config the sampler cannot run with; the message says which key to fix."""


# --- /proc/net/netstat -----------------------------------------------------


def parse_netstat(text):
    """/proc/net/netstat (or /proc/net/snmp) as {"TcpExt": {"ListenOverflows": n, ...}, ...}."""
    tables = {}
    header = None
    for line in text.splitlines():
        prefix, _, rest = line.partition(":")
        fields = rest.split()
        if header is not None and header[0] == prefix:
            try:
                tables[prefix] = dict(zip(header[1], (int(value) for value in fields)))
            except ValueError:
                pass
            header = None
        else:
            header = (prefix, fields)
    return tables


# --- config ----------------------------------------------------------------


class Target:
    """Where an app listens: a unix name (raw bytes as the kernel reports them)
    or a TCP port with an address (None: any address)."""

    __slots__ = ("kind", "unix_names", "port", "family", "address")

    def __init__(self, kind, unix_names=(), port=None, family=None, address=None):
        self.kind = kind
        self.unix_names = unix_names
        self.port = port
        self.family = family
        self.address = address

    def families(self):
        if self.kind == "unix":
            return (socket.AF_UNIX,)
        if self.family is None:
            return (socket.AF_INET, socket.AF_INET6)
        return (self.family,)


ANY_HOSTS = ("", "*", "0.0.0.0", "[::]")
STAGED_SUFFIX = b".new"  # module_utils/uwsgi_host.STAGED_SUFFIX: this file runs alone on the host
UNIX_PATH_MAX = 108


def parse_socket(text):
    """The Target of a socket as the config names it; ValueError says why not."""
    forms = "an absolute unix path, @abstract, host:port, [IPv6]:port or :port"
    if not isinstance(text, str) or not text:
        raise ValueError("must be a string: %s" % forms)
    if text.startswith("/"):
        raw = os.fsencode(text)
        if len(raw) >= UNIX_PATH_MAX or b"\0" in raw:
            raise ValueError("%r is not a unix socket path (at most %d bytes)" % (text, UNIX_PATH_MAX - 1))
        # A pool moved in over a served path (the role's beside layout) keeps
        # the name it bound, PATH.new; the file at PATH tells whether it serves.
        staged = raw + STAGED_SUFFIX
        return Target("unix", unix_names=(raw, raw + b"\0", staged, staged + b"\0"))
    if text.startswith("@"):
        raw = b"\0" + os.fsencode(text[1:])
        if len(raw) > UNIX_PATH_MAX or len(raw) < 2:
            raise ValueError("%r is not an abstract unix socket name" % text)
        return Target("unix", unix_names=(raw, raw + b"\0"))
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("%r is not %s (port 1 to 65535)" % (text, forms))
    port = int(port_text)
    if host in ANY_HOSTS:
        return Target("tcp", port=port)
    if host.startswith("[") and host.endswith("]"):
        try:
            address = socket.inet_pton(socket.AF_INET6, host[1:-1])
        except (OSError, ValueError):
            raise ValueError("%r: %r is not an IPv6 address" % (text, host[1:-1])) from None
        if address == bytes(16):
            return Target("tcp", port=port)
        return Target("tcp", port=port, family=socket.AF_INET6, address=address)
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError):
        hint = " (an IPv6 address goes in brackets: [addr]:port)" if ":" in host else ""
        raise ValueError("%r: %r is not an IPv4 address%s" % (text, host, hint)) from None
    return Target("tcp", port=port, family=socket.AF_INET, address=address)


def _number(config, key, low, high):
    value = config.get(key, DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
        raise ConfigError("key %r: must be a number above %g and at most %g, not %s"
                          % (key, low, high, json.dumps(value)))
    return float(value)


def check_output(path, key="output"):
    if not isinstance(path, str) or not path.startswith("/") or path.endswith("/"):
        raise ConfigError("key %r: must be an absolute file path, not %s" % (key, json.dumps(path)))
    if not path.endswith(".prom"):
        raise ConfigError("key %r: %s must end in .prom (node_exporter's textfile collector reads only *.prom)"
                          % (key, path))
    return path


def parse_config(config):
    """A config dict checked and completed with the defaults; ConfigError names the key to fix."""
    if not isinstance(config, dict):
        raise ConfigError("must be a JSON object with the key 'apps'")
    unknown = sorted(set(config) - set(DEFAULTS) - {"apps"})
    if unknown:
        raise ConfigError("unknown key %r (the keys are apps, %s)" % (unknown[0], ", ".join(sorted(DEFAULTS))))
    if "apps" not in config:
        raise ConfigError("key 'apps' is missing: a list of {\"name\": ..., \"socket\": ...}")
    if not isinstance(config["apps"], list):
        raise ConfigError("key 'apps': must be a list of {\"name\": ..., \"socket\": ...}")
    apps = []
    names = set()
    for index, app in enumerate(config["apps"]):
        where = "apps[%d]" % index
        if not isinstance(app, dict):
            raise ConfigError("key %r: must be an object with the keys name and socket" % where)
        extra = sorted(set(app) - {"name", "socket"})
        if extra:
            raise ConfigError("key '%s.%s': unknown (an app has the keys name and socket)" % (where, extra[0]))
        for key in ("name", "socket"):
            if key not in app:
                raise ConfigError("key '%s.%s' is missing" % (where, key))
        name = app["name"]
        if not isinstance(name, str) or not name:
            raise ConfigError("key '%s.name': must be a non-empty string" % where)
        if name in names:
            raise ConfigError("key '%s.name': %r names two apps" % (where, name))
        names.add(name)
        try:
            target = parse_socket(app["socket"])
        except ValueError as exc:
            raise ConfigError("key '%s.socket': %s" % (where, exc)) from None
        apps.append({"name": name, "socket": app["socket"], "target": target})
    interval = _number(config, "interval", 0, 60)
    window = _number(config, "window", 0, 86400)
    if window < interval:
        raise ConfigError("key 'window': %g s is shorter than the interval (%g s)" % (window, interval))
    return {"apps": apps, "interval": interval, "window": window,
            "alert_ratio": _number(config, "alert_ratio", 0, 1),
            "output": check_output(config.get("output", DEFAULTS["output"]))}


def load_config(path):
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError("cannot read it: %s" % (exc.strerror or exc)) from None
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ConfigError("not valid JSON: %s" % exc) from None
    return parse_config(config)


# --- sampling --------------------------------------------------------------


class Peak:
    """The highest value pushed in the last `window` seconds: a deque of
    (time, value) falling in value, so each push and read is O(1) amortized."""

    __slots__ = ("window", "entries")

    def __init__(self, window):
        self.window = window
        self.entries = collections.deque()

    def push(self, now, value):
        entries = self.entries
        while entries and entries[-1][1] <= value:
            entries.pop()
        entries.append((now, value))
        self.expire(now)

    def expire(self, now):
        entries = self.entries
        edge = now - self.window
        while entries and entries[0][0] <= edge:
            entries.popleft()

    def value(self, now):
        """The peak, or None when nothing was pushed in the window."""
        self.expire(now)
        return self.entries[0][1] if self.entries else None


def escape_label(value):
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class App:
    __slots__ = ("name", "socket", "target", "labels", "up", "queue", "backlog", "peak",
                 "found", "sum_queue", "sum_backlog", "alert_high", "alert_at", "bound")

    def __init__(self, name, sock, target, window):
        self.name = name
        self.socket = sock
        self.target = target
        self.labels = '{app="%s",socket="%s"}' % (escape_label(name), escape_label(sock))
        self.up = None  # None until the first sample, then True or False
        self.queue = None
        self.backlog = None
        self.peak = Peak(window)
        self.found = 0  # listeners found in the current sample
        self.sum_queue = 0
        self.sum_backlog = 0
        self.alert_high = False
        self.alert_at = None
        # The inode of the file at a unix socket's path in the current sample:
        # None when unknown (not a path, or the path cannot be read), 0 when
        # nothing that is a socket is there.
        self.bound = None


def bound_inode(path):
    """The inode of the socket file at a unix socket's path: 0 when nothing
    that is a socket is there, None when that cannot be told (not a path, or
    a directory this user cannot search)."""
    if not path.startswith("/"):
        return None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    except OSError:
        return None
    return st.st_ino if stat.S_ISSOCK(st.st_mode) else 0


def log_line(stream, message):
    stream.write("%s uwsgi_sampler: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S%z"), message))
    stream.flush()


class Sampler:
    """The sampling state. sample() takes one sample, render() the metrics
    text, write() writes it to the output file; none of them raises for a
    netlink, file or socket problem: those are logged and counted."""

    def __init__(self, config, netlink=None, log=None, clock=time.monotonic, wall=time.time, netstat=NETSTAT,
                 bound=None):
        self.interval = config["interval"]
        self.window = config["window"]
        self.alert_ratio = config["alert_ratio"]
        self.output = config["output"]
        self.apps = [App(app["name"], app["socket"], app["target"], self.window) for app in config["apps"]]
        self.netlink = netlink if netlink is not None else DiagSocket()
        self.log = log if log is not None else (lambda message: log_line(sys.stdout, message))
        self.clock = clock
        self.wall = wall
        self.netstat = netstat
        self.bound = bound if bound is not None else bound_inode
        self.samples = 0
        self.writes = 0
        self.last_sample = None
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.failing = dict.fromkeys(ERROR_KINDS)  # kind: the error message while it lasts
        self.unix_names = {}
        self.tcp_ports = {}
        families = set()
        for app in self.apps:
            families.update(app.target.families())
            if app.target.kind == "unix":
                for raw in app.target.unix_names:
                    self.unix_names.setdefault(raw, []).append(app)
            else:
                self.tcp_ports.setdefault(app.target.port, []).append(app)
        self.queries = [(family, self.on_unix if family == socket.AF_UNIX else self.on_inet)
                        for family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6) if family in families]

    # handlers of sock_diag records, called for every LISTEN socket of a family
    def on_unix(self, data, start, end):
        state, raw, rqueue, wqueue, _inode = unix_fields(data, start, end)
        apps = self.unix_names.get(raw)
        if apps is not None and state == TCP_LISTEN and rqueue is not None:
            vfs = unix_vfs(data, start, end)
            for app in apps:
                # A socket whose file was deleted or replaced keeps its name:
                # it serves the app only while it is the file at the path.
                if app.bound == 0 or (app.bound and vfs is not None and vfs[0] != app.bound):
                    continue
                app.found += 1
                app.sum_queue += rqueue
                app.sum_backlog += wqueue

    def on_inet(self, data, start, end):
        if end - start < INET_DIAG_MSG_LEN:
            return
        apps = self.tcp_ports.get(PORT.unpack_from(data, start + 4)[0])
        if apps is None or data[start + 1] != TCP_LISTEN:
            return
        family = data[start]
        address = bytes(data[start + 8:start + (12 if family == socket.AF_INET else 24)])
        rqueue, wqueue = PAIR.unpack_from(data, start + 56)
        for app in apps:
            target = app.target
            if target.address is None:
                if address.count(0) != len(address):
                    continue
            elif target.family != family or target.address != address:
                continue
            app.found += 1
            app.sum_queue += rqueue
            app.sum_backlog += wqueue

    def fail(self, kind, message):
        self.errors[kind] += 1
        if self.failing[kind] is None:
            self.log("error (%s): %s; counted in uwsgi_sampler_errors_total, retrying" % (kind, message))
        self.failing[kind] = message

    def succeed(self, kind):
        if self.failing[kind] is not None:
            self.log("recovered (%s) after %d errors" % (kind, self.errors[kind]))
            self.failing[kind] = None

    def sample(self):
        """Take one sample; False if netlink failed (the apps keep the values
        of the last good sample)."""
        apps = self.apps
        for app in apps:
            app.found = app.sum_queue = app.sum_backlog = 0
            app.bound = self.bound(app.socket)
        try:
            for family, handler in self.queries:
                self.netlink.dump(family, handler)
        except OSError as exc:
            self.fail("netlink", "sock_diag dump: %s" % (exc.strerror or exc))
            return False
        self.succeed("netlink")
        now = self.clock()
        self.samples += 1
        self.last_sample = self.wall()
        for app in apps:
            if app.found:
                if app.up is not True:
                    self.log("app %s: socket %s listening, queue %d, backlog %d"
                             % (app.name, app.socket, app.sum_queue, app.sum_backlog))
                elif app.sum_backlog != app.backlog:
                    self.log("app %s: socket %s backlog %d -> %d"
                             % (app.name, app.socket, app.backlog, app.sum_backlog))
                app.up = True
                app.queue = queue = app.sum_queue
                app.backlog = backlog = app.sum_backlog
                app.peak.push(now, queue)
                high = queue > 0 and queue >= self.alert_ratio * backlog - 1e-9  # 90 of 100 reaches 0.9
                if high and (app.alert_at is None or now - app.alert_at >= ALERT_REPEAT):
                    self.log("ALERT app %s: listen queue %d of backlog %d (%.0f%%, alert_ratio %g) %s on %s"
                             % (app.name, queue, backlog, 100.0 * queue / backlog if backlog else 100.0,
                                self.alert_ratio, "still at or above" if app.alert_high else "reached", app.socket))
                    app.alert_at = now
                app.alert_high = high
            else:
                if app.up is not False:
                    self.log("app %s: socket %s not found listening" % (app.name, app.socket))
                app.up = False
                app.queue = app.backlog = None
                app.alert_high = False
        return True

    def read_netstat(self):
        try:
            with open(self.netstat) as handle:
                tcp = parse_netstat(handle.read()).get("TcpExt", {})
            counters = (tcp["ListenOverflows"], tcp["ListenDrops"])
        except (OSError, KeyError) as exc:
            self.fail("netstat", "%s: %s" % (self.netstat, getattr(exc, "strerror", None) or "no TcpExt ListenOverflows"))
            return None
        self.succeed("netstat")
        return counters

    def render(self):
        """The metrics in Prometheus's text exposition format (version 0.0.4)."""
        now = self.clock()
        lines = []

        def family(name, kind, text, samples):
            if samples:
                lines.append("# HELP %s %s\n# TYPE %s %s\n" % (name, text, name, kind))
                lines.extend("%s%s %s\n" % (name, labels, value) for labels, value in samples)

        apps = self.apps
        peaks = [(app, app.peak.value(now)) for app in apps]
        family("uwsgi_listen_queue_length", "gauge",
               "Connections waiting in the app's listen queue at the last sample (ss -l Recv-Q).",
               [(app.labels, app.queue) for app in apps if app.up])
        family("uwsgi_listen_queue_peak_length", "gauge",
               "Highest uwsgi_listen_queue_length sampled every %g s over the last %g s." % (self.interval, self.window),
               [(app.labels, peak) for app, peak in peaks if peak is not None])
        family("uwsgi_listen_backlog", "gauge",
               "Backlog in effect on the app's listening socket (ss -l Send-Q): the most connections its queue holds.",
               [(app.labels, app.backlog) for app in apps if app.up])
        family("uwsgi_listen_socket_up", "gauge",
               "1 if the app's socket was found listening at the last sample, else 0.",
               [(app.labels, 1 if app.up else 0) for app in apps if app.up is not None])
        counters = self.read_netstat()
        if counters is not None:
            family("uwsgi_sampler_tcp_listen_overflows_total", "counter",
                   "TCP connections dropped because a listen queue was full (TcpExt ListenOverflows, this network namespace).",
                   [("", counters[0])])
            family("uwsgi_sampler_tcp_listen_drops_total", "counter",
                   "TCP connections dropped at a listening socket for any reason (TcpExt ListenDrops, this network namespace).",
                   [("", counters[1])])
        family("uwsgi_sampler_samples_total", "counter",
               "Samples of the listen queues taken.", [("", self.samples)])
        family("uwsgi_sampler_errors_total", "counter",
               "Errors of the sampler by kind: netlink (sock_diag), output (metrics file), netstat, internal.",
               [('{kind="%s"}' % kind, self.errors[kind]) for kind in ERROR_KINDS])
        if self.last_sample is not None:
            family("uwsgi_sampler_last_sample_timestamp_seconds", "gauge",
                   "Unix time of the last sample taken.", [("", "%.3f" % self.last_sample)])
        return "".join(lines)

    def write(self, text=None):
        """Render (unless given the text) and write the metrics file; False if that failed."""
        if text is None:
            text = self.render()
        try:
            write_atomic(self.output, text.encode("utf-8"))
        except OSError as exc:
            self.fail("output", "cannot write %s: %s" % (self.output, exc.strerror or exc))
            return False
        self.succeed("output")
        self.writes += 1
        return True


def write_atomic(path, data, mode=0o644):
    """Replace `path` with `data` so that a reader sees the old file or the
    new one, never a part: a temp file in the same directory (not *.prom, so
    the textfile collector skips it), fsync, rename over. The temp file is
    removed if anything fails."""
    directory, base = os.path.split(path)
    temp = os.path.join(directory, ".%s.%d.tmp" % (base, os.getpid()))
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


# --- the loop --------------------------------------------------------------


class Stop:
    """A flag to end the loop, set from a signal handler or another thread;
    wait() sleeps until the timeout or until it is set."""

    def __init__(self):
        self.flag = False
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)
        self.poller = select.poll()
        self.poller.register(self.read_fd, select.POLLIN)

    def set(self, *_signal):
        self.flag = True
        try:
            os.write(self.write_fd, b"\0")
        except OSError:
            pass  # the pipe is full: it is readable already

    def is_set(self):
        return self.flag

    def wait(self, timeout):
        if not self.flag and timeout > 0:
            self.poller.poll(timeout * 1000.0)
        return self.flag

    def close(self):
        os.close(self.read_fd)
        os.close(self.write_fd)


def run(sampler, stop, duration=None, write_interval=WRITE_INTERVAL):
    """Sample every sampler.interval seconds and write every write_interval
    seconds (and after the first sample) until stop is set or duration ends.
    Ticks keep to a fixed schedule; ticks missed (a stalled machine) are skipped."""
    clock = sampler.clock
    interval = sampler.interval
    start = clock()
    end = None if duration is None else start + duration
    next_tick = next_write = start
    while not stop.is_set():
        now = clock()
        if end is not None and now >= end:
            break
        try:
            sampler.sample()
            if now >= next_write:
                sampler.write()
                next_write += write_interval
                if next_write <= now:
                    next_write = now + write_interval
            sampler.succeed("internal")
        except Exception as exc:  # a bug must not become a crash loop under Supervisor
            sampler.fail("internal", "".join(traceback.format_exception_only(type(exc), exc)).strip())
        next_tick += interval
        now = clock()
        if next_tick <= now:
            next_tick += (int((now - next_tick) / interval) + 1) * interval
        delay = next_tick - now
        if end is not None:
            delay = min(delay, end - now)
        stop.wait(delay)


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench(sampler, seconds):
    """Run the loop for `seconds` and return what it took."""
    stop = Stop()
    try:
        cpu, start = cpu_seconds(), time.monotonic()
        run(sampler, stop, duration=seconds)
        cpu, elapsed = cpu_seconds() - cpu, time.monotonic() - start
    finally:
        stop.close()
    return {"seconds": round(elapsed, 3), "samples": sampler.samples, "writes": sampler.writes,
            "apps": len(sampler.apps), "interval": sampler.interval,
            "errors": sum(sampler.errors.values()), "cpu_seconds": round(cpu, 4),
            "cpu_percent_of_one_core": round(100.0 * cpu / elapsed, 3) if elapsed else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="JSON config (default %(default)s)")
    parser.add_argument("--output", help="metrics file, instead of the config's output")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="take one sample, write the file, print the metrics")
    mode.add_argument("--bench", type=float, metavar="SECONDS",
                      help="run the loop this long, then print the samples taken and the CPU seconds used")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write("uwsgi_sampler: config %s: %s\n" % (args.config, exc))
        return 2
    if args.output is not None:
        try:
            config["output"] = check_output(args.output, "--output")
        except ConfigError as exc:
            parser.error(str(exc))  # exits 2
    if args.bench is not None and not args.bench > 0:
        parser.error("--bench: must be a number of seconds above 0")
    if args.once or args.bench is not None:
        sampler = Sampler(config, log=lambda message: log_line(sys.stderr, message))
        try:
            if args.once:
                sampled = sampler.sample()
                text = sampler.render()
                written = sampler.write(text)
                sys.stdout.write(text)
                return 0 if sampled and written else 1
            print(json.dumps(bench(sampler, args.bench)))
            return 0
        finally:
            sampler.netlink.close()
    sampler = Sampler(config)
    stop = Stop()
    signal.signal(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, stop.set)
    sampler.log("sampling %d apps every %g s (peak over %g s, alert at %g of the backlog), writing %s every %g s"
                % (len(sampler.apps), sampler.interval, sampler.window, sampler.alert_ratio,
                   sampler.output, WRITE_INTERVAL))
    try:
        run(sampler, stop)
    finally:
        sampler.netlink.close()
    sampler.log("stopping: %d samples taken" % sampler.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
