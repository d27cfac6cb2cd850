"""The listen-queue sampler (files/uwsgi_sampler.py) and its netlink codec
(files/uwsgi_netlink.py): the kernel's sock_diag replies as captured on a real
kernel (tests/unit/netlink, made by capture_netlink.py), the sampler's state,
output and failures, and live runs against real sockets on this machine."""

import errno
import json
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import ROOT, load

# The codec first: the sampler imports it by name, as it does from its own directory on the host.
n = load("uwsgi_netlink", "files/uwsgi_netlink.py")
s = load("uwsgi_sampler", "files/uwsgi_sampler.py")

SCRIPT = ROOT / "files" / "uwsgi_sampler.py"
NETLINK = pathlib.Path(__file__).resolve().parent / "netlink"
MANIFEST = json.loads((NETLINK / "captures.json").read_text())
CAPTURED = "/tmp/uwsgi-sampler-capture"
NLM_F_MULTI = 0x2


def reply(name):
    return (NETLINK / (name + ".bin")).read_bytes()


def datagrams(name):
    data, parts, offset = reply(name), [], 0
    for size in MANIFEST["files"][name + ".bin"]["datagrams"]:
        parts.append(data[offset:offset + size])
        offset += size
    assert offset == len(data)
    return parts


def with_seq(data, seq):
    """The same netlink messages with another sequence number."""
    data, offset = bytearray(data), 0
    while offset < len(data):
        size = n.NLMSG_HDR.unpack_from(data, offset)[0]
        struct.pack_into("=I", data, offset + 8, seq)
        offset += (size + 3) & ~3
    return bytes(data)


# Synthetic records, for the sampler's state: the decoding itself is tested on the captures.
def nla(kind, data):
    size = 4 + len(data)
    return struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)


def message(kind, body, seq=0, flags=NLM_F_MULTI):
    return n.NLMSG_HDR.pack(16 + len(body), kind, flags, seq, 0) + body


def unix_record(name, rqueue, wqueue, inode=1):
    raw = b"\0" + name[1:].encode() if name.startswith("@") else name.encode() + b"\0"
    body = n.UNIX_DIAG_MSG.pack(socket.AF_UNIX, socket.SOCK_STREAM, n.TCP_LISTEN, 0, inode, 0, 0)
    return message(n.SOCK_DIAG_BY_FAMILY, body + nla(n.UNIX_DIAG_NAME, raw) + nla(n.UNIX_DIAG_RQLEN, struct.pack("=II", rqueue, wqueue)))


def done(status=0, seq=0):
    return message(n.NLMSG_DONE, struct.pack("=i", status), seq)


def unix_dump(*records):
    return b"".join(unix_record(*record) for record in records) + done()


class FakeNetlink:
    """Stands in for DiagSocket: answers each family's dump with bytes (or raises)."""

    def __init__(self, replies=None):
        self.replies = dict(replies or {})
        self.dumps = []

    def dump(self, family, handler):
        self.dumps.append(family)
        answer = self.replies.get(family, done())
        if isinstance(answer, BaseException):
            raise answer
        assert n.scan_dump(answer, len(answer), None, handler), "no NLMSG_DONE"

    def close(self):
        pass


class Clock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


def config(apps, **keys):
    keys.setdefault("output", "/nonexistent/uwsgi.prom")
    return s.parse_config(dict(apps=[{"name": name, "socket": sock} for name, sock in apps], **keys))


def sampler(apps, replies=None, **keys):
    logs = []
    # The socket paths named here are not on this machine: what is bound there is unknown.
    result = s.Sampler(config(apps, **keys), netlink=FakeNetlink(replies), log=logs.append, clock=Clock(),
                       wall=lambda: 1700000000.25, bound=lambda path: None)
    return result, logs


def parse_text(text):
    """{(metric, ((label, value), ...)): value} from exposition text, without prometheus_client."""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        pairs = tuple(tuple(part.split("=", 1)) for part in labels.rstrip("}").split(",") if part)
        values[(name, tuple((k, v.strip('"')) for k, v in pairs))] = float(value)
    return values


def app_value(values, metric, app):
    found = [value for (name, labels), value in values.items() if name == metric and ("app", app) in labels]
    return found[0] if found else None


# --- the captured replies ----------------------------------------------------


def test_captures_were_made_by_the_capture_script_on_a_real_kernel():
    assert MANIFEST["made_by"] == "tests/unit/capture_netlink.py"
    assert MANIFEST["kernel"]
    assert len(MANIFEST["files"]["unix-many.bin"]["datagrams"]) > 2


def test_unix_dump_gives_each_listener_its_name_queue_and_backlog():
    dump = n.decode_dump(reply("unix"), "unix")
    assert dump["done"] is True
    by_name = {record["name"]: record for record in dump["records"]}
    assert sorted(by_name) == [CAPTURED + "/flaskapp.sock", CAPTURED + "/idle.sock", "@uwsgi-sampler-capture"]
    app = by_name[CAPTURED + "/flaskapp.sock"]
    assert (app["family"], app["type"], app["state"]) == (socket.AF_UNIX, socket.SOCK_STREAM, n.TCP_LISTEN)
    assert (app["rqueue"], app["wqueue"]) == (3, 4096)
    assert app["raw_name"].rstrip(b"\0") == (CAPTURED + "/flaskapp.sock").encode()
    assert (by_name[CAPTURED + "/idle.sock"]["rqueue"], by_name[CAPTURED + "/idle.sock"]["wqueue"]) == (0, 16)
    abstract = by_name["@uwsgi-sampler-capture"]
    assert abstract["raw_name"] == b"\0uwsgi-sampler-capture"
    assert (abstract["rqueue"], abstract["wqueue"]) == (1, 128)


def test_tcp4_dump_gives_address_port_accept_queue_and_backlog():
    dump = n.decode_dump(reply("tcp4"), "inet")
    assert dump["done"] is True
    by_port = {record["sport"]: record for record in dump["records"]}
    assert sorted(by_port) == [8001, 9090]
    api = by_port[8001]
    assert (api["family"], api["state"], api["src"], api["rqueue"], api["wqueue"]) == (socket.AF_INET, n.TCP_LISTEN, "127.0.0.1", 5, 2048)
    assert (by_port[9090]["src"], by_port[9090]["rqueue"], by_port[9090]["wqueue"]) == ("0.0.0.0", 0, 511)


def test_tcp6_dump_gives_address_port_accept_queue_and_backlog():
    by_port = {record["sport"]: record for record in n.decode_dump(reply("tcp6"), "inet")["records"]}
    assert sorted(by_port) == [8002, 9091]
    assert (by_port[8002]["family"], by_port[8002]["src"], by_port[8002]["rqueue"], by_port[8002]["wqueue"]) == (socket.AF_INET6, "::1", 2, 1024)
    assert (by_port[9091]["src"], by_port[9091]["rqueue"], by_port[9091]["wqueue"]) == ("::", 0, 100)


def test_error_reply_raises_with_the_kernels_errno():
    with pytest.raises(n.NetlinkError) as caught:
        n.decode_dump(reply("error-enoent"), "unix")
    assert caught.value.errno == errno.ENOENT


def test_dump_that_ends_with_an_error_status_raises():
    with pytest.raises(n.NetlinkError) as caught:
        n.decode_dump(unix_record("/a.sock", 0, 1) + done(-errno.EINTR), "unix")
    assert caught.value.errno == errno.EINTR


def test_malformed_message_raises():
    data = bytearray(reply("tcp4"))
    struct.pack_into("=I", data, 0, len(data) + 4)  # longer than what arrived
    with pytest.raises(n.NetlinkError) as caught:
        n.decode_dump(bytes(data), "inet")
    assert caught.value.errno == errno.EBADMSG


def test_requests_ask_for_listeners_only_with_names_and_queue_lengths():
    unix = n.encode_unix_dump(7)
    assert n.NLMSG_HDR.unpack_from(unix) == (40, n.SOCK_DIAG_BY_FAMILY, n.NLM_F_REQUEST | n.NLM_F_DUMP, 7, 0)
    family, protocol, _pad, states, _ino, show, _c0, _c1 = n.UNIX_DIAG_REQ.unpack_from(unix, 16)
    assert (family, protocol, states, show) == (socket.AF_UNIX, 0, 1 << 10,
                                              n.UDIAG_SHOW_NAME | n.UDIAG_SHOW_VFS | n.UDIAG_SHOW_RQLEN)
    inet = n.encode_inet_dump(9, socket.AF_INET6)
    assert n.NLMSG_HDR.unpack_from(inet) == (72, n.SOCK_DIAG_BY_FAMILY, n.NLM_F_REQUEST | n.NLM_F_DUMP, 9, 0)
    assert struct.unpack_from("=BBBBI", inet, 16) == (socket.AF_INET6, socket.IPPROTO_TCP, 0, 0, 1 << 10)
    assert inet[24:] == bytes(48)


class FakeSocket:
    """A netlink socket that answers with given datagrams, as recv_into(..., MSG_TRUNC) would."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.sent = []
        self.closed = False

    def send(self, data):
        self.sent.append(bytes(data))

    def recv_into(self, buffer, nbytes, flags):
        data = self.answers.pop(0)
        assert flags & socket.MSG_TRUNC
        size = min(len(data), len(buffer))
        buffer[:size] = data[:size]
        return len(data)

    def close(self):
        self.closed = True


def diag_socket(answers, seq):
    diag = n.DiagSocket()
    diag.sock = FakeSocket(answers)
    diag.seq = seq - 1
    return diag


def test_multi_part_dump_is_read_datagram_by_datagram_to_done():
    parts = datagrams("unix-many")
    diag = diag_socket([with_seq(part, 4) for part in parts], 4)
    names = []
    diag.dump(socket.AF_UNIX, lambda data, start, end: names.append(n.unix_fields(data, start, end)[1]))
    assert not diag.sock.answers  # every datagram read, none after NLMSG_DONE
    assert len(names) == 203
    assert {name.rstrip(b"\0") for name in names} >= {("%s/many/%03d.sock" % (CAPTURED, i)).encode() for i in range(200)}
    assert n.NLMSG_HDR.unpack_from(diag.sock.sent[0])[3] == 4


def test_messages_left_from_an_earlier_dump_are_skipped():
    stale = with_seq(reply("tcp4"), 3)
    diag = diag_socket([stale] + [with_seq(part, 4) for part in datagrams("tcp4")], 4)
    ports = []
    diag.dump(socket.AF_INET, lambda data, start, end: ports.append(n.PORT.unpack_from(data, start + 4)[0]))
    assert ports == [8001, 9090]


def test_truncated_datagram_and_error_close_the_socket_for_a_fresh_one():
    diag = diag_socket([b"\0" * (n.RECV_BUFFER + 1)], 1)
    fake = diag.sock
    with pytest.raises(n.NetlinkError) as caught:
        diag.dump(socket.AF_UNIX, lambda *record: None)
    assert caught.value.errno == errno.EMSGSIZE
    assert fake.closed and diag.sock is None
    diag = diag_socket([with_seq(reply("error-enoent"), 1)], 1)
    fake = diag.sock
    with pytest.raises(n.NetlinkError):
        diag.dump(socket.AF_UNIX, lambda *record: None)
    assert fake.closed and diag.sock is None


def test_real_kernel_dump_finds_a_listener_made_here():
    directory = tempfile.mkdtemp(prefix="sampler-", dir="/tmp")
    path = directory + "/k.sock"
    server = socket.socket(socket.AF_UNIX)
    clients = []
    diag = n.DiagSocket()
    try:
        server.bind(path)
        server.listen(77)
        for _ in range(2):
            client = socket.socket(socket.AF_UNIX)
            client.connect(path)
            clients.append(client)
        for _ in range(2):  # the socket is kept and reused
            found = []
            diag.dump(socket.AF_UNIX, lambda data, start, end, found=found: found.append(n.unix_fields(data, start, end)))
            mine = [(rqueue, wqueue) for _state, name, rqueue, wqueue, _ino in found if name == path.encode() + b"\0"]
            assert mine == [(2, 77)]
        assert diag.sock is not None
    finally:
        diag.close()
        for sock in clients + [server]:
            sock.close()
        shutil.rmtree(directory)


# --- sockets named in the config, and matching them --------------------------


@pytest.mark.parametrize("text, kind, port, family, address", [
    ("/run/uwsgi/flaskapp.sock", "unix", None, None, None),
    ("@uwsgi-flaskapp", "unix", None, None, None),
    ("127.0.0.1:8001", "tcp", 8001, socket.AF_INET, "127.0.0.1"),
    ("localhost:8001", "tcp", 8001, socket.AF_INET, "127.0.0.1"),
    (":9090", "tcp", 9090, None, None),
    ("*:9090", "tcp", 9090, None, None),
    ("0.0.0.0:9090", "tcp", 9090, None, None),
    ("[::]:9090", "tcp", 9090, None, None),
    ("[::1]:8002", "tcp", 8002, socket.AF_INET6, "::1"),
    ("[fe80::1]:65535", "tcp", 65535, socket.AF_INET6, "fe80::1"),
])
def test_socket_forms(text, kind, port, family, address):
    target = s.parse_socket(text)
    assert (target.kind, target.port, target.family) == (kind, port, family)
    if address:
        assert socket.inet_ntop(family, target.address) == address
    else:
        assert target.address is None


@pytest.mark.parametrize("text", [
    "", "relative.sock", "127.0.0.1", "127.0.0.1:", ":0", ":65536", ":http", "example.com:80",
    "::1:8002", "[::1:8002", "[127.0.0.1]:80", "/" + "x" * 108, "@", 8001, None,
])
def test_bad_socket_forms(text):
    with pytest.raises(ValueError):
        s.parse_socket(text)


def test_sockets_match_by_path_name_address_and_port():
    apps = [
        ("flaskapp", CAPTURED + "/flaskapp.sock"),
        ("abstract", "@uwsgi-sampler-capture"),
        ("api", "127.0.0.1:8001"),
        ("api-localhost", "localhost:8001"),
        ("any", ":9090"),
        ("any-v4", "0.0.0.0:9090"),
        ("any-star", "*:9090"),
        ("v6", "[::1]:8002"),
        ("v6any", "[::]:9091"),
        ("any-on-v6", ":9091"),
        # not listening as named:
        ("other-address", "127.0.0.1:9090"),
        ("other-family", "[::1]:8001"),
        ("any-but-bound-to-one", ":8001"),
        ("gone", CAPTURED + "/gone.sock"),
        ("other-port", "127.0.0.1:8003"),
    ]
    smp, logs = sampler(apps, {socket.AF_UNIX: reply("unix"), socket.AF_INET: reply("tcp4"), socket.AF_INET6: reply("tcp6")})
    assert smp.sample() is True
    state = {app.name: (app.up, app.queue, app.backlog) for app in smp.apps}
    assert state == {
        "flaskapp": (True, 3, 4096),
        "abstract": (True, 1, 128),
        "api": (True, 5, 2048),
        "api-localhost": (True, 5, 2048),
        "any": (True, 0, 511),
        "any-v4": (True, 0, 511),
        "any-star": (True, 0, 511),
        "v6": (True, 2, 1024),
        "v6any": (True, 0, 100),
        "any-on-v6": (True, 0, 100),
        "other-address": (False, None, None),
        "other-family": (False, None, None),
        "any-but-bound-to-one": (False, None, None),
        "gone": (False, None, None),
        "other-port": (False, None, None),
    }
    assert smp.netlink.dumps == [socket.AF_UNIX, socket.AF_INET, socket.AF_INET6]  # one dump per family per sample
    assert "app flaskapp: socket %s/flaskapp.sock listening, queue 3, backlog 4096" % CAPTURED in logs


def test_only_the_families_the_apps_use_are_dumped():
    smp, _ = sampler([("a", "/run/a.sock"), ("b", "127.0.0.1:80")])
    smp.sample()
    assert smp.netlink.dumps == [socket.AF_UNIX, socket.AF_INET]


def test_listeners_sharing_a_port_add_up():
    two = b"".join(message(n.SOCK_DIAG_BY_FAMILY, reply_record) for reply_record in [
        struct.pack("=BBBB", socket.AF_INET, n.TCP_LISTEN, 0, 0) + struct.pack("!HH", 80, 0) + bytes(44) + struct.pack("=IIIII", 0, 3, 128, 0, 1),
        struct.pack("=BBBB", socket.AF_INET, n.TCP_LISTEN, 0, 0) + struct.pack("!HH", 80, 0) + bytes(44) + struct.pack("=IIIII", 0, 4, 128, 0, 2),
    ]) + done()
    smp, _ = sampler([("web", ":80")], {socket.AF_INET: two})
    smp.sample()
    assert (smp.apps[0].queue, smp.apps[0].backlog) == (7, 256)  # SO_REUSEPORT: one queue per listener


# --- peak, alerts, state changes ---------------------------------------------


def test_peak_is_the_highest_value_in_the_sliding_window():
    peak = s.Peak(15)
    assert peak.value(0) is None
    for now, value in [(0, 5), (1, 9), (2, 3), (3, 4)]:
        peak.push(now, value)
    assert peak.value(3) == 9
    assert peak.value(15.9) == 9  # pushed at 1: in (0.9, 15.9]
    assert peak.value(16) == 4  # 9 left the window at 16; 3 (at 2) < 4 (at 3)
    assert peak.value(18) is None
    peak.push(20, 0)
    assert peak.value(20) == 0
    assert len(peak.entries) == 1


def test_peak_memory_stays_bounded_by_the_window():
    peak = s.Peak(15)
    for tick in range(10000):
        peak.push(tick / 10.0, tick % 7)
    assert len(peak.entries) <= 151


def test_sampler_keeps_queue_peak_and_backlog_per_app():
    smp, _ = sampler([("a", "/run/a.sock")], window=2, interval=0.5)
    clock = smp.clock
    for queue in (10, 40, 5):
        smp.netlink.replies[socket.AF_UNIX] = unix_dump(("/run/a.sock", queue, 100))
        smp.sample()
        clock.now += 0.5
    values = parse_text(smp.render())
    assert app_value(values, "uwsgi_listen_queue_length", "a") == 5
    assert app_value(values, "uwsgi_listen_queue_peak_length", "a") == 40
    assert app_value(values, "uwsgi_listen_backlog", "a") == 100
    clock.now += 1.0  # 40 was sampled 2 s ago: out of the window
    assert app_value(parse_text(smp.render()), "uwsgi_listen_queue_peak_length", "a") == 5


def alert_run(steps, backlog=100):
    """Feed (seconds from start, queue) steps; return (seconds, log line) of the alert lines."""
    smp, logs = sampler([("app", "/run/app.sock")], alert_ratio=0.9)
    start = smp.clock.now
    seen = []
    for at, queue in steps:
        smp.clock.now = start + at
        smp.netlink.replies[socket.AF_UNIX] = unix_dump(("/run/app.sock", queue, backlog))
        before = len(logs)
        smp.sample()
        seen.extend((at, line) for line in logs[before:] if line.startswith("ALERT"))
    return seen


def test_alert_once_when_the_queue_reaches_the_ratio():
    seen = alert_run([(0, 10), (0.1, 89), (0.2, 90), (0.3, 99), (0.4, 100), (0.5, 95)])
    assert [at for at, _ in seen] == [0.2]
    assert seen[0][1] == "ALERT app app: listen queue 90 of backlog 100 (90%, alert_ratio 0.9) reached on /run/app.sock"


def test_alert_repeats_at_most_every_10_s_while_high():
    seen = alert_run([(tick / 10.0, 95) for tick in range(0, 301)])
    assert [at for at, _ in seen] == [0.0, 10.0, 20.0, 30.0]
    assert "still at or above" in seen[1][1]


def test_alert_again_after_falling_below_and_crossing_again():
    seen = alert_run([(0, 95), (1, 10), (12, 10), (13, 96), (13.1, 97)])
    assert [at for at, _ in seen] == [0, 13]
    assert seen[1][1].endswith("reached on /run/app.sock")


def test_flapping_around_the_ratio_logs_at_most_once_per_10_s():
    steps = [(tick / 10.0, 10 if tick % 2 else 95) for tick in range(0, 250)]
    assert [at for at, _ in alert_run(steps)] == [0.0, 10.0, 20.0]


def test_no_alert_for_an_empty_queue_or_a_zero_backlog():
    assert alert_run([(0, 0)], backlog=0) == []
    assert alert_run([(0, 0), (1, 1)], backlog=1) == [(1, "ALERT app app: listen queue 1 of backlog 1 (100%, alert_ratio 0.9) reached on /run/app.sock")]


def test_missing_socket_is_up_0_and_logged_once_per_change():
    smp, logs = sampler([("app", "/run/app.sock"), ("other", "/run/other.sock")])
    smp.netlink.replies[socket.AF_UNIX] = unix_dump(("/run/other.sock", 0, 10))
    smp.sample()
    smp.sample()
    values = parse_text(smp.render())
    assert app_value(values, "uwsgi_listen_socket_up", "app") == 0
    assert app_value(values, "uwsgi_listen_queue_length", "app") is None
    assert app_value(values, "uwsgi_listen_backlog", "app") is None
    assert app_value(values, "uwsgi_listen_socket_up", "other") == 1
    assert [line for line in logs if "app app" in line] == ["app app: socket /run/app.sock not found listening"]
    smp.netlink.replies[socket.AF_UNIX] = unix_dump(("/run/app.sock", 2, 10))
    smp.sample()
    smp.sample()
    smp.netlink.replies[socket.AF_UNIX] = done()
    smp.sample()
    assert [line for line in logs if "app app" in line] == [
        "app app: socket /run/app.sock not found listening",
        "app app: socket /run/app.sock listening, queue 2, backlog 10",
        "app app: socket /run/app.sock not found listening",
    ]
    values = parse_text(smp.render())
    assert app_value(values, "uwsgi_listen_socket_up", "app") == 0
    assert app_value(values, "uwsgi_listen_queue_peak_length", "app") == 2  # the burst before it went stays in the window


def test_backlog_change_is_logged():
    smp, logs = sampler([("app", "/run/app.sock")])
    for backlog in (128, 128, 4096):
        smp.netlink.replies[socket.AF_UNIX] = unix_dump(("/run/app.sock", 0, backlog))
        smp.sample()
    assert logs[-1] == "app app: socket /run/app.sock backlog 128 -> 4096"
    assert len(logs) == 2


def test_netlink_error_is_counted_logged_once_and_keeps_the_last_values():
    smp, logs = sampler([("app", "/run/app.sock")])
    smp.netlink.replies[socket.AF_UNIX] = unix_dump(("/run/app.sock", 4, 10))
    assert smp.sample() is True
    smp.netlink.replies[socket.AF_UNIX] = OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))
    assert smp.sample() is False
    assert smp.sample() is False
    assert smp.errors["netlink"] == 2 and smp.samples == 1
    assert (smp.apps[0].up, smp.apps[0].queue) == (True, 4)
    assert logs[-1].startswith("error (netlink): sock_diag dump: No buffer space available")
    smp.netlink.replies[socket.AF_UNIX] = unix_dump(("/run/app.sock", 1, 10))
    assert smp.sample() is True
    assert logs[-1] == "recovered (netlink) after 2 errors"
    assert len([line for line in logs if line.startswith("error")]) == 1


# --- the exposition --------------------------------------------------------


def rendered_sampler():
    smp, _ = sampler([("flaskapp", "/run/uwsgi/flaskapp.sock"), ("flaskapi", "127.0.0.1:8001"), ('we"ird\\app\nname', "/run/uwsgi/weird.sock")])
    smp.netlink.replies[socket.AF_UNIX] = unix_dump(("/run/uwsgi/flaskapp.sock", 7, 4096))
    smp.netlink.replies[socket.AF_INET] = reply("tcp4")
    smp.sample()
    return smp


def test_exposition_parses_with_prometheus_client():
    parser = pytest.importorskip("prometheus_client.parser")
    smp = rendered_sampler()
    text = smp.render()
    families = {family.name: family for family in parser.text_string_to_metric_families(text)}
    types = {name: family.type for name, family in families.items()}
    assert types == {
        "uwsgi_listen_queue_length": "gauge",
        "uwsgi_listen_queue_peak_length": "gauge",
        "uwsgi_listen_backlog": "gauge",
        "uwsgi_listen_socket_up": "gauge",
        "uwsgi_sampler_tcp_listen_overflows": "counter",  # the parser drops a counter's _total from the family name
        "uwsgi_sampler_tcp_listen_drops": "counter",
        "uwsgi_sampler_samples": "counter",
        "uwsgi_sampler_errors": "counter",
        "uwsgi_sampler_last_sample_timestamp_seconds": "gauge",
    }
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for family in families.values() for sample in family.samples}
    app = (("app", "flaskapp"), ("socket", "/run/uwsgi/flaskapp.sock"))
    api = (("app", "flaskapi"), ("socket", "127.0.0.1:8001"))
    weird = (("app", 'we"ird\\app\nname'), ("socket", "/run/uwsgi/weird.sock"))
    assert samples[("uwsgi_listen_queue_length", app)] == 7
    assert samples[("uwsgi_listen_queue_peak_length", app)] == 7
    assert samples[("uwsgi_listen_backlog", app)] == 4096
    assert samples[("uwsgi_listen_socket_up", app)] == 1
    assert samples[("uwsgi_listen_queue_length", api)] == 5
    assert samples[("uwsgi_listen_backlog", api)] == 2048
    assert samples[("uwsgi_listen_socket_up", weird)] == 0
    assert ("uwsgi_listen_queue_length", weird) not in samples
    assert samples[("uwsgi_sampler_samples_total", ())] == 1
    assert samples[("uwsgi_sampler_errors_total", (("kind", "netlink"),))] == 0
    assert samples[("uwsgi_sampler_last_sample_timestamp_seconds", ())] == 1700000000.25
    assert samples[("uwsgi_sampler_tcp_listen_overflows_total", ())] >= 0
    assert all(family.documentation for family in families.values())


def test_exposition_is_conventional():
    text = rendered_sampler().render()
    assert text.endswith("\n")
    declared = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            declared[name] = kind
            assert name.endswith("_total") == (kind == "counter")
            assert "# HELP %s " % name in text
        elif not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            assert name in declared, "sample before its TYPE: " + line
    series = [line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    assert len(series) == len(set(series))
    assert 'app="we\\"ird\\\\app\\nname"' in text


def test_netstat_counters_are_read_from_the_namespace(tmp_path):
    netstat = tmp_path / "netstat"
    netstat.write_text("TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts\nTcpExt: 0 17 19 3\nIpExt: InOctets\nIpExt: 42\n")
    assert s.parse_netstat(netstat.read_text()) == {"TcpExt": {"SyncookiesSent": 0, "ListenOverflows": 17, "ListenDrops": 19, "TCPTimeouts": 3}, "IpExt": {"InOctets": 42}}
    smp, logs = sampler([("a", "/run/a.sock")])
    smp.netstat = str(netstat)
    values = parse_text(smp.render())
    assert values[("uwsgi_sampler_tcp_listen_overflows_total", ())] == 17
    assert values[("uwsgi_sampler_tcp_listen_drops_total", ())] == 19
    smp.netstat = str(tmp_path / "missing")
    values = parse_text(smp.render())
    assert ("uwsgi_sampler_tcp_listen_overflows_total", ()) not in values
    assert values[("uwsgi_sampler_errors_total", (("kind", "netstat"),))] == 1
    assert "TcpExt" in s.parse_netstat(pathlib.Path("/proc/net/netstat").read_text())


# --- the metrics file --------------------------------------------------------


def test_atomic_write_makes_a_0644_file_whatever_the_umask(tmp_path):
    path = tmp_path / "uwsgi.prom"
    old = os.umask(0o077)
    try:
        s.write_atomic(str(path), b"a 1\n")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"a 1\n"
    assert path.stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["uwsgi.prom"]


def test_atomic_write_shows_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "uwsgi.prom"
    path.write_bytes(b"old 1\n")
    seen = []
    real_fsync = os.fsync

    def fsync(fd):
        # the new content is complete in the temp file, the target still the old one
        seen.append((path.read_bytes(), sorted(p.name for p in tmp_path.iterdir())))
        real_fsync(fd)

    monkeypatch.setattr(s.os, "fsync", fsync)
    s.write_atomic(str(path), b"new 2\n" * 1000)
    assert seen == [(b"old 1\n", [".uwsgi.prom.%d.tmp" % os.getpid(), "uwsgi.prom"])]
    assert path.read_bytes() == b"new 2\n" * 1000


def test_atomic_write_removes_its_temp_file_on_error(tmp_path, monkeypatch):
    path = tmp_path / "uwsgi.prom"
    path.write_bytes(b"old 1\n")

    def fsync(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(s.os, "fsync", fsync)
    with pytest.raises(OSError):
        s.write_atomic(str(path), b"new 2\n")
    assert path.read_bytes() == b"old 1\n"
    assert os.listdir(tmp_path) == ["uwsgi.prom"]
    monkeypatch.undo()
    target = tmp_path / "dir.prom"
    target.mkdir()
    (target / "x").write_text("")  # rename onto a non-empty directory fails
    with pytest.raises(OSError):
        s.write_atomic(str(target), b"new 2\n")
    assert sorted(os.listdir(tmp_path)) == ["dir.prom", "uwsgi.prom"]


def test_unwritable_output_is_counted_logged_once_and_recovers(tmp_path):
    output = tmp_path / "missing-dir" / "uwsgi.prom"
    smp, logs = sampler([("a", "/run/a.sock")], output=str(output))
    assert smp.write() is False
    assert smp.write() is False
    assert smp.errors["output"] == 2
    assert logs == ["error (output): cannot write %s: No such file or directory; counted in uwsgi_sampler_errors_total, retrying" % output]
    output.parent.mkdir()
    assert smp.write() is True
    assert logs[-1] == "recovered (output) after 2 errors"
    assert parse_text(output.read_text())[("uwsgi_sampler_errors_total", (("kind", "output"),))] == 2


def test_loop_keeps_sampling_through_output_and_netlink_errors(tmp_path):
    output = tmp_path / "missing-dir" / "uwsgi.prom"
    logs = []
    smp = s.Sampler(config([("a", "/run/a.sock")], output=str(output), interval=0.02),
                    netlink=FakeNetlink({socket.AF_UNIX: OSError(errno.EPERM, "Operation not permitted")}), log=logs.append)
    stop = s.Stop()
    try:
        s.run(smp, stop, duration=0.5, write_interval=0.1)
    finally:
        stop.close()
    assert smp.errors["netlink"] >= 10  # 25 ticks on an idle machine
    assert smp.errors["output"] >= 3
    assert len(logs) == 2  # one line per kind of error, not one per tick
    smp.netlink.replies[socket.AF_UNIX] = done()
    output.parent.mkdir()
    stop = s.Stop()
    try:
        s.run(smp, stop, duration=0.15, write_interval=0.1)
    finally:
        stop.close()
    assert output.exists()
    assert "recovered (netlink)" in logs[2] and "recovered (output)" in logs[4]


def test_loop_survives_a_bug_in_a_tick(monkeypatch):
    smp, logs = sampler([("a", "/run/a.sock")], interval=0.02)
    smp.clock = time.monotonic

    def broken(text=None):
        raise ValueError("boom")

    monkeypatch.setattr(smp, "write", broken)
    stop = s.Stop()
    try:
        s.run(smp, stop, duration=0.3, write_interval=0.05)
    finally:
        stop.close()
    assert smp.errors["internal"] >= 3
    assert smp.samples >= 5
    assert [line for line in logs if "internal" in line] == ["error (internal): ValueError: boom; counted in uwsgi_sampler_errors_total, retrying"]


def test_stop_wakes_the_loop_at_once():
    smp, _ = sampler([("a", "/run/a.sock")], interval=30, window=60)
    smp.clock = time.monotonic
    stop = s.Stop()
    timer = threading.Timer(0.2, stop.set)
    started = time.monotonic()
    timer.start()
    try:
        s.run(smp, stop)
    finally:
        timer.cancel()
        stop.close()
    assert time.monotonic() - started < 2


# --- the config ----------------------------------------------------------------


def test_config_defaults():
    parsed = s.parse_config({"apps": [{"name": "a", "socket": "/run/a.sock"}]})
    assert (parsed["interval"], parsed["window"], parsed["alert_ratio"], parsed["output"]) == (0.1, 15.0, 0.9, "/var/lib/prometheus/node-exporter/uwsgi.prom")
    assert s.parse_config({"apps": []})["apps"] == []


@pytest.mark.parametrize("conf, key", [
    ([], "'apps'"),
    ({}, "'apps' is missing"),
    ({"apps": {"name": "a"}}, "'apps'"),
    ({"apps": ["a"]}, "apps[0]"),
    ({"apps": [{"name": "a"}]}, "apps[0].socket"),
    ({"apps": [{"socket": "/a.sock"}]}, "apps[0].name"),
    ({"apps": [{"name": "", "socket": "/a.sock"}]}, "apps[0].name"),
    ({"apps": [{"name": "a", "socket": "/a.sock"}, {"name": "a", "socket": "/b.sock"}]}, "apps[1].name"),
    ({"apps": [{"name": "a", "socket": "/a.sock"}, {"name": "b", "socket": "b.sock"}]}, "apps[1].socket"),
    ({"apps": [{"name": "a", "socket": "/a.sock", "backlog": 5}]}, "apps[0].backlog"),
    ({"apps": [], "intreval": 1}, "'intreval'"),
    ({"apps": [], "interval": 0}, "'interval'"),
    ({"apps": [], "interval": "0.1"}, "'interval'"),
    ({"apps": [], "interval": True}, "'interval'"),
    ({"apps": [], "window": 0.05}, "'window'"),
    ({"apps": [], "alert_ratio": 1.5}, "'alert_ratio'"),
    ({"apps": [], "output": "uwsgi.prom"}, "'output'"),
    ({"apps": [], "output": "/var/lib/node-exporter/uwsgi.txt"}, "'output'"),
])
def test_bad_config_names_the_key_to_fix(conf, key):
    with pytest.raises(s.ConfigError) as caught:
        s.parse_config(conf)
    assert key in str(caught.value)


def run_script(*args, timeout=20):
    return subprocess.run([sys.executable, str(SCRIPT)] + [str(arg) for arg in args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("content, words", [
    (None, "cannot read it: No such file or directory"),
    ("{not json", "not valid JSON"),
    ('{"apps": [{"name": "a", "socket": "127.0.0.1"}]}', "key 'apps[0].socket'"),
    ('{"apps": [], "output": "/tmp/uwsgi.txt"}', "key 'output'"),
])
def test_bad_config_exits_2_with_one_line(tmp_path, content, words):
    path = tmp_path / "sampler.json"
    if content is not None:
        path.write_text(content)
    result = run_script("--config", path, "--once")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and words in result.stderr
    assert result.stderr.startswith("uwsgi_sampler: config %s: " % path)


def test_bad_command_line_exits_2(tmp_path):
    path = tmp_path / "sampler.json"
    path.write_text('{"apps": []}')
    result = run_script("--config", path, "--once", "--output", tmp_path / "uwsgi.txt")
    assert result.returncode == 2 and "--output" in result.stderr and ".prom" in result.stderr
    result = run_script("--config", path, "--bench", 0)
    assert result.returncode == 2 and "--bench" in result.stderr


# --- live, against real sockets ----------------------------------------------


class Listeners:
    """Real listening sockets with connections left pending, cleaned up after."""

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix="sampler-", dir="/tmp")
        self.socks = []

    def unix(self, name, backlog, pending):
        path = os.path.join(self.directory, name)
        server = socket.socket(socket.AF_UNIX)
        server.bind(path)
        server.listen(backlog)
        self.socks.append(server)
        self.connect(socket.AF_UNIX, path, pending)
        return path, server

    def tcp(self, backlog, pending):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(backlog)
        self.socks.append(server)
        self.connect(socket.AF_INET, server.getsockname(), pending)
        return "127.0.0.1:%d" % server.getsockname()[1], server

    def connect(self, family, address, count):
        for _ in range(count):
            client = socket.socket(family)
            client.settimeout(2)
            client.connect(address)
            self.socks.append(client)

    def close(self):
        for sock in self.socks:
            sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def listeners():
    made = Listeners()
    yield made
    made.close()


def write_config(tmp_path, apps, **keys):
    keys.setdefault("output", str(tmp_path / "out" / "uwsgi.prom"))
    path = tmp_path / "sampler.json"
    path.write_text(json.dumps(dict(apps=[{"name": n, "socket": p} for n, p in apps], **keys)))
    return path


def test_once_samples_real_sockets_writes_and_prints(tmp_path, listeners, capsys):
    unix, _ = listeners.unix("app.sock", 4096, 3)
    tcp, _ = listeners.tcp(2048, 2)
    path = write_config(tmp_path, [("app", unix), ("api", tcp), ("gone", listeners.directory + "/gone.sock")])
    (tmp_path / "out").mkdir()
    assert s.main(["--config", str(path), "--once"]) == 0
    out, err = capsys.readouterr()
    assert out == (tmp_path / "out" / "uwsgi.prom").read_text()
    values = parse_text(out)
    assert [app_value(values, "uwsgi_listen_queue_length", app) for app in ("app", "api", "gone")] == [3, 2, None]
    assert [app_value(values, "uwsgi_listen_backlog", app) for app in ("app", "api")] == [4096, 2048]
    assert [app_value(values, "uwsgi_listen_socket_up", app) for app in ("app", "api", "gone")] == [1, 1, 0]
    assert "app gone: socket %s/gone.sock not found listening" % listeners.directory in err
    assert s.main(["--config", str(path), "--once", "--output", str(tmp_path / "nodir" / "x.prom")]) == 1


def test_live_sampler_shows_queue_and_peak_then_exits_0_on_sigterm(tmp_path, listeners):
    app, server = listeners.unix("app.sock", 4096, 3)
    small, _ = listeners.unix("small.sock", 4, 4)
    path = write_config(tmp_path, [("app", app), ("small", small), ("gone", listeners.directory + "/gone.sock")], interval=0.05, window=3)
    output = tmp_path / "out" / "uwsgi.prom"
    output.parent.mkdir()
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--config", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def wait_for(check, seconds=5.0):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if output.exists():
                    values = parse_text(output.read_text())
                    if check(values):
                        return values
                time.sleep(0.05)
            pytest.fail("metrics never showed it: %s" % (output.read_text() if output.exists() else "no file"))

        values = wait_for(lambda v: app_value(v, "uwsgi_listen_queue_length", "app") == 3)
        assert app_value(values, "uwsgi_listen_queue_peak_length", "app") == 3
        assert app_value(values, "uwsgi_listen_backlog", "app") == 4096
        assert app_value(values, "uwsgi_listen_socket_up", "gone") == 0
        assert app_value(values, "uwsgi_listen_queue_length", "small") == 4
        for _ in range(3):
            listeners.socks.append(server.accept()[0])
        values = wait_for(lambda v: app_value(v, "uwsgi_listen_queue_length", "app") == 0)
        assert app_value(values, "uwsgi_listen_queue_peak_length", "app") == 3  # within the 3 s window
        assert values[("uwsgi_sampler_samples_total", ())] >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stdout.read()
    proc.stdout.close()
    assert "app app: socket %s listening, queue 3, backlog 4096" % app in log
    assert "app gone: socket %s/gone.sock not found listening" % listeners.directory in log
    assert "ALERT app small: listen queue 4 of backlog 4 (100%, alert_ratio 0.9) reached on " + small in log
    assert log.count("ALERT") == 1
    assert "Traceback" not in log
    assert [p.name for p in output.parent.iterdir()] == ["uwsgi.prom"]


def test_sigint_exits_0(tmp_path):
    path = write_config(tmp_path, [("a", "/nonexistent/a.sock")], interval=0.05)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--config", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "sampling 1 apps every 0.05 s" in log and "stopping: " in log
    assert "Traceback" not in log


def test_bench_reports_samples_and_cpu(tmp_path, listeners):
    unix, _ = listeners.unix("app.sock", 128, 1)
    path = write_config(tmp_path, [("app", unix)], interval=0.05)
    (tmp_path / "out").mkdir()
    result = run_script("--config", path, "--bench", 0.5)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert 5 <= report["samples"] <= 11  # 10 on an idle machine
    assert report["writes"] == 1 and report["errors"] == 0
    assert 0 <= report["cpu_seconds"] < 0.5


def test_a_deleted_or_replaced_socket_reads_as_down_on_the_real_kernel():
    """ss (and sock_diag) keep a deleted socket's name: the sampler counts a
    listener only while it is the file at the app's path (UNIX_DIAG_VFS)."""
    directory = tempfile.mkdtemp(prefix="sampler-", dir="/tmp")
    path = directory + "/app.sock"
    server = socket.socket(socket.AF_UNIX)
    other = socket.socket(socket.AF_UNIX)
    smp = s.Sampler(config([("app", path)]), log=lambda message: None)
    try:
        server.bind(path)
        server.listen(33)
        assert smp.sample() and smp.apps[0].up and smp.apps[0].backlog == 33
        os.unlink(path)
        assert smp.sample() and not smp.apps[0].up
        # Another socket at the path, not listening: the app's listener is still not it.
        other.bind(path)
        assert smp.sample() and not smp.apps[0].up
    finally:
        smp.netlink.close()
        server.close()
        other.close()
        shutil.rmtree(directory)
