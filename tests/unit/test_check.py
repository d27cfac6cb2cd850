"""uwsgi_check: what rules a run out fails it, line by line; what the operator
should act on arrives as an Ansible warning."""

from unittest import mock

from conftest import load

check = load("uwsgi_check_action", "action_plugins/uwsgi_check.py")


def action(args):
    task = mock.MagicMock()
    task.args = args
    task.async_val = 0
    plugin = check.ActionModule(task, mock.MagicMock(), mock.MagicMock(), loader=None, templar=None,
                                shared_loader_obj=None)
    return plugin.run(task_vars={})


def test_each_message_is_a_warning_and_nothing_changes():
    result = action({"warnings": ["flaskold: no longer listed; kept running", "second"]})
    assert result["warnings"] == ["flaskold: no longer listed; kept running", "second"]
    assert result["changed"] is False
    assert not result.get("failed")


def test_one_message_is_one_warning():
    assert action({"warnings": "uwsgi_verify_retries is deprecated"})["warnings"] == [
        "uwsgi_verify_retries is deprecated"]


def test_errors_fail_the_task_with_one_line_each_and_the_warnings_still_say_theirs():
    result = action({"errors": ["uwsgi_listen 'x' is not an int.", "Nothing was changed."],
                     "warnings": ["uwsgi_lisen is set, but the role has no variable of that name"]})
    assert result["failed"] is True
    assert result["msg"] == ["uwsgi_listen 'x' is not an int.", "Nothing was changed."]
    assert result["warnings"] == ["uwsgi_lisen is set, but the role has no variable of that name"]


def test_no_error_is_no_failure():
    for errors in ([], "", None):
        assert not action({"errors": errors, "warnings": []}).get("failed")
