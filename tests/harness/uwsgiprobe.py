#!/usr/bin/env python3
"""Talk to a uWSGI socket the way a front-end does, and measure its backlog.

  uwsgiprobe.py request ADDRESS [PATH] [--protocol uwsgi|http]
      One request; prints the status line and body; exit 0 on HTTP 200.
  uwsgiprobe.py burst ADDRESS N [--busy K] [--hold S]
      Occupy K workers with /slow?t=S requests, then open N non-blocking
      connects to the unix socket at ADDRESS while they are busy. Prints JSON
      {"attempted", "queued", "refused"}. Bounded: N <= 65536, S <= 30 s.

ADDRESS is an absolute unix socket path or host:port. Only the standard
library is used, so the script runs on a bare Debian host.
"""

import argparse
import errno
import json
import resource
import socket
import struct
import sys
import time


def connect(address, timeout=10.0):
    if address.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = address
    else:
        host, port = address.rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host or "127.0.0.1", int(port))
    sock.settimeout(timeout)
    sock.connect(target)
    return sock


def uwsgi_packet(path, host="localhost"):
    path_info, _, query = path.partition("?")
    env = {
        "REQUEST_METHOD": "GET",
        "REQUEST_URI": path,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SERVER_NAME": host,
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": host,
    }
    body = b"".join(
        struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode()
        for k, v in env.items()
    )
    return struct.pack("<BHB", 0, len(body), 0) + body


def http_packet(path, host="localhost"):
    return f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()


def send_request(address, path, protocol="uwsgi", timeout=10.0):
    sock = connect(address, timeout)
    with sock:
        sock.sendall(uwsgi_packet(path) if protocol == "uwsgi" else http_packet(path))
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def cmd_request(args):
    response = send_request(args.address, args.path, args.protocol)
    head, _, body = response.partition("\r\n\r\n")
    status = head.splitlines()[0] if head else ""
    print(status)
    print(body, end="")
    return 0 if " 200 " in status + " " else 1


def cmd_burst(args):
    if not args.address.startswith("/"):
        sys.exit("burst needs a unix socket path")
    n = min(args.n, 65536)
    hold = min(args.hold, 30.0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + args.busy + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    busy = []
    for _ in range(args.busy):
        sock = connect(args.address)
        sock.sendall(uwsgi_packet(f"/slow?t={hold}"))
        busy.append(sock)
    time.sleep(min(1.0, hold / 2))  # let every worker accept its slow request
    queued = refused = 0
    errors = {}
    burst = []
    started = time.monotonic()
    for _ in range(n):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(args.address)
            queued += 1
            burst.append(sock)
        except OSError as exc:
            refused += 1
            name = errno.errorcode.get(exc.errno, str(exc.errno))
            errors[name] = errors.get(name, 0) + 1
            sock.close()
    elapsed = time.monotonic() - started
    for sock in burst:
        sock.close()
    for sock in busy:
        sock.close()
    print(json.dumps({
        "attempted": n, "queued": queued, "refused": refused,
        "errors": errors, "busy": args.busy, "seconds": round(elapsed, 3),
    }))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    req = sub.add_parser("request")
    req.add_argument("address")
    req.add_argument("path", nargs="?", default="/")
    req.add_argument("--protocol", choices=["uwsgi", "http"], default="uwsgi")
    req.set_defaults(func=cmd_request)
    bur = sub.add_parser("burst")
    bur.add_argument("address")
    bur.add_argument("n", type=int)
    bur.add_argument("--busy", type=int, default=2)
    bur.add_argument("--hold", type=float, default=3.0)
    bur.set_defaults(func=cmd_burst)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
