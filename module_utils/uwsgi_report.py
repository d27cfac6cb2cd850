"""The fleet report (playbooks/report.yml): each app's backlog and peak
queue, and the listeners an older limit still caps."""

from __future__ import annotations


from ansible.module_utils import uwsgi_host as host
from ansible.module_utils.uwsgi_input import as_int


# Processes whose listeners are systemd's own (PID 1, journald, udevd, resolved ...):
# the report leaves them out of "restart to benefit".
SYSTEM_OWNERS = ("systemd",)

# net.core.somaxconn's kernel defaults: 128 before Linux 5.4, 4096 since.
KERNEL_SOMAXCONN_DEFAULTS = (128, 4096)


def _table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header] + rows]


def uwsgi_report(probes):
    """The fleet's listen queues, from each host's probe (its sampler's
    metrics, its listening sockets and its kernel limits): per app the backlog,
    the peak queue and its share of the backlog, and the host's TCP overflows;
    and every listener capped at an older somaxconn (started before the raise,
    so a restart gives it the backlog it asks for)."""
    apps, capped, missing, system = [], [], [], []
    for hostname in sorted(probes):
        probe = probes[hostname]
        samples = probe.get("textfile_samples")
        if samples is None:
            missing.append(hostname)
            samples = []
        node = {s["name"]: s["value"] for s in samples if not s["labels"]}
        per_app = {}
        for sample in samples:
            app = sample["labels"].get("app")
            if app:
                per_app.setdefault((app, sample["labels"].get("socket", "")), {})[sample["name"]] = sample["value"]
        for (app, socket), values in sorted(per_app.items()):
            backlog = values.get("uwsgi_listen_backlog")
            peak = values.get("uwsgi_listen_queue_peak_length")
            apps.append({
                "host": hostname, "app": app, "socket": socket,
                "up": values.get("uwsgi_listen_socket_up") == 1,
                "backlog": int(backlog) if backlog is not None else None,
                "peak": int(peak) if peak is not None else None,
                "peak_pct": round(100.0 * peak / backlog, 1) if backlog and peak is not None else None,
                "overflows": int(node.get("uwsgi_sampler_tcp_listen_overflows_total", 0)),
            })
        live = (probe.get("sysctl_live") or {}).get("net.core.somaxconn")
        older = set(KERNEL_SOMAXCONN_DEFAULTS)
        older.update(v for v in (as_int(s["value"]) for s in probe.get("sysctl_settings", [])
                                 if s["key"] == "net.core.somaxconn") if v is not None)
        app_sockets = {host.socket_key(socket) for _, socket in per_app}
        for listener in probe.get("listeners", []):
            backlog = listener["backlog"]
            if live is None or backlog >= live or backlog not in older:
                continue
            if host.listener_key(listener) in app_sockets:
                continue
            owners = sorted({name for name, _ in listener.get("processes", [])} | set(listener.get("programs", [])))
            if owners and all(name.startswith(SYSTEM_OWNERS) for name in owners):
                system.append({"host": hostname, "socket": listener["local"], "owners": owners})
                continue
            capped.append({"host": hostname, "socket": listener["local"], "backlog": backlog, "somaxconn": live,
                           "owners": owners})
    lines = ["Listen queues (peak over the sampler's window):"]
    lines += _table(["host", "app", "socket", "backlog", "peak", "peak %", "tcp overflows"], [
        [a["host"], a["app"], a["socket"], a["backlog"] if a["up"] else "down", a["peak"],
         "" if a["peak_pct"] is None else "%.1f%%" % a["peak_pct"], a["overflows"]] for a in apps])
    if missing:
        lines.append("No sampler metrics on: %s (uwsgi_sampler off, or the sampler has not written yet)."
                     % ", ".join(missing))
    if capped:
        lines.append("Listeners capped by an older net.core.somaxconn: restart each to benefit from the raise:")
        lines += _table(["host", "socket", "backlog", "somaxconn now", "process"], [
            [c["host"], c["socket"], c["backlog"], c["somaxconn"], ", ".join(c["owners"]) or "?"] for c in capped])
    else:
        lines.append("No listener is capped by an older net.core.somaxconn.")
    if system:
        lines.append("Left out: %d socket%s systemd holds itself (its own, journald's, socket-activated services'), "
                     "which keep the backlog they were created with until the next boot; they are not services to "
                     "restart for the raise." % (len(system), "" if len(system) == 1 else "s"))
    return {"apps": apps, "capped": capped, "missing": missing, "system": system, "lines": lines}
