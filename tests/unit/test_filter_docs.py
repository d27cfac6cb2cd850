"""Every filter of filter_plugins/uwsgi.py reads in ansible-doc: a sidecar
filter_plugins/<name>.yml whose options are the function's parameters."""

import inspect

import pytest
import yaml

from conftest import ROOT, filter_plugin

FILTERS = filter_plugin.FilterModule().filters()
STAGE = {name: stage for stage, names in filter_plugin.STAGES.items() for name in names}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_sidecar_documents_the_filter(name):
    doc = yaml.safe_load((ROOT / "filter_plugins" / (name + ".yml")).read_text(encoding="utf-8"))["DOCUMENTATION"]
    parameters = list(inspect.signature(filter_plugin.function(STAGE[name], name)).parameters)
    assert doc["name"] == name
    assert list(doc["options"]) == ["_input"] + parameters[1:]
    assert [option.strip() for option in doc["positional"].split(",")] == ["_input"] + parameters[1:]


def test_no_sidecar_without_a_filter():
    assert sorted(path.stem for path in (ROOT / "filter_plugins").glob("*.yml")) == sorted(FILTERS)


def test_the_filter_calls_its_function():
    assert FILTERS["uwsgi_socket_key"]("127.0.0.1:8001") == ":8001"
    assert FILTERS["uwsgi_socket_key"].__name__ == "uwsgi_socket_key"
