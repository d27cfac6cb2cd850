#!/usr/bin/env python3
"""Requests lost while a change is applied: stop/start against the graceful path,
and a change that cannot work with the trial aside and without it.

On one local container host (the benchmark's classic setup, then the README's
playbook), wrk runs through nginx from 3 s before to 2 s after each run of
`ansible-playbook`:
- for each kind of change, once with uwsgi_apply_strategy=restart (every change a
  stop and start) and once with the default, graceful;
- for each kind of broken change, once with uwsgi_trial=false (the proof and the
  rollback find it) and once with the default trial (refused before the serving
  app is touched).
Prints the tables and writes benchmarks/results/apply.md and apply.json.
Bounded: wrk -d per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import lib

HOST = "uwsgi-bench-apply"
INVENTORY = "benchmarks/inventory/apply.yml"
CONNECTIONS = 20
SECONDS = 180  # wrk's bound; it is stopped (SIGINT, which prints its results) 2 s after the run
BASE = [{"name": "flaskapp", "module": "app:app", "chdir": "/srv/flaskapp", "socket": lib.SOCKET, "listen": 4096,
         "processes": 2, "environment": {"APP_NAME": "flaskapp"}}]
# Each change on top of the previous one, as a deployment goes.
CHANGES = [
    ("listen", {"listen": 3000}),
    ("processes", {"listen": 3000, "processes": 3}),
    ("environment", {"listen": 3000, "processes": 3, "environment": {"APP_NAME": "flaskapp", "RELEASE": "v2"}}),
    ("option", {"listen": 3000, "processes": 3, "environment": {"APP_NAME": "flaskapp", "RELEASE": "v2"},
                "options": {"procname-prefix-spaced": "web"}}),
]


# Changes that are valid on paper and cannot work on the host, each from BASE.
BROKEN = [
    ("chdir typo", {"chdir": "/srv/flaskap"}),
    ("no callable", {"module": "app:nope"}),
    ("import raises", {"module": "slowfail:app"}),
    ("unknown option", {"options": {"no-such-option": 1}}),
]


def apply(strategy: str, apps: list[dict], trial: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    extra = json.dumps({"uwsgi_apps": apps, "uwsgi_apply_strategy": strategy, "uwsgi_trial": trial})
    return lib.ansible_playbook(INVENTORY, "playbooks/site.yml", "-e", extra, capture=True, check=check)


def measure(strategy: str, tag: str, apps: list[dict], trial: bool = True) -> dict:
    lib.sh(HOST, f": > {lib.NGINX_ERROR_LOG}")
    wrk = subprocess.Popen(["docker", "exec", HOST, "wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s",
                            "--timeout", "10s", f"{lib.NGINX_URL}/"], stdout=subprocess.PIPE, text=True)
    time.sleep(3)
    started = time.monotonic()
    # A broken change fails its run: that is what is measured.
    run = apply(strategy, apps, trial, check=False)
    played = time.monotonic() - started
    time.sleep(2)
    lib.sh(HOST, "pkill -INT -x wrk", check=False)
    out, _ = wrk.communicate(timeout=SECONDS + 60)
    result = lib.parse_wrk(out)
    errors = lib.sh(HOST, f"grep -c '\\[error\\]' {lib.NGINX_ERROR_LOG}", check=False).stdout.strip()
    row = {"strategy": strategy, "change": tag, "trial": trial, "requests": result["requests"],
           "non_2xx": result["non_2xx"], "socket_errors": sum(result["socket_errors"].values()),
           "nginx_errors": int(errors or 0), "playbook_seconds": round(played, 1), "run_failed": run.returncode != 0}
    lib.say(f"  {strategy:8s} {'trial' if trial else 'no trial':8s} {tag:14s} {row['requests']:6d} requests, "
            f"{row['non_2xx']} non-2xx, {row['socket_errors']} socket errors, {row['nginx_errors']} nginx errors")
    return row


def main() -> int:
    print(lib.bold(f"\n-- host {HOST}: the classic setup, then the README's playbook"))
    lib.create_host(HOST)
    lib.ansible_playbook(INVENTORY, "benchmarks/demo-setup.yml", "--limit", HOST, capture=True)
    lib.copy_into(HOST, lib.PROJECT / "tests" / "app" / "slowfail.py", "/srv/flaskapp/slowfail.py")
    lib.hand_over(HOST)
    rows = []
    for strategy in ("restart", "graceful"):
        apply(strategy, BASE)
        lib.sh(HOST, "systemctl restart nginx")
        for tag, change in CHANGES:
            rows.append(measure(strategy, tag, [dict(BASE[0], **change)]))
    broken = []
    for trial in (False, True):
        for tag, change in BROKEN:
            apply("graceful", BASE)
            broken.append(measure("graceful", tag, [dict(BASE[0], **change)], trial))
    if os.environ.get("BENCH_KEEP", "0") != "1":
        lib.remove_container(HOST)
    table = lib.table(["change", "strategy", "requests", "non-2xx", "socket errors", "nginx errors", "run (s)"],
                      [[r["change"], r["strategy"], r["requests"], r["non_2xx"], r["socket_errors"],
                        r["nginx_errors"], r["playbook_seconds"]] for r in sorted(rows, key=lambda r: r["change"])])
    by_change = {}
    for row in broken:
        by_change.setdefault(row["change"], {})[row["trial"]] = row
    trial_table = lib.table(
        ["broken change", "requests (no trial)", "non-2xx (no trial)", "run (s)", "requests (trial)",
         "non-2xx (trial)", "run (s)"],
        [[tag, pair[False]["requests"], pair[False]["non_2xx"] + pair[False]["socket_errors"],
          pair[False]["playbook_seconds"], pair[True]["requests"], pair[True]["non_2xx"] + pair[True]["socket_errors"],
          pair[True]["playbook_seconds"]] for tag, pair in by_change.items()])
    load = lib.load_average()
    text = (f"# Requests lost while a change is applied\n\n`make bench` (benchmarks/apply_bench.py): wrk -c{CONNECTIONS} "
            f"through nginx to one app's unix socket from 3 s before to 2 s after the `ansible-playbook` run of each change, on one "
            f"container host; `restart` is `uwsgi_apply_strategy: restart` (every change a stop and start), "
            f"`graceful` the default. Load average at the end: {load}.\n\n{table}\n"
            f"\n## A change that cannot work, with the trial aside and without it\n\n"
            f"Each from the same base, graceful; every run fails its host. Without the trial (`uwsgi_trial: false`) "
            f"the serving app takes the change and the proof and the rollback find it; with it (the default) the "
            f"change is refused before the serving app is touched. A `chdir` that does not exist is refused by the "
            f"preflight's cheap checks either way. non-2xx counts wrk's socket errors too.\n\n{trial_table}\n")
    lib.write_results("apply", text, rows + broken)
    return 0


if __name__ == "__main__":
    sys.exit(main())
