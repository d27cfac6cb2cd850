"""Render every file of the role on the controller, then write them all on the
host in one module run (library/uwsgi_files.py).

Arguments:
  dirs:      directories (path, owner, group, mode), passed to the module as they are;
  templates: files rendered from the role's templates/ (src, path, owner, group, mode,
             backup, vars: extra template variables such as the app as `item`,
             secret: true for content never shown in output or diffs);
  copies:    files copied from the role's files/ (src, path, owner, group, mode);
  contents:  files given whole (content, path, owner, group, mode, backup);
  trials:    apps to try aside before their files are written, passed to the module as they are;
  write:     false to try the apps and report what would change, writing nothing;
  seen:      with write false, the probe's fingerprints of these paths (and digest_key, the
             run's key of their digests): when every file and directory is as the role would
             write it and no app must be tried, the look ends here, with no module run.

The templates are rendered with Ansible's own template lookup, so they see the
play's variables and `ansible_managed` exactly as the template module would.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import filter_loader, lookup_loader

# The role's Python, through its filter file (docs/design.md "Where the Python is").
filter_loader.get("uwsgi_socket_key")
from ansible.module_utils.uwsgi_host import digest  # noqa: E402 pylint: disable=wrong-import-position
from ansible.module_utils.uwsgi_writes import files_as_written  # noqa: E402 pylint: disable=wrong-import-position

ATTRS = ("path", "owner", "group", "mode", "backup")


class _FileVars(dict):
    """The play's variables, as the template lookup gets them for each file:
    it deep-copies them (40 ms with 40 apps, for each of their 160 files);
    a shallow copy is enough, as it only adds its own keys to the copy."""

    def __deepcopy__(self, memo):
        return dict(self)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("dirs", "templates", "copies", "contents", "trials", "write", "seen", "digest_key"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        template = lookup_loader.get("ansible.builtin.template", loader=self._loader, templar=self._templar)
        files, secret_files, secret_contents = [], [], []
        for entry in args.get("templates") or []:
            source = self._find_needle("templates", entry["src"])
            content = template.run([source], _FileVars(task_vars), template_vars=entry.get("vars") or {})[0]
            spec = {key: entry[key] for key in ATTRS if key in entry}
            if entry.get("secret"):
                secret_files.append(spec)
                secret_contents.append(content)
            else:
                files.append(dict(spec, content=content))
        for entry in args.get("copies") or []:
            source = self._find_needle("files", entry["src"])
            try:
                with open(source, encoding="utf-8") as handle:
                    content = handle.read()
            except OSError as exc:
                raise AnsibleActionFail("cannot read %s: %s" % (source, exc)) from exc
            spec = {key: entry[key] for key in ATTRS if key in entry}
            # The role's own scripts: a diff names each by its checksum instead of printing it.
            spec.update(content=content, summary=True)
            files.append(spec)
        for entry in args.get("contents") or []:
            files.append({key: entry[key] for key in ATTRS + ("content",) if key in entry})
        if self._as_seen(args, files, secret_files, secret_contents):
            result.update(changed=False, changed_files=[], trials=[], backups={}, compared="by the probe's fingerprints")
            return result
        result.update(self._execute_module(
            module_name="uwsgi_files",
            module_args={"dirs": args.get("dirs") or [], "files": files,
                         "secret_files": secret_files, "secret_contents": secret_contents,
                         "trials": args.get("trials") or [], "write": args.get("write", True)},
            task_vars=task_vars,
        ))
        return result

    @staticmethod
    def _as_seen(args, files, secret_files, secret_contents):
        """Whether a look finds every file as the role would write it, on the
        probe's fingerprints alone (no app has a reason of its own to be tried)."""
        seen, key = args.get("seen"), args.get("digest_key")
        if not seen or not key or args.get("write", True) or any(t.get("force") for t in args.get("trials") or []):
            return False
        pairs = [(spec, to_bytes(spec["content"])) for spec in files]
        pairs += [(spec, to_bytes(content)) for spec, content in zip(secret_files, secret_contents)]
        return files_as_written(args.get("dirs") or [], pairs, seen, lambda data: digest(key, data))
