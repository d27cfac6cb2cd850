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


class FilterModule:
    def filters(self):
        return {
            "uwsgi_listen_backlogs": uwsgi_listen_backlogs,
            "uwsgi_socket_key": uwsgi_socket_key,
            "uwsgi_supervisor_states": uwsgi_supervisor_states,
        }
