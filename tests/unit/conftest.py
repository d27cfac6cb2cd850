"""The role's Python, imported as the role loads it: module_utils/ for the
host parsers, filter_plugins/ for the decisions."""

import importlib.util
import pathlib
import sys

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
filters = load("uwsgi_filters", "filter_plugins/uwsgi.py")
