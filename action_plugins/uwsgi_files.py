"""Render every file of the role on the controller, then write them all on the
host in one module run (library/uwsgi_files.py).

Arguments:
  plan:      the file plan (filter uwsgi_file_plan), whose
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

import secrets

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


def _newlines_at_end(text):
    return len(text) - len(text.rstrip("\n"))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("plan", "trials", "write", "seen", "digest_key"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        # One argument: Ansible templates a task's arguments one by one, so four would build the plan four times.
        plan = args.get("plan") or {}
        files, secret_files, secret_contents = [], [], []
        entries = plan.get("templates") or []
        for entry, content in zip(entries, self._render(entries, task_vars)):
            spec = {key: entry[key] for key in ATTRS if key in entry}
            if entry.get("secret"):
                secret_files.append(spec)
                secret_contents.append(content)
            else:
                files.append(dict(spec, content=content))
        for entry in plan.get("copies") or []:
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
        for entry in plan.get("contents") or []:
            files.append({key: entry[key] for key in ATTRS + ("content",) if key in entry})
        if self._as_seen(args, plan.get("dirs") or [], files, secret_files, secret_contents):
            result.update(changed=False, changed_files=[], trials=[], backups={}, compared="by the probe's fingerprints")
            return result
        result.update(self._execute_module(
            module_name="uwsgi_files",
            module_args={"dirs": plan.get("dirs") or [], "files": files,
                         "secret_files": secret_files, "secret_contents": secret_contents,
                         "trials": args.get("trials") or [], "write": args.get("write", True)},
            task_vars=task_vars,
        ))
        return result

    def _render(self, entries, task_vars):
        """Each entry's content, in order. The entries of one template are
        rendered in one lookup of templates/batch.j2, which includes it for
        each item: Ansible compiles a template on every lookup (2 s for the
        160 files of 40 apps), Jinja an include once per render."""
        template = lookup_loader.get("ansible.builtin.template", loader=self._loader, templar=self._templar)
        contents = {}
        by_src = {}
        for index, entry in enumerate(entries):
            by_src.setdefault(entry["src"], []).append(index)
        for src, indexes in by_src.items():
            source = self._find_needle("templates", src)
            batched = len(indexes) > 1 and all(set(entries[i].get("vars") or {}) == {"item"} for i in indexes)
            if not batched:
                for i in indexes:
                    contents[i] = template.run([source], _FileVars(task_vars), template_vars=entries[i].get("vars") or {})[0]
                continue
            sep = "\0uwsgi-file-%s\0" % secrets.token_hex(16)
            batch = [entries[i]["vars"] for i in indexes]
            out = template.run([self._find_needle("templates", "batch.j2")], _FileVars(task_vars),
                               template_vars={"__uwsgi_batch": batch, "__uwsgi_src": src, "__uwsgi_sep": sep})[0]
            parts = out.split(sep)
            if len(parts) != len(indexes) + 1:
                raise AnsibleActionFail("%s: the batch render gave %d files for %d items" % (src, len(parts) - 1, len(indexes)))
            with open(source, "rb") as handle:
                trailing = _newlines_at_end(handle.read().decode("utf-8"))
            for i, part in zip(indexes, parts):
                # An include loses its source's trailing newlines; a lookup keeps them (as the template module does).
                contents[i] = part + "\n" * max(0, trailing - _newlines_at_end(part))
        return [contents[i] for i in range(len(entries))]

    @staticmethod
    def _as_seen(args, dirs, files, secret_files, secret_contents):
        """Whether a look finds every file as the role would write it, on the
        probe's fingerprints alone (no app has a reason of its own to be tried)."""
        seen, key = args.get("seen"), args.get("digest_key")
        if not seen or not key or args.get("write", True) or any(t.get("force") for t in args.get("trials") or []):
            return False
        pairs = [(spec, to_bytes(spec["content"])) for spec in files]
        pairs += [(spec, to_bytes(content)) for spec, content in zip(secret_files, secret_contents)]
        return files_as_written(dirs, pairs, seen, lambda data: digest(key, data))
