"""An app's environment file as uWSGI reads it: an app without environment
gets no `Can't find section` warning at each start nor in its trial, whose
refusals quote uWSGI's first lines (uWSGI's output captured on a converged
host by tests/unit/capture_env_ini.py)."""

import sys

import jinja2
import pytest
from ansible.plugins.filter.core import comment

from conftest import FIXTURES, ROOT, filters as f, load
from uwsgi_ini_model import section_options

WARNING = "*** WARNING: Can't find section \"uwsgi\" in INI configuration file"
# What the role wrote for an app without environment before: the header alone.
HEADER_ONLY = ("#\n# Ansible managed\n#\n# The environment of app flaskapp, read by its uwsgi.ini (ini = ...).\n"
               "# Each value is escaped (uwsgi_ini_escape) so that the app receives it byte for byte.\n[uwsgi]\n")


def render_env(app):
    """templates/etc/uwsgi/app.env.ini.j2 for `app`, as Ansible's template renders it (trim_blocks)."""
    env = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters.update(comment=comment, uwsgi_ini_escape=f.uwsgi_ini_escape)
    text = (ROOT / "templates/etc/uwsgi/app.env.ini.j2").read_text()
    return env.from_string(text).render(item=app, ansible_managed="Ansible managed")


def captured(release, name):
    base = FIXTURES / release / "env-ini"
    output, _, code = (base / f"{name}.txt").read_text().rpartition("rc=")
    return (base / f"{name}.ini").read_text(), output, int(code)


RELEASES = sorted(p.parent.name for p in FIXTURES.glob("*/env-ini"))


@pytest.mark.parametrize("release", RELEASES)
def test_a_section_that_sets_nothing_is_what_uwsgi_warns_about(release):
    env, output, _ = captured(release, "header-only")
    assert "[uwsgi]" in env and section_options(env) == []
    assert WARNING in output.splitlines()[2], output


@pytest.mark.parametrize("release", RELEASES)
def test_an_app_without_environment_starts_and_is_tried_without_the_warning(release):
    env, output, code = captured(release, "no-environment")
    # The capture is of the file the template renders now.
    assert env == render_env({"name": "flaskapp", "environment": {}})
    assert section_options(env) == ["set-placeholder"]
    assert "Can't find section" not in output and code == 75, output


def test_the_option_of_an_empty_environment_changes_nothing():
    env = render_env({"name": "shop", "environment": {}})
    # It sets a placeholder every ini of the role sets, to the value it has there.
    assert "set-placeholder = uwsgi_role_empty=\n" in env and f.INI_PLACEHOLDERS["uwsgi_role_empty"] == ""


def test_an_environment_is_written_as_it_was_without_that_option():
    env = render_env({"name": "shop", "environment": {"TOKEN": "100%", "HOME": "/srv"}})
    assert env.endswith("[uwsgi]\nenv = TOKEN=100%%\nenv = HOME=/srv\n")
    assert section_options(env) == ["env", "env"]


def test_a_trial_without_a_written_environment_reads_the_same_option():
    # The module imports the role's module_utils as Ansible packs them.
    for name in ("uwsgi_host", "uwsgi_trial"):
        if "ansible.module_utils." + name not in sys.modules:
            load("ansible.module_utils." + name, "module_utils/%s.py" % name)
    files = load("uwsgi_files_module", "library/uwsgi_files.py")
    text = files.EMPTY_ENV.decode()
    assert section_options(text) == ["set-placeholder"]
    assert text.splitlines()[-1] in render_env({"name": "shop", "environment": {}}).splitlines()
