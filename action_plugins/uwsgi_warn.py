"""Say something as an Ansible warning ([WARNING] in the run's output, and in
the callbacks' warnings), not as a debug line: for what the operator should
act on while the run goes on (an app the role keeps running unlisted, an app
restarted because its listen could not change live).

Arguments: msg (a string or a list of strings). Never changes the host.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        msg = self._task.args.get("msg") or []
        result.update(changed=False, warnings=[str(m) for m in (msg if isinstance(msg, list) else [msg])])
        return result
