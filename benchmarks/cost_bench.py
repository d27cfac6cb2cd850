#!/usr/bin/env python3
"""What an idempotent rerun of the role costs, against a fact-only play, with 2
and with 40 apps, and what a deploy through the role's handler costs, each
with pipelining on and off, all in one run.

  python benchmarks/cost_bench.py [--rounds 3] [--baseline REF] [--no-40]

One local container host, uwsgi-cost-new, runs this checkout's
playbooks/site.yml (2 apps), the same with 40 apps, and
benchmarks/reload-handler.yml with site.yml's 2 apps (the play notifies
`uwsgi reload`: the role finds nothing else to do and the handler
chain-reloads both apps). With --baseline, a twin host uwsgi-cost-old runs
the role at REF (a git worktree) beside it. Rounds interleave the runs, so
load drifts hit them alike. For each run: wall time; CPU seconds of the
controller (ansible-playbook and its children), of the host (the
container's cgroup) and of the container engine (dockerd, containerd and the
shims, which serve every `docker exec`); and the module runs that reached the
host. Writes benchmarks/results/cost.json and cost.md. Goals are printed next
to the figures, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import resource
import sys
import time

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import lib  # noqa: E402

RESULTS = lib.BENCH / "results"
CACHE = lib.PROJECT / ".cache" / "cost-bench"
HOSTS = {"new": "uwsgi-cost-new", "old": "uwsgi-cost-old"}
HANDLER_PLAY = "benchmarks/reload-handler.yml"
PIPELINING = {"pipelined": "true", "unpipelined": "false"}
CONTROLLER_ONLY = {"assert", "include_vars", "validate_argument_spec", "set_fact", "debug", "meta", "fail", "uwsgi_check",
                   "include_tasks", "import_tasks"}
ENGINE = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2")
TICK = os.sysconf("SC_CLK_TCK")


def apps40() -> list[dict]:
    return [{"name": f"app{i:02d}", "module": "app:app", "chdir": "/srv/flaskapp", "socket": f"/run/uwsgi/app{i:02d}.sock",
             "listen": 4096, "processes": 1, "environment": {"APP_NAME": f"app{i:02d}"}} for i in range(40)]


def engine_ticks() -> int:
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name in ENGINE:
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def container_usec(name: str) -> int:
    cid = lib.run(["docker", "inspect", "-f", "{{.Id}}", name]).stdout.strip()
    for path in (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat", f"/sys/fs/cgroup/docker/{cid}/cpu.stat"):
        try:
            for line in pathlib.Path(path).read_text().splitlines():
                if line.startswith("usage_usec"):
                    return int(line.split()[1])
        except OSError:
            continue
    try:  # cgroup v1 (cgroupfs driver): nanoseconds
        return int(pathlib.Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage").read_text()) // 1000
    except OSError:
        raise SystemExit(f"{name}: no cgroup CPU accounting found") from None


def inventory(path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\nall:\n  vars:\n    ansible_connection: community.docker.docker\n"
                    "    ansible_python_interpreter: /usr/bin/python3\n  hosts:\n"
                    + "".join(f"    {h}:\n" for h in HOSTS.values()))


def baseline_tree(ref: str) -> pathlib.Path:
    """The baseline role in a git worktree, and a roles path that names it backlogops.uwsgi."""
    tree = CACHE / "baseline"
    if tree.exists():
        lib.run(["git", "worktree", "remove", "--force", str(tree)], check=False)
    lib.run(["git", "worktree", "prune"])
    lib.run(["git", "worktree", "add", "--detach", str(tree), ref])
    roles = CACHE / "baseline-roles"
    roles.mkdir(parents=True, exist_ok=True)
    link = roles / "backlogops.uwsgi"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(tree)
    return tree


def site_apps() -> list[dict]:
    return yaml.safe_load((lib.PROJECT / "playbooks" / "site.yml").read_text())[0]["vars"]["uwsgi_apps"]


def play(kind: str, which: str, pipelining: str, inv: pathlib.Path, tree: pathlib.Path | None,
         extra: list[str]) -> dict:
    """One run: wall, CPU of controller, host and engine, module runs and changes."""
    host = HOSTS[which]
    role_tree = tree if which == "old" else lib.PROJECT
    playbook = {"facts": str(lib.PROJECT / "benchmarks" / "facts.yml"), "handler2": str(role_tree / HANDLER_PLAY)}.get(
        kind, str(role_tree / "playbooks" / "site.yml"))
    env = {"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_PIPELINING": PIPELINING[pipelining]}
    if which == "old":
        env["ANSIBLE_ROLES_PATH"] = str(CACHE / "baseline-roles")
    before = (resource.getrusage(resource.RUSAGE_CHILDREN), container_usec(host), engine_ticks(), time.monotonic())
    # From the role's own tree: Ansible finds a role's dynamically included files relative to the working directory too.
    proc = lib.ansible_playbook(str(inv), playbook, "--limit", host, *(extra if kind != "facts" else []),
                                capture=True, check=False, env=env, cwd=role_tree)
    after = (resource.getrusage(resource.RUSAGE_CHILDREN), container_usec(host), engine_ticks(), time.monotonic())
    out = lib.play_result(proc, playbook, host)
    stats = out["stats"][host]
    runs = 0
    for p in out["plays"]:
        for task in p["tasks"]:
            result = task["hosts"].get(host, {})
            if result.get("skipped") or result.get("action", "").split(".")[-1] in CONTROLLER_ONLY:
                continue
            if result.get("compared"):
                continue  # a look the action answered on the probe's fingerprints: no module ran
            items = result.get("results")
            runs += len([i for i in items if not i.get("skipped")]) if isinstance(items, list) else 1
    return {
        "kind": kind, "path": which, "pipelining": pipelining, "wall": after[3] - before[3],
        "controller_cpu": (after[0].ru_utime + after[0].ru_stime) - (before[0].ru_utime + before[0].ru_stime),
        "host_cpu": (after[1] - before[1]) / 1e6,
        "engine_cpu": (after[2] - before[2]) / TICK,
        "module_runs": runs, "changed": stats.get("changed", 0),
    }


def med(rows: list[dict], key: str) -> float:
    return lib.median([r[key] for r in rows])


KINDS = ("facts", "rerun2", "rerun40", "handler2")


def summary(runs: list[dict]) -> dict:
    out = {}
    for which in HOSTS:
        for pipelining in PIPELINING:
            for kind in KINDS:
                rows = [r for r in runs if r["path"] == which and r["kind"] == kind and r["pipelining"] == pipelining]
                if not rows:
                    continue
                key = f"{which}.{pipelining}.{kind}"
                out[key] = {k: round(med(rows, k), 2) for k in
                            ("wall", "controller_cpu", "host_cpu", "engine_cpu", "module_runs")}
                out[key]["changed"] = max(r["changed"] for r in rows)
                out[key]["cpu"] = round(sum(out[key][k] for k in ("controller_cpu", "host_cpu", "engine_cpu")), 2)
    return out


def render(data: dict) -> str:
    s = data["summary"]
    rows = []
    for key in s:
        v = s[key]
        rows.append([key, f"{v['wall']:.2f}", f"{v['controller_cpu']:.2f}", f"{v['host_cpu']:.2f}",
                     f"{v['engine_cpu']:.2f}", f"{v['cpu']:.2f}", v["module_runs"], v["changed"]])
    goals = data["goals"]
    baseline = f" `old` is the role at {data['baseline']} (a git worktree), on a twin host." if data["baseline"] else ""
    lines = [
        "# Ansible cost of an idempotent rerun", "",
        f"Measured {data['date']} on {data['cpus']} CPUs, {data['rounds']} interleaved rounds (medians). "
        f"Load average (1 min) {data['load_start']:.2f} at the start, {data['load_end']:.2f} at the end; "
        f"other containers: {', '.join(data['others']) or 'none'}. "
        f"`new` is this tree.{baseline} `facts`: a play that only gathers facts (benchmarks/facts.yml); "
        "`rerun2` and `rerun40`: playbooks/site.yml on a converged host with 2 and 40 apps; `handler2`: a deploy "
        "through the handler (benchmarks/reload-handler.yml: the role finds nothing else to do, the handler "
        "tries both apps aside and chain-reloads them). `pipelined`: ANSIBLE_PIPELINING true, one `docker exec` "
        "per module run; `unpipelined`: false, which also copies each module over. CPU seconds: controller "
        "(ansible-playbook and children), host (the container's cgroup), engine (dockerd, containerd and shims, "
        "which serve each `docker exec`).", "",
        lib.table(["run", "wall s", "controller CPU s", "host CPU s", "engine CPU s", "CPU s total", "module runs",
                   "changed"], rows), "",
        lib.table(["figure", "goal", "measured", "met"], [[g["figure"], g["goal"], g["measured"], g["met"]]
                                                          for g in goals]), "",
    ]
    return "\n".join(lines)


def goals(s: dict) -> list[dict]:
    out = []
    for pipelining in PIPELINING:
        n, facts = s.get(f"new.{pipelining}.rerun2"), s.get(f"new.{pipelining}.facts")
        if not (n and facts):
            continue
        ratio = n["wall"] / facts["wall"]
        out.append({"figure": f"rerun / fact-only play (2 apps, {pipelining})", "goal": "<= 2x",
                    "measured": f"{ratio:.2f}x", "met": "yes" if ratio <= 2 else "no"})
        forty = s.get(f"new.{pipelining}.rerun40")
        if forty:
            extra = forty["wall"] - n["wall"]
            out.append({"figure": f"rerun with 40 apps - rerun with 2 apps ({pipelining})", "goal": "<= 2 s",
                        "measured": f"{extra:.1f} s", "met": "yes" if extra <= 2 else "no"})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="also run the role at this git ref, on a twin host")
    parser.add_argument("--no-40", action="store_true", help="skip the 40-app runs")
    args = parser.parse_args()
    if not args.baseline:
        del HOSTS["old"]
    inv = CACHE / "inventory.yml"
    inventory(inv)
    tree = baseline_tree(args.baseline) if args.baseline else None
    load_start = os.getloadavg()[0]
    extra2 = CACHE / "apps2.json"
    extra2.write_text(json.dumps({"uwsgi_apps": site_apps()}))
    extra40 = CACHE / "apps40.json"
    extra40.write_text(json.dumps({"uwsgi_apps": apps40()}))
    for which, host in HOSTS.items():
        lib.say(f"{host}: fresh bare host, the app file, then the {which} role's playbooks/site.yml twice")
        lib.create_host(host)
        lib.ansible_playbook(str(inv), "benchmarks/app.yml", "--limit", host, capture=True)
        for _ in range(2):
            play("rerun2", which, "pipelined", inv, tree, [])
    runs = []
    phases = [(("facts", "rerun2", "handler2"), [])] + ([] if args.no_40 else [(("rerun40",), ["-e", f"@{extra40}"])])
    for kinds, extra in phases:
        if kinds == ("rerun40",):
            for which in HOSTS:
                lib.say(f"{HOSTS[which]}: converge 40 apps")
                play("rerun40", which, "pipelined", inv, tree, extra)
        for i in range(1, args.rounds + 1):
            for which in HOSTS:
                for pipelining in PIPELINING:
                    for kind in kinds:
                        r = play(kind, which, pipelining, inv, tree, ["-e", f"@{extra2}"] if kind == "handler2" else extra)
                        runs.append(r)
                        lib.say(f"  round {i} {which} {pipelining} {kind}: {r['wall']:.2f} s wall, CPU controller "
                                f"{r['controller_cpu']:.2f} host {r['host_cpu']:.2f} engine {r['engine_cpu']:.2f}, "
                                f"{r['module_runs']} module runs, changed={r['changed']}")
    others = sorted(n for n in lib.run(["docker", "ps", "--format", "{{.Names}}"]).stdout.split()
                    if n not in HOSTS.values())
    data = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "rounds": args.rounds, "baseline": args.baseline,
            "load_start": load_start, "load_end": os.getloadavg()[0], "others": others,
            "runs": runs, "summary": summary(runs)}
    data["goals"] = goals(data["summary"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cost.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / "cost.md").write_text(render(data))
    print(render(data))
    if os.environ.get("BENCH_KEEP") != "1":
        for host in HOSTS.values():
            lib.remove_container(host)
    if tree:
        lib.run(["git", "worktree", "remove", "--force", str(tree)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
