#!/usr/bin/env python3
"""The cost of scale: wall time to converge 1, 5 and 10 hosts in one run, and
the idempotent rerun on all of them (forks = hosts), on local container hosts.

  python benchmarks/fleet_bench.py [--sizes 1,5,10] [--reruns 3]

Each size starts from fresh bare hosts (uwsgi-fbench-N); the cold converge is
playbooks/site.yml (apt index update, download and install included), the
rerun its median over --reruns runs. Writes benchmarks/results/fleet.json and
fleet.md. Target, printed and never asserted: 10 hosts within 2.5x of 1 host.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import lib  # noqa: E402

RESULTS = lib.BENCH / "results"
INVENTORY = lib.PROJECT / ".cache" / "fleet-bench-inventory.yml"


def write_inventory(hosts: list[str]) -> None:
    INVENTORY.parent.mkdir(parents=True, exist_ok=True)
    lines = ["---", "all:", "  vars:", "    ansible_connection: community.docker.docker",
             "    ansible_python_interpreter: /usr/bin/python3", "  hosts:"]
    lines += [f"    {h}:" for h in hosts]
    INVENTORY.write_text("\n".join(lines) + "\n")


def timed(playbook: str, forks: int) -> tuple[float, str]:
    start = time.monotonic()
    proc = lib.ansible_playbook(str(INVENTORY), playbook, "--forks", str(forks), capture=True,
                                env={"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    return time.monotonic() - start, proc.stdout


def changed_total(output: str) -> int:
    total = 0
    for line in output.split("PLAY RECAP")[-1].splitlines():
        if "changed=" in line:
            total += int(line.split("changed=")[1].split()[0])
    return total


def measure(size: int, reruns: int) -> dict:
    hosts = [f"uwsgi-fbench-{i}" for i in range(1, size + 1)]
    lib.say(f"{size} host(s): creating fresh bare hosts")
    for h in hosts:
        lib.create_host(h, shared_apt_cache=False)  # the hosts run apt at the same time
    write_inventory(hosts)
    lib.ansible_playbook(str(INVENTORY), "benchmarks/app.yml", "--forks", str(size), capture=True)
    cold, out = timed("playbooks/site.yml", size)
    lib.say(f"{size} host(s): cold converge {cold:.1f} s (changed={changed_total(out)})")
    runs = []
    for i in range(reruns):
        seconds, out = timed("playbooks/site.yml", size)
        runs.append(seconds)
        lib.say(f"{size} host(s): rerun {i + 1}/{reruns} {seconds:.1f} s (changed={changed_total(out)})")
        if changed_total(out):
            raise SystemExit(f"rerun on {size} hosts changed something:\n{out[-3000:]}")
    for h in hosts:
        lib.remove_container(h)
    return {"hosts": size, "forks": size, "cold": round(cold, 1), "reruns": [round(r, 1) for r in runs],
            "rerun_median": round(lib.median(runs), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,5,10")
    parser.add_argument("--reruns", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [measure(size, args.reruns) for size in sizes]
    base = rows[0]
    for row in rows:
        row["cold_vs_1"] = round(row["cold"] / base["cold"], 2)
        row["rerun_vs_1"] = round(row["rerun_median"] / base["rerun_median"], 2)
    data = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "kernel": platform.release(),
            "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps(data, indent=2) + "\n")
    big = rows[-1]
    table = lib.table(
        ["hosts", "forks", "cold converge", "x 1 host", "idempotent rerun (median)", "x 1 host"],
        [[r["hosts"], r["forks"], f"{r['cold']:.1f} s", f"{r['cold_vs_1']:.2f}x",
          f"{r['rerun_median']:.1f} s ({', '.join(map(str, r['reruns']))})", f"{r['rerun_vs_1']:.2f}x"] for r in rows])
    verdict = (f"Target: {big['hosts']} hosts within 2.5x of 1 host. Cold converge: {big['cold_vs_1']:.2f}x "
               f"({'met' if big['cold_vs_1'] <= 2.5 else 'NOT met'}); idempotent rerun: {big['rerun_vs_1']:.2f}x "
               f"({'met' if big['rerun_vs_1'] <= 2.5 else 'NOT met'}).")
    (RESULTS / "fleet.md").write_text(
        "# Converging a fleet: the cost of scale\n\n"
        f"Produced by `make bench-fleet` (benchmarks/fleet_bench.py) on {data['date']}: {data['cpus']} CPUs, "
        "local Debian 12 container hosts (`community.docker.docker` connection, pipelining on), "
        "playbooks/site.yml, forks = hosts.\n\n" + table + "\n\n" + verdict + "\n")
    print(table)
    print(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
