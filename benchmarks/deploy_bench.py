#!/usr/bin/env python3
"""New code under load: uWSGI's prefork graceful reload (`supervisorctl signal
HUP`, what an operator does by hand) against the role's deploy (a new
`revision`: tried aside, then a chain reload, one worker at a time).

On one local container host (the benchmark's classic setup, then the role),
the app runs 4 workers from /srv/current, a link to a release directory, and
its import takes 0 s (fast) or 3 s (slow, IMPORT_SECONDS). wrk runs through
nginx from 3 s before each deploy to 2 s after every worker answers from the
new build. For each: requests, non-2xx (with wrk's socket errors), p99 and
max latency. Prints the table and writes benchmarks/results/deploy.md and
deploy.json. Bounded: wrk -d per run, and each reload waits at most 120 s.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time

import lib

HOST = "uwsgi-bench-deploy"
INVENTORY = "benchmarks/inventory/deploy.yml"
CONNECTIONS = 20
SECONDS = 300  # wrk's bound; it is stopped (SIGINT, which prints its results) 2 s after the reload
PROCESSES = 4
BUILD_URL = f"{lib.NGINX_URL}/build"


def app(import_seconds: int, code_reload: str, revision: str) -> list[dict]:
    return [{"name": "flaskapp", "module": "app:app", "chdir": "/srv/current", "socket": lib.SOCKET, "listen": 4096,
             "processes": PROCESSES, "code_reload": code_reload, "revision": revision, "apply_strategy": "graceful",
             "environment": {"APP_NAME": "flaskapp", "IMPORT_SECONDS": str(import_seconds)}}]


def apply(apps: list[dict], check: bool = True) -> subprocess.CompletedProcess:
    return lib.ansible_playbook(INVENTORY, "playbooks/site.yml", "-e", json.dumps({"uwsgi_apps": apps}),
                                capture=True, check=check)


def put_in_place(build: str) -> None:
    lib.put_in_place(HOST, build)


def answers(count: int = 40) -> dict[str, int]:
    """What `count` requests to /build through nginx answer."""
    out = lib.sh(HOST, "python3 -c \"import urllib.request as u\nfor _ in range(%d):\n"
                       "    print(u.urlopen('%s', timeout=10).read().decode().strip())\"" % (count, BUILD_URL),
                 check=False).stdout.split()
    seen: dict[str, int] = {}
    for body in out:
        seen[body] = seen.get(body, 0) + 1
    return seen


def wait_for_build(build: str, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if answers(20) == {build: 20}:
            return time.monotonic() - started
        time.sleep(0.5)
    raise SystemExit(f"{HOST}: the app did not answer from {build} within {timeout} s")


def measure(way: str, import_seconds: int, build: str, deploy) -> dict:
    put_in_place(build)

    def deploy_and_wait():
        deploy()
        wait_for_build(build)

    result, took = lib.wrk_around(HOST, BUILD_URL, CONNECTIONS, SECONDS, deploy_and_wait)
    row = {"way": way, "import_seconds": import_seconds, "requests": result["requests"],
           "non_2xx": result["non_2xx"] + sum(result["socket_errors"].values()),
           "p99": result["latency"].get("p99"), "max": result["latency"].get("max"), "seconds": round(took, 1)}
    lib.say(f"  {way:22s} import {import_seconds} s: {row['requests']:6d} requests, {row['non_2xx']} non-2xx, "
            f"p99 {lib.fmt_s(row['p99'])}, max {lib.fmt_s(row['max'])}")
    return row


def main() -> int:
    print(lib.bold(f"\n-- host {HOST}: the classic setup, then the role with {PROCESSES} workers from /srv/current"))
    lib.create_host(HOST)
    lib.ansible_playbook(INVENTORY, "benchmarks/demo-setup.yml", "--limit", HOST, capture=True)
    lib.hand_over(HOST)
    for n in range(1, 9):
        lib.sh(HOST, f"mkdir -p /srv/releases/r{n} && cp /srv/flaskapp/app.py /srv/releases/r{n}/ "
                     f"&& echo r{n} > /srv/releases/r{n}/BUILD")
    rows, n = [], 0
    for import_seconds in (0, 3):
        for way, code_reload in (("prefork HUP", "graceful"), ("the role's deploy", "chain")):
            n += 1
            put_in_place(f"r{n}")
            apply(app(import_seconds, code_reload, f"r{n}"))
            wait_for_build(f"r{n}")
            lib.sh(HOST, "systemctl restart nginx")
            n += 1
            if code_reload == "graceful":
                rows.append(measure(way, import_seconds, f"r{n}",
                                    lambda: lib.sh(HOST, "supervisorctl signal HUP flaskapp")))
            else:
                rows.append(measure(way, import_seconds, f"r{n}",
                                    functools.partial(apply, app(import_seconds, code_reload, f"r{n}"))))
    if os.environ.get("BENCH_KEEP", "0") != "1":
        lib.remove_container(HOST)
    table = lib.table(["import", "reload", "requests", "non-2xx", "p99", "max", "until all new (s)"],
                      [[f"{r['import_seconds']} s", r["way"], r["requests"], r["non_2xx"], lib.fmt_s(r["p99"]),
                        lib.fmt_s(r["max"]), r["seconds"]] for r in rows])
    load = lib.load_average()
    text = (f"# New code under load: prefork HUP against the role's deploy\n\n`make bench` "
            f"(benchmarks/deploy_bench.py): {PROCESSES} workers, wrk -c{CONNECTIONS} through nginx to /build from "
            f"3 s before the reload until 2 s after every worker answers from the new build, on one container host. "
            f"`prefork HUP` is `supervisorctl signal HUP` with `code_reload: graceful` (the master imports the app "
            f"again, then forks); the role's deploy is a new `revision` with the default `code_reload: chain` (tried "
            f"aside, then one worker at a time), its time including the whole `ansible-playbook` run. non-2xx counts "
            f"wrk's socket errors too. Load average at the end: {load}.\n\n{table}\n")
    lib.write_results("deploy", text, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
