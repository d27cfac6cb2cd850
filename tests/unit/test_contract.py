"""The contract of the role's variables and of each app: types, choices and
unknown keys, checked by the role itself against meta/argument_specs.yml with
ansible-core's own validator, one short line per mistake; and the warnings on
what a play sets but the role never reads. The expected messages are written
out here."""

import pathlib

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from conftest import ROOT, filters as f

SPECS = yaml.safe_load((ROOT / "meta/argument_specs.yml").read_text())["argument_specs"]
DEFAULTS = yaml.safe_load((ROOT / "defaults/main.yml").read_text())
SITE = yaml.safe_load((ROOT / "playbooks/site.yml").read_text())[0]["vars"]


def app_errors(**keys):
    return f.uwsgi_spec_errors({"uwsgi_apps": [dict({"name": "quotes", "module": "app:app"}, **keys)]})


def test_a_mistyped_app_key_is_one_short_line_with_the_key_meant():
    errors = f.uwsgi_spec_errors({"uwsgi_apps": [{"name": "quotes", "module": "app:app", "listn": 300}]})
    assert errors == ["uwsgi_apps[0] (quotes): unknown key 'listn'; did you mean 'listen'?"]
    assert len(str(errors)) < 1000


@pytest.mark.parametrize("typo, meant", [
    ("proceses", "processes"), ("enviroment", "environment"), ("thread", "threads"), ("chmod-socket", "chmod_socket"),
    ("virtual_env", "virtualenv"), ("user", "uid"), ("workers", "processes"), ("uwsgi_listen", "listen"),
])
def test_a_mistyped_app_key_names_the_key_it_is_closest_to(typo, meant):
    assert app_errors(**{typo: 1}) == ["uwsgi_apps[0] (quotes): unknown key '%s'; did you mean '%s'?" % (typo, meant)]


def test_an_unknown_app_key_like_no_other_lists_the_keys_an_app_takes():
    (error,) = app_errors(frobnicate=1)
    assert error.startswith("uwsgi_apps[0] (quotes): unknown key 'frobnicate'; an app's keys are apply_strategy, chdir, check_path,")
    assert "did you mean" not in error and error.endswith("uid, virtualenv.")


@pytest.mark.parametrize("keys, expected", [
    ({"listen": "many"}, "uwsgi_apps[0] (quotes): listen 'many' is not an int."),
    ({"processes": 2.5}, "uwsgi_apps[0] (quotes): processes 2.5 is not an int."),
    ({"state": "gone"}, "uwsgi_apps[0] (quotes): state 'gone' is not one of present, absent."),
    ({"protocol": "https"}, "uwsgi_apps[0] (quotes): protocol 'https' is not one of uwsgi, http."),
    ({"options": "harakiri=x y"}, "uwsgi_apps[0] (quotes): options (a string) is not a dict."),
    ({"environment": ["TOKEN"]}, "uwsgi_apps[0] (quotes): environment (a list) is not a dict."),
])
def test_a_wrong_type_or_choice_of_an_app_key_is_one_line(keys, expected):
    assert app_errors(**keys) == [expected]


def test_values_ansible_core_converts_are_accepted_as_it_accepts_them():
    assert app_errors(listen="300", packages=["flask==3.0.3"], code_reload="graceful") == []
    assert f.uwsgi_spec_errors({"uwsgi_listen": "2048", "uwsgi_verify": "yes", "uwsgi_somaxconn": None}) == []


@pytest.mark.parametrize("keys, expected", [
    ({"environment": "TOKEN=x"}, "environment (a string) is not a dict."),
    ({"options": "harakiri=30"}, "options (a string) is not a dict."),
    ({"packages": "flask,requests"}, "packages 'flask,requests' is not a list of str values."),
])
def test_a_dict_or_list_must_be_one_not_a_string_the_validator_would_convert(keys, expected):
    # The role reads the value as given: a string it would iterate by character.
    assert app_errors(**keys) == ["uwsgi_apps[0] (quotes): " + expected]
    assert f.uwsgi_spec_errors({"uwsgi_plugins": "python3"}) == ["uwsgi_plugins 'python3' is not a list of str values."]


def test_a_missing_name_and_an_app_that_is_not_a_dict_are_named_by_position():
    errors = f.uwsgi_spec_errors({"uwsgi_apps": [{"module": "app:app"}, "flaskapp", {"name": None, "module": "m"}]})
    assert errors == [
        "uwsgi_apps[0]: name is missing; every app needs one.",
        "uwsgi_apps[1] is a string, not an app: each app is a dict of its keys (name, module, listen ...).",
        "uwsgi_apps[2]: name is missing; every app needs one.",
    ]


def test_uwsgi_apps_that_is_not_a_list_is_refused():
    assert f.uwsgi_spec_errors({"uwsgi_apps": "flaskapp"}) == [
        "uwsgi_apps must be a list of apps, each a dict of its keys (name, module, listen ...); it is a string."]
    assert f.uwsgi_spec_errors({"uwsgi_apps": None}) == []


@pytest.mark.parametrize("name, value, expected", [
    ("uwsgi_listen", "lots", "uwsgi_listen 'lots' is not an int."),
    ("uwsgi_target", "docker", "uwsgi_target 'docker' is not one of host, container, image."),
    ("uwsgi_verify", "maybe", "uwsgi_verify 'maybe' is not a bool (true or false)."),
    ("uwsgi_unlisted_apps", "delete", "uwsgi_unlisted_apps 'delete' is not one of warn, remove, fail."),
    ("uwsgi_sampler_interval", "fast", "uwsgi_sampler_interval 'fast' is not a number."),
    ("uwsgi_reload_apps", {"a": 1}, "uwsgi_reload_apps (a dict) is not a list of str values."),
])
def test_a_wrong_type_or_choice_of_a_role_variable_is_one_line(name, value, expected):
    assert f.uwsgi_spec_errors({name: value}) == [expected]


def test_every_mistake_is_reported_at_once_and_no_secret_is_quoted():
    errors = f.uwsgi_spec_errors({"uwsgi_listen": "lots", "uwsgi_apps": [
        {"name": "a", "module": "m", "listn": 1, "environment": "TOKEN=s3cret"},
        {"name": "b", "module": "m", "options": ["s3cret"], "state": "gone"}]})
    assert len(errors) == 5 and len(" ".join(errors)) < 1000
    assert "s3cret" not in repr(errors)


def test_a_long_value_is_quoted_short():
    (error,) = app_errors(listen="x" * 500)
    assert len(error) < 120 and "...'" in error


def test_the_defaults_and_the_readme_playbook_pass():
    assert f.uwsgi_spec_errors(DEFAULTS) == []
    assert f.uwsgi_spec_errors(dict(DEFAULTS, **SITE)) == []


def test_unknown_role_variables_are_not_errors_and_only_the_roles_are_read():
    assert f.uwsgi_spec_errors({"uwsgi_fleet": "x", "uwsgi_app": [{"listn": 1}]}) == []
    assert f.uwsgi_role_variables(["uwsgi_app", "uwsgi_listen", "uwsgi_apps", "uwsgi_fleet"]) == ["uwsgi_apps",
                                                                                                  "uwsgi_listen"]


def test_ansible_cores_own_check_of_main_accepts_any_value_and_every_role_param():
    # main lists the role's variables as raw: its automatic check never fails
    # on a value (and never prints its specification); the role's own does.
    main = SPECS["main"]["options"]
    assert set(main) == set(SPECS["variables"]["options"])
    result = ArgumentSpecValidator(main).validate({"uwsgi_listen": "lots", "uwsgi_apps": [{"listn": 1}]})
    assert result.error_messages == []


NO_APP = ("uwsgi_apps lists no app, so this run configures none; it still installs uWSGI and Supervisor and, unless "
          "uwsgi_manage_sysctl is false, sets the kernel's listen limits. List the apps in uwsgi_apps (each with at "
          "least name and module).")


def test_no_app_is_a_warning_naming_uwsgi_apps():
    assert f.uwsgi_input_warnings(list(DEFAULTS), []) == [NO_APP]
    assert f.uwsgi_input_warnings(list(DEFAULTS), None) == [NO_APP]
    assert f.uwsgi_input_warnings(list(DEFAULTS), SITE["uwsgi_apps"]) == []


def test_a_variable_named_like_uwsgi_apps_is_named_with_it():
    warnings = f.uwsgi_input_warnings(list(DEFAULTS) + ["uwsgi_app"], [])
    assert warnings == [
        "uwsgi_app is set, but the role has no variable of that name and ignores it; did you mean uwsgi_apps?", NO_APP]


@pytest.mark.parametrize("name, meant", [
    ("uwsgi_somaxcon", "uwsgi_somaxconn"), ("uwsgi_lisen", "uwsgi_listen"), ("uwsgi_verify_retry", "uwsgi_verify_retries"),
    ("uwsgi_proccesses", "uwsgi_processes"), ("uwsgi_manage_sysctls", "uwsgi_manage_sysctl"),
])
def test_a_variable_named_like_another_role_variable_is_named_with_it(name, meant):
    warnings = f.uwsgi_input_warnings(list(DEFAULTS) + [name], SITE["uwsgi_apps"])
    assert warnings == ["%s is set, but the role has no variable of that name and ignores it; did you mean %s?"
                        % (name, meant)]


def test_a_playbooks_own_uwsgi_variables_are_left_alone():
    # The variables this project's own playbooks give themselves.
    own = ["uwsgi_backlog", "uwsgi_fleet", "uwsgi_report_hosts", "uwsgi_rollout_hosts", "uwsgi_rollout_post_tasks",
           "uwsgi_rollout_pre_tasks", "uwsgi_rollout_serial"]
    assert f.uwsgi_input_warnings(list(DEFAULTS) + own, SITE["uwsgi_apps"]) == []


def test_the_role_reads_the_specs_it_ships():
    assert pathlib.Path(f.SPECS_FILE).resolve() == (ROOT / "meta/argument_specs.yml").resolve()
    assert set(f.uwsgi_specs()) == {"main", "variables", "app"}


class Unread(dict):
    """Settings a call must not read: a mistyped value is reported, never templated."""

    def __getitem__(self, key):
        raise AssertionError("settings read: %s" % key)

    def items(self):
        raise AssertionError("settings read")


def test_one_call_checks_fills_in_and_warns():
    from test_decisions import SETTINGS
    values = dict(DEFAULTS, uwsgi_apps=SITE["uwsgi_apps"] + [{"name": "old", "module": "m:app", "state": "absent"}],
                  uwsgi_verify_retries=12)
    out = f.uwsgi_input(values, list(values) + ["uwsgi_lisen"], SETTINGS)
    assert out["errors"] == []
    assert out["warnings"] == [
        "uwsgi_lisen is set, but the role has no variable of that name and ignores it; did you mean uwsgi_listen?",
        "uwsgi_verify_retries is deprecated and will be removed in 2.0.0: set uwsgi_verify_timeout (12 seconds, as "
        "before) instead."]
    assert [app["name"] for app in out["apps"]] == ["flaskapp", "flaskapi", "old"]
    assert out["apps"][0]["environment"] == {"APP_NAME": "flaskapp"}
    assert out["public"][0]["environment"] == ["APP_NAME"]
    assert [app["name"] for app in out["present"]] == ["flaskapp", "flaskapi"]
    assert out["settings"] == SETTINGS
    assert out["present"][0]["environment"] == ["APP_NAME"]


def test_a_mistake_fills_in_nothing_and_leaves_the_settings_unread():
    out = f.uwsgi_input({"uwsgi_listen": "lots", "uwsgi_apps": [{"name": "quotes", "module": "app:app"}]},
                        ["uwsgi_listen", "uwsgi_apps"], Unread())
    assert out == {"errors": ["uwsgi_listen 'lots' is not an int."], "warnings": [], "apps": [], "public": [],
                   "present": []}
