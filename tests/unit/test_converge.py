"""Converging from the states an interrupted run or a hand leaves: a program
written but never loaded, a program changed after its master started, an app
with mules, and the messages that must say exactly what they found."""

import pytest

from conftest import FIXTURES, filters as f, uwsgi_host as h
from test_apply_plan import NOTHING, actions
from test_decisions import SETTINGS, SYSCTLS, apps, errors, probe

LISTENERS = h.parse_ss_listeners((FIXTURES / "bookworm" / "ss-listening.txt").read_text())


def seen(**changes):
    base = probe(listeners=LISTENERS, workers={"flaskapp": 2, "flaskapi": 2})
    for record in base["managed"].values():
        record.update(config_mtime=1000.0, started=2000.0, program_mtime=1000.0, process_started=2000.0)
    for name, change in changes.items():
        base["managed"][name].update(change)
    return base


def test_a_program_written_but_never_loaded_is_loaded_not_started():
    """supervisorctl start answers `no such process` for it; update loads it."""
    host_state = seen()
    del host_state["supervisor"]["programs"]["flaskapp"]
    result = f.uwsgi_apply_plan(f.uwsgi_public(apps()), NOTHING, host_state)
    assert actions(result) == {"load": ["flaskapp"]}
    assert "written but never loaded" in result["why"][0]


def test_a_program_changed_after_its_master_started_is_loaded_and_tried():
    """An interrupted uid change: the program says the new user, the master runs as the old one."""
    host_state = seen(flaskapp={"program_mtime": 3000.0})
    result = f.uwsgi_apply_plan(f.uwsgi_public(apps()), NOTHING, host_state)
    assert actions(result) == {"load": ["flaskapp"]}
    trial = f.uwsgi_trial_plan(f.uwsgi_public(apps()), host_state, {"config_dir": "/c", "supervisor_conf_dir": "/s"},
                               {"trial": True, "setpriv": "/usr/bin/setpriv"})
    assert "its Supervisor program changed after its master started" in trial[0]["force"]


def test_a_program_written_in_the_second_before_its_master_started_counts_as_read():
    host_state = seen(flaskapp={"program_mtime": 2001.5})
    assert actions(f.uwsgi_apply_plan(f.uwsgi_public(apps()), NOTHING, host_state)) == {}


@pytest.mark.parametrize("options, children", [
    ({"mules": 1}, 3), ({"mule": ["a.py", "b.py"]}, 4), ({"spooler": "/var/spool/x"}, 3),
    ({"spooler": ["/a", "/b"], "spooler-processes": 2}, 6), ({"attach-daemon": "celery"}, 3),
])
def test_mules_spoolers_and_daemons_are_not_workers(options, children):
    present = f.uwsgi_public(apps((0, {"options": options})))
    host_state = seen()
    host_state["workers"] = {"flaskapp": children, "flaskapi": 2}
    assert [v["ok"] for v in f.uwsgi_proof(present, host_state)] == [True, True]
    assert actions(f.uwsgi_apply_plan(present, NOTHING, host_state)) == {}
    assert f.uwsgi_ready_item(present[0])["processes"] == children


def test_a_backup_file_of_a_sysctl_setting_is_not_read_at_boot():
    settings = [{"path": "/etc/sysctl.d/99-zz.conf.dpkg-old", "key": "net.core.somaxconn", "value": "128"},
                {"path": "/etc/sysctl.d/99-zz.conf~", "key": "net.core.somaxconn", "value": "128"}]
    assert f.uwsgi_sysctl_overrides(settings, "/etc/sysctl.d/60-uwsgi-backlog.conf", SYSCTLS) == []


def test_an_override_names_what_the_apps_need_and_what_the_role_persists():
    settings = [{"path": "/etc/sysctl.d/99-zz.conf", "key": "net.core.somaxconn", "value": "1024"}]
    ctx = {"host": "web-1", "manage_sysctl": True, "somaxconn": 4096, "listen_max": 4096,
           "sysctl_file": "/etc/sysctl.d/60-uwsgi-backlog.conf", "sysctls": SYSCTLS,
           "persisted": {"net.core.somaxconn": 5000}}
    found = f.uwsgi_preflight_errors({"errors": []}, {"proc_sys_writable": True, "sysctl_settings": settings}, ctx)
    assert "below the 4096 the apps need (this role persists 5000 in /etc/sysctl.d/60-uwsgi-backlog.conf)" in found[0]


def test_a_listen_above_the_kernels_limit_names_the_app_not_a_variable_left_unset():
    derived = {"net.core.somaxconn": 70000, "net.ipv4.tcp_max_syn_backlog": 70000}
    found = errors(apps((0, {"listen": 70000})), {"somaxconn_explicit": False}, derived)
    assert not [e for e in found if e.startswith("uwsgi_somaxconn")], found
    assert any("uwsgi_apps[0] (flaskapp): listen (70000) must be between 1 and 65535" in e for e in found), found
    explicit = errors(apps(), {"somaxconn_explicit": True}, derived)
    assert any(e.startswith("uwsgi_somaxconn (70000) is above 65535") for e in explicit)


def test_packages_installed_but_never_loaded_are_loaded_by_the_next_run():
    present = f.uwsgi_normalize([{"name": "flaskapp", "module": "app:app", "virtualenv": "/srv/a/venv",
                                  "packages": ["flask==3.0.3"], "listen": 4096}],
                                 dict(SETTINGS, install_method="pip", plugins=[]))
    host_state = seen()
    host_state["venvs"] = {"/srv/a/venv": {"deps_mtime": 2500.0}}
    result = f.uwsgi_apply_plan(f.uwsgi_public(present), NOTHING, host_state)
    assert result["reload"] == ["flaskapp"] and "installed after its master last loaded them" in result["why"][0]
    # Installed in the seconds before the reload that loaded them: nothing to do.
    host_state["venvs"]["/srv/a/venv"]["deps_mtime"] = 2001.0
    assert f.uwsgi_apply_plan(f.uwsgi_public(present), NOTHING, host_state)["reload"] == []


RUN_A = {"controller": "ctl", "pid": 100, "started": 1000.0, "id": "ctl:100:1000.0"}
RUN_B = {"controller": "ctl", "pid": 200, "started": 1003.0, "id": "ctl:200:1003.0"}


def test_a_free_lock_or_ones_own_is_taken():
    assert h.lock_decision({}, RUN_A, 2000.0, 7200)["take"]
    assert h.lock_decision(dict(RUN_A, taken=1001.0), RUN_A, 2000.0, 7200)["take"]


def test_a_second_run_waits_and_is_told_who_holds_the_lock():
    found = h.lock_decision(dict(RUN_A, taken=1001.0), RUN_B, 1010.0, 7200)
    assert not found["take"]
    assert found["who"].startswith("ansible-playbook PID 100 on ctl, started 1970-01-01 00:16:40 UTC")


def test_a_lock_left_by_a_dead_run_is_taken_over():
    dead = h.lock_decision(dict(RUN_A, taken=1001.0), RUN_B, 1010.0, 7200, stale_id=RUN_A["id"])
    assert dead["take"] and dead["why"].startswith("the run that held it is dead")
    old = h.lock_decision(dict(RUN_A, taken=1001.0), RUN_B, 1001.0 + 7201, 7200)
    assert old["take"] and "held for more than 7200 s" in old["why"]
    # Another run's id named as dead does not take a live holder's lock.
    assert not h.lock_decision(dict(RUN_A, taken=1001.0), RUN_B, 1010.0, 7200, stale_id="ctl:300:1.0")["take"]


def test_a_uwsgi_binary_replaced_after_its_master_started_is_restarted_onto():
    """A package upgrade, or a run interrupted after a pip build: the master still runs the old binary."""
    host_state = seen(flaskapp={"binary_mtime": 3000.0})
    result = f.uwsgi_apply_plan(f.uwsgi_public(apps()), NOTHING, host_state)
    assert actions(result) == {"restart": ["flaskapp"]} and "binary changed after its master started" in result["why"][0]
    assert actions(f.uwsgi_apply_plan(f.uwsgi_public(apps()), NOTHING, seen(flaskapp={"binary_mtime": 1500.0}))) == {}


NEEDS = {"packages": ["supervisor", "uwsgi-core"], "venv_plan": {"build": [], "deps": []}, "target": "host",
         "plan": {"removals": [], "stale_dirs": [], "dirs": [{"path": "/run/uwsgi"}], "empty": False},
         "sampler_on": True, "sampler_program": "uwsgi-sampler"}


def test_a_converged_host_needs_no_install_and_no_removal():
    host_state = probe(packages={"supervisor": True, "uwsgi-core": True}, service={"active": True, "enabled": True},
                       backups=[], config_dir_files=["flaskapp.ini"])
    needs = f.uwsgi_host_needs(host_state, NEEDS)
    assert needs == {"missing_packages": [], "reinstall_packages": [], "supervisor_up": True, "install": False,
                     "remove": False}


@pytest.mark.parametrize("change, key", [
    ({"packages": {"supervisor": True, "uwsgi-core": False}}, "install"),
    ({"service": {"active": True, "enabled": False}}, "install"),
    ({"backups": ["/etc/uwsgi/supervisor/flaskapp.ini.1.2026~"]}, "remove"),
])
def test_what_the_host_lacks_or_an_interrupted_run_left_needs_a_step(change, key):
    base = {"packages": {"supervisor": True, "uwsgi-core": True}, "service": {"active": True, "enabled": True},
            "backups": []}
    assert f.uwsgi_host_needs(probe(**dict(base, **change)), NEEDS)[key]


def test_a_uwsgi_binary_gone_behind_the_role_s_back_is_reinstalled_or_named():
    base = {"packages": {"supervisor": True, "uwsgi-core": True}, "service": {"active": True, "enabled": True},
            "backups": [], "binary_problem": "/usr/bin/uwsgi points to /usr/bin/uwsgi-core, which is missing"}
    ctx = dict(NEEDS, binary_package="uwsgi-core", install_packages=True)
    needs = f.uwsgi_host_needs(probe(**base), ctx)
    assert needs["reinstall_packages"] == ["uwsgi-core"] and needs["install"]
    assert f.uwsgi_host_needs(probe(**dict(base, binary_problem=None)), ctx)["reinstall_packages"] == []
    # Not the role's to install: the preflight names the binary instead.
    assert f.uwsgi_host_needs(probe(**base), dict(ctx, install_packages=False))["reinstall_packages"] == []
    errors = f.uwsgi_preflight_errors({"errors": []}, probe(**dict(base, proc_sys_writable=True, sysctl_settings=[])),
                                      {"host": "h", "install_packages": False, "manage_sysctl": False, "listen_max": 100})
    assert errors and errors[0].startswith("/usr/bin/uwsgi points to /usr/bin/uwsgi-core, which is missing, so no app")


def test_the_sampler_files_leave_its_group_out_in_check_mode_before_its_user_exists():
    settings = {"on": True, "textfile_dir": "/var/lib/prometheus/node-exporter", "interval": 0.1, "window": 60,
                "alert_ratio": 0.9, "user": "uwsgi-sampler", "record": "/etc/uwsgi/supervisor/.textfile-dir.json"}
    assert f.uwsgi_sampler_files(settings, probe(), True)["group"] is None
    assert f.uwsgi_sampler_files(settings, probe(), False)["group"] == "uwsgi-sampler"
    assert f.uwsgi_sampler_files(dict(settings, on=False), probe()) is None


def test_a_run_that_did_nothing_is_judged_on_its_own_probe():
    present = f.uwsgi_public(apps())
    assert not f.uwsgi_prove_live(present, [], [], {"listen": []}, "")
    assert f.uwsgi_prove_live(present, [], ["flaskapp"], {"listen": []}, "")
    assert f.uwsgi_prove_live(f.uwsgi_public(apps((0, {"check_path": "/"}))), [], [], {"listen": []}, "")
