#!/usr/bin/env python3
"""The listen-queue sampler's CPU cost: 10 apps sampled at 10 Hz.

On one local container host (uwsgi-bench-sampler), 10 plain Python
listeners hold 10 unix sockets in LISTEN (app N with N connections waiting in
its queue, never accepted), and the role's sampler (files/uwsgi_sampler.py)
watches all 10 with its default interval (0.1 s):

1. from inside: `uwsgi_sampler.py --bench 60`, the sampler's own loop for
   60 s, which reports the CPU seconds it used (getrusage);
2. from outside: the sampler started as the role's program runs it (no
   --bench), its utime + stime read from /proc/PID/stat 60 s apart.

Both as % of one core, against the target (under 1%), with the load average
at the start and the end, the machine's CPU use and the other containers
running. Writes benchmarks/results/sampler.md and sampler.json (`report`
re-renders the .md from the .json). Bounded: about 2 minutes; the container
is removed at the end unless BENCH_KEEP=1.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
import time

import lib

HOST = "uwsgi-bench-sampler"
APPS = 10
INTERVAL = 0.1      # the role's default (uwsgi_sampler_interval)
WINDOW = 15         # the role's default (uwsgi_sampler_window)
SECONDS = 60        # each measurement
TARGET = 1.0        # % of one core
WORK = "/root/sampler-bench"          # script and codec, config, metrics (docker cp cannot write to tmpfs)
SOCKETS = "/run/sampler-bench"        # the listeners' sockets
SCRIPT = f"{WORK}/uwsgi_sampler.py"
CONFIG = f"{WORK}/sampler.json"
OUTPUT = f"{WORK}/uwsgi.prom"
RESULTS = lib.BENCH / "results"

# APPS unix sockets in LISTEN; app N holds N connections in its queue. Ends by
# itself after `timeout` (see main) should the container outlive the run.
LISTENERS = f"""
import os, socket, time
held = []
for n in range({APPS}):
    path = "{SOCKETS}/app%d.sock" % n
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4096)
    held.append(listener)
    for _ in range(n):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        held.append(client)
open("{SOCKETS}/ready", "w").close()
time.sleep(3600)
"""


def other_containers() -> list[str]:
    names = lib.run(["docker", "ps", "--format", "{{.Names}}"]).stdout.split()
    return sorted(n for n in names if n != HOST)


def cpu_times() -> tuple[int, int]:
    """The machine's (busy, total) jiffies from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def conditions() -> dict:
    load1, load5, load15 = os.getloadavg()
    return {"load1": round(load1, 2), "load5": round(load5, 2), "load15": round(load15, 2),
            "other_containers": other_containers(), "cpu": cpu_times(), "time": time.time()}


def proc_cpu(pid: int) -> dict:
    """utime + stime of a process in the container (clock ticks) and the
    kernel's uptime, read in one exec."""
    out = lib.sh(HOST, f"cat /proc/{pid}/stat /proc/uptime; getconf CLK_TCK").stdout.splitlines()
    fields = out[0].rsplit(")", 1)[1].split()  # after the command name: field 3 (state) onwards
    return {"ticks": int(fields[11]) + int(fields[12]), "uptime": float(out[1].split()[0]), "hz": int(out[2])}


def check_metrics(samples: list[dict]) -> dict:
    """What the sampler's file says of the 10 sockets: all found, each queue as held."""
    found = sum(1 for n in range(APPS) if lib.metric(samples, "uwsgi_listen_socket_up", app=f"app{n}") == 1)
    queues_as_held = sum(1 for n in range(APPS)
                         if lib.metric(samples, "uwsgi_listen_queue_length", app=f"app{n}") == n)
    errors = sum(s["value"] for s in samples if s["name"] == "uwsgi_sampler_errors_total")
    return {"sockets_up": found, "queues_as_held": queues_as_held, "errors": int(errors),
            "backlog": lib.metric(samples, "uwsgi_listen_backlog", app="app0")}


def setup() -> dict:
    lib.say(f"fresh container {HOST} from {lib.IMAGE}")
    lib.create_host(HOST)
    lib.sh(HOST, f"echo 4096 > /proc/sys/net/core/somaxconn; mkdir -p {WORK} {SOCKETS}")
    # The script imports its netlink codec from its own directory, as on a host the role set up.
    for name in ("uwsgi_sampler.py", "uwsgi_netlink.py"):
        lib.copy_into(HOST, lib.PROJECT / "files" / name, f"{WORK}/{name}")
    config = {"apps": [{"name": f"app{n}", "socket": f"{SOCKETS}/app{n}.sock"} for n in range(APPS)],
              "interval": INTERVAL, "window": WINDOW, "alert_ratio": 0.9, "output": OUTPUT}
    lib.sh(HOST, f"printf '%s\\n' {shlex.quote(json.dumps(config))} > {CONFIG}")
    lib.start_detached(HOST, f"timeout 600 python3 -c {shlex.quote(LISTENERS)}", f"{WORK}/listeners.pid")
    lib.sh(HOST, f"i=0; until [ -e {SOCKETS}/ready ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; "
                 f"[ -e {SOCKETS}/ready ]", timeout=30)
    host = {
        "python": lib.sh(HOST, "python3 --version").stdout.split()[-1],
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        # sock_diag walks every unix socket of the network namespace, then filters LISTEN
        "unix_sockets": int(lib.sh(HOST, "ss -xaH | wc -l").stdout),
        "unix_listeners": int(lib.sh(HOST, "ss -xlH | wc -l").stdout),
    }
    lib.say(f"{APPS} listeners on {SOCKETS}/app0..{APPS - 1}.sock (app N holds N queued connections); "
            f"{host['unix_listeners']} unix sockets in LISTEN, {host['unix_sockets']} in all, in the container")
    return host


def run_bench() -> dict:
    lib.say(f"inside: python3 uwsgi_sampler.py --bench {SECONDS} ({APPS} apps, every {INTERVAL:g} s)")
    out = lib.sh(HOST, f"python3 {SCRIPT} --config {CONFIG} --bench {SECONDS}", timeout=SECONDS + 60).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["metrics"] = check_metrics(lib.read_metrics(HOST, OUTPUT) or [])
    lib.say(f"  {result['cpu_seconds']} CPU s in {result['seconds']} s = {result['cpu_percent_of_one_core']}% "
            f"of one core; {result['samples']} samples, {result['writes']} writes, {result['errors']} errors")
    return result


def run_outside() -> dict:
    lib.say(f"outside: the sampler running as a service would (no --bench); /proc/PID/stat {SECONDS} s apart")
    lib.sh(HOST, f"rm -f {OUTPUT}")
    pidfile = f"{WORK}/sampler.pid"
    lib.start_detached(HOST, f"python3 {SCRIPT} --config {CONFIG} > {WORK}/sampler.log 2>&1", pidfile)
    try:
        lib.wait_metrics(HOST, OUTPUT, since=time.time())
        time.sleep(1)  # past the interpreter's start-up
        pid = int(lib.sh(HOST, f"cat {pidfile}").stdout)
        first = proc_cpu(pid)
        samples_first = lib.metric(lib.read_metrics(HOST, OUTPUT), "uwsgi_sampler_samples_total")
        time.sleep(SECONDS)
        last = proc_cpu(pid)
        metrics = lib.read_metrics(HOST, OUTPUT)
    finally:
        lib.stop_detached(HOST, pidfile)
    elapsed = last["uptime"] - first["uptime"]
    cpu = (last["ticks"] - first["ticks"]) / first["hz"]
    result = {"pid": pid, "seconds": round(elapsed, 2), "cpu_seconds": round(cpu, 3), "clock_ticks": first["hz"],
              "cpu_percent_of_one_core": round(100.0 * cpu / elapsed, 3),
              "samples": int(lib.metric(metrics, "uwsgi_sampler_samples_total") - samples_first),
              "metrics": check_metrics(metrics)}
    lib.say(f"  {result['cpu_seconds']} CPU s in {result['seconds']} s = {result['cpu_percent_of_one_core']}% "
            f"of one core; {result['samples']} samples")
    return result


def render(data: dict) -> str:
    h, start, end = data["host"], data["start"], data["end"]
    rows = []
    for label, r in (("inside: `uwsgi_sampler.py --bench 60` (getrusage)", data["bench"]),
                     ("outside: a running sampler, `/proc/PID/stat` utime + stime", data["outside"])):
        pct = r["cpu_percent_of_one_core"]
        per_sample = 1000.0 * r["cpu_seconds"] / r["samples"] if r["samples"] else float("nan")
        rows.append([label, f"{r['cpu_seconds']:.3f}", f"{r['seconds']:.1f}", r["samples"], f"{per_sample:.2f}",
                     f"{pct:.2f}%", "yes" if pct < TARGET else "**no**"])
    table = lib.table(["measure", "CPU s", "wall s", "samples", "CPU ms per sample", "% of one core",
                       f"under {TARGET:g}%"], rows, "lrrrrrl")
    others = ", ".join(data["other_containers"]) or "none"
    m = data["outside"]["metrics"]
    return "\n".join([
        "# The listen-queue sampler's CPU cost", "",
        f"`make bench` (benchmarks/sampler_bench.py) on {data['date']}: the role's sampler "
        f"(`files/uwsgi_sampler.py`) watching {APPS} unix sockets in LISTEN every {INTERVAL:g} s (peak window "
        f"{WINDOW} s, the metrics file written every second with fsync), on one local container "
        f"`{HOST}`: Python {h['python']}, kernel {h['kernel']}, {h['cpus']} CPUs. The sockets belong to "
        f"{APPS} plain Python listeners (app N holds N connections in its queue, so the sampler reports "
        f"non-zero queues); the container had {h['unix_listeners']} unix sockets in LISTEN and "
        f"{h['unix_sockets']} in all (sock_diag's dump walks them all). Target: under {TARGET:g}% of one core.", "",
        table, "",
        "Inside, the loop's own getrusage delta (Python's start-up and imports excluded); outside, the "
        f"kernel's account of the whole process, from 1 s after its first write to {data['seconds']} s later (clock ticks of "
        f"1/{data['outside']['clock_ticks']} s). The CPU ms per sample include the write every second "
        "(render, temp file, fsync, rename) and the read of /proc/net/netstat it does.", "",
        f"The sampler's file at the end: {m['sockets_up']} of {APPS} sockets up, {m['queues_as_held']} of {APPS} "
        f"queue lengths as held, backlog {m['backlog']:g}, {m['errors']} errors.", "",
        f"Conditions: load average (1 min) {start['load1']} at the start, {end['load1']} at the end "
        f"(5 min: {start['load5']} to {end['load5']}); the machine's {h['cpus']} CPUs were "
        f"{data['machine_busy_percent']:.0f}% busy on average over the run; other containers running: {others}. "
        "CPU seconds count the sampler's process alone, not the load around it; a busy machine delays its "
        f"samples (the samples column: {data['seconds'] / data['interval']:.0f} expected in {data['seconds']} s) "
        "rather than adding to its CPU time.", "",
    ])


def main() -> int:
    if sys.argv[1:] == ["report"]:  # re-render sampler.md from sampler.json, measuring nothing
        text = render(json.loads((RESULTS / "sampler.json").read_text()))
        (RESULTS / "sampler.md").write_text(text)
        print(text)
        return 0
    keep = os.environ.get("BENCH_KEEP", "0") == "1"
    print(lib.bold(f"\n-- the listen-queue sampler's CPU cost: {APPS} apps every {INTERVAL:g} s, "
                   f"{SECONDS} s inside and {SECONDS} s outside"))
    start = conditions()
    lib.say(f"load average {start['load1']}/{start['load5']}; other containers: "
            f"{', '.join(start['other_containers']) or 'none'}")
    try:
        host = setup()
        bench = run_bench()
        outside = run_outside()
    finally:
        if not keep:
            lib.remove_container(HOST)
    end = conditions()
    busy = (end["cpu"][0] - start["cpu"][0]) / max(1, end["cpu"][1] - start["cpu"][1])
    data = {"date": datetime.date.today().isoformat(), "apps": APPS, "interval": INTERVAL, "window": WINDOW,
            "seconds": SECONDS, "target_percent_of_one_core": TARGET, "host": host, "bench": bench,
            "outside": outside, "machine_busy_percent": round(100.0 * busy, 1),
            "other_containers": sorted(set(start["other_containers"]) | set(end["other_containers"])),
            "start": {k: start[k] for k in ("load1", "load5", "load15")},
            "end": {k: end[k] for k in ("load1", "load5", "load15")}}
    text = render(data)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sampler.md").write_text(text)
    (RESULTS / "sampler.json").write_text(json.dumps(data, indent=1) + "\n")
    print("\n" + text)
    met = all(r["cpu_percent_of_one_core"] < TARGET for r in (bench, outside))
    print(lib.bold(f"Target under {TARGET:g}% of one core: {'met' if met else 'NOT met'}."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
