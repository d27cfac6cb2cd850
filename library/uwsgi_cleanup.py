#!/usr/bin/python
"""Remove what a moved socket left behind: the old socket file, and the
directory the role made for it. Root removes only what it means to, whatever
an app user arranged at those paths."""

from __future__ import annotations

DOCUMENTATION = r"""
module: uwsgi_cleanup
short_description: Remove the unix sockets and socket directories the backlogops.uwsgi apps left
description:
  - Removes each of O(sockets) that is a unix socket nothing listens on, then each of O(dirs) that
    is an empty directory owned by root.
  - Every path is reached from C(/) one directory at a time without following a symlink, and each
    entry is checked with lstat before it is removed, so that nothing an app user puts at a path
    (a symlink, another file, a directory of its own) makes root remove something else. What is
    not removed is named, with why, in C(kept), and as a warning unless it is simply not there.
  - Supports check mode (it then says what it would remove).
options:
  sockets:
    type: list
    elements: path
    default: []
    description: Unix socket files the apps bound before and no app binds now.
  dirs:
    type: list
    elements: path
    default: []
    description: Directories the role made (its tmpfiles.d record) that no app uses now; only empty ones go.
author: backlogops
"""

RETURN = r"""
removed:
  description: The paths removed (in check mode, that would be).
  returned: always
  type: list
kept:
  description: The paths left as they are, each with why (path, why).
  returned: always
  type: list
"""

import errno
import os
import socket
import stat

from ansible.module_utils.basic import AnsibleModule

GONE = "it does not exist"


class Kept(Exception):
    """Why a path stays as it is."""


def open_dir(path):
    """A descriptor of directory `path`, reached from / one component at a
    time, none of them followed through a symlink."""
    parts = path.split("/")
    if not path.startswith("/") or any(part in (".", "..") for part in parts):
        raise Kept("it is not a plain absolute path")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in (p for p in parts if p):
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError as exc:
                raise Kept(GONE) from exc
            except OSError as exc:
                # ELOOP or ENOTDIR: a symlink or a file on the way.
                raise Kept("%s on its way is not a directory (a symlink?): %s" % (part, exc.strerror)) from exc
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def entry(path):
    """(descriptor of the parent directory, name, lstat of the entry)."""
    parent, name = os.path.split(path.rstrip("/"))
    if not name:
        raise Kept("it is not a plain absolute path")
    fd = open_dir(parent or "/")
    try:
        return fd, name, os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError as exc:
        os.close(fd)
        raise Kept(GONE) from exc
    except BaseException:
        os.close(fd)
        raise


def kind(st):
    for test, what in ((stat.S_ISLNK, "a symlink"), (stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO")):
        if test(st.st_mode):
            return what
    return "not a socket"


def listened(fd, name):
    """Whether a process listens on the socket `name` in directory `fd`: a
    connect that the kernel refuses says none does (the file is stale)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect("/proc/self/fd/%d/%s" % (fd, name))
    except ConnectionRefusedError:
        return False
    except BlockingIOError:
        return True  # its backlog is full: it listens
    except OSError as exc:
        raise Kept("it cannot be told whether something listens on it: %s" % exc.strerror) from exc
    finally:
        probe.close()
    return True


def remove_socket(path, check_mode):
    fd, name, st = entry(path)
    try:
        if not stat.S_ISSOCK(st.st_mode):
            raise Kept("it is %s, not a socket" % kind(st))
        if listened(fd, name):
            raise Kept("a process listens on it")
        again = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if (again.st_ino, again.st_dev) != (st.st_ino, st.st_dev):
            raise Kept("it was replaced while it was checked")
        if not check_mode:
            os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def remove_dir(path, check_mode):
    fd, name, st = entry(path)
    try:
        if not stat.S_ISDIR(st.st_mode):
            raise Kept("it is %s, not a directory" % kind(st))
        if st.st_uid != 0:
            raise Kept("it is owned by uid %d, and the role makes its socket directories root's" % st.st_uid)
        if check_mode:
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            try:
                left = os.listdir(inner)
            finally:
                os.close(inner)
            if left:
                raise Kept("it is not empty (%s)" % ", ".join(sorted(left)[:5]))
            return
        try:
            os.rmdir(name, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise Kept("it is not empty") from exc
            raise
    finally:
        os.close(fd)


def cleanup(sockets, dirs, check_mode=False):
    """Remove the stale sockets, then the empty directories: (removed, kept)."""
    removed, kept = [], []
    for remove, paths in ((remove_socket, sockets), (remove_dir, dirs)):
        for path in paths:
            try:
                remove(path, check_mode)
                removed.append(path)
            except Kept as why:
                kept.append({"path": path, "why": str(why)})
            except OSError as exc:
                kept.append({"path": path, "why": exc.strerror or str(exc)})
    return removed, kept


def main():
    module = AnsibleModule(
        argument_spec={
            "sockets": {"type": "list", "elements": "path", "default": []},
            "dirs": {"type": "list", "elements": "path", "default": []},
        },
        supports_check_mode=True,
    )
    removed, kept = cleanup(module.params["sockets"], module.params["dirs"], module.check_mode)
    for item in kept:
        if item["why"] != GONE:
            module.warn("%s was left as it is: %s" % (item["path"], item["why"]))
    module.exit_json(changed=bool(removed), removed=removed, kept=kept)


if __name__ == "__main__":
    main()
