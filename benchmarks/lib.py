"""Shared pieces of the demo and the benchmark: local container hosts, the
measurements taken inside them, and plain-text tables.

Every measurement runs inside a container the harness created (unix sockets
and the container's loopback), and every load is bounded in count and time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import shlex
import statistics
import subprocess
import sys
import time

PROJECT = pathlib.Path(__file__).resolve().parents[1]
BENCH = PROJECT / "benchmarks"
IMAGE = "uwsgi-role-test:" + os.environ.get("DISTRO", "bookworm")
SOCKET = "/run/uwsgi/flaskapp.sock"
APP_LOG = "/var/log/supervisor/flaskapp.log"
NGINX_ERROR_LOG = "/var/log/nginx/error.log"
NGINX_URL = "http://127.0.0.1:80"  # the container's own loopback; port explicit (no /etc/services)
WORKERS = 2  # flaskapp's uWSGI processes, before and after the role
EAGAIN_502 = "(11: Resource temporarily unavailable)"
BACKLOG_LINE = re.compile(r"your server socket listen backlog is limited to (\d+) connections")
SOMAXCONN_LINE = "Listen queue size is greater than the system max net.core.somaxconn"

# The flags a systemd container needs on this kind of machine (privileged does
# not work everywhere), and the old-kernel limits of the starting point.
# Downloaded .debs are kept in .cache/apt-archives across containers.
DOCKER_RUN_FLAGS = [
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
    "--sysctl", "net.core.somaxconn=128", "--sysctl", "net.ipv4.tcp_max_syn_backlog=128",
]
INIT = ["/bin/sh", "-c", "mount -o remount,rw /proc/sys && exec /sbin/init"]

_T0 = time.monotonic()


def _role_parsers():
    """The role's parsers of ss and supervisorctl (module_utils/uwsgi_host.py),
    unit-tested against output captured on Debian 11, 12 and 13."""
    spec = importlib.util.spec_from_file_location("uwsgi_host", PROJECT / "module_utils/uwsgi_host.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


parsers = _role_parsers()


def say(message: str) -> None:
    """One progress line, with the seconds since the script started."""
    print(f"  [{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


def run(argv: list[str], timeout: float = 600, check: bool = True, env: dict | None = None,
        capture: bool = True, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout, cwd=cwd or PROJECT,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        detail = (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:] if capture else ""
        raise SystemExit(f"command failed ({proc.returncode}): {shlex.join(argv)}\n{detail}")
    return proc


# Containers ------------------------------------------------------------------

def container_exists(name: str) -> bool:
    return run(["docker", "container", "inspect", name], check=False).returncode == 0


def remove_container(name: str) -> None:
    if container_exists(name):
        run(["docker", "rm", "-f", name])


def create_host(name: str, shared_apt_cache: bool = True) -> None:
    """A fresh bare Debian host running systemd, with net.core.somaxconn=128.

    shared_apt_cache keeps downloaded .debs in .cache/apt-archives across hosts;
    hosts that run apt at the same time must not share it (apt locks it).
    """
    remove_container(name)
    volumes = []
    if shared_apt_cache:
        cache = PROJECT / ".cache" / "apt-archives"
        (cache / "partial").mkdir(parents=True, exist_ok=True)
        volumes = ["-v", f"{cache}:/var/cache/apt/archives"]
    run(["docker", "run", "-d", "--name", name, "--hostname", name, *DOCKER_RUN_FLAGS, *volumes, IMAGE, *INIT])
    deadline = time.monotonic() + 120
    while True:  # PID 1 becomes systemd only after the remount
        proc = sh(name, "systemctl is-system-running --wait", check=False, timeout=120)
        if proc.stdout.strip() in ("running", "degraded"):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: systemd did not finish booting: {proc.stdout.strip()} {proc.stderr.strip()}")
        time.sleep(0.5)


def hand_over(name: str, program: str = "flaskapp") -> None:
    """Remove the classic setup's hand-written Supervisor program (benchmarks/demo-setup.yml)
    so that the role can write its own of that name: the role never takes over a program it
    did not write. The app stops until the role starts it again."""
    sh(name, f"supervisorctl stop {program}; rm -f /etc/supervisor/conf.d/{program}.conf && supervisorctl update")


def sh(name: str, command: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a shell command inside the container."""
    return run(["docker", "exec", name, "sh", "-c", command], check=check, timeout=timeout)


def copy_into(name: str, source: pathlib.Path | str, dest: str) -> None:
    """docker cp a file into the container (not under /tmp or /run: tmpfs there)."""
    run(["docker", "cp", str(source), f"{name}:{dest}"])


def start_detached(name: str, command: str, pidfile: str) -> None:
    """Start `command` in the background inside the container (docker exec -d);
    its PID goes to `pidfile`, and the command replaces the shell (exec), so
    that PID is the command's own."""
    run(["docker", "exec", "-d", name, "sh", "-c", f"echo $$ > {shlex.quote(pidfile)}; exec {command}"])


def stop_detached(name: str, pidfile: str, timeout: float = 10) -> None:
    """SIGTERM the process started by start_detached, and wait for it to end."""
    sh(name, f"pid=$(cat {shlex.quote(pidfile)} 2>/dev/null) || exit 0; kill $pid 2>/dev/null || exit 0; "
             f"i=0; while kill -0 $pid 2>/dev/null && [ $i -lt {int(timeout * 10)} ]; do sleep 0.1; i=$((i+1)); done",
       check=False, timeout=timeout + 10)


# Ansible ---------------------------------------------------------------------

ANSIBLE_ENV = {
    "ANSIBLE_PIPELINING": "true",  # one `docker exec` per task, as molecule's config does over SSH
    "ANSIBLE_INJECT_FACT_VARS": "false",
}


def ansible_playbook(inventory: str, playbook: str, *extra: str, capture: bool = False,
                     env: dict | None = None, check: bool = True, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    argv = ["ansible-playbook", "-i", inventory, playbook, *extra]
    if not capture:
        say("$ " + shlex.join(argv))
    return run(argv, timeout=900, check=check, capture=capture, env={**ANSIBLE_ENV, **(env or {})}, cwd=cwd)


def play_result(proc: subprocess.CompletedProcess, playbook: str, host: str) -> dict:
    """The ansible.posix.json callback's output of a run; exits on a failed run."""
    try:
        out = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        raise SystemExit(f"{playbook} on {host}: no JSON output (rc {proc.returncode})\n{proc.stderr[-3000:]}") from None
    stats = out["stats"][host]
    if proc.returncode != 0 or stats.get("failures") or stats.get("unreachable"):
        raise SystemExit(f"{playbook} on {host} failed: {stats}\n{proc.stdout[-3000:]}")
    return out


# Measurements inside a container ----------------------------------------------

def sysctl(name: str, key: str) -> int:
    return int(sh(name, "cat /proc/sys/" + key.replace(".", "/")).stdout)


def listen_backlogs(name: str) -> dict[str, dict]:
    """Every LISTEN socket: Send-Q is the backlog in effect, Recv-Q the queue now."""
    out = sh(name, "ss -H --listening --numeric --unix --tcp").stdout
    return {item["local"]: {"queue": item["queue"], "backlog": item["backlog"]}
            for item in parsers.parse_ss_listeners(out)}


def app_backlog(name: str) -> int | None:
    return listen_backlogs(name).get(SOCKET, {}).get("backlog")


def nginx_backlog(name: str) -> int | None:
    return listen_backlogs(name).get("0.0.0.0:80", {}).get("backlog")


def program_state(name: str, program: str = "flaskapp") -> str:
    # The whole status: a beside app is its serving instance under its own name.
    out = sh(name, "supervisorctl status", check=False).stdout
    return parsers.parse_supervisor_status(out).get(program, {}).get("state", "missing")


def wait_program(name: str, timeout: float = 40) -> str:
    """Wait until Supervisor settles on RUNNING or FATAL; returns the state."""
    deadline = time.monotonic() + timeout
    state = program_state(name)
    while state not in ("RUNNING", "FATAL") and time.monotonic() < deadline:
        time.sleep(1)
        state = program_state(name)
    if state == "RUNNING":  # the listen socket appears once the app is loaded
        while app_backlog(name) is None and time.monotonic() < deadline:
            time.sleep(0.5)
    return state


def uwsgi_log_facts(name: str) -> dict:
    """The last backlog line uWSGI logged, and whether it refused the listen."""
    log = sh(name, f"cat {APP_LOG} 2>/dev/null || true").stdout
    backlog = BACKLOG_LINE.findall(log)
    refusal = [line for line in log.splitlines() if SOMAXCONN_LINE in line]
    return {
        "backlog_line": f"your server socket listen backlog is limited to {backlog[-1]} connections" if backlog else None,
        "logged_backlog": int(backlog[-1]) if backlog else None,
        "somaxconn_refusals": len(refusal),
        "somaxconn_line": refusal[-1].strip() if refusal else None,
    }


def wait_drained(name: str, settle: float = 1.0, timeout: float = 90) -> float:
    """Wait until uWSGI's accept queue is empty, then for the requests in the
    workers to finish; returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        sock = listen_backlogs(name).get(SOCKET)
        if sock is None or sock["queue"] == 0:
            break
        time.sleep(0.5)
    time.sleep(settle)
    return time.monotonic() - start


def burst(name: str, n: int, busy: int = WORKERS, hold: float = 2.0) -> dict:
    """uwsgiprobe burst inside the container: occupy the workers, then N
    non-blocking connects to the socket; the queue is drained afterwards."""
    result = json.loads(sh(name, f"uwsgiprobe burst {SOCKET} {n} --busy {busy} --hold {hold}", timeout=60).stdout)
    time.sleep(hold / 2)  # the busy requests end
    wait_drained(name)
    return result


def tcp_listen_counters(name: str) -> dict[str, int]:
    """TcpExt ListenOverflows/ListenDrops of the container's network namespace."""
    lines = [line.split() for line in sh(name, "cat /proc/net/netstat").stdout.splitlines()]
    for head, values in zip(lines, lines[1:]):
        if head and head[0] == "TcpExt:" and values[0] == "TcpExt:":
            table = dict(zip(head[1:], map(int, values[1:])))
            return {"ListenOverflows": table.get("ListenOverflows", 0), "ListenDrops": table.get("ListenDrops", 0)}
    return {"ListenOverflows": 0, "ListenDrops": 0}


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def parse_wrk(out: str) -> dict:
    result = {"requests": 0, "non_2xx": 0, "socket_errors": {}, "latency": {}, "rps": 0.0}
    if m := re.search(r"(\d+) requests in ([\d.]+\w+)", out):
        result["requests"] = int(m.group(1))
        result["seconds"] = _seconds(m.group(2))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        result["non_2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        result["socket_errors"] = dict(zip(["connect", "read", "write", "timeout"], map(int, m.groups())))
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M):
        result["latency"]["p" + pct] = _seconds(value)
    # "Latency  avg  stdev  max  +/- stdev"
    if m := re.search(r"^[ \t]+Latency[ \t]+\S+[ \t]+\S+[ \t]+(\S+)", out, re.M):
        result["latency"]["max"] = _seconds(m.group(1))
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result["rps"] = float(m.group(1))
    return result


def http_load(name: str, connections: int, seconds: int, service_time: float, threads: int = 2) -> dict:
    """wrk through nginx inside the container, bounded by -d; then counts the
    502s nginx logged for a full uWSGI queue and the TCP listen overflows
    (nginx's own backlog), and waits for uWSGI's queue to drain."""
    sh(name, f": > {NGINX_ERROR_LOG}")
    before = tcp_listen_counters(name)
    url = f"{NGINX_URL}/slow?t={service_time}"
    cmd = f"wrk -t{threads} -c{connections} -d{seconds}s --timeout 30s --latency '{url}'"
    out = sh(name, cmd, timeout=seconds + 60).stdout
    after = tcp_listen_counters(name)
    counts = sh(name, f"grep -c '{EAGAIN_502}' {NGINX_ERROR_LOG}; grep -c '\\[error\\]' {NGINX_ERROR_LOG}",
                check=False).stdout.split()
    sh(name, f": > {NGINX_ERROR_LOG}")  # a 502 storm writes ~100 MB of log
    result = parse_wrk(out)
    result.update({
        "command": cmd,
        "connections": connections,
        "duration": seconds,
        "service_time": service_time,
        "floor": connections * service_time / WORKERS,
        "nginx_eagain_502": int(counts[0]) if counts else 0,
        "nginx_errors": int(counts[1]) if len(counts) > 1 else 0,
        "listen_overflows": after["ListenOverflows"] - before["ListenOverflows"],
        "listen_drops": after["ListenDrops"] - before["ListenDrops"],
    })
    result["drain_seconds"] = round(wait_drained(name), 1)
    return result


def read_metrics(name: str, path: str) -> list[dict] | None:
    """The samples of a Prometheus text file in the container (the sampler's
    output), parsed by the role's parser; None while the file does not exist."""
    proc = sh(name, f"cat {shlex.quote(path)}", check=False)
    return parsers.parse_prometheus_text(proc.stdout) if proc.returncode == 0 else None


def metric(samples: list[dict] | None, metric_name: str, **labels: str) -> float | None:
    """The value of the first sample named `metric_name` whose labels include `labels`."""
    for sample in samples or []:
        if sample["name"] == metric_name and all(sample["labels"].get(k) == v for k, v in labels.items()):
            return sample["value"]
    return None


def wait_metrics(name: str, path: str, since: float = 0.0, timeout: float = 20) -> list[dict]:
    """The sampler's file once it holds a sample taken at or after `since`
    (Unix time; uwsgi_sampler_last_sample_timestamp_seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = read_metrics(name, path)
        last = metric(samples, "uwsgi_sampler_last_sample_timestamp_seconds")
        if last is not None and last >= since:
            return samples
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: no fresh sample in {path} after {timeout:g} s (last: {last})")
        time.sleep(0.3)


# Presentation ----------------------------------------------------------------

def put_in_place(name: str, build: str) -> None:
    """Point /srv/current at /srv/releases/BUILD in one rename, as a deploy does."""
    sh(name, f"ln -sfn /srv/releases/{build} /srv/current.new && mv -T /srv/current.new /srv/current")


def wrk_around(name: str, url: str, connections: int, bound: int, action) -> tuple[dict, float]:
    """wrk through nginx from 3 s before `action()` to 2 s after it (bounded by -d `bound` s):
    wrk's parsed results, and the seconds `action` took."""
    sh(name, f": > {NGINX_ERROR_LOG}")
    wrk = subprocess.Popen(["docker", "exec", name, "wrk", "-t2", f"-c{connections}", f"-d{bound}s", "--latency",
                            "--timeout", "10s", url], stdout=subprocess.PIPE, text=True)
    time.sleep(3)
    started = time.monotonic()
    action()
    took = time.monotonic() - started
    time.sleep(2)
    sh(name, "pkill -INT -x wrk", check=False)
    out, _ = wrk.communicate(timeout=bound + 60)
    return parse_wrk(out), took


def load_average() -> str:
    """This machine's load average over 1, 5 and 15 minutes, as a result says it."""
    return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])


def write_results(name: str, text: str, rows: list) -> None:
    """benchmarks/results/NAME.md (the text) and NAME.json (the rows), then the text on stdout."""
    BENCH.joinpath("results").mkdir(exist_ok=True)
    (BENCH / "results" / f"{name}.md").write_text(text)
    (BENCH / "results" / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(text)


def table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A Markdown table whose columns line up in a terminal too."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    align = align or "l" * len(header)

    def line(row):
        return "| " + " | ".join(c.rjust(w) if a == "r" else c.ljust(w)
                                 for c, w, a in zip(row, widths, align)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                          for w, a in zip(widths, align)) + "|"
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def fmt_s(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def median(values: list[float]) -> float:
    return statistics.median(values)


def bold(text: str) -> str:
    return f"\033[1m{text}\033[0m" if sys.stdout.isatty() or os.environ.get("PY_COLORS") == "1" else text
