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
  write:     false to try the apps and report what would change, writing nothing.

The templates are rendered with Ansible's own template lookup, so they see the
play's variables and `ansible_managed` exactly as the template module would.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import lookup_loader

ATTRS = ("path", "owner", "group", "mode", "backup")


class _FileVars(dict):
    """The play's variables, as the template lookup gets them for each file:
    it deep-copies them (40 ms with 40 apps, for each of their 160 files);
    a shallow copy is enough, as it only adds its own keys to the copy."""

    def __deepcopy__(self, memo):
        return dict(self)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("dirs", "templates", "copies", "contents", "trials", "write"))

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
        result.update(self._execute_module(
            module_name="uwsgi_files",
            module_args={"dirs": args.get("dirs") or [], "files": files,
                         "secret_files": secret_files, "secret_contents": secret_contents,
                         "trials": args.get("trials") or [], "write": args.get("write", True)},
            task_vars=task_vars,
        ))
        return result
