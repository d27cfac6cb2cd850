"""The role's Python, imported as the role loads it: module_utils/ for the
host parsers and the decisions, through filter_plugins/uwsgi.py."""

import importlib
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


# The role's shared Python, imported as its plugins and modules import it
# (filter_plugins/uwsgi.py adds module_utils/ to ansible.module_utils).
filter_plugin = load("uwsgi_filter_plugin", "filter_plugins/uwsgi.py")
uwsgi_host = importlib.import_module("ansible.module_utils.uwsgi_host")
uwsgi_trial = importlib.import_module("ansible.module_utils.uwsgi_trial")
# The role's decisions, one file per stage of its path, read here as one namespace.
filters = types.SimpleNamespace()
for _stage in filter_plugin.STAGES:
    _module = importlib.import_module("ansible.module_utils." + _stage)
    vars(filters).update({key: value for key, value in vars(_module).items() if not key.startswith("__")})
