"""pip mode: what each virtualenv needs before its apps start (uWSGI at the
pinned version, built with PCRE; the apps' packages and requirements), how a
change of them reaches the apps, and the inputs refused before any change."""

import os

import pytest

from conftest import filters as f, uwsgi_host as h
from test_decisions import SETTINGS

PIP = dict(SETTINGS, install_method="pip", plugins=[], binary=None)


def pip_apps(*apps):
    base = {"module": "app:app", "chdir": "/srv/app"}
    return f.uwsgi_normalize([dict(base, **a) for a in apps], PIP)


def plan(apps, venvs=None, requirements=None, pin="2.0.31"):
    return f.uwsgi_venv_plan(apps, {"venvs": venvs or {}, "requirements": requirements or {}}, pin)


def test_a_new_venv_gets_uwsgi_then_its_apps_packages():
    apps = pip_apps({"name": "a", "virtualenv": "/srv/a/venv", "packages": ["flask==3.0.3"]})
    result = plan(apps)
    assert result["build"] == [{"venv": "/srv/a/venv", "force": False, "previous": None}]
    assert [(d["venv"], d["packages"], d["apps"]) for d in result["deps"]] == [("/srv/a/venv", ["flask==3.0.3"], ["a"])]
    assert result["deps"][0]["digest"].startswith("sha256:")


def test_a_converged_venv_needs_nothing():
    apps = pip_apps({"name": "a", "virtualenv": "/srv/a/venv", "packages": ["flask==3.0.3"],
                     "requirements": "/srv/a/requirements.txt"})
    digest = plan(apps, requirements={"/srv/a/requirements.txt": "abc"})["deps"][0]["digest"]
    venvs = {"/srv/a/venv": {"uwsgi": "2.0.31", "pcre": True, "deps": digest}}
    assert plan(apps, venvs, {"/srv/a/requirements.txt": "abc"}) == {
        "build": [], "deps": [], "homes": {"/srv/a/venv": "/srv/a/venv"}, "stale": []}
    # The requirements file's content is part of the digest.
    changed = plan(apps, venvs, {"/srv/a/requirements.txt": "def"})
    assert [d["venv"] for d in changed["deps"]] == ["/srv/a/venv"]


def test_uwsgi_without_pcre_is_rebuilt_by_force_and_apps_sharing_a_venv_share_its_packages():
    apps = pip_apps({"name": "a", "virtualenv": "/v", "packages": ["flask==3.0.3"]},
                    {"name": "b", "virtualenv": "/v", "packages": ["six==1.16.0"], "socket": "127.0.0.1:9000"})
    result = plan(apps, {"/v": {"uwsgi": "2.0.31", "pcre": False, "deps": None}})
    assert result["build"] == [{"venv": "/v", "force": True, "previous": None}]
    assert result["deps"][0]["packages"] == ["flask==3.0.3", "six==1.16.0"] and result["deps"][0]["apps"] == ["a", "b"]


def test_a_missing_requirements_file_is_named():
    apps = pip_apps({"name": "a", "virtualenv": "/v", "requirements": "/srv/a/req.txt"})
    assert plan(apps)["deps"][0]["missing"] == ["/srv/a/req.txt"]


@pytest.mark.parametrize("app, settings, words", [
    ({"packages": ["flask==3.0.3"], "virtualenv": "/v"}, SETTINGS, "only uwsgi_install_method: pip builds"),
    ({"packages": ["flask==3.0.3"]}, PIP, "need the app's own virtualenv"),
    ({"packages": ["--index-url=http://x"], "virtualenv": "/v"}, PIP, "is not one pip requirement"),
    ({"packages": ["flask ==3.0.3; rm -rf /"], "virtualenv": "/v"}, PIP, "is not one pip requirement"),
    ({"packages": ["flask\n==3"], "virtualenv": "/v"}, PIP, "is not one pip requirement"),
    ({"packages": "flask", "virtualenv": "/v"}, PIP, "must be a list"),
    ({"requirements": "requirements.txt", "virtualenv": "/v"}, PIP, "absolute path of a requirements file"),
])
def test_bad_dependencies_are_refused_saying_what_to_change(app, settings, words):
    apps = f.uwsgi_normalize([dict({"name": "a", "module": "app:app"}, **app)], settings)
    found = f.uwsgi_input_errors(apps, settings, {"net.core.somaxconn": 4096, "net.ipv4.tcp_max_syn_backlog": 4096})
    assert any(words in e for e in found), found


@pytest.mark.parametrize("package", ["flask", "flask==3.0.3", "Flask[async]>=3,<4", "pkg~=1.2", "x @ https://h/x.whl"])
def test_ordinary_requirements_pass(package):
    apps = pip_apps({"name": "a", "virtualenv": "/v", "packages": [package]})
    assert f.uwsgi_input_errors(apps, PIP, {"net.core.somaxconn": 4096, "net.ipv4.tcp_max_syn_backlog": 4096}) == []


def test_a_new_pin_keeps_the_version_its_apps_run_to_put_back():
    apps = pip_apps({"name": "a", "virtualenv": "/srv/a/venv"})
    result = plan(apps, {"/srv/a/venv": {"uwsgi": "2.0.30", "pcre": True, "exists": True}})
    assert result["build"] == [{"venv": "/srv/a/venv", "force": False, "previous": "2.0.30"}]


def serving(apps_, digest="sha256:old"):
    venvs = {"/srv/a/venv": {"uwsgi": "2.0.31", "pcre": True, "deps": digest, "exists": True}}
    return {"venvs": venvs, "requirements": {}, "supervisor": {"programs": {a["name"]: {"state": "RUNNING"}
                                                                            for a in apps_}}}


def test_a_changed_set_for_a_venv_apps_run_from_goes_into_a_new_home_of_its_own():
    apps = pip_apps({"name": "a", "virtualenv": "/srv/a/venv", "packages": ["flask==3.0.2"]})
    result = f.uwsgi_venv_plan(apps, serving(apps), "2.0.31")
    deps = result["deps"]
    assert deps[0]["stage"].startswith("/var/lib/uwsgi-role/venvs/") and deps[0]["target"] == deps[0]["stage"]
    # The serving venv is never the target: the apps take the new home as theirs.
    assert result["homes"] == {"/srv/a/venv": deps[0]["stage"]}
    trial = f.uwsgi_trial_plan(apps, serving(apps), {"config_dir": "/etc/u", "supervisor_conf_dir": "/etc/s"},
                               {"trial": True, "setpriv": "/usr/bin/setpriv"}, {"deps": ["a"]}, deps)[0]
    assert trial["home"] == deps[0]["stage"] and "its new packages, in their own home" in trial["force"]
    # The same set asked for again finds its home complete: nothing to install.
    probe = serving(apps)
    probe["venvs"]["/srv/a/venv"]["homes"] = {deps[0]["stage"]: deps[0]["digest"]}
    again = f.uwsgi_venv_plan(apps, probe, "2.0.31")
    assert again["deps"] == [] and again["homes"] == {"/srv/a/venv": deps[0]["stage"]}
    # One whose install never finished holds no set: it is installed again (with --clear).
    probe["venvs"]["/srv/a/venv"]["homes"] = {deps[0]["stage"]: None}
    assert [d["target"] for d in f.uwsgi_venv_plan(apps, probe, "2.0.31")["deps"]] == [deps[0]["stage"]]


def test_back_to_the_set_the_venv_holds_the_apps_take_the_venv_and_the_other_home_goes():
    apps = pip_apps({"name": "a", "virtualenv": "/srv/a/venv", "packages": ["flask==3.0.3"]})
    digest = plan(apps)["deps"][0]["digest"]
    probe = serving(apps, digest)
    newer = "/var/lib/uwsgi-role/venvs/e4e0b58adf7e-0123456789abcdef"
    probe["venvs"]["/srv/a/venv"]["homes"] = {newer: "sha256:0123456789abcdef"}
    # The serving instance's ini still names the newer home: kept until it no longer does.
    probe["managed"] = {"a": {"home": newer}}
    result = f.uwsgi_venv_plan(apps, probe, "2.0.31")
    assert result["homes"] == {"/srv/a/venv": "/srv/a/venv"} and result["deps"] == [] and result["stale"] == []
    probe["managed"] = {"a": {"home": "/srv/a/venv"}}
    assert f.uwsgi_venv_plan(apps, probe, "2.0.31")["stale"] == [newer]
    # A switch that did not finish may still run an instance on it.
    probe["supervisor"]["programs"]["a"]["extra"] = "a.b"
    assert f.uwsgi_venv_plan(apps, probe, "2.0.31")["stale"] == []


def test_a_venv_a_killed_pip_left_half_installed_is_not_taken_for_its_set():
    apps = pip_apps({"name": "a", "virtualenv": "/srv/a/venv", "packages": ["flask==3.0.3"]})
    digest = plan(apps)["deps"][0]["digest"]
    probe = serving(apps, digest)
    probe["venvs"]["/srv/a/venv"]["damaged"] = ["/srv/a/venv/lib/python3.11/site-packages/~lask"]
    result = f.uwsgi_venv_plan(apps, probe, "2.0.31")
    assert [d["target"] for d in result["deps"]] == [result["homes"]["/srv/a/venv"]]
    assert result["homes"]["/srv/a/venv"].startswith("/var/lib/uwsgi-role/venvs/")


def test_a_first_install_goes_straight_into_the_venv():
    apps = pip_apps({"name": "a", "virtualenv": "/srv/a/venv", "packages": ["flask==3.0.2"]})
    deps = f.uwsgi_venv_plan(apps, {"venvs": {}, "requirements": {}}, "2.0.31")["deps"]
    assert deps[0]["stage"] is None and deps[0]["target"] == "/srv/a/venv"


@pytest.mark.skipif(os.geteuid() != 0, reason="root reads only files only root can change")
def test_a_requirements_digest_covers_the_files_it_includes(tmp_path):
    os.chmod(tmp_path, 0o755)
    base = tmp_path / "base.txt"
    base.write_text("flask==3.0.3\n")
    top = tmp_path / "requirements.txt"
    top.write_text("-r base.txt\n--constraint=constraints.txt\nrequests\n")
    (tmp_path / "constraints.txt").write_text("urllib3<3\n")
    files = [name for name, _ in h.requirements_files(str(top))]
    assert files == [str(top), str(base), str(tmp_path / "constraints.txt")]
    before = h.requirements_digest(str(top))
    base.write_text("flask==3.0.2\n")
    assert h.requirements_digest(str(top)) != before
    assert h.requirements_digest(str(tmp_path / "missing.txt")) is None


def test_the_ini_names_the_home_its_apps_take():
    """templates/etc/uwsgi/app.ini.j2 as the file plan feeds it: the venv's
    new home when its set has one, the venv itself otherwise."""
    import jinja2
    from ansible.plugins.filter.core import comment

    from conftest import ROOT

    apps = f.uwsgi_public(pip_apps({"name": "a", "virtualenv": "/srv/a/venv", "packages": ["flask==3.0.2"]}))
    paths = {"config_dir": "/etc/u", "supervisor_conf_dir": "/etc/s", "helper": "/usr/local/lib/r/h.py",
             "tmpfiles": "/etc/tmpfiles.d/u.conf", "zerg_dir": "/var/lib/uwsgi-zerg", "logrotate": "/etc/l"}
    env = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters.update(comment=comment, uwsgi_ini_escape=f.uwsgi_ini_escape)
    template = env.from_string((ROOT / "templates/etc/uwsgi/app.ini.j2").read_text())

    def ini(homes):
        entry = next(t for t in f.uwsgi_file_plan(apps, {"dirs": []}, paths, apps, homes=homes)["templates"]
                     if t["path"] == "/etc/u/a.ini")
        return template.render(ansible_managed="m", __uwsgi_ini_placeholders={}, __uwsgi_plugins=[],
                               uwsgi_config_dir="/etc/u", **entry["vars"])

    home = "/var/lib/uwsgi-role/venvs/e4e0b58adf7e-0123456789abcdef"
    assert "\nhome = %s\n" % home in ini({"/srv/a/venv": home})
    assert "\nhome = /srv/a/venv\n" in ini({})


def test_the_probe_finds_each_home_with_its_set_and_a_killed_installs_leftovers(tmp_path):
    from conftest import load

    probe = load("uwsgi_probe_module", "library/uwsgi_probe.py")
    venv = "/srv/a/venv"
    prefix = f.venv_home(venv, "sha256:0").rsplit("/", 1)[1].split("-")[0]
    done, half = tmp_path / (prefix + "-aaaa"), tmp_path / (prefix + "-bbbb")
    for home in (done, half):
        (home / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
        (home / ".backlogops-uwsgi-deps").write_text("sha256:aaaa\n")
    (half / "lib" / "python3.11" / "site-packages" / "~lask").mkdir()
    (tmp_path / "0123456789ab-cccc").mkdir()  # another venv's
    assert probe.venv_homes(venv, str(tmp_path)) == {str(done): "sha256:aaaa", str(half): None}
    assert probe.pip_leftovers(str(half)) == [str(half / "lib" / "python3.11" / "site-packages" / "~lask")]
