"""uwsgi_warn: what the operator should act on arrives as an Ansible warning."""

from unittest import mock

from conftest import load

warn = load("uwsgi_warn_action", "action_plugins/uwsgi_warn.py")


def action(args):
    task = mock.MagicMock()
    task.args = args
    task.async_val = 0
    plugin = warn.ActionModule(task, mock.MagicMock(), mock.MagicMock(), loader=None, templar=None,
                               shared_loader_obj=None)
    return plugin.run(task_vars={})


def test_each_message_is_a_warning_and_nothing_changes():
    result = action({"msg": ["flaskold: no longer listed; kept running", "second"]})
    assert result["warnings"] == ["flaskold: no longer listed; kept running", "second"]
    assert result["changed"] is False


def test_one_message_is_one_warning():
    assert action({"msg": "uwsgi_verify_retries is deprecated"})["warnings"] == ["uwsgi_verify_retries is deprecated"]
