#!/usr/bin/python
"""Write every file the role renders, in one module run: directories first,
then each file atomically (a temporary file in the same directory, renamed over
the old one), with a backup of what it replaces."""

from __future__ import annotations

DOCUMENTATION = r"""
module: uwsgi_files
short_description: Write the backlogops.uwsgi role's rendered files in one run
description:
  - Ensures O(dirs) exist with their owner, group and mode, then writes each of O(files) and
    O(secret_files) whose content, owner, group or mode differs. A file is replaced
    atomically (a temporary file in its directory is renamed over it), after a backup of the
    old one when O(files[].backup) is set.
  - Supports check mode and diff mode. O(secret_files) are never shown, in diffs or logs.
options:
  dirs:
    type: list
    elements: dict
    default: []
    description: Directories (path, owner, group, mode) to create or correct, in order.
  files:
    type: list
    elements: dict
    default: []
    description: Files (path, content, owner, group, mode, backup) to write.
  secret_files:
    type: list
    elements: dict
    default: []
    description: Like O(files), for content that must never be shown; their content is O(secret_contents).
  secret_contents:
    type: list
    elements: str
    default: []
    description: The content of each of O(secret_files), in order; never logged or shown.
author: backlogops
"""

RETURN = r"""
changed_files:
  description: Paths whose content or attributes changed (or would, in check mode).
  returned: always
  type: list
backups:
  description: Each replaced file's backup (path to backup), kept until the change is proven.
  returned: always
  type: dict
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes


def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def attrs(module, spec, path):
    return module.load_file_common_arguments(
        {"path": path, "owner": spec.get("owner"), "group": spec.get("group"), "mode": spec.get("mode")})


def ensure_dir(module, spec, result):
    path = spec["path"]
    diff = {"before": {"path": path}, "after": {"path": path}}
    changed = False
    if not os.path.isdir(path):
        changed = True
        diff["before"]["state"], diff["after"]["state"] = "absent", "directory"
        if not module.check_mode:
            os.makedirs(path)
    if os.path.isdir(path):
        changed = module.set_fs_attributes_if_different(attrs(module, spec, path), changed, diff)
    if changed:
        result["changed_files"].append(path)
        result["diff"].append(diff)


def write_file(module, spec, secret, result):
    path = spec["path"]
    content = to_bytes(spec["content"])
    before = read_bytes(path)
    if before != content:
        diff = {"before_header": path, "after_header": path,
                "before": "" if before is None else before.decode("utf-8", "replace"),
                "after": content.decode("utf-8", "replace")}
        if not module.check_mode:
            if before is not None and spec.get("backup"):
                result["backups"][path] = module.backup_local(path)
            replace(module, spec, path, content)
    else:
        diff = {"before": {"path": path}, "after": {"path": path}}
        if not module.set_fs_attributes_if_different(attrs(module, spec, path), False, diff):
            return
    result["changed_files"].append(path)
    if not secret:
        result["diff"].append(diff)


def replace(module, spec, path, content):
    """The new file, complete and with its owner, group and mode, takes the old
    one's name in one rename: a reader sees the old file or the new one."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        module.set_fs_attributes_if_different(attrs(module, spec, tmp), False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def main():
    file_spec = {
        "path": {"type": "path", "required": True},
        "content": {"type": "str"},
        "owner": {"type": "str"},
        "group": {"type": "str"},
        "mode": {"type": "raw"},
        "backup": {"type": "bool", "default": False},
    }
    module = AnsibleModule(
        argument_spec={
            "dirs": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True},
                "owner": {"type": "str"},
                "group": {"type": "str"},
                "mode": {"type": "raw"},
            }},
            "files": {"type": "list", "elements": "dict", "default": [], "options": file_spec},
            # Only the contents are secret: paths, owners and modes stay readable in the output.
            "secret_files": {"type": "list", "elements": "dict", "default": [], "options": file_spec},
            "secret_contents": {"type": "list", "elements": "str", "default": [], "no_log": True},
        },
        supports_check_mode=True,
    )
    result = {"changed_files": [], "backups": {}, "diff": []}
    for spec in module.params["dirs"]:
        ensure_dir(module, spec, result)
    for spec in module.params["files"]:
        write_file(module, spec, False, result)
    secrets = module.params["secret_contents"]
    if len(secrets) != len(module.params["secret_files"]):
        module.fail_json(msg="secret_contents must hold one content for each of secret_files")
    for spec, content in zip(module.params["secret_files"], secrets):
        write_file(module, dict(spec, content=content), True, result)
    diff = result.pop("diff")
    if module._diff and diff:  # pylint: disable=protected-access
        result["diff"] = diff
    module.exit_json(changed=bool(result["changed_files"]), **result)


if __name__ == "__main__":
    main()
