"""The files action renders the files of one template in one lookup
(templates/batch.j2): byte for byte what Ansible's template lookup renders for
each file alone, trailing newlines, `%`, quotes and newlines in values included."""

import copy
from unittest import mock

import yaml

from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import filter_loader, init_plugin_loader, lookup_loader
from ansible.template import Templar

from conftest import ROOT, filters as f, load
from test_decisions import BASE, SETTINGS, probe
from test_file_plan import PATHS

# Ansible's plugin loaders as ansible-playbook sets them up, with the role's filters.
init_plugin_loader()
filter_loader.add_directory(str(ROOT / "filter_plugins"))
action = load("uwsgi_files_action", "action_plugins/uwsgi_files.py")

ODD = {"APP_NAME": "100% \"quoted\" 'app'\nsecond line", "EMPTY": "", "DOLLAR": "$HOME @x %(y)s"}


def plan_and_vars(apps_):
    """The file plan, and the variables its templates read, as a play with the role's defaults gives them."""
    full = f.uwsgi_normalize(apps_, SETTINGS)
    present = [a for a in f.uwsgi_public(full) if a["state"] == "present"]
    paths = dict(PATHS, logrotate="/etc/logrotate.d/backlogops-uwsgi", zerg_dir="/var/lib/uwsgi-zerg")
    host_plan = f.uwsgi_host_plan(present, probe(), SETTINGS)
    role_vars = {key: value for key, value in yaml.safe_load((ROOT / "vars/main.yml").read_text()).items()
                 if isinstance(value, (dict, str)) and "{{" not in str(value)}
    task_vars = dict(yaml.safe_load((ROOT / "defaults/main.yml").read_text()),
                     **yaml.safe_load((ROOT / "vars/Debian.yml").read_text()), **role_vars,
                     ansible_managed="Ansible managed", __uwsgi_plan=host_plan, __uwsgi_apps_present=present,
                     __uwsgi_plugins=["python3"])
    return f.uwsgi_file_plan(present, host_plan, paths, full, logrotate=True), task_vars


def renderer():
    loader = DataLoader()
    templar = Templar(loader=loader, variables={})
    plugin = action.ActionModule(mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), loader=loader, templar=templar,
                                 shared_loader_obj=None)
    plugin._find_needle = lambda kind, name: str(ROOT / kind / name)
    return plugin, lookup_loader.get("ansible.builtin.template", loader=loader, templar=templar)


def test_one_lookup_per_template_renders_each_file_as_a_lookup_of_its_own():
    apps_ = [dict(app, apply_strategy="beside") for app in copy.deepcopy(BASE)] + [
        {"name": "odd", "module": "app:app", "chdir": "/srv/odd", "environment": ODD, "options": {"route": "^/x% break:403"}}]
    plan, task_vars = plan_and_vars(apps_)
    entries = plan["templates"]
    assert len({e["src"] for e in entries}) < len(entries)  # some template serves several files
    plugin, template = renderer()
    alone = [template.run([str(ROOT / "templates" / e["src"])], dict(task_vars), template_vars=e.get("vars") or {})[0]
             for e in entries]
    assert plugin._render(entries, task_vars) == alone
    assert all(text.endswith("\n") for text in alone)
