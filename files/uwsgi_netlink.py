"""The kernel's sock_diag netlink interface, as the listen-queue sampler
(uwsgi_sampler.py, installed beside this file) uses it: the dump requests for
the unix and TCP sockets in LISTEN, the parsing of their replies as pure
functions of bytes, and DiagSocket, the netlink socket that sends them.

Python 3.9 or later, standard library only. Part of the backlogops.uwsgi
Ansible role.
"""

import errno
import os
import socket
import struct

# <linux/netlink.h>, <linux/sock_diag.h>, <linux/unix_diag.h>, <linux/inet_diag.h>
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 2
NLMSG_DONE = 3
TCP_LISTEN = 10  # unix_diag uses the TCP state numbers too
UDIAG_SHOW_NAME = 0x01
UDIAG_SHOW_VFS = 0x02
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_NAME = 0
UNIX_DIAG_VFS = 1
UNIX_DIAG_RQLEN = 4
NLA_TYPE_MASK = 0x3FFF

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
INT = struct.Struct("=i")
UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")  # family, protocol, pad, states, ino, show, cookie[2]
UNIX_DIAG_MSG = struct.Struct("=BBBBIII")  # family, type, state, pad, ino, cookie[2]
INET_DIAG_REQ_V2 = struct.Struct("=BBBBI48x")  # family, protocol, ext, pad, states, sockid (0: all)
INET_DIAG_MSG_LEN = 72  # family, state, timer, retrans, sockid (48), expires, rqueue, wqueue, uid, inode
PORT = struct.Struct("!H")
NLATTR = struct.Struct("=HH")
PAIR = struct.Struct("=II")  # unix_diag_rqlen, and inet_diag_msg's rqueue, wqueue
RECV_BUFFER = 65536  # the kernel sends dump parts of at most 32 KiB


class NetlinkError(OSError):
    """The kernel answered a sock_diag request with an error, or sent a malformed reply."""


# --- netlink: requests and replies, as pure functions of bytes -------------


def encode_unix_dump(seq):
    """The SOCK_DIAG_BY_FAMILY dump request for the unix sockets in LISTEN,
    with their names, the file each is bound to and their queue lengths."""
    body = UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 1 << TCP_LISTEN, 0,
                              UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_RQLEN, 0, 0)
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                          NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def encode_inet_dump(seq, family):
    """The inet_diag_req_v2 dump request for the TCP sockets of `family`
    (AF_INET or AF_INET6) in LISTEN."""
    body = INET_DIAG_REQ_V2.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                          NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def scan_dump(data, length, seq, handler):
    """Pass each sock_diag record in data[:length] (one datagram of a dump
    reply, or several laid end to end) to handler(data, start, end), start..end
    being the record's payload. Returns True once NLMSG_DONE is seen. Messages
    of another sequence number (left from an earlier dump) are skipped unless
    seq is None. Raises NetlinkError for NLMSG_ERROR or a malformed message."""
    offset = 0
    while offset + NLMSG_HDR.size <= length:
        size, kind, _flags, msg_seq, _pid = NLMSG_HDR.unpack_from(data, offset)
        if size < NLMSG_HDR.size or offset + size > length:
            raise NetlinkError(errno.EBADMSG, "malformed netlink message (length %d at offset %d of %d)"
                               % (size, offset, length))
        if seq is None or msg_seq == seq:
            start = offset + NLMSG_HDR.size
            if kind == SOCK_DIAG_BY_FAMILY:
                handler(data, start, offset + size)
            elif kind == NLMSG_DONE:
                if size >= start - offset + INT.size:
                    status = INT.unpack_from(data, start)[0]
                    if status < 0:
                        raise NetlinkError(-status, "sock_diag dump ended with: %s" % os.strerror(-status))
                return True
            elif kind == NLMSG_ERROR:
                status = INT.unpack_from(data, start)[0] if size >= NLMSG_HDR.size + INT.size else -errno.EBADMSG
                if status:  # 0 is an acknowledgement
                    raise NetlinkError(-status, "sock_diag request refused: %s" % os.strerror(-status))
        offset += (size + 3) & ~3
    return False


def unix_fields(data, start, end):
    """(state, raw name, rqueue, wqueue, inode) of a unix_diag_msg record; the
    raw name is the bound address as the kernel holds it (a path ends in NUL,
    an abstract name starts with one), None if unbound."""
    _family, _type, state, _pad, inode, _c0, _c1 = UNIX_DIAG_MSG.unpack_from(data, start)
    name = None
    rqueue = wqueue = None
    offset = start + UNIX_DIAG_MSG.size
    while offset + NLATTR.size <= end:
        size, kind = NLATTR.unpack_from(data, offset)
        if size < NLATTR.size or offset + size > end:
            break
        kind &= NLA_TYPE_MASK
        if kind == UNIX_DIAG_NAME:
            name = bytes(data[offset + NLATTR.size:offset + size])
        elif kind == UNIX_DIAG_RQLEN:
            rqueue, wqueue = PAIR.unpack_from(data, offset + NLATTR.size)
        offset += (size + 3) & ~3
    return state, name, rqueue, wqueue, inode


def unix_vfs(data, start, end):
    """The file a unix_diag_msg record's socket is bound to: (inode, device)
    from its UNIX_DIAG_VFS attribute, None without one."""
    offset = start + UNIX_DIAG_MSG.size
    while offset + NLATTR.size <= end:
        size, kind = NLATTR.unpack_from(data, offset)
        if size < NLATTR.size or offset + size > end:
            break
        if kind & NLA_TYPE_MASK == UNIX_DIAG_VFS and size >= NLATTR.size + PAIR.size:
            return PAIR.unpack_from(data, offset + NLATTR.size)
        offset += (size + 3) & ~3
    return None


def unix_display_name(raw):
    """A unix socket's name as `ss` prints it: the path, or @ and the abstract
    name (its NUL bytes shown as @)."""
    if raw is None:
        return None
    if raw[:1] == b"\0":
        return raw.replace(b"\0", b"@").decode("utf-8", "backslashreplace")
    return os.fsdecode(raw.split(b"\0", 1)[0])


def decode_unix(payload):
    """A unix_diag_msg record (bytes) as a dict."""
    family, kind, state, _pad, inode, cookie0, cookie1 = UNIX_DIAG_MSG.unpack_from(payload, 0)
    state, raw, rqueue, wqueue, inode = unix_fields(payload, 0, len(payload))
    return {"family": family, "type": kind, "state": state, "inode": inode,
            "cookie": cookie0 | cookie1 << 32, "raw_name": raw, "name": unix_display_name(raw),
            "rqueue": rqueue, "wqueue": wqueue}


def decode_inet(payload):
    """An inet_diag_msg record (bytes) as a dict; for a LISTEN socket rqueue
    is the accept queue now and wqueue the backlog in effect."""
    family, state = payload[0], payload[1]
    size = 4 if family == socket.AF_INET else 16
    expires, rqueue, wqueue, uid, inode = struct.unpack_from("=IIIII", payload, 52)
    return {"family": family, "state": state,
            "sport": PORT.unpack_from(payload, 4)[0], "dport": PORT.unpack_from(payload, 6)[0],
            "src": socket.inet_ntop(family, bytes(payload[8:8 + size])),
            "dst": socket.inet_ntop(family, bytes(payload[24:24 + size])),
            "ifindex": struct.unpack_from("=I", payload, 40)[0],
            "expires": expires, "rqueue": rqueue, "wqueue": wqueue, "uid": uid, "inode": inode}


def decode_dump(data, kind):
    """Every record of a whole dump reply (bytes, its datagrams end to end),
    kind 'unix' or 'inet': {"records": [dict, ...], "done": bool}."""
    decode = decode_unix if kind == "unix" else decode_inet
    records = []
    done = scan_dump(data, len(data), None, lambda buf, start, end: records.append(decode(bytes(buf[start:end]))))
    return {"records": records, "done": done}


class DiagSocket:
    """One NETLINK_SOCK_DIAG socket, opened on first use and kept across
    samples, and one receive buffer; after any error it is closed and the next
    dump opens a new one."""

    def __init__(self):
        self.sock = None
        self.seq = 0
        self.buffer = bytearray(RECV_BUFFER)
        self.requests = {}

    def open(self):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        try:
            # A blocking socket that gives up after 2 s: no poll() per recv, never a hang.
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 2, 0))
            except OSError:  # a struct timeval of another size
                sock.settimeout(2.0)
            sock.bind((0, 0))
            sock.connect((0, 0))
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def dump(self, family, handler):
        """Dump the LISTEN sockets of `family` (AF_UNIX, AF_INET, AF_INET6),
        calling handler(buffer, start, end) for each record."""
        if self.sock is None:
            self.open()
        self.seq = self.seq % 0xFFFFFFFF + 1
        request = self.requests.get(family)
        if request is None:
            request = bytearray(encode_unix_dump(0) if family == socket.AF_UNIX else encode_inet_dump(0, family))
            self.requests[family] = request
        NLMSG_HDR.pack_into(request, 0, len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0)
        try:
            self.sock.send(request)
            while True:
                length = self.sock.recv_into(self.buffer, 0, socket.MSG_TRUNC)
                if length > len(self.buffer):
                    raise NetlinkError(errno.EMSGSIZE, "netlink reply of %d bytes truncated" % length)
                if length == 0:
                    raise NetlinkError(errno.EBADMSG, "empty netlink reply")
                if scan_dump(self.buffer, length, self.seq, handler):
                    return
        except BaseException:
            self.close()
            raise
