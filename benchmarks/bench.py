#!/usr/bin/env python3
"""The benchmark behind `make bench`, on local containers (uwsgi-bench*).

1. Bursts: N non-blocking connects to flaskapp's unix socket while both
   workers are busy (uwsgiprobe burst), for three configurations:
     default     uWSGI's default listen (100), net.core.somaxconn 128
     no-kernel   listen 4096 on uWSGI's command line, somaxconn still 128
     role        playbooks/site.yml applied: listen 4096, somaxconn 4096
2. HTTP load through nginx with wrk (bounded by -d), default vs role.
3. Ansible cost: cold converge of playbooks/site.yml on fresh hosts, the
   idempotent rerun, and a play that only gathers facts (medians).

Writes benchmarks/results/ (results.json, bursts.csv, http.csv, ansible.csv,
RESULTS.md, refused-vs-burst.png) and prints the targets and where the
results stand. Timings are printed, never asserted. BENCH_KEEP=1 keeps the
containers.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import sys
import time

import lib

HOST = "uwsgi-bench"
COLD_HOSTS = ["uwsgi-bench-cold1", "uwsgi-bench-cold2", "uwsgi-bench-cold3"]
INVENTORY = "benchmarks/inventory/bench.yml"
RESULTS = lib.BENCH / "results"

BURSTS = [50, 100, 101, 200, 500, 1000, 2000, 4096, 4097, 8192]
HOLD = 2.0                       # seconds each busy worker sleeps during a burst
CONCURRENCIES = [50, 200, 500, 1000]
SERVICE_TIME = 0.01              # /slow?t=0.01: 2 workers serve at most 200 requests/s
DURATION = 10                    # wrk -d; the deepest queue (1000) holds 5 s of work
RERUNS = 5                       # idempotent reruns and fact-only plays, interleaved
CONFIGS = {
    "default": "uWSGI default listen (100), somaxconn 128",
    "no-kernel": "listen 4096 on uWSGI's command line, somaxconn 128",
    "role": "the role: listen 4096, somaxconn 4096",
}
# Actions that run on the controller only: no module reaches the host.
CONTROLLER_ONLY = {"assert", "include_vars", "validate_argument_spec", "set_fact", "debug", "meta", "fail"}


def other_containers() -> list[str]:
    names = lib.run(["docker", "ps", "--format", "{{.Names}}"]).stdout.split()
    return sorted(n for n in names if not n.startswith("uwsgi-bench"))


def conditions(phase: str) -> dict:
    """What else ran on the machine while a phase was measured."""
    load1, load5, _ = os.getloadavg()
    others = other_containers()
    note = f"load average {load1:.2f}/{load5:.2f}"
    if others:
        note += f"; other containers running: {', '.join(others)}"
    lib.say(f"({phase}: {note})")
    return {"phase": phase, "load1": round(load1, 2), "load5": round(load5, 2), "other_containers": others}


def conditions_end(c: dict) -> None:
    """The same at the end of the phase: the load after it, and every other container seen."""
    c["load1_end"] = round(os.getloadavg()[0], 2)
    c["other_containers"] = sorted(set(c["other_containers"]) | set(other_containers()))


def config_facts(config: str) -> dict:
    state = lib.wait_program(HOST)
    facts = {
        "config": config,
        "description": CONFIGS[config],
        "somaxconn": lib.sysctl(HOST, "net.core.somaxconn"),
        "state": state,
        "backlog": lib.app_backlog(HOST) if state == "RUNNING" else None,
        "nginx_backlog": lib.nginx_backlog(HOST),
    }
    facts.update(lib.uwsgi_log_facts(HOST))
    shown = facts["somaxconn_line"] if state != "RUNNING" else facts["backlog_line"]
    lib.say(f"{config}: somaxconn {facts['somaxconn']}, flaskapp {state}, backlog in effect "
            f"{facts['backlog']}, nginx backlog {facts['nginx_backlog']}; uWSGI log: {shown}")
    return facts


def run_bursts(config: str, facts: dict) -> list[dict]:
    rows = []
    running = facts["state"] == "RUNNING"
    queue_limit = facts["backlog"] + 1 if running else 0
    for n in BURSTS:
        r = lib.burst(HOST, n, busy=lib.WORKERS if running else 0, hold=HOLD)
        row = {
            "config": config, "burst": n, "queued": r["queued"], "refused": r["refused"],
            "errors": ";".join(f"{k}={v}" for k, v in sorted(r["errors"].items())),
            "backlog": facts["backlog"], "busy_workers": r["busy"],
            "queue_limit": queue_limit, "expected_refused": max(0, n - queue_limit),
            "physical_limit": queue_limit + r["busy"],
        }
        rows.append(row)
        lib.say(f"  burst {n:5d}: queued {row['queued']:5d}, refused {row['refused']:5d} "
                f"(expected {row['expected_refused']}) {row['errors']}")
    return rows


def run_http(config: str, facts: dict) -> list[dict]:
    rows = []
    for c in CONCURRENCIES:
        lib.say(f"  wrk -c{c} -d{DURATION}s /slow?t={SERVICE_TIME} through nginx ...")
        w = lib.http_load(HOST, c, DURATION, SERVICE_TIME)
        row = {
            "config": config, "connections": c, "duration": DURATION, "service_time": SERVICE_TIME,
            "requests": w["requests"], "ok_2xx": w["requests"] - w["non_2xx"], "non_2xx": w["non_2xx"],
            "nginx_eagain_502": w["nginx_eagain_502"], "nginx_errors": w["nginx_errors"],
            "p50": w["latency"].get("p50"), "p99": w["latency"].get("p99"), "floor": w["floor"],
            "rps": w["rps"], "socket_errors": sum(w["socket_errors"].values()),
            "timeouts": w["socket_errors"].get("timeout", 0),
            "uwsgi_backlog": facts["backlog"], "nginx_backlog": facts["nginx_backlog"],
            "listen_overflows": w["listen_overflows"], "drain_seconds": w["drain_seconds"],
        }
        rows.append(row)
        lib.say(f"    {row['requests']} requests, {row['non_2xx']} non-2xx, {row['nginx_eagain_502']} "
                f"EAGAIN 502s logged, p50 {lib.fmt_s(row['p50'])}, p99 {lib.fmt_s(row['p99'])} "
                f"(floor {lib.fmt_s(row['floor'])}), TCP listen overflows {row['listen_overflows']}")
    return rows


# Ansible cost ------------------------------------------------------------------

def timed_play(playbook: str, host: str) -> dict:
    """One ansible-playbook run with the json callback: wall time, recap and
    the time of each task on the host."""
    start = time.monotonic()
    proc = lib.ansible_playbook(INVENTORY, playbook, "--limit", host, capture=True, check=False,
                                env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                                     "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"})
    wall = time.monotonic() - start
    out = lib.play_result(proc, playbook, host)
    stats = out["stats"][host]
    tasks = []
    for play in out["plays"]:
        for task in play["tasks"]:
            d = task["task"].get("duration", {})
            if "start" not in d or "end" not in d:  # meta tasks such as flush_handlers
                continue
            seconds = (datetime.datetime.fromisoformat(d["end"].replace("Z", "+00:00"))
                       - datetime.datetime.fromisoformat(d["start"].replace("Z", "+00:00"))).total_seconds()
            result = task["hosts"].get(host, {})
            action = result.get("action", "")
            items = result.get("results")
            runs = (0 if action.split(".")[-1] in CONTROLLER_ONLY or result.get("skipped")
                    else len([i for i in items if not i.get("skipped")]) if isinstance(items, list) else 1)
            tasks.append({"name": task["task"]["name"], "action": action, "seconds": seconds, "module_runs": runs,
                          "skipped": bool(result.get("skipped")), "changed": bool(result.get("changed"))})
    return {"wall": wall, "changed": stats.get("changed", 0), "ok": stats.get("ok", 0),
            "skipped": stats.get("skipped", 0), "tasks": tasks}


def run_ansible_cost() -> dict:
    cold = []
    for i, host in enumerate(COLD_HOSTS, 1):
        lib.say(f"cold converge {i}/{len(COLD_HOSTS)}: fresh bare host {host}, app file only (benchmarks/app.yml)")
        lib.create_host(host)
        lib.ansible_playbook(INVENTORY, "benchmarks/app.yml", "--limit", host, capture=True)
        r = timed_play("playbooks/site.yml", host)
        cold.append(r)
        lib.say(f"  playbooks/site.yml: {r['wall']:.1f} s, changed={r['changed']}")
        if i < len(COLD_HOSTS):
            lib.remove_container(host)
    host = COLD_HOSTS[-1]
    reruns, facts = [], []
    for i in range(1, RERUNS + 1):
        r = timed_play("playbooks/site.yml", host)
        reruns.append(r)
        f = timed_play("benchmarks/facts.yml", host)
        facts.append(f)
        lib.say(f"  run {i}/{RERUNS} on {host}: idempotent rerun {r['wall']:.1f} s (changed={r['changed']}), "
                f"facts-only play {f['wall']:.1f} s")
    return {"cold": cold, "rerun": reruns, "facts": facts, "host": host}


def rerun_breakdown(reruns: list[dict], top: int = 6) -> dict:
    """Where the idempotent rerun's time goes: medians over the reruns."""
    per_task: dict[str, list[float]] = {}
    for r in reruns:
        seen: dict[str, float] = {}
        for t in r["tasks"]:
            seen[t["name"]] = seen.get(t["name"], 0.0) + t["seconds"]
        for name, s in seen.items():
            per_task.setdefault(name, []).append(s)
    medians = {name: lib.median(v) for name, v in per_task.items()}

    def split(r):
        remote = [t for t in r["tasks"] if t["module_runs"] > 0 and t["name"] != "Gathering Facts"]
        facts = sum(t["seconds"] for t in r["tasks"] if t["name"] == "Gathering Facts")
        in_tasks = sum(t["seconds"] for t in r["tasks"])
        remote_s = sum(t["seconds"] for t in remote)
        return {"in_tasks": in_tasks, "outside": r["wall"] - in_tasks, "facts": facts, "remote": remote_s,
                "controller": in_tasks - remote_s - facts, "runs": sum(t["module_runs"] for t in remote),
                "remote_tasks": len(remote)}

    parts = [split(r) for r in reruns]
    med = {k: lib.median([p[k] for p in parts]) for k in parts[0]}
    first = reruns[0]["tasks"]
    return {
        "wall": lib.median([r["wall"] for r in reruns]),
        "in_tasks": med["in_tasks"],
        "outside_tasks": med["outside"],
        "tasks_total": len(first),
        "tasks_ran": len([t for t in first if not t["skipped"]]),
        "gathering_facts": med["facts"],
        "remote_tasks": int(med["remote_tasks"]),
        "remote_seconds": med["remote"],
        "module_runs": int(med["runs"]),
        "per_module_run": med["remote"] / med["runs"] if med["runs"] else 0.0,
        "controller_seconds": med["controller"],
        "top": sorted(medians.items(), key=lambda kv: -kv[1])[:top],
    }


def summarise_ansible(cost: dict) -> dict:
    summary = {
        "cold": lib.median([r["wall"] for r in cost["cold"]]),
        "cold_all": [round(r["wall"], 2) for r in cost["cold"]],
        "cold_changed": lib.median([r["changed"] for r in cost["cold"]]),
        "cold_runs": len(cost["cold"]),
        "rerun": lib.median([r["wall"] for r in cost["rerun"]]),
        "rerun_all": [round(r["wall"], 2) for r in cost["rerun"]],
        "rerun_changed": max(r["changed"] for r in cost["rerun"]),
        "facts": lib.median([r["wall"] for r in cost["facts"]]),
        "facts_all": [round(r["wall"], 2) for r in cost["facts"]],
        "reruns": len(cost["rerun"]),
    }
    summary["ratio"] = summary["rerun"] / summary["facts"]
    return {"summary": summary, "breakdown": rerun_breakdown(cost["rerun"]), "runs": cost}


# Report ------------------------------------------------------------------------

def versions() -> dict:
    v = {}
    v["uwsgi"] = lib.sh(HOST, "uwsgi --version").stdout.strip()
    v["nginx"] = lib.sh(HOST, "nginx -v 2>&1").stdout.strip().split("/")[-1]
    v["wrk"] = lib.sh(HOST, "dpkg-query -W -f '${Version}' wrk").stdout.strip()
    v["ansible-core"] = lib.run(["ansible", "--version"]).stdout.split("\n")[0].split()[-1].rstrip("]")
    v["kernel"] = platform.release()
    v["cpus"] = os.cpu_count()
    return v


def write_csv(path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def plot(bursts: list[dict], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    styles = {"default": ("tab:red", "o"), "no-kernel": ("tab:gray", "s"), "role": ("tab:green", "^")}
    for config, (color, marker) in styles.items():
        rows = [r for r in bursts if r["config"] == config]
        ax.plot([r["burst"] for r in rows], [r["refused"] for r in rows], marker=marker, color=color,
                label=f"{config}: {CONFIGS[config]}")
        ax.plot([r["burst"] for r in rows], [r["expected_refused"] for r in rows], linestyle=":",
                color=color, linewidth=1)
    for config, (color, _) in styles.items():
        limit = next((r["queue_limit"] for r in bursts if r["config"] == config), 0)
        if limit:
            ax.axvline(limit, color=color, linestyle="--", linewidth=0.8, alpha=0.6)
            ax.annotate(f"backlog + 1 = {limit}", (limit, ax.get_ylim()[1] * 0.55), rotation=90,
                        color=color, fontsize=8, ha="right", va="center")
    ax.set_xscale("log", base=2)
    sizes = sorted({r["burst"] for r in bursts} - {101, 4097})
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel("burst size: non-blocking connects while both workers are busy")
    ax.set_ylabel("refused connects (EAGAIN / ECONNREFUSED)")
    ax.set_title("Refused connects vs burst size, 2 workers busy (dotted: expected N - (backlog + 1))")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def targets(data: dict) -> list[dict]:
    out = []
    for config, facts in data["configs"].items():
        running = facts["state"] == "RUNNING"
        listen = facts["backlog"] if running else 4096
        rows = [r for r in data["bursts"] if r["config"] == config and r["burst"] <= listen + 1]
        refused = sum(r["refused"] for r in rows)
        result = f"{refused} refused over bursts {rows[0]['burst']}..{rows[-1]['burst']}"
        if not running:
            result += f" (uWSGI {facts['state']}: it refused to start)"
        out.append({"target": f"{config}: 0 refused for bursts up to listen+1 ({listen + 1})",
                    "result": result, "met": refused == 0})
    role_1000 = [r for r in data["http"] if r["config"] == "role" and r["connections"] == 1000]
    if role_1000:
        r = role_1000[0]
        out.append({
            "target": "role: 0 non-2xx through nginx at concurrency 1000",
            "result": f"{r['non_2xx']} non-2xx of {r['requests']} ({r['socket_errors']} socket errors)",
            "met": r["non_2xx"] == 0 and r["socket_errors"] == 0,
        })
    # The rerun's cost against the fact-only play is cost_bench.py's target (cost.md).
    return out


def render(data: dict) -> str:
    v = data["versions"]
    md = ["# Benchmark results", "",
          f"Produced by `make bench` (benchmarks/bench.py) on {data['date']}: {v['cpus']} CPUs, "
          f"kernel {v['kernel']}, uWSGI {v['uwsgi']}, nginx {v['nginx']}, wrk {v['wrk']}, "
          f"ansible-core {v['ansible-core']}. Hosts are local Debian 12 containers started with "
          "`net.core.somaxconn=128`; flaskapp runs 2 uWSGI workers. Machine-readable: "
          "`results.json`, `bursts.csv`, `http.csv`, `ansible.csv`.", "",
          "The other results of `make bench`, each with its own date and conditions: "
          "[apply.md](apply.md) (requests lost while a change is applied, and a broken change with and without "
          "the trial), [deploy.md](deploy.md) (new code under load: prefork HUP against the role's chain "
          "reload), [cost.md](cost.md) (the Ansible cost of a rerun against the fact-only play: the current "
          "figure, which supersedes this file's Ansible section), [sampler.md](sampler.md) (the sampler's CPU); "
          "`make bench-fleet`: [fleet.md](fleet.md).", ""]
    md += [f"Conditions while measuring (load average over 1 minute, {v['cpus']} CPUs, at the start and the end "
           "of each phase; other containers are other work on the same machine): " + "; ".join(
               f"{c['phase']}: load {c['load1']} to {c.get('load1_end', '?')}"
               + (f", other containers {', '.join(c['other_containers'])}" if c["other_containers"] else
                  ", no other containers")
               for c in data["conditions"]) + ".", ""]

    md += ["## Targets", ""]
    md.append(lib.table(["target", "result", "met"],
                        [[t["target"], t["result"], "yes" if t["met"] else "**no**"] for t in data["targets"]]))

    md += ["", "## Configurations", ""]
    rows = []
    for config, f in data["configs"].items():
        log = f["somaxconn_line"] if f["state"] != "RUNNING" else f["backlog_line"]
        rows.append([config, f["description"], f["somaxconn"], f["state"], f["backlog"] or "-",
                     f["nginx_backlog"], f"`{log}`"])
    md.append(lib.table(["config", "what", "somaxconn", "flaskapp", "backlog (ss)", "nginx backlog (ss)",
                         "uWSGI log"], rows, "llrlrrl"))
    nk = data["configs"].get("no-kernel", {})
    md += ["", f"listen 4096 without the kernel's limit: uWSGI does not clamp, it refuses to start "
               f"(logged {nk.get('somaxconn_refusals')} times as Supervisor retried, then FATAL); "
               "the socket file stays behind and every connect is refused (ECONNREFUSED)."
           if nk.get("state") != "RUNNING" else
           f"listen 4096 without the kernel's limit: uWSGI started with backlog {nk.get('backlog')} (clamped)."]

    md += ["", "## Bursts: refused connects while both workers are busy", "",
           "Physical limit: a unix socket's accept queue holds backlog + 1 connections; the 2 busy "
           "workers hold one more each (their slow requests), so at most backlog + 3 connections are "
           "held at once. Expected refused = N - (backlog + 1).", ""]
    sizes = BURSTS
    by = {(r["config"], r["burst"]): r for r in data["bursts"]}
    rows = []
    for n in sizes:
        row = [n]
        for config in CONFIGS:
            r = by[(config, n)]
            row.append(f"{r['refused']} ({r['expected_refused']})")
        rows.append(row)
    limits = ["physical limit (queue + busy)"] + [
        str(next(r["physical_limit"] for r in data["bursts"] if r["config"] == c)) for c in CONFIGS]
    rows.append(limits)
    md.append(lib.table(["burst"] + [f"{c}: refused (expected)" for c in CONFIGS], rows, "rrrr"))
    md += ["", "![refused connections vs burst size](refused-vs-burst.png)"]

    md += ["", "## HTTP load through nginx (wrk)", "",
           f"`wrk -t2 -cC -d{DURATION}s --timeout 30s --latency http://127.0.0.1:80/slow?t={SERVICE_TIME}` inside "
           f"the container; floor = C x {SERVICE_TIME} s / 2 workers, the wait of a closed loop of C "
           "connections on 2 workers (nginx's timeouts are 60 s). Non-2xx counts wrk's \"Non-2xx or 3xx "
           "responses\"; EAGAIN 502s counts nginx's `(11: Resource temporarily unavailable)` lines. nginx "
           "asks for backlog=4096; the kernel caps it at somaxconn (nginx backlog column), and TCP listen "
           "overflows show whether that cap was hit.", ""]
    rows = []
    for r in data["http"]:
        rows.append([r["connections"], r["config"], r["uwsgi_backlog"], r["requests"], r["ok_2xx"], r["non_2xx"],
                     r["nginx_eagain_502"], lib.fmt_s(r["p50"]), lib.fmt_s(r["p99"]), lib.fmt_s(r["floor"]),
                     r["nginx_backlog"], r["listen_overflows"]])
    md.append(lib.table(["conns", "config", "uWSGI backlog", "requests", "2xx", "non-2xx", "EAGAIN 502s",
                         "p50", "p99", "floor", "nginx backlog", "TCP overflows"], rows, "rlrrrrrrrrrr"))
    hit = [r for r in data["http"] if r["listen_overflows"]]
    md += ["", "nginx's backlog: " + ("; ".join(
        f"{r['config']} at {r['connections']} connections: nginx's backlog of {r['nginx_backlog']} overflowed "
        f"{r['listen_overflows']} times while wrk connected ({r['socket_errors']} wrk socket errors: the kernel "
        "drops the handshake and TCP retries it, which costs time, not requests)" for r in hit)
        if hit else "no TCP listen overflow in any run: it was never the bottleneck") + "."]
    errors = sum(r["nginx_errors"] for r in data["http"])
    eagain = sum(r["nginx_eagain_502"] for r in data["http"])
    md[-1] += (" Every error nginx logged was a full uWSGI queue (EAGAIN on its unix socket)."
               if errors == eagain else f" nginx logged {errors} errors, {eagain} of them a full uWSGI queue.")

    a = data["ansible"]["summary"]
    b = data["ansible"]["breakdown"]
    md += ["", "## Ansible cost", "",
           f"The role as it was on {data['date']}; its rerun now costs what [cost.md](cost.md) says. "
           "Same kind of local container host, `community.docker.docker` connection, pipelining on. "
           f"Medians: cold converge over {a['cold_runs']} fresh bare hosts (apt index update and package "
           "install included; the .deb files come from the local cache .cache/apt-archives), idempotent rerun and "
           f"fact-only play (`benchmarks/facts.yml`) over {a['reruns']} interleaved runs each.", ""]
    md.append(lib.table(["run", "median", "runs", "changed"], [
        ["cold converge of playbooks/site.yml", f"{a['cold']:.1f} s",
         ", ".join(f"{x:.1f}" for x in a["cold_all"]), a["cold_changed"]],
        ["idempotent rerun", f"{a['rerun']:.1f} s", ", ".join(f"{x:.1f}" for x in a["rerun_all"]),
         a["rerun_changed"]],
        ["fact-only play", f"{a['facts']:.1f} s", ", ".join(f"{x:.1f}" for x in a["facts_all"]), 0],
        ["rerun / fact-only", f"{a['ratio']:.1f}x", "", ""],
    ], "lrll"))
    md += ["", f"What dominates the rerun ({b['wall']:.1f} s, median): the {b['remote_tasks']} tasks that reach "
           f"the host, {b['remote_seconds']:.1f} s for {b['module_runs']} executions (loop items counted), about "
           f"{b['per_module_run']:.2f} s each. Each is a `docker exec` with sudo, a Python start-up and the "
           "module's work (a template item runs two modules, stat then file), and a loop over the 2 apps pays it "
           f"twice. The rest: Gathering Facts {b['gathering_facts']:.1f} s (all the fact-only play does), "
           f"{b['controller_seconds']:.1f} s in controller-side and skipped tasks (asserts, include_vars, argument "
           f"specs), {b['outside_tasks']:.1f} s outside tasks (ansible-playbook start-up, loading the playbook and "
           "the role). The slowest tasks (median s):", ""]
    md.append(lib.table(["task", "seconds"], [[name, f"{s:.2f}"] for name, s in b["top"]], "lr"))
    md.append("")
    return "\n".join(md)


def main() -> int:
    if sys.argv[1:] == ["report"]:  # re-render from results.json, measuring nothing
        write_results(json.loads((RESULTS / "results.json").read_text()))
        return 0
    keep = os.environ.get("BENCH_KEEP", "0") == "1"
    data: dict = {"date": datetime.date.today().isoformat(), "configs": {}, "bursts": [], "http": [],
                  "conditions": [], "parameters": {
                      "bursts": BURSTS, "hold": HOLD, "concurrencies": CONCURRENCIES,
                      "service_time": SERVICE_TIME, "duration": DURATION, "reruns": RERUNS,
                      "cold_runs": len(COLD_HOSTS)}}
    print(lib.bold("\n-- host: fresh container uwsgi-bench with the classic setup (benchmarks/demo-setup.yml)"))
    lib.create_host(HOST)
    lib.ansible_playbook(INVENTORY, "benchmarks/demo-setup.yml", "--limit", HOST, capture=True)
    data["versions"] = versions()

    print(lib.bold("\n-- default: uWSGI's default listen, somaxconn 128"))
    data["conditions"].append(conditions("default"))
    facts = data["configs"]["default"] = config_facts("default")
    data["bursts"] += run_bursts("default", facts)
    data["http"] += run_http("default", facts)
    conditions_end(data["conditions"][-1])

    print(lib.bold("\n-- no-kernel: --listen 4096 on uWSGI's command line, somaxconn still 128"))
    lib.ansible_playbook(INVENTORY, "benchmarks/demo-setup.yml", "--limit", HOST,
                         "-e", "demo_uwsgi_listen=4096", capture=True)
    facts = data["configs"]["no-kernel"] = config_facts("no-kernel")
    data["bursts"] += run_bursts("no-kernel", facts)

    print(lib.bold("\n-- role: ansible-playbook playbooks/site.yml (listen 4096, somaxconn 4096)"))
    lib.hand_over(HOST)
    lib.ansible_playbook(INVENTORY, "playbooks/site.yml", "--limit", HOST, capture=True)
    lib.sh(HOST, "systemctl restart nginx")  # nginx's backlog follows somaxconn at listen() only
    data["conditions"].append(conditions("role"))
    facts = data["configs"]["role"] = config_facts("role")
    data["bursts"] += run_bursts("role", facts)
    data["http"] += run_http("role", facts)
    conditions_end(data["conditions"][-1])

    print(lib.bold("\n-- Ansible cost: cold converge, idempotent rerun, fact-only play"))
    data["conditions"].append(conditions("ansible"))
    data["ansible"] = summarise_ansible(run_ansible_cost())
    conditions_end(data["conditions"][-1])
    if not keep:
        for host in [HOST] + COLD_HOSTS:
            lib.remove_container(host)
    write_results(data)
    return 0


def write_results(data: dict) -> None:
    cost = data["ansible"]["runs"]
    data["ansible"] = summarise_ansible(cost)
    data["targets"] = targets(data)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    write_csv(RESULTS / "bursts.csv", data["bursts"])
    write_csv(RESULTS / "http.csv", data["http"])
    write_csv(RESULTS / "ansible.csv", [
        {"run": kind, "n": i, "seconds": round(r["wall"], 2), "changed": r["changed"]}
        for kind in ("cold", "rerun", "facts") for i, r in enumerate(cost[kind], 1)])
    (RESULTS / "RESULTS.md").write_text(render(data))
    plot(data["bursts"], RESULTS / "refused-vs-burst.png")

    print(lib.bold("\n-- results (benchmarks/results/RESULTS.md)\n"))
    print(render(data).split("## Targets", 1)[1].strip())
    print(f"\nwritten: {', '.join(sorted(p.name for p in RESULTS.iterdir()))}")


if __name__ == "__main__":
    sys.exit(main())
