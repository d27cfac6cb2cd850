"""Filters that turn the host's own reports into data the role can check."""

from __future__ import annotations

DOCUMENTATION = ""


def uwsgi_listen_backlogs(ss_stdout):
    """Map each LISTEN socket in `ss -Hlnxt` output to its backlog in effect.

    For a listening socket, ss prints the backlog as Send-Q. Unix sockets are
    keyed by path, TCP sockets by "host:port" as ss prints it and by ":port".
    """
    backlogs = {}
    for line in (ss_stdout or "").splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[1] != "LISTEN":
            continue
        netid, send_q, local = fields[0], fields[3], fields[4]
        try:
            backlog = int(send_q)
        except ValueError:
            continue
        if netid.startswith("u_"):
            backlogs[local] = backlog
        elif netid.startswith("tcp"):
            backlogs[local] = backlog
            port = local.rsplit(":", 1)[-1]
            backlogs.setdefault(":" + port, backlog)
    return backlogs


def uwsgi_socket_key(socket):
    """The key under which uwsgi_listen_backlogs reports an app's socket."""
    socket = str(socket)
    if socket.startswith("/"):
        return socket
    return ":" + socket.rsplit(":", 1)[-1]


def uwsgi_supervisor_states(status_stdout):
    """Map each program in `supervisorctl status` output to its state and pid."""
    states = {}
    for line in (status_stdout or "").splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        pid = None
        if len(fields) >= 4 and fields[2] == "pid":
            pid = int(fields[3].rstrip(","))
        states[fields[0]] = {"state": fields[1], "pid": pid, "line": line.strip()}
    return states


# systemd-sysctl's search path, most important first: a file name found in an
# earlier directory masks the same name in later ones.
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")


def uwsgi_sysctl_overrides(grep_stdout, our_file, wanted):
    """Settings that would win over ours at the next boot with a lower value.

    grep_stdout: `grep -RHs` lines "FILE:key = value" over the sysctl search
    path and /etc/sysctl.conf. Files apply in file-name order, whatever their
    directory, and /etc/sysctl.conf (`sysctl --system`) last; so a file whose
    name sorts after ours, or /etc/sysctl.conf, wins.
    """
    our_name = our_file.rsplit("/", 1)[-1]
    wanted = {key: int(value) for key, value in wanted.items()}
    entries = []
    strongest = {}  # file name -> rank of the strongest directory holding it
    for line in (grep_stdout or "").splitlines():
        path, sep, setting = line.partition(":")
        if not sep or "=" not in setting:
            continue
        key, _, value = (part.strip() for part in setting.partition("="))
        key = key.lstrip("-").replace("/", ".")
        if key not in wanted:
            continue
        directory, _, name = path.rpartition("/")
        if path == "/etc/sysctl.conf":
            entries.append(("\uffff", None, path, key, value))
        elif directory in SYSCTL_DIRS:
            rank = SYSCTL_DIRS.index(directory)
            strongest[name] = min(rank, strongest.get(name, rank))
            entries.append((name, rank, path, key, value))
    overrides = []
    for order, rank, path, key, value in entries:
        if rank is not None and rank != strongest[order]:
            continue  # masked by a file of the same name in a stronger directory
        if path == our_file or order <= our_name:
            continue
        try:
            lower = int(value) < wanted[key]
        except ValueError:
            lower = True
        if lower:
            overrides.append({"file": path, "key": key, "value": value, "wanted": wanted[key]})
    return overrides


class FilterModule:
    def filters(self):
        return {
            "uwsgi_listen_backlogs": uwsgi_listen_backlogs,
            "uwsgi_socket_key": uwsgi_socket_key,
            "uwsgi_supervisor_states": uwsgi_supervisor_states,
            "uwsgi_sysctl_overrides": uwsgi_sysctl_overrides,
        }
