"""The probe's waits for what a run started or reloaded to settle: Supervisor's
states, each started app's log until its app is loaded, each chain-reloaded
master's workers until all are new. Beside them, the /proc and log reads they
poll, which the probe also reports (a later wait compares with the same clock)."""

from __future__ import annotations

import os
import re
import time

from ansible.module_utils.uwsgi_host import parse_btime, parse_proc_stat, read_log, read_text, workers_left_behind

SETTLING = ("STARTING", "BACKOFF", "STOPPING")
READY = re.compile(r"WSGI app \d+ \(mountpoint='[^']*'\) ready in")
GAVE_UP = ("no app loaded. GAME OVER", "goodbye to uWSGI")  # need-app's exit; any exit


def log_since(log_dir, name, offset):
    """An app's log from `offset` on (as read_log reads it), as text."""
    return read_log(os.path.join(log_dir, "%s.log" % name), int(offset or 0))[0].decode("utf-8", "replace")


def started_at(pid):
    """A process's start time (epoch seconds), from /proc."""
    stat_ = parse_proc_stat(read_text("/proc/%d/stat" % pid, ""))
    boot = parse_btime(read_text("/proc/stat", ""))
    return boot + stat_["start_ticks"] / os.sysconf("SC_CLK_TCK") if stat_ and boot is not None else None


def uptime():
    """Seconds since boot (CLOCK_BOOTTIME, as a process's start time counts)."""
    try:
        return float(read_text("/proc/uptime", "").split()[0])
    except (IndexError, ValueError):
        return None


def children_of(pids):
    """Direct children of each pid, from /proc."""
    wanted = set(pids)
    children = {pid: [] for pid in wanted}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat_ = parse_proc_stat(read_text("/proc/%s/stat" % entry, ""))
        if stat_ and stat_["ppid"] in wanted:
            children[stat_["ppid"]].append(int(entry))
    return children


def workers_of(pid):
    """The master's children, each with its start (seconds after boot)."""
    tick = os.sysconf("SC_CLK_TCK")
    workers = []
    for child in children_of([pid]).get(pid, []) if pid else []:
        stat_ = parse_proc_stat(read_text("/proc/%d/stat" % child, ""))
        if stat_:
            workers.append({"pid": child, "started": round(stat_["start_ticks"] / tick, 2)})
    return workers


def fresh_workers(pid, item, since):
    """Whether the master has all its workers, each forked after `since`."""
    if not pid or not since or item.get("lazy") or not item.get("processes"):
        return False
    children = children_of([pid]).get(pid, [])
    starts = [started_at(child) for child in children]
    return len(children) >= int(item["processes"]) and all(t is not None and t >= since for t in starts)


def wait_ready(p, supervisor, status):
    """Wait for each app started in this run to load its app, or to give up."""
    pending = {item["name"]: float(item.get("timeout") or 60) for item in p["ready"]}
    spec = {item["name"]: item for item in p["ready"]}
    result, first_pid = {}, {}
    started = time.monotonic()
    while pending:
        elapsed = time.monotonic() - started
        for name in list(pending):
            state = supervisor["programs"].get(name, {})
            text = log_since(p["log_dir"], name, p["log_offsets"].get(name, 0))
            pid = state.get("pid")
            if pid and name not in first_pid:
                first_pid[name] = pid
            why = None
            # Judge the latest start only: an earlier master's goodbye is not this one's.
            last_start = text.rfind("*** Starting uWSGI")
            segment = text[last_start:] if last_start >= 0 else ""
            gave_up = next((g for g in GAVE_UP if g in segment), None)
            # A busy app's log may rotate past its banner: without lazy-apps the
            # master loads the app before it forks, so a full set of workers
            # forked after this run began says the same.
            if READY.search(segment) and not gave_up and state.get("state") == "RUNNING" \
                    and pid == first_pid.get(name) or fresh_workers(pid, spec[name], p["since"]) \
                    and state.get("state") == "RUNNING" and pid == first_pid.get(name):
                result[name] = {"ok": True, "why": "loaded", "seconds": round(elapsed, 1)}
                del pending[name]
                continue
            if gave_up:
                why = "uWSGI gave up: %s" % gave_up
            elif state.get("state") in ("EXITED", "FATAL", "STOPPED"):
                why = "Supervisor says %s" % state.get("state")
            elif pid and first_pid.get(name) and pid != first_pid[name]:
                why = "its master exited and was started again (pid %s, then %s)" % (first_pid[name], pid)
            elif elapsed > pending[name]:
                why = "its app was not loaded within %d s" % pending[name]
            if why:
                result[name] = {"ok": False, "why": why, "seconds": round(elapsed, 1)}
                del pending[name]
        if pending:
            time.sleep(0.3)
            supervisor = status()
    return result


def wait_fresh(p, supervisor, status):
    """Wait until every worker of each chain-reloaded app started after the
    reload began, or its timeout: what each has then, and which are left."""
    result = {}
    started = time.monotonic()
    pending = {item["name"]: item for item in p["fresh"]}
    while pending:
        for name, item in list(pending.items()):
            pid = supervisor["programs"].get(name, {}).get("pid")
            workers = workers_of(pid)
            left = workers_left_behind(workers, float(item["since"]), item.get("processes"))
            elapsed = round(time.monotonic() - started, 1)
            done = not left["old"] and left["complete"] is not False
            if done or elapsed > float(item.get("timeout") or 60):
                result[name] = dict(left, ok=done, seconds=elapsed, master=pid, workers=workers, now=uptime())
                del pending[name]
        if pending:
            time.sleep(0.3)
            supervisor = status()
    return result


def settle(p, status):
    """Supervisor's status once the programs in wait_for are no longer
    settling, and the apps in `ready` and `fresh` have loaded (or timed out):
    (supervisor, seconds waited, ready, fresh). `status()` reads Supervisor's
    status afresh (the probe's supervisor_status)."""
    supervisor = status()
    deadline = time.monotonic() + p["wait_timeout"]
    started = time.monotonic()
    while p["wait_for"] and supervisor["running"] and time.monotonic() < deadline and any(
            supervisor["programs"].get(name, {}).get("state") in SETTLING for name in p["wait_for"]):
        time.sleep(0.5)
        supervisor = status()
    waited = round(time.monotonic() - started, 1)
    ready = wait_ready(p, supervisor, status)
    if ready:
        supervisor = status()
    fresh = wait_fresh(p, supervisor, status)
    if fresh:
        supervisor = status()
    return supervisor, waited, ready, fresh
