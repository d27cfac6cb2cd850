"""Stop on what rules a run out, and say what the operator should act on while
it goes on, in one task on the controller.

Arguments:
  errors: a string or a list of strings; when there is any, the task fails
    with them as its message (one line each), before the host is touched.
  warnings: a string or a list of strings, each an Ansible warning
    ([WARNING] in the run's output, and in the callbacks' warnings): an app
    the role keeps running unlisted, an app restarted because its listen could
    not change live.
Never changes the host.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase


def _lines(value):
    return [str(line) for line in (value if isinstance(value, list) else [value] if value else [])]


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        errors = _lines(self._task.args.get("errors"))
        result.update(changed=False, warnings=_lines(self._task.args.get("warnings")))
        if errors:
            result.update(failed=True, msg=errors)
        return result
