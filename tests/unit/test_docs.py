"""Every module in library/ reads in ansible-doc: its DOCUMENTATION and RETURN
parse, and the page shows the module with its short_description."""

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

ANSIBLE_DOC = pathlib.Path(sys.executable).parent / "ansible-doc"
MODULES = sorted(path.stem for path in (ROOT / "library").glob("*.py"))


def doc_strings(name):
    """The module's DOCUMENTATION, EXAMPLES and RETURN, as its file holds them."""
    tree = ast.parse((ROOT / "library" / (name + ".py")).read_text(encoding="utf-8"))
    return {node.targets[0].id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN")}


def ansible_doc(*args):
    env = {key: value for key, value in os.environ.items() if key != "ANSIBLE_FORCE_COLOR"}
    env["ANSIBLE_NOCOLOR"] = "1"
    return subprocess.run([str(ANSIBLE_DOC), "-M", "library", "-t", "module", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_library_holds_the_modules():
    assert {"uwsgi_files", "uwsgi_lock", "uwsgi_probe"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doc_strings_are_yaml(name):
    strings = doc_strings(name)
    assert "DOCUMENTATION" in strings
    for key, text in strings.items():
        assert yaml.safe_load(text), key


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_reads_the_module(name):
    short = yaml.safe_load(doc_strings(name)["DOCUMENTATION"])["short_description"]
    page = ansible_doc(name)
    assert page.returncode == 0, page.stderr
    assert "ERROR" not in page.stderr, page.stderr
    assert page.stdout.startswith("> MODULE %s " % name), page.stdout[:200]
    described = ansible_doc("--json", name)
    assert described.returncode == 0, described.stderr
    doc = json.loads(described.stdout)[name]["doc"]
    assert doc["short_description"] == short
    snippet = ansible_doc("--snippet", name)
    assert snippet.returncode == 0, snippet.stderr
    assert snippet.stdout.startswith("- name: %s\n" % short), snippet.stdout[:200]
