#!/usr/bin/env python3
"""Every kind of change under load: what each costs the requests in flight.

On one local container host (the benchmark's classic setup, then the role),
the app runs 4 workers from /srv/current, a link to a release directory; its
import takes 0 s or 3 s (IMPORT_SECONDS); each change reaches it the 1.x way
(apply_strategy graceful, code_reload chain) or as a new instance beside the
serving one (apply_strategy beside). For each kind of change, applied on
top of the one before as a deployment goes, wrk runs through nginx from 3 s
before `ansible-playbook` to 2 s after it: requests, non-2xx (wrk's socket
errors included), p99 and max latency, and the memory of the app's workers
afterwards (the sum of their Pss). Then 20 deploys in a row (a new build and
`revision` each) under wrk -c64, with their non-2xx count.

Prints the tables and writes benchmarks/results/reload.md and reload.json.
Bounded: wrk -d per run, each role run by ansible-playbook's own timeout.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys

import lib

HOST = "uwsgi-bench-reload"
INVENTORY = "benchmarks/inventory/reload.yml"
HANDLER_PLAY = "benchmarks/reload-handler.yml"
CONNECTIONS = 16
SECONDS = 300  # wrk's bound; it is stopped (SIGINT, which prints its results) 2 s after the run
DEPLOYS = 20
PROCESSES = 4
BUILD_URL = f"{lib.NGINX_URL}/build"


STRATEGIES = ("graceful", "beside")


def app(import_seconds: int, strategy: str = "graceful", **changes) -> list[dict]:
    base = {"name": "flaskapp", "module": "app:app", "chdir": "/srv/current", "socket": lib.SOCKET, "listen": 4096,
            "processes": PROCESSES, "revision": "r1", "apply_strategy": strategy,
            "environment": {"APP_NAME": "flaskapp", "IMPORT_SECONDS": str(import_seconds)}}
    return [dict(base, **changes)]


# Each on top of the one before. "handler" and "binary" keep the apps as they
# are and change something else: the play's own task notifies `uwsgi reload`,
# or apt reinstalls uwsgi-core behind the role's back.
STEPS = [
    ("listen", {"listen": 3000}),
    ("processes", {"processes": PROCESSES + 1}),
    ("environment", {"environment_extra": {"RELEASE": "v2"}}),
    ("revision", {"revision": "r2"}),
    ("handler", {}),
    ("uwsgi binary", {}),
    ("startsecs", {"startsecs": 5}),  # the default is 2
]


def apps_for(import_seconds: int, strategy: str, done: dict) -> list[dict]:
    changes = {k: v for k, v in done.items() if k != "environment_extra"}
    apps = app(import_seconds, strategy, **changes)
    apps[0]["environment"] = dict(apps[0]["environment"], **done.get("environment_extra", {}))
    return apps


def apply(apps: list[dict], playbook: str = "playbooks/site.yml", changes: bool = False) -> subprocess.CompletedProcess:
    """One run of the role; with `changes`, a run that changed nothing stops the benchmark (its row would
    measure nothing)."""
    run = lib.ansible_playbook(INVENTORY, playbook, "-e", json.dumps({"uwsgi_apps": apps}), capture=True)
    if changes and not re.search(r"changed=[1-9]", run.stdout):
        raise SystemExit(f"{HOST}: the run changed nothing:\n{run.stdout[-2000:]}")
    return run


def put_in_place(build: str) -> None:
    lib.put_in_place(HOST, build)


def workers_pss_kb() -> int:
    """The sum of the app's workers' Pss, read as the app's user (root in a
    container lacks CAP_SYS_PTRACE for another user's smaps_rollup)."""
    pids = [lib.sh(HOST, f"supervisorctl pid {name}", check=False).stdout.strip()
            for name in ("flaskapp", "flaskapp.a", "flaskapp.b")]
    master = next(pid for pid in pids if pid.isdigit() and pid != "0")
    out = lib.sh(HOST, f"for p in $(ps -o pid= --ppid {master}); do setpriv --reuid=www-data --regid=www-data "
                       f"--clear-groups grep '^Pss:' /proc/$p/smaps_rollup; done", check=False).stdout
    return sum(int(line.split()[1]) for line in out.splitlines() if line.startswith("Pss:"))


def under_load(connections: int, action) -> dict:
    result, took = lib.wrk_around(HOST, BUILD_URL, connections, SECONDS, action)
    return {"requests": result["requests"], "non_2xx": result["non_2xx"] + sum(result["socket_errors"].values()),
            "p99": result["latency"].get("p99"), "max": result["latency"].get("max"), "seconds": round(took, 1)}


def change(step: str, import_seconds: int, strategy: str, done: dict) -> None:
    """Apply one step on top of `done` (updated in place)."""
    if step == "handler":
        put_in_place("r3")
        apply(apps_for(import_seconds, strategy, done), HANDLER_PLAY, changes=True)
    elif step == "uwsgi binary":
        lib.sh(HOST, "apt-get install -y -q --reinstall uwsgi-core >/dev/null")
        apply(apps_for(import_seconds, strategy, done), changes=True)
    else:
        if step == "revision":
            put_in_place("r2")
        done.update(dict(STEPS)[step])
        apply(apps_for(import_seconds, strategy, done), changes=True)


def start_over(import_seconds: int, strategy: str) -> dict:
    """The app as it starts each series: build r1, in the strategy's layout (an
    app changes layout only by leaving and coming back)."""
    put_in_place("r1")
    apply([{"name": "flaskapp", "state": "absent"}])
    done: dict = {}
    apply(apps_for(import_seconds, strategy, done))
    lib.sh(HOST, "systemctl restart nginx")
    return done


def main() -> int:
    print(lib.bold(f"\n-- host {HOST}: the classic setup, then the role with {PROCESSES} workers from /srv/current"))
    lib.create_host(HOST)
    lib.ansible_playbook(INVENTORY, "benchmarks/demo-setup.yml", "--limit", HOST, capture=True)
    lib.hand_over(HOST)
    for n in range(1, 4 + DEPLOYS):
        lib.sh(HOST, f"mkdir -p /srv/releases/r{n} && cp /srv/flaskapp/app.py /srv/releases/r{n}/ "
                     f"&& echo r{n} > /srv/releases/r{n}/BUILD")
    rows = []
    for strategy in STRATEGIES:
        for import_seconds in (0, 3):
            done = start_over(import_seconds, strategy)
            for step, _ in STEPS:
                row = under_load(CONNECTIONS, functools.partial(change, step, import_seconds, strategy, done))
                row.update(change=step, import_seconds=import_seconds, strategy=strategy,
                           pss_mb=round(workers_pss_kb() / 1024, 1))
                rows.append(row)
                lib.say(f"  {strategy:8s} import {import_seconds} s, {step:12s}: {row['requests']:6d} requests, "
                        f"{row['non_2xx']} non-2xx, p99 {lib.fmt_s(row['p99'])}, max {lib.fmt_s(row['max'])}, "
                        f"workers {row['pss_mb']} MB")
    # 20 deploys in a row, each a new build and revision, under a heavier load.
    revisions = [f"r{n}" for n in range(4, 4 + DEPLOYS)]

    serials = []
    for strategy in STRATEGIES:
        def deploys(strategy=strategy):
            for revision in revisions:
                put_in_place(revision)
                apply(app(0, strategy, revision=revision), changes=True)

        start_over(0, strategy)
        serial = under_load(64, deploys)
        serial.update(deploys=DEPLOYS, strategy=strategy)
        serials.append(serial)
    if os.environ.get("BENCH_KEEP", "0") != "1":
        lib.remove_container(HOST)
    table = lib.table(["strategy", "import", "change", "requests", "non-2xx", "p99", "max", "run (s)",
                       "workers' Pss (MB)"],
                      [[r["strategy"], f"{r['import_seconds']} s", r["change"], r["requests"], r["non_2xx"],
                        lib.fmt_s(r["p99"]), lib.fmt_s(r["max"]), r["seconds"], r["pss_mb"]] for r in rows])
    deploy_lines = "\n".join(
        f"- {s['strategy']}: {s['requests']} requests, {s['non_2xx']} non-2xx, p99 {lib.fmt_s(s['p99'])}, "
        f"max {lib.fmt_s(s['max'])}, {s['seconds']} s." for s in serials)
    load = lib.load_average()
    text = (f"# Every kind of change under load\n\n`make bench` (benchmarks/reload_bench.py): {PROCESSES} workers from "
            f"/srv/current, wrk -c{CONNECTIONS} through nginx to /build from 3 s before each `ansible-playbook` run "
            f"to 2 s after it, on one container host. `graceful` is 1.x's way (the default `uwsgi_apply_strategy` "
            f"and `code_reload`: a graceful reload for a config change, a chain reload for code, a stop and start "
            f"for a program or binary change); `beside` starts a new instance beside the serving one for each "
            f"change, on the socket its pool holds. Each change is made on top of the one before. non-2xx counts "
            f"wrk's socket errors too; the workers' Pss is their sum after the change.\n\n{table}\n\n"
            f"{DEPLOYS} deploys in a row (a new build and `revision` each, import 0 s) under wrk -c64:\n\n"
            f"{deploy_lines}\n\nLoad average at the end: {load}.\n")
    lib.write_results("reload", text, rows + [dict(s, change=f"{DEPLOYS} deploys", import_seconds=0) for s in serials])
    return 0


if __name__ == "__main__":
    sys.exit(main())
