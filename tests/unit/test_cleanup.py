"""What a moved socket leaves behind, and what root removes of it
(library/uwsgi_cleanup.py, run in this process against real sockets,
symlinks and directories in a temporary directory): only a socket nothing
listens on and an empty directory of root's, never through a symlink."""

import json
import os
import shutil
import socket
import tempfile

import pytest
from ansible.module_utils.testing import patch_module_args

from conftest import filters as f, load

cleanup = load("uwsgi_cleanup_module", "library/uwsgi_cleanup.py")


@pytest.fixture
def base():
    # Short: a unix socket's path holds at most 107 bytes.
    path = tempfile.mkdtemp(prefix="uc.", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def bound(path, listening=False):
    """A unix socket file at `path`: a stale one (its process gone), or one that listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    if listening:
        sock.listen(1)
        return sock
    sock.close()
    return None


def run(sockets=(), dirs=(), check_mode=False):
    removed, kept = cleanup.cleanup(list(sockets), list(dirs), check_mode)
    return removed, {item["path"]: item["why"] for item in kept}


def test_a_stale_socket_and_the_empty_directory_it_leaves_go(base):
    directory = os.path.join(base, "uwsgi-shop")
    os.mkdir(directory)
    bound(os.path.join(directory, "shop.sock"))
    removed, kept = run([os.path.join(directory, "shop.sock")], [directory])
    assert removed == [os.path.join(directory, "shop.sock"), directory] and kept == {}
    assert os.listdir(base) == []


def test_a_socket_something_listens_on_stays(base):
    path = os.path.join(base, "live.sock")
    sock = bound(path, listening=True)
    try:
        removed, kept = run([path])
    finally:
        sock.close()
    assert removed == [] and kept == {path: "a process listens on it"}
    assert os.path.exists(path)


def test_a_symlink_at_the_socket_s_path_is_not_followed(base):
    target = os.path.join(base, "other.sock")
    bound(target)
    path = os.path.join(base, "shop.sock")
    os.symlink(target, path)
    removed, kept = run([path])
    assert removed == [] and kept == {path: "it is a symlink, not a socket"}
    assert os.path.islink(path) and os.path.exists(target)


def test_a_symlinked_directory_on_the_way_is_not_followed(base):
    elsewhere = os.path.join(base, "elsewhere")
    os.mkdir(elsewhere)
    bound(os.path.join(elsewhere, "shop.sock"))
    os.symlink(elsewhere, os.path.join(base, "uwsgi-shop"))
    path = os.path.join(base, "uwsgi-shop", "shop.sock")
    removed, kept = run([path], [os.path.join(base, "uwsgi-shop")])
    assert removed == []
    assert kept[path].startswith("uwsgi-shop on its way is not a directory (a symlink?)"), kept
    assert kept[os.path.join(base, "uwsgi-shop")] == "it is a symlink, not a directory"
    assert os.path.exists(os.path.join(elsewhere, "shop.sock"))


def test_anything_but_a_socket_stays(base):
    path = os.path.join(base, "shop.sock")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("not a socket")
    os.mkfifo(os.path.join(base, "fifo.sock"))
    removed, kept = run([path, os.path.join(base, "fifo.sock")])
    assert removed == []
    assert kept == {path: "it is a regular file, not a socket", os.path.join(base, "fifo.sock"): "it is a FIFO, not a socket"}


def test_a_directory_that_holds_anything_stays(base):
    directory = os.path.join(base, "uwsgi-shop")
    os.mkdir(directory)
    bound(os.path.join(directory, "other.sock"))
    removed, kept = run([], [directory])
    assert removed == [] and kept == {directory: "it is not empty"}
    assert os.path.exists(os.path.join(directory, "other.sock"))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user takes root")
def test_a_directory_root_does_not_own_stays(base):
    directory = os.path.join(base, "uwsgi-shop")
    os.mkdir(directory)
    os.chown(directory, 33, 33)
    removed, kept = run([], [directory])
    assert removed == [] and kept == {directory: "it is owned by uid 33, and the role makes its socket directories root's"}


def test_what_is_not_there_or_not_a_plain_path_is_left(base):
    removed, kept = run([os.path.join(base, "gone.sock"), base + "/x/../y.sock"], [os.path.join(base, "gone")])
    assert removed == []
    assert kept == {os.path.join(base, "gone.sock"): "it does not exist", os.path.join(base, "gone"): "it does not exist",
                    base + "/x/../y.sock": "it is not a plain absolute path"}


def test_check_mode_says_what_it_would_remove_and_removes_nothing(base):
    directory, empty = os.path.join(base, "uwsgi-shop"), os.path.join(base, "uwsgi-empty")
    os.mkdir(directory)
    os.mkdir(empty)
    bound(os.path.join(directory, "shop.sock"))
    removed, kept = run([os.path.join(directory, "shop.sock")], [directory, empty], check_mode=True)
    assert removed == [os.path.join(directory, "shop.sock"), empty]
    assert kept == {directory: "it is not empty (shop.sock)"}
    assert os.path.exists(os.path.join(directory, "shop.sock")) and os.path.isdir(empty)


def test_the_module_warns_of_what_it_left_but_not_of_what_is_gone(base, capsys, monkeypatch):
    said = []
    monkeypatch.setattr(cleanup.AnsibleModule, "warn", lambda self, msg: said.append(msg))
    path = os.path.join(base, "shop.sock")
    bound(path)
    link = os.path.join(base, "link.sock")
    os.symlink(path, link)
    with patch_module_args({"sockets": [path, link, os.path.join(base, "gone.sock")]}), pytest.raises(SystemExit):
        cleanup.main()
    result = json.loads(capsys.readouterr().out)
    assert result["changed"] and result["removed"] == [path]
    assert said == ["%s was left as it is: it is a symlink, not a socket" % link]


def plan(managed, apps, tmpfiles=()):
    probe = {"managed": managed, "tmpfiles_dirs": list(tmpfiles), "users": {"www-data": {"exists": True, "uid": 33}},
             "groups": {"www-data": {"exists": True, "gid": 33}}, "dirs": {}}
    settings = {"unlisted_apps": "warn", "socket_dir": "/run/uwsgi", "supervisor_conf_dir": "/etc/supervisor/conf.d",
                "config_dir": "/etc/uwsgi/supervisor", "log_dir": "/var/log/supervisor", "group": "www-data"}
    present = [{"name": name, "state": "present", "socket": sock, "uid": "www-data", "gid": "www-data",
                "socket_kind": "unix" if sock.startswith("/") else "tcp",
                "socket_dir": os.path.dirname(sock) if sock.startswith("/") else None}
               for name, sock in apps.items()]
    return f.uwsgi_host_plan(present, probe, settings)


def test_a_moved_socket_and_the_directory_the_role_made_for_it_are_planned_for_removal():
    result = plan({"shop": {"sockets": ["/run/uwsgi-shop/shop.sock"], "program_file": "/etc/supervisor/conf.d/shop.conf"}},
                  {"shop": "/run/uwsgi-shop2/shop.sock"}, ["/run/uwsgi-shop"])
    assert result["moved_sockets"] == [{"name": "shop", "path": "/run/uwsgi-shop/shop.sock"}]
    assert result["stale_dirs"] == ["/run/uwsgi-shop"]


def test_a_socket_another_app_binds_now_or_a_tcp_one_is_not_removed():
    managed = {"shop": {"sockets": ["/run/uwsgi/shop.sock"]}, "api": {"sockets": ["127.0.0.1:8001"]}}
    result = plan(managed, {"shop": "127.0.0.1:8002", "api": "/run/uwsgi/shop.sock"}, ["/run/uwsgi"])
    # shop's old socket is api's now; api's old one was TCP.
    assert result["moved_sockets"] == [] and result["stale_dirs"] == []


def test_a_directory_the_role_did_not_record_is_never_planned():
    result = plan({"shop": {"sockets": ["/srv/sockets/shop.sock"]}}, {"shop": "/run/uwsgi/shop.sock"},
                  ["/run/uwsgi", "/run", "/tmp"])
    assert result["moved_sockets"] == [{"name": "shop", "path": "/srv/sockets/shop.sock"}]
    # /srv/sockets is not in the role's tmpfiles.d record; /run and /tmp are the system's.
    assert result["stale_dirs"] == []
