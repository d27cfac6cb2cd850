#!/usr/bin/env python3
"""The demo behind `make demo`: the listen-backlog problem and the role's fix
on one local container host (uwsgi-demo), measured before and after.

  demo.py setup            fresh container (net.core.somaxconn=128) with the
                           classic setup (benchmarks/demo-setup.yml)
  demo.py measure PHASE    PHASE is before or after: backlogs, a burst of
                           connects with the listen-queue sampler watching it,
                           wrk through nginx; after: also the fleet report
                           (playbooks/report.yml); saved for the report
  demo.py handover         remove the classic setup's hand-written flaskapp
                           program: the role never takes over a program it
                           did not write (an operator's one-time migration)
  demo.py report           the before/after table; exit 1 unless after is better

Between `measure before` (and `handover`) and `measure after`, the Makefile
applies the role with the ordinary command:
  ansible-playbook -i benchmarks/inventory/demo.yml playbooks/site.yml
"""

from __future__ import annotations

import json
import shlex
import sys
import time

import lib

HOST = "uwsgi-demo"
INVENTORY = "benchmarks/inventory/demo.yml"
STATE = lib.PROJECT / ".cache" / "demo"
BURST = 1000          # non-blocking connects while both workers are busy
CONNECTIONS = 400     # wrk's concurrency, above uWSGI's default listen (100)
SERVICE_TIME = 0.05   # /slow?t=0.05: 2 workers serve 40 requests/s
DURATION = 15         # seconds; at most 400 x 0.05 / 2 = 10 s of queued work
# Before the role, the sampler (files/uwsgi_sampler.py and its codec
# uwsgi_netlink.py) is copied in and run by hand for the burst; after, the
# role's own program uwsgi-sampler writes ROLE_METRICS. The window outlasts
# the burst and its drain.
SAMPLER_DIR = "/root/demo-sampler"
SAMPLER_CONFIG = {"apps": [{"name": "flaskapp", "socket": lib.SOCKET}], "interval": 0.1, "window": 60,
                  "output": f"{SAMPLER_DIR}/uwsgi.prom"}
ROLE_METRICS = "/var/lib/prometheus/node-exporter/uwsgi.prom"


def setup() -> int:
    for stale in STATE.glob("*.json"):
        stale.unlink()
    lib.say(f"fresh container {HOST} from {lib.IMAGE} with net.core.somaxconn=128")
    lib.create_host(HOST)
    lib.say("the classic setup: uwsgi-core, uwsgi-plugin-python3, supervisor, nginx, wrk; "
            "program flaskapp with uWSGI's default listen")
    lib.ansible_playbook(INVENTORY, "benchmarks/demo-setup.yml")
    state = lib.wait_program(HOST)
    lib.say(f"flaskapp is {state} under Supervisor")
    return 0 if state == "RUNNING" else 1


def measure(phase: str) -> int:
    if not lib.container_exists(HOST):
        sys.exit(f"no container {HOST}: run `make demo` (or benchmarks/demo.py setup) first")
    m: dict = {"phase": phase}
    m["somaxconn"] = lib.sysctl(HOST, "net.core.somaxconn")
    m["state"] = lib.wait_program(HOST)
    m["app_backlog"] = lib.app_backlog(HOST)
    m["nginx_backlog"] = lib.nginx_backlog(HOST)
    m.update(lib.uwsgi_log_facts(HOST))
    lib.say(f"kernel net.core.somaxconn = {m['somaxconn']}; flaskapp {m['state']}")
    lib.say(f"ss -xl: {lib.SOCKET} LISTEN, Send-Q (backlog in effect) = {m['app_backlog']}")
    lib.say(f"uWSGI log: \"{m['backlog_line']}\"")
    lib.say(f"ss -ltn: nginx 0.0.0.0:80 LISTEN, Send-Q = {m['nginx_backlog']} (nginx asks for 4096)")

    metrics = start_sampler(phase)
    lib.say(f"burst: {BURST} non-blocking connects to the socket while both workers are busy (uwsgiprobe burst)")
    m["burst"] = lib.burst(HOST, BURST)
    lib.say(f"  queued {m['burst']['queued']}, refused {m['burst']['refused']} {m['burst']['errors'] or ''}")
    m["sampler"] = read_sampler(phase, metrics, since=time.time())
    lib.say(f"  the sampler's {metrics}: uwsgi_listen_queue_peak_length {m['sampler']['peak']:g}, "
            f"uwsgi_listen_backlog {m['sampler']['backlog']:g}")
    if phase == "after":
        # Before nginx restarts: the report names its listener, still capped at 128.
        lib.say("the fleet report, read-only: what the sampler saw and the listeners still capped")
        lib.ansible_playbook(INVENTORY, "playbooks/report.yml")

    lib.say(f"wrk through nginx: {CONNECTIONS} connections, GET /slow?t={SERVICE_TIME}, {DURATION} s "
            f"(latency floor {CONNECTIONS} x {SERVICE_TIME} s / {lib.WORKERS} workers = "
            f"{CONNECTIONS * SERVICE_TIME / lib.WORKERS:g} s; nginx's timeouts are 60 s)")
    w = m["wrk"] = lib.http_load(HOST, CONNECTIONS, DURATION, SERVICE_TIME)
    lib.say(f"  {w['requests']} requests, {w['non_2xx']} non-2xx, p50 {lib.fmt_s(w['latency'].get('p50'))}, "
            f"p99 {lib.fmt_s(w['latency'].get('p99'))}; nginx error.log: {w['nginx_eagain_502']} x "
            f"\"{lib.EAGAIN_502}\"; TCP listen overflows {w['listen_overflows']}; "
            f"uWSGI's queue drained {w['drain_seconds']} s after wrk")
    if phase == "after":
        # nginx called listen() when somaxconn was 128; the kernel keeps the
        # capped backlog on that socket until nginx opens it again.
        lib.sh(HOST, "systemctl restart nginx")
        m["nginx_backlog_restarted"] = lib.nginx_backlog(HOST)
        lib.say(f"systemctl restart nginx: nginx's Send-Q is now {m['nginx_backlog_restarted']}")
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / f"{phase}.json").write_text(json.dumps(m, indent=2))
    return 0


def start_sampler(phase: str) -> str:
    """Before: copy the sampler into the host and start it for the burst.
    After: check the role's program runs. Returns the metrics file to read."""
    if phase == "after":
        state = lib.program_state(HOST, "uwsgi-sampler")
        lib.say(f"the role's listen-queue sampler: Supervisor program uwsgi-sampler {state}, writing {ROLE_METRICS}")
        if state != "RUNNING":
            sys.exit(f"uwsgi-sampler is {state}, not RUNNING")
        lib.wait_metrics(HOST, ROLE_METRICS, since=time.time())
        return ROLE_METRICS
    lib.say(f"no role yet: the role's sampler copied to {SAMPLER_DIR} and started for the burst "
            "(flaskapp, every 0.1 s, peak over 60 s)")
    lib.sh(HOST, f"mkdir -p {SAMPLER_DIR} && rm -f {SAMPLER_DIR}/uwsgi.prom")
    # The script imports its netlink codec from its own directory, as on a host the role set up.
    for name in ("uwsgi_sampler.py", "uwsgi_netlink.py"):
        lib.copy_into(HOST, lib.PROJECT / "files" / name, f"{SAMPLER_DIR}/{name}")
    lib.sh(HOST, f"printf '%s\\n' {shlex.quote(json.dumps(SAMPLER_CONFIG))} > {SAMPLER_DIR}/sampler.json")
    # Bounded by timeout should the demo stop before it does.
    lib.start_detached(HOST, f"timeout 300 python3 {SAMPLER_DIR}/uwsgi_sampler.py --config {SAMPLER_DIR}/sampler.json "
                             f"> {SAMPLER_DIR}/sampler.log 2>&1", f"{SAMPLER_DIR}/pid")
    started = time.time()
    samples = lib.wait_metrics(HOST, SAMPLER_CONFIG["output"], since=started)
    if lib.metric(samples, "uwsgi_listen_socket_up", app="flaskapp") != 1:
        sys.exit(f"the sampler does not see {lib.SOCKET} listening")
    return SAMPLER_CONFIG["output"]


def read_sampler(phase: str, path: str, since: float) -> dict:
    """flaskapp's peak queue and backlog from a sample taken after the burst;
    before, the hand-started sampler is stopped then."""
    samples = lib.wait_metrics(HOST, path, since=since)
    if phase == "before":
        lib.stop_detached(HOST, f"{SAMPLER_DIR}/pid")
        log = lib.sh(HOST, f"cat {SAMPLER_DIR}/sampler.log", check=False).stdout
        for line in log.splitlines():
            if " ALERT " in line:
                lib.say(f"  its log: {line.split('uwsgi_sampler: ', 1)[-1]}")
                break
    return {"file": path,
            "peak": lib.metric(samples, "uwsgi_listen_queue_peak_length", app="flaskapp"),
            "backlog": lib.metric(samples, "uwsgi_listen_backlog", app="flaskapp")}


def peak_share(m: dict) -> str:
    s = m.get("sampler") or {}
    if s.get("peak") is None or not s.get("backlog"):
        return "-"
    return f"{s['peak']:g} / {s['backlog']:g} = {100 * s['peak'] / s['backlog']:.0f}%"


def report() -> int:
    try:
        b, a = (json.loads((STATE / f"{p}.json").read_text()) for p in ("before", "after"))
    except FileNotFoundError:
        sys.exit("run `demo.py measure before` and `demo.py measure after` first")
    bw, aw = b["wrk"], a["wrk"]

    def lat(w):
        return f"{lib.fmt_s(w['latency'].get('p50'))} / {lib.fmt_s(w['latency'].get('p99'))}"

    def neck(m):
        w = m["wrk"]
        verdict = "no" if w["listen_overflows"] == 0 and not w["socket_errors"].get("connect") else "yes"
        return f"{verdict} ({w['listen_overflows']} TCP listen overflows)"

    nginx_after = str(a["nginx_backlog"])
    if a.get("nginx_backlog_restarted") != a["nginx_backlog"]:
        nginx_after += f" ({a.get('nginx_backlog_restarted')} once nginx restarts)"
    floor = f"{CONNECTIONS * SERVICE_TIME / lib.WORKERS:g} s"
    rows = [
        ["kernel net.core.somaxconn", b["somaxconn"], a["somaxconn"]],
        ["uWSGI log", f"limited to {b['logged_backlog']} connections", f"limited to {a['logged_backlog']} connections"],
        ["flaskapp backlog in effect (ss -xl Send-Q)", b["app_backlog"], a["app_backlog"]],
        [f"burst of {BURST} connects, 2 workers busy: queued", b["burst"]["queued"], a["burst"]["queued"]],
        [f"burst of {BURST} connects, 2 workers busy: refused", b["burst"]["refused"], a["burst"]["refused"]],
        ["peak listen queue during the burst (sampler)", f"{b['sampler']['peak']:g}", f"{a['sampler']['peak']:g}"],
        ["  share of the backlog (peak / uwsgi_listen_backlog)", peak_share(b), peak_share(a)],
        [f"wrk -c{CONNECTIONS} {DURATION} s /slow?t={SERVICE_TIME}: requests", bw["requests"], aw["requests"]],
        ["  2xx responses", bw["requests"] - bw["non_2xx"], aw["requests"] - aw["non_2xx"]],
        ["  non-2xx responses", bw["non_2xx"], aw["non_2xx"]],
        ["  nginx error.log: 502 (11: Resource temporarily unavailable)", bw["nginx_eagain_502"], aw["nginx_eagain_502"]],
        ["  latency p50 / p99 (all responses)", lat(bw), lat(aw)],
        [f"  latency floor ({CONNECTIONS} x {SERVICE_TIME} s / {lib.WORKERS} workers)", floor, floor],
        ["nginx :80 backlog (ss -ltn Send-Q; asks 4096)", b["nginx_backlog"], nginx_after],
        ["nginx's backlog the bottleneck?", neck(b), neck(a)],
    ]
    print()
    print(lib.table(["measure", "before", "after (role applied)"], rows, "lrr"))
    print()
    checks = {
        "backlog in effect is 4096": a["app_backlog"] == 4096,
        "fewer refused connects": a["burst"]["refused"] < b["burst"]["refused"],
        "fewer non-2xx responses": aw["non_2xx"] < bw["non_2xx"],
        "the sampler saw the burst's queue (peak at least 90% of queued)":
            a["sampler"]["peak"] >= 0.9 * a["burst"]["queued"],
    }
    for what, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} after: {what}")
    if all(checks.values()):
        print(lib.bold("\nThe role fixed it: the same load now waits in a 4096-deep queue instead of "
                       "failing with 502."))
        return 0
    print(lib.bold("\nAfter is not better than before: see the table above."))
    return 1


def main() -> int:
    args = sys.argv[1:]
    if args == ["setup"]:
        return setup()
    if len(args) == 2 and args[0] == "measure" and args[1] in ("before", "after"):
        return measure(args[1])
    if args == ["report"]:
        return report()
    if args == ["handover"]:
        lib.hand_over(HOST)
        return 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
