"""The README walked as a new user walks it: install the role from its git
source into an empty roles path with ansible-galaxy, then run the README's
minimal playbook from a folder that has nothing else.

The README's requirements.yml names the public repository; here its src is
this checkout's committed tree (git clone of a file:// URL at HEAD), so what
is installed is exactly what a user would get from that commit.
"""

import os
import subprocess

import pytest
import yaml

import hostchecks as hc


def run(argv, cwd, env=None):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", **(env or {})))


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    home = tmp_path_factory.mktemp("new-user")
    requirements = yaml.safe_load(hc.readme_block("# requirements.yml"))
    entry = requirements["roles"][0]
    assert entry["name"] == "backlogops.uwsgi" and entry["scm"] == "git", entry
    assert entry["src"].startswith("https://"), entry
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=hc.PROJECT, capture_output=True, text=True,
                          check=True).stdout.strip()
    entry.update(src=f"file://{hc.PROJECT}", version=head)
    (home / "requirements.yml").write_text(yaml.safe_dump(requirements))
    (home / "playbook.yml").write_text(hc.readme_block("# playbook.yml"))
    roles = home / "roles"
    installed = run(["ansible-galaxy", "role", "install", "-r", "requirements.yml", "-p", str(roles)], home)
    played = run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "playbook.yml"], home,
                 {"ANSIBLE_ROLES_PATH": str(roles)})
    return home, installed, played


def test_the_role_installs_from_its_git_source_into_an_empty_roles_path(walk):
    home, installed, _ = walk
    assert installed.returncode == 0, installed.stdout + installed.stderr
    role = home / "roles" / "backlogops.uwsgi"
    assert (role / "tasks" / "main.yml").is_file() and (role / "library" / "uwsgi_probe.py").is_file()
    # A copy, not a link back into this checkout.
    assert not role.is_symlink()


def test_the_minimal_playbook_runs_and_proves_its_app(walk, host):
    home, _, played = walk
    assert played.returncode == 0, played.stdout[-3000:] + played.stderr[-2000:]
    assert "backlogops.uwsgi" in played.stdout
    # It is the converged host's own flaskapp: nothing to change, and the
    # backlog it asks for is in effect.
    assert set(hc.recap_changed(played.stdout).values()) == {0}, played.stdout[-3000:]
    app = next(a for a in hc.apps_from_playbook(home / "playbook.yml"))
    hc.check_backlog(host, app)
    hc.check_request(host, app, f"hello from {app['name']}")
