"""Addresses as the kernel sees them: the live-listen helper finds a socket
named by a host name or an IPv6 literal, and check_path connects over the
socket's own family."""

import importlib.util
import socket
import threading

import pytest

from conftest import ROOT, uwsgi_host as h

_spec = importlib.util.spec_from_file_location("uwsgi_listen", ROOT / "files" / "uwsgi_listen.py")
helper = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helper)


def listening(family, host):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(8)
    return sock


def has_ipv6():
    try:
        listening(socket.AF_INET6, "::1").close()
        return True
    except OSError:
        return False


def test_a_tcp_socket_is_found_by_the_name_its_app_gives():
    with listening(socket.AF_INET, "127.0.0.1") as sock:
        port = sock.getsockname()[1]
        for name in (f"127.0.0.1:{port}", f"localhost:{port}", f":{port}", f"0.0.0.0:{port}", f"*:{port}"):
            assert helper.matches(sock, name), name
        assert not helper.matches(sock, f"10.1.2.3:{port}")
        assert not helper.matches(sock, f"127.0.0.1:{port + 1}")


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_socket_is_found_by_its_bracketed_literal():
    with listening(socket.AF_INET6, "::1") as sock:
        port = sock.getsockname()[1]
        assert helper.matches(sock, f"[::1]:{port}") and helper.matches(sock, f"[::]:{port}")


def serve_once(sock):
    conn, _ = sock.accept()
    conn.recv(1024)
    conn.sendall(b"HTTP/1.0 204 No Content\r\n\r\n")
    conn.close()


@pytest.mark.parametrize("family, host, name", [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1"), (socket.AF_INET, "127.0.0.1", "localhost"),
    (socket.AF_INET6, "::1", "[::1]"),
])
def test_check_path_connects_over_the_sockets_own_family(family, host, name):
    if family == socket.AF_INET6 and not has_ipv6():
        pytest.skip("no IPv6 loopback on this machine")
    with listening(family, host) as sock:
        thread = threading.Thread(target=serve_once, args=(sock,))
        thread.start()
        answer = h.check_request({"socket": f"{name}:{sock.getsockname()[1]}", "protocol": "http", "path": "/",
                                  "timeout": 5})
        thread.join(5)
    assert answer == {"status": 204, "error": None}


def accepted_by(socks, tries=40):
    """Which of `socks` (non-blocking listeners on one port) accepted each of `tries` connections."""
    port = socks[0].getsockname()[1]
    clients = []
    for _ in range(tries):
        clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    got = []
    for index, sock in enumerate(socks):
        while True:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                break
            conn.close()
            got.append(index)
    for client in clients:
        client.close()
    return sorted(set(got)), len(got)


def test_a_listening_socket_shares_its_port_and_its_group_sends_new_connections_where_it_is_told():
    old = listening(socket.AF_INET, "127.0.0.1")
    old.listen(64)  # room for every connection of a round
    args = helper.argparse.Namespace(reuseport=True, steer=None, check=False, backlog=None, when_joined=0)
    assert helper.act(old, args)["inode"] == helper.os.fstat(old.fileno()).st_ino
    new = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    new.bind(old.getsockname())
    new.listen(64)
    for sock in (old, new):
        sock.setblocking(False)
    try:
        # The old master's socket, index 0, takes every connection; then the one that joined it.
        helper.act(old, helper.argparse.Namespace(reuseport=False, steer=0, check=False, backlog=None, when_joined=0))
        assert accepted_by([old, new]) == ([0], 40)
        helper.act(old, helper.argparse.Namespace(reuseport=False, steer=1, check=False, backlog=None, when_joined=0))
        assert accepted_by([old, new]) == ([1], 40)
        # Once the old socket is gone, the index points past the group and the kernel picks by hash.
        old.close()
        assert accepted_by([new]) == ([0], 40)
    finally:
        old.close()
        new.close()


def test_a_steer_that_waits_for_the_newcomer_takes_effect_as_it_joins():
    old = listening(socket.AF_INET, "127.0.0.1")
    old.listen(64)
    old.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    new = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    new.bind(old.getsockname())
    joiner = threading.Timer(0.3, new.listen, (64,))
    joiner.start()
    try:
        args = helper.argparse.Namespace(reuseport=False, steer=0, check=False, backlog=None, when_joined=5)
        helper.act(old, args)
        joiner.join()
        for sock in (old, new):
            sock.setblocking(False)
        assert accepted_by([old, new]) == ([0], 40)
        # Nobody joins: the wait ends at its deadline with the kernel's EINVAL.
        alone = listening(socket.AF_INET, "127.0.0.1")
        alone.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError):
            helper.act(alone, helper.argparse.Namespace(reuseport=False, steer=0, check=False, backlog=None,
                                                        when_joined=0.2))
        alone.close()
    finally:
        joiner.cancel()
        old.close()
        new.close()
