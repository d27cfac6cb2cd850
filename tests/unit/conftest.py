"""The role's Python, imported as the role loads it: module_utils/ for the
host parsers, filter_plugins/ for the decisions."""

import importlib.util
import pathlib
import sys
import types

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def load(name, relative):
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


uwsgi_host = load("uwsgi_host", "module_utils/uwsgi_host.py")
uwsgi_trial = load("uwsgi_trial", "module_utils/uwsgi_trial.py")
# The role's decisions, one file per stage of its path (filter_plugins/), read
# here as one namespace: each stage loads the others it needs the way Ansible's
# filter loader leaves it to (uwsgi_host.load_role_python).
STAGES = ("uwsgi_input", "uwsgi_host_plan", "uwsgi_state", "uwsgi_apply", "uwsgi_proof", "uwsgi_report")
filters = types.SimpleNamespace()
for _stage in STAGES:
    vars(filters).update({key: value for key, value in vars(uwsgi_host.load_role_python("filter_plugins", _stage)).items()
                          if not key.startswith("__")})
