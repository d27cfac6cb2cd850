#!/usr/bin/python3
"""Give the listening socket of a running uWSGI master a new backlog, in place.

    uwsgi_listen.py --pid MASTER_PID --socket SOCKET --backlog N [--check]
    uwsgi_listen.py --pid MASTER_PID --socket HOST:PORT --reuseport
    uwsgi_listen.py --pid MASTER_PID --socket HOST:PORT --steer INDEX [--when-joined SECONDS]

SOCKET is an absolute unix socket path or [host]:port. Linux accepts listen()
on a socket that is already listening and then only changes its backlog; this
takes a copy of the master's socket with pidfd_open(2) + pidfd_getfd(2) (Linux
5.6 and later) and calls listen(N) on it. Run as the master's own user and
group: without CAP_SYS_PTRACE the kernel allows pidfd_getfd only then, and only
for a dumpable process. The socket stays the same object, so uWSGI's graceful
reloads (which inherit it) keep the new backlog.

--reuseport and --steer serve a TCP socket's move to a new holder (the role's
beside layout): the first lets another socket of this user bind the port beside
it (SO_REUSEPORT), the second sends every new connection of the port's reuseport
group to its INDEX-th socket (a one-instruction classic BPF program,
SO_ATTACH_REUSEPORT_CBPF; 0 is this socket, 1 the one that joined it).

Prints one JSON line: {"ok": true, "fd": ..., "backlog": N, "inode": ...} and exits 0, or
{"ok": false, "reason": REASON, "detail": ...} and exits 3, where REASON is
no_pidfd_getfd, permission, not_found, not_running or error.
Part of the backlogops.uwsgi Ansible role.
"""

import argparse
import ctypes
import errno
import json
import os
import socket
import struct
import sys
import time

SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438  # the same number on every architecture Linux shares syscall tables for
SO_ATTACH_REUSEPORT_CBPF = 51
BPF_RET_K = 0x06


def result(ok, **fields):
    print(json.dumps(dict(ok=ok, **fields)))
    return 0 if ok else 3


def fail(reason, detail):
    return result(False, reason=reason, detail=detail)


def pidfd_getfd(libc, pidfd, fd):
    ctypes.set_errno(0)
    dup = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if dup < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return dup


def matches(sock, wanted):
    """Whether a socket we hold a copy of is the LISTEN socket named `wanted`."""
    try:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return False
        name = sock.getsockname()
    except OSError:
        return False
    if wanted.startswith("/"):
        # A pool moved in over a served path keeps the name it bound (module_utils/uwsgi_host.STAGED_SUFFIX).
        return sock.family == socket.AF_UNIX and name in (wanted, wanted.encode(), wanted + ".new",
                                                          (wanted + ".new").encode())
    host, _, port = wanted.rpartition(":")
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or name[1] != int(port):
        return False
    return host in ("", "*", "0.0.0.0", "[::]") or name[0] in addresses(host)


def addresses(host):
    """The addresses a socket's host part binds, as the kernel names them: an
    IPv6 literal without its brackets, a name (localhost) resolved."""
    host = host.strip("[]")
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return {host}
    return {host} | {info[4][0] for info in found}


def steer(sock, index):
    """Attach `ret INDEX` as the reuseport group's program: struct sock_filter
    {u16 code; u8 jt, jf; u32 k}, in struct sock_fprog {u16 len; filter *}."""
    insn = ctypes.create_string_buffer(struct.pack("HBBI", BPF_RET_K, 0, 0, index), 8)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, struct.pack("HxxxxxxP", 1, ctypes.addressof(insn)))


def act(sock, args):
    """Do what the arguments ask of the socket found; the fields of the result."""
    if args.reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    elif args.steer is not None and args.when_joined:
        # The group is made when another socket joins the port: until then the kernel says EINVAL.
        # Trying without pause keeps the moment the newcomer takes connections to microseconds.
        deadline = time.monotonic() + args.when_joined
        while True:
            try:
                steer(sock, args.steer)
                break
            except OSError as exc:
                if exc.errno != errno.EINVAL or time.monotonic() > deadline:
                    raise
                time.sleep(0)
    elif args.steer is not None:
        steer(sock, args.steer)
    elif not args.check:
        sock.listen(args.backlog)
    return {"backlog": args.backlog, "checked_only": args.check, "inode": os.fstat(sock.fileno()).st_ino}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--backlog", type=int)
    parser.add_argument("--check", action="store_true", help="find the socket only")
    parser.add_argument("--reuseport", action="store_true", help="let a socket of this user bind the port beside it")
    parser.add_argument("--steer", type=int, help="send the port's new connections to this socket of its group")
    parser.add_argument("--when-joined", type=float, default=0,
                        help="with --steer: wait up to this many seconds for another socket to join the port")
    args = parser.parse_args()
    if args.backlog is None and not (args.reuseport or args.steer is not None or args.check):
        parser.error("--backlog is required")
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        pidfd = os.pidfd_open(args.pid) if hasattr(os, "pidfd_open") else libc.syscall(SYS_PIDFD_OPEN, args.pid, 0)
        if pidfd < 0:
            raise OSError(ctypes.get_errno(), "pidfd_open")
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return fail("not_running", "no process %d" % args.pid)
        if exc.errno == errno.ENOSYS:
            return fail("no_pidfd_getfd", "this kernel has no pidfd_open (Linux 5.3+)")
        return fail("error", "pidfd_open(%d): %s" % (args.pid, exc))
    try:
        fds = sorted(int(fd) for fd in os.listdir("/proc/%d/fd" % args.pid))
    except OSError as exc:
        return fail("permission" if exc.errno in (errno.EACCES, errno.EPERM) else "error",
                    "cannot list /proc/%d/fd: %s" % (args.pid, exc))
    for fd in fds:
        try:
            target = os.readlink("/proc/%d/fd/%d" % (args.pid, fd))
        except OSError:
            continue
        if not target.startswith("socket:"):
            continue
        try:
            dup = pidfd_getfd(libc, pidfd, fd)
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                return fail("no_pidfd_getfd", "this kernel has no pidfd_getfd (Linux 5.6+)")
            if exc.errno in (errno.EPERM, errno.EACCES):
                return fail("permission", "pidfd_getfd on pid %d: %s (another user, or not dumpable)"
                            % (args.pid, exc.strerror))
            continue
        sock = socket.socket(fileno=dup)
        try:
            if not matches(sock, args.socket):
                continue
            try:
                return result(True, fd=fd, **act(sock, args))
            except OSError as exc:
                return fail("error", "%s: %s" % (args.socket, exc))
        finally:
            sock.close()  # our copy only: the master's socket stays open and listening
    return fail("not_found", "pid %d holds no listening socket %s" % (args.pid, args.socket))


if __name__ == "__main__":
    sys.exit(main())
