#!/usr/bin/env python3
"""Capture the kernel's sock_diag replies that test_sampler.py decodes.

    python3 tests/unit/capture_netlink.py

Runs itself again in a new, empty network namespace (`unshare --net`, as root;
other users get `--map-root-user` too), so the dumps hold only the sockets made
here: unix and abstract sockets bind the same fixed names (under
/tmp/uwsgi-sampler-capture) and TCP sockets the same ports on every run. Each
listening socket gets a known backlog and a known number of connections
connected but not accepted. The requests are the sampler's own (its netlink
codec, files/uwsgi_netlink.py); each reply is saved as its datagrams end to
end in tests/unit/netlink/NAME.bin, and captures.json records the datagram
sizes and the kernel. Only dumps are sent: nothing on the machine is changed,
and the namespace goes away with the process.
"""

import importlib.util
import json
import os
import pathlib
import platform
import shutil
import socket
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "netlink"
ROOT = HERE.parents[1]
DIR = "/tmp/uwsgi-sampler-capture"
MARK = "UWSGI_SAMPLER_CAPTURE_NETNS"

# name, address, backlog, connections left pending
UNIX = [
    ("flaskapp", DIR + "/flaskapp.sock", 4096, 3),
    ("idle", DIR + "/idle.sock", 16, 0),
    ("abstract", "\0uwsgi-sampler-capture", 128, 1),
]
TCP4 = [
    ("flaskapi", ("127.0.0.1", 8001), 2048, 5),
    ("any", ("0.0.0.0", 9090), 511, 0),
]
TCP6 = [
    ("v6", ("::1", 8002), 1024, 2),
    ("v6any", ("::", 9091), 100, 0),
]
MANY = 200  # unix listeners for a dump of several datagrams


def load_codec():
    spec = importlib.util.spec_from_file_location("uwsgi_netlink", ROOT / "files" / "uwsgi_netlink.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dump(request):
    """Send one request; return the reply's datagrams up to NLMSG_DONE or NLMSG_ERROR."""
    codec = load_codec()
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, codec.NETLINK_SOCK_DIAG)
    sock.bind((0, 0))
    sock.sendto(request, (0, 0))
    datagrams = []
    while True:
        data = sock.recv(65536)
        datagrams.append(data)
        offset = 0
        while offset + 16 <= len(data):
            size, kind = codec.NLMSG_HDR.unpack_from(data, offset)[:2]
            if kind in (codec.NLMSG_DONE, codec.NLMSG_ERROR):
                sock.close()
                return datagrams
            offset += (size + 3) & ~3


def listen(family, address, backlog, pending, keep):
    server = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    server.bind(address)
    server.listen(backlog)
    keep.append(server)
    for _ in range(pending):
        client = socket.socket(family, socket.SOCK_STREAM)
        client.connect(address)
        keep.append(client)


def capture():
    codec = load_codec()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    shutil.rmtree(DIR, ignore_errors=True)
    os.makedirs(DIR + "/many")
    keep = []
    for _name, address, backlog, pending in UNIX:
        listen(socket.AF_UNIX, address, backlog, pending, keep)
    for _name, address, backlog, pending in TCP4:
        listen(socket.AF_INET, address, backlog, pending, keep)
    for _name, address, backlog, pending in TCP6:
        listen(socket.AF_INET6, address, backlog, pending, keep)
    replies = {
        "unix": ("unix", codec.encode_unix_dump(1)),
        "tcp4": ("inet", codec.encode_inet_dump(2, socket.AF_INET)),
        "tcp6": ("inet", codec.encode_inet_dump(3, socket.AF_INET6)),
    }
    captured = {name: dump(request) for name, (_kind, request) in replies.items()}
    for index in range(MANY):
        listen(socket.AF_UNIX, "%s/many/%03d.sock" % (DIR, index), 64, 0, keep)
    captured["unix-many"] = dump(codec.encode_unix_dump(4))
    replies["unix-many"] = ("unix", None)
    # A family with no sock_diag handler: the kernel answers NLMSG_ERROR (ENOENT).
    request = bytearray(codec.encode_unix_dump(5))
    request[16] = socket.AF_APPLETALK
    captured["error-enoent"] = dump(bytes(request))
    replies["error-enoent"] = ("error", None)
    OUT.mkdir(exist_ok=True)
    manifest = {
        "kernel": platform.release(),
        "made_by": "tests/unit/capture_netlink.py",
        "sockets": {"unix": UNIX, "tcp4": TCP4, "tcp6": TCP6, "unix-many": MANY},
        "files": {},
    }
    for name, datagrams in captured.items():
        (OUT / (name + ".bin")).write_bytes(b"".join(datagrams))
        manifest["files"][name + ".bin"] = {"kind": replies[name][0], "datagrams": [len(d) for d in datagrams]}
    (OUT / "captures.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(DIR, ignore_errors=True)
    for sock in keep:
        sock.close()
    print("wrote %s: %s" % (OUT, ", ".join("%s (%d datagrams)" % (n, len(d)) for n, d in captured.items())))


def main():
    if os.environ.get(MARK) == "1":
        capture()
        return 0
    command = ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    env = dict(os.environ, **{MARK: "1"})
    return subprocess.run(command + [sys.executable, __file__], env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
