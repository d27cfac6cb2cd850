"""The role as a user installs it: `ansible-galaxy role install` from this
repository at the release the README names (its requirements.yml, with the
git source swapped for this clone), into an empty folder. What arrives is
what `git archive` gives at that tag (.gitattributes leaves the tests out)."""

import os
import pathlib
import subprocess

import pytest
import yaml

import hostchecks as hc

LIMIT = 1024 * 1024


def run(argv, cwd, roles=None):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    env.pop("ANSIBLE_ROLES_PATH", None)
    if roles:
        env["ANSIBLE_ROLES_PATH"] = str(roles)
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, env=env, timeout=600)


def readme_release():
    entry = yaml.safe_load(hc.readme_block("# requirements.yml"))["roles"][0]
    return entry, entry["version"]


def git(*args):
    return subprocess.run(["git", *args], cwd=hc.PROJECT, capture_output=True, text=True, check=False)


def tagged(version):
    """Whether this repository has the README's release tag. A clone made
    without tags (git clone --no-tags) has none at all: it installs its HEAD."""
    if git("rev-parse", "--verify", "--quiet", f"refs/tags/{version}").returncode == 0:
        return True
    assert not git("tag", "--list").stdout.strip(), f"this repository has tags, but not {version}"
    return False


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    home = tmp_path_factory.mktemp("user")
    entry, version = readme_release()
    entry = dict(entry, src=f"file://{hc.PROJECT}", version=version if tagged(version) else "HEAD")
    (home / "requirements.yml").write_text(yaml.safe_dump({"roles": [entry]}))
    result = run(["ansible-galaxy", "role", "install", "-r", "requirements.yml", "-p", "roles"], home)
    assert result.returncode == 0, result.stdout + result.stderr
    return home, home / "roles" / "backlogops.uwsgi"


def test_the_readme_installs_a_tagged_release_the_changelog_describes():
    _, version = readme_release()
    assert version.startswith("v"), f"the README installs {version}, not a release tag"
    assert f"\n## {version[1:]} " in (hc.PROJECT / "CHANGELOG.md").read_text()
    if tagged(version):
        # The tag is a commit of this branch.
        assert git("merge-base", "--is-ancestor", version, "HEAD").returncode == 0, f"{version} is not on this branch"


def test_the_install_is_the_role_and_its_playbooks_only(installed):
    _, role = installed
    names = {p.name for p in role.iterdir()}
    assert {"tasks", "handlers", "defaults", "meta", "playbooks", "README.md", "LICENSE"} <= names, names
    assert not names & {"molecule", "tests", "benchmarks", "Makefile", ".ci", ".config"}, names
    size = sum(p.stat().st_size for p in role.rglob("*") if p.is_file() and not p.is_symlink())
    assert size < LIMIT, f"{size} bytes"


def test_the_install_holds_no_link_back_into_itself(installed):
    _, role = installed
    for path in role.rglob("*"):
        if path.is_symlink():
            target = path.resolve()
            assert not (target == role.resolve() or role.resolve() in target.parents and path.is_dir()), path


def test_a_users_playbook_with_the_installed_role_lints_clean(installed):
    home, _ = installed
    (home / "playbook.yml").write_text(hc.readme_block("# playbook.yml"))
    result = run(["ansible-lint", "--offline", "playbook.yml"], home, roles=home / "roles")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "No module named" not in output and "Ignored exception" not in output, output


@pytest.mark.parametrize("playbook", ["site.yml", "rolling.yml", "report.yml", "deploy.yml"])
def test_the_installed_playbooks_find_the_role(installed, playbook):
    home, role = installed
    path = pathlib.Path(role, "playbooks", playbook)
    result = run(["ansible-playbook", "--syntax-check", "-i", "localhost,", str(path)], home, roles=home / "roles")
    assert result.returncode == 0, result.stdout + result.stderr
