"""What the role writes in its one file-writing run, what it learns from the
paths that changed, what a rollback puts back, and which kernel limits a run
writes at all."""

import ast
import json

import pytest

from conftest import ROOT
from conftest import filters as f
from test_decisions import SETTINGS, apps, errors, probe

PATHS = {"config_dir": "/etc/uwsgi/supervisor", "supervisor_conf_dir": "/etc/supervisor/conf.d",
         "tmpfiles": "/etc/tmpfiles.d/uwsgi-supervisor.conf", "helper": "/usr/local/lib/uwsgi-role/uwsgi_listen.py"}


def file_plan(apps_=None, **plan_changes):
    full = apps_ or apps()
    plan = dict(f.uwsgi_host_plan(f.uwsgi_public(full), probe(), SETTINGS), **plan_changes)
    present = [a for a in f.uwsgi_public(full) if a["state"] == "present"]
    return f.uwsgi_file_plan(present, plan, PATHS, full)


def test_every_app_gets_its_environment_ini_and_program():
    plan = file_plan()
    by_path = {t["path"]: t for t in plan["templates"]}
    env = by_path["/etc/uwsgi/supervisor/flaskapp.env.ini"]
    assert env["secret"] and env["vars"]["item"]["environment"] == {"APP_NAME": "flaskapp"}
    # Only the app's own user reads its environment: not its group (the web server, other apps).
    assert (env["owner"], env["group"], env["mode"], env["backup"]) == ("www-data", "root", "0400", True)
    ini = by_path["/etc/uwsgi/supervisor/flaskapp.ini"]
    # The ini and the program see the public view: environment keys, never values.
    assert not ini.get("secret") and ini["vars"]["item"]["environment"] == ["APP_NAME"]
    program = by_path["/etc/supervisor/conf.d/flaskapp.conf"]
    assert (program["src"], program["group"], program["mode"]) == ("etc/supervisor/conf.d/program.conf.j2", "root", "0644")
    assert len(plan["templates"]) == 1 + 3 * 2  # the tmpfiles entry, then three files per app


def test_directories_the_role_owns_come_first_with_the_apps_group():
    plan = file_plan()
    # Sticky: no app's user can remove or replace another app's socket.
    assert plan["dirs"][0] == {"path": "/run/uwsgi", "owner": "root", "group": "www-data", "mode": "1775"}
    # tmpfiles.d's own directory too: a container without systemd lacks it.
    assert [d["path"] for d in plan["dirs"][1:]] == ["/etc/uwsgi/supervisor", "/usr/local/lib/uwsgi-role",
                                                      "/etc/tmpfiles.d"]
    assert plan["copies"] == [{"src": "uwsgi_listen.py", "path": PATHS["helper"], "owner": "root", "group": "root",
                               "mode": "0755"}]


def test_no_socket_directory_means_no_tmpfiles_entry():
    plan = file_plan(dirs=[])
    assert all(not t["path"].startswith("/etc/tmpfiles.d") for t in plan["templates"])
    assert all(d["path"] != "/etc/tmpfiles.d" for d in plan["dirs"])


def test_a_host_with_no_app_left_gets_nothing_written():
    assert file_plan(empty=True) == {"dirs": [], "templates": [], "copies": [], "contents": []}


def test_changed_paths_name_the_apps_and_their_files():
    present = f.uwsgi_public(apps())
    changed = f.uwsgi_changed_apps(present, ["/etc/uwsgi/supervisor/flaskapi.ini", "/etc/uwsgi/supervisor/flaskapp.env.ini",
                                             "/etc/supervisor/conf.d/flaskapp.conf", "/run/uwsgi"], PATHS)
    assert changed == {"programs": ["flaskapp"], "inis": ["flaskapi"], "envs": ["flaskapp"]}


def test_rollback_restores_backups_and_removes_a_new_apps_files():
    present = f.uwsgi_public(apps())
    changed = ["/etc/supervisor/conf.d/flaskapp.conf", "/etc/uwsgi/supervisor/flaskapp.ini",
               "/etc/uwsgi/supervisor/flaskapi.ini", "/etc/uwsgi/supervisor/flaskapi.env.ini"]
    backups = {"/etc/uwsgi/supervisor/flaskapi.ini": "/etc/uwsgi/supervisor/flaskapi.ini.1.2026~",
               "/etc/uwsgi/supervisor/flaskapi.env.ini": "/etc/uwsgi/supervisor/flaskapi.env.ini.1.2026~"}
    previous = {"flaskapi": {"ini_group": "webapps"}}
    rb = f.uwsgi_rollback_files(present, ["flaskapp", "flaskapi"], changed, backups, PATHS, previous)
    # flaskapp's program is new in this run (no backup): its files go.
    assert rb["new"] == ["flaskapp"] and rb["programs"] == []
    assert [(r["kind"], r["owner"], r["group"], r["mode"]) for r in rb["restore"]] == [
        ("ini", "root", "webapps", "0640"), ("env", "www-data", "root", "0400")]
    assert rb["restore"][0]["backup"].endswith("~")


def test_rollback_touches_only_the_failed_apps():
    present = f.uwsgi_public(apps())
    backups = {"/etc/supervisor/conf.d/flaskapi.conf": "/etc/supervisor/conf.d/flaskapi.conf.1~"}
    rb = f.uwsgi_rollback_files(present, ["flaskapp"], list(backups), backups, PATHS, {})
    assert rb == {"restore": [], "new": [], "programs": [], "unserved": {}, "changed": []}
    rb = f.uwsgi_rollback_files(present, ["flaskapi"], list(backups), backups, PATHS, {})
    assert rb["programs"] == ["flaskapi"] and (rb["restore"][0]["kind"], rb["restore"][0]["group"]) == ("program", "root")


def sysctl_probe(live, ours):
    settings = [{"path": "/etc/sysctl.d/60-uwsgi-backlog.conf", "key": k, "value": str(v)} for k, v in ours.items()]
    return {"sysctl_live": live, "sysctl_settings": settings}


WANTED = {"net.core.somaxconn": 4096, "net.ipv4.tcp_max_syn_backlog": 4096}
OUR_FILE = "/etc/sysctl.d/60-uwsgi-backlog.conf"


def test_a_converged_kernel_writes_nothing():
    seen = sysctl_probe(WANTED, WANTED)
    assert f.uwsgi_sysctl_targets(WANTED, seen, OUR_FILE, [], False)["pending"] == []


def test_a_live_or_persisted_difference_is_written():
    seen = sysctl_probe({"net.core.somaxconn": 128, "net.ipv4.tcp_max_syn_backlog": 4096},
                        {"net.ipv4.tcp_max_syn_backlog": 4096})
    assert f.uwsgi_sysctl_targets(WANTED, seen, OUR_FILE, [], False)["pending"] == ["net.core.somaxconn"]
    # Live is right but our file lacks the key, or holds it twice.
    seen = sysctl_probe(WANTED, {"net.core.somaxconn": 4096})
    assert f.uwsgi_sysctl_targets(WANTED, seen, OUR_FILE, [], False)["pending"] == ["net.ipv4.tcp_max_syn_backlog"]


SAMPLER = {"textfile_dir": "/var/lib/prometheus/node-exporter", "interval": 0.1, "window": 15, "alert_ratio": 0.9,
           "group": "uwsgi-sampler"}
PATHS.update(sampler="/usr/local/lib/uwsgi-role/uwsgi_sampler.py", netlink="/usr/local/lib/uwsgi-role/uwsgi_netlink.py",
             sampler_config="/etc/uwsgi/supervisor/uwsgi-sampler.json")


def test_the_sampler_gets_its_script_config_program_and_a_writable_textfile_directory():
    full = apps()
    present = [a for a in f.uwsgi_public(full) if a["state"] == "present"]
    plan = f.uwsgi_file_plan(present, f.uwsgi_host_plan(present, probe(), SETTINGS), PATHS, full, SAMPLER)
    assert {"path": "/var/lib/prometheus/node-exporter", "mode": "g+rwx", "group": "uwsgi-sampler"} in plan["dirs"]
    config = json.loads(next(c["content"] for c in plan["contents"] if c["path"] == PATHS["sampler_config"]))
    assert config["apps"] == [{"name": "flaskapi", "socket": "127.0.0.1:8001"},
                              {"name": "flaskapp", "socket": "/run/uwsgi/flaskapp.sock"}]
    assert config["output"] == "/var/lib/prometheus/node-exporter/uwsgi.prom" and config["interval"] == 0.1
    assert plan["templates"][-1]["path"] == "/etc/supervisor/conf.d/uwsgi-sampler.conf"
    # In check mode before its user exists, the directory's group is left alone.
    plan = f.uwsgi_file_plan(present, f.uwsgi_host_plan(present, probe(), SETTINGS), PATHS, full, dict(SAMPLER, group=None))
    assert {"path": "/var/lib/prometheus/node-exporter", "mode": "g+rwx"} in plan["dirs"]


def test_the_sampler_script_gets_its_netlink_codec_beside_it():
    full = apps()
    present = [a for a in f.uwsgi_public(full) if a["state"] == "present"]
    plan = f.uwsgi_file_plan(present, f.uwsgi_host_plan(present, probe(), SETTINGS), PATHS, full, SAMPLER)
    copies = {c["src"]: c for c in plan["copies"]}
    script, codec = copies["uwsgi_sampler.py"], copies["uwsgi_netlink.py"]
    assert codec["path"] == PATHS["netlink"]
    assert codec["path"].rsplit("/", 1)[0] == script["path"].rsplit("/", 1)[0]
    assert codec["owner"] == codec["group"] == "root" and codec["mode"] == script["mode"]
    # The host runs the script alone: what it imports from files/ must be copied beside it.
    tree = ast.parse((ROOT / "files" / "uwsgi_sampler.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    local = {name + ".py" for name in imported if (ROOT / "files" / (name + ".py")).exists()}
    assert local == {"uwsgi_netlink.py"} and local <= set(copies)
    # Without the sampler, neither is installed.
    plan = f.uwsgi_file_plan(present, f.uwsgi_host_plan(present, probe(), SETTINGS), PATHS, full)
    assert not {"uwsgi_sampler.py", "uwsgi_netlink.py"} & {c["src"] for c in plan["copies"]}


@pytest.mark.parametrize("changed, state, action", [
    ([], "RUNNING", ""),
    (["/etc/supervisor/conf.d/uwsgi-sampler.conf"], "RUNNING", "update"),
    ([], None, "update"),
    (["/etc/uwsgi/supervisor/uwsgi-sampler.json"], "RUNNING", "restart"),
    (["/usr/local/lib/uwsgi-role/uwsgi_sampler.py"], "RUNNING", "restart"),
    (["/usr/local/lib/uwsgi-role/uwsgi_netlink.py"], "RUNNING", "restart"),
    ([], "FATAL", "restart"),
])
def test_how_the_sampler_takes_a_change(changed, state, action):
    programs = {"uwsgi-sampler": {"state": state, "pid": 5}} if state else {}
    assert f.uwsgi_sampler_action(True, changed, {"supervisor": {"programs": programs}}, PATHS) == action
    assert f.uwsgi_sampler_action(False, changed, {"supervisor": {"programs": programs}}, PATHS) == ""


def test_an_app_cannot_take_the_samplers_program_name():
    assert any("listen-queue sampler" in e for e in errors(apps((0, {"name": "uwsgi-sampler"}))))


CTX = {"host": "web-1", "manage_sysctl": True, "somaxconn": 4096, "listen_max": 4096,
       "sysctl_file": OUR_FILE, "sysctls": WANTED}


def test_preflight_refuses_a_read_only_proc_sys_with_the_container_fix():
    found = f.uwsgi_preflight_errors({"errors": []}, {"proc_sys_writable": False, "sysctl_settings": []}, CTX)
    assert len(found) == 1 and "/proc/sys is read-only on web-1" in found[0]
    assert "docker run --sysctl net.core.somaxconn=4096" in found[0] and "uwsgi_manage_sysctl: false" in found[0]


def test_preflight_names_a_later_file_that_would_win_at_boot_and_keeps_the_plans_errors():
    seen = {"proc_sys_writable": True,
            "sysctl_settings": [{"path": "/etc/sysctl.d/99-zz-low.conf", "key": "net.core.somaxconn", "value": "1024"}]}
    found = f.uwsgi_preflight_errors({"errors": ["user x does not exist"]}, seen, CTX)
    assert found[0].startswith("/etc/sysctl.d/99-zz-low.conf sets net.core.somaxconn = 1024, below the 4096")
    assert found[1] == "user x does not exist"


def test_preflight_with_limits_managed_elsewhere_checks_the_live_value():
    ctx = dict(CTX, manage_sysctl=False, listen_max=8192)
    seen = {"proc_sys_writable": False, "sysctl_live": {"net.core.somaxconn": 4096}}
    found = f.uwsgi_preflight_errors({"errors": []}, seen, ctx)
    assert len(found) == 1 and "live net.core.somaxconn on web-1 is 4096, below the largest listen (8192)" in found[0]
    assert f.uwsgi_preflight_errors({"errors": []}, seen, dict(ctx, listen_max=4096)) == []


def test_a_container_checks_the_live_value_and_names_every_place_to_set_it():
    ctx = dict(CTX, target="container", manage_sysctl=False, listen_max=8192)
    seen = {"proc_sys_writable": False, "sysctl_live": {"net.core.somaxconn": 4096}, "systemd": False}
    found = f.uwsgi_preflight_errors({"errors": []}, seen, ctx)
    assert len(found) == 1 and "live net.core.somaxconn on web-1 is 4096, below the largest listen (8192)" in found[0]
    for fix in ("--sysctl net.core.somaxconn=8192", "compose sysctls:", "securityContext.sysctls"):
        assert fix in found[0]


def test_an_image_build_does_not_judge_the_build_containers_own_limit():
    ctx = dict(CTX, target="image", manage_sysctl=False, listen_max=8192)
    seen = {"proc_sys_writable": False, "sysctl_live": {"net.core.somaxconn": 128}, "systemd": False}
    assert f.uwsgi_preflight_errors({"errors": []}, seen, ctx) == []


@pytest.mark.parametrize("target, install, systemd, refused", [
    ("host", True, False, True),     # nothing would keep Supervisor running
    ("host", True, True, False),
    ("host", True, None, False),     # an older probe's answer: not judged
    ("host", False, False, False),   # Supervisor is the operator's to run
    ("container", True, False, False),
    ("image", True, False, False),
])
def test_a_host_without_systemd_is_refused_unless_the_target_says_container(target, install, systemd, refused):
    ctx = dict(CTX, target=target, install_packages=install, manage_sysctl=False, listen_max=1024)
    seen = {"proc_sys_writable": True, "sysctl_live": {"net.core.somaxconn": 4096}, "systemd": systemd}
    found = f.uwsgi_preflight_errors({"errors": []}, seen, ctx)
    assert bool(found) == refused
    if refused:
        assert "no systemd runs on web-1" in found[0] and "uwsgi_target: container" in found[0]


def test_the_sampler_keeps_watching_an_unlisted_app_the_role_keeps_running():
    full = apps()
    listed = [a for a in f.uwsgi_public(full) if a["name"] == "flaskapi"]
    host_plan = f.uwsgi_host_plan(listed, probe(), SETTINGS)
    assert host_plan["kept"] == ["flaskapp"]
    plan = f.uwsgi_file_plan(listed, host_plan, PATHS, full, SAMPLER)
    config = next(c["content"] for c in plan["contents"] if c["path"] == PATHS["sampler_config"])
    names = [a["name"] for a in json.loads(config)["apps"]]
    assert names == ["flaskapi", "flaskapp"]


def serving_probe(**changes):
    """The host before the run, as the preflight's probe reads it (ss as captured on Debian 12): both apps serving."""
    seen = probe()
    seen["workers"] = {"flaskapp": 2, "flaskapi": 2}
    for name, socket in (("flaskapp", "/run/uwsgi/flaskapp.sock"), ("flaskapi", "127.0.0.1:8001")):
        seen["managed"][name].update(sockets=[socket], config_mtime=1000, started=2000)
    for name, change in changes.items():
        for key, value in change.items():
            if key == "state":
                seen["supervisor"]["programs"][name]["state"] = value
            elif key == "workers":
                seen["workers"][name] = value
            else:
                seen["managed"][name][key] = value
    return seen


INI_BACKUP = {"/etc/uwsgi/supervisor/flaskapp.ini": "/etc/uwsgi/supervisor/flaskapp.ini.1.2026~"}
CHANGED = {"programs": [], "inis": ["flaskapp"], "envs": [], "binaries": []}


def test_an_app_that_served_is_rolled_back_to_what_served():
    rb = f.uwsgi_rollback_files(f.uwsgi_public(apps()), ["flaskapp"], list(INI_BACKUP), INI_BACKUP, PATHS, {},
                                serving_probe(), CHANGED)
    assert [r["path"] for r in rb["restore"]] == list(INI_BACKUP) and rb["unserved"] == {}
    assert rb["changed"] == ["flaskapp"]


@pytest.mark.parametrize("before, why", [
    ({"state": "FATAL"}, "Supervisor said FATAL"),
    ({"state": "BACKOFF"}, "Supervisor said BACKOFF"),
    ({"workers": 0}, "its master had no worker"),
    ({"sockets": ["/run/uwsgi/elsewhere.sock"]}, "no socket of its was listening"),
    ({"config_mtime": 3000}, "its files had changed after its master last read them"),
])
def test_an_app_that_was_not_serving_is_never_rolled_back_to_what_never_served(before, why):
    seen = serving_probe(flaskapp=before)
    rb = f.uwsgi_rollback_files(f.uwsgi_public(apps()), ["flaskapp"], list(INI_BACKUP), INI_BACKUP, PATHS, {},
                                seen, CHANGED)
    assert rb["restore"] == [] and rb["changed"] == [] and rb["unserved"]["flaskapp"].startswith(why)
    line = f.uwsgi_rollback_report([{"name": "flaskapp", "message": "app flaskapp: expected RUNNING ..."}], [], [],
                                   {}, {}, "/var/log/supervisor", rb["unserved"])[0]
    assert "was not serving before this run" in line and "Its new files stay" in line


def test_the_textfile_directory_is_recorded_as_it_was_before_the_role_first_changes_it():
    full = apps()
    present = [a for a in f.uwsgi_public(full) if a["state"] == "present"]
    host_plan = f.uwsgi_host_plan(present, probe(), SETTINGS)
    record = "/etc/uwsgi/supervisor/.textfile-dir.json"
    before = {"exists": True, "group": "root", "mode": "0755"}
    plan = f.uwsgi_file_plan(present, host_plan, PATHS, full, dict(SAMPLER, before=before, record=record, recorded={}))
    written = next(c for c in plan["contents"] if c["path"] == record)
    assert json.loads(written["content"]) == {"path": "/var/lib/prometheus/node-exporter", "group": "root",
                                              "mode": "0755"}
    assert written["mode"] == "0600"
    # Once recorded, it is never written again (it keeps what the directory was before the role).
    again = f.uwsgi_file_plan(present, host_plan, PATHS, full,
                              dict(SAMPLER, before=before, record=record, recorded=json.loads(written["content"])))
    assert record not in [c["path"] for c in again["contents"]]


def test_a_rolled_back_gid_change_puts_the_directorys_previous_group_back_in_tmpfiles():
    dirs = [{"path": "/run/uwsgi", "group": "webapps", "app": "flaskapp", "exists": True, "previous_group": "www-data"},
            {"path": "/run/other", "group": "other", "app": "otherapp", "exists": True, "previous_group": "old"}]
    restored = f.uwsgi_dirs_restored(dirs, ["flaskapp"])
    assert [(d["path"], d["group"]) for d in restored] == [("/run/uwsgi", "www-data"), ("/run/other", "other")]


def test_a_textfile_directory_the_role_creates_is_recorded_as_its_own():
    full = apps()
    present = [a for a in f.uwsgi_public(full) if a["state"] == "present"]
    record = "/etc/uwsgi/supervisor/.textfile-dir.json"
    plan = f.uwsgi_file_plan(present, f.uwsgi_host_plan(present, probe(), SETTINGS), PATHS, full,
                             dict(SAMPLER, before={"exists": False}, record=record, recorded={}))
    written = next(c for c in plan["contents"] if c["path"] == record)
    assert json.loads(written["content"]) == {"path": "/var/lib/prometheus/node-exporter", "created": True}


def test_a_chain_reloaded_app_gets_a_touch_file_root_owns_and_the_others_none():
    """uWSGI (as the app's user) only stats it; root touches it for a chain
    reload. An app with a mule takes a graceful reload, and has none."""
    full = apps((1, {"options": {"mules": 1}}))
    present = [a for a in f.uwsgi_public(full) if a["state"] == "present"]
    plan = f.uwsgi_file_plan(present, f.uwsgi_host_plan(present, probe(), SETTINGS), PATHS, full)
    touch = [c for c in plan["contents"] if c["path"].endswith(".reload")]
    assert [(c["path"], c["owner"], c["mode"]) for c in touch] == [
        (PATHS["config_dir"] + "/flaskapp.reload", "root", "0644")]


def test_logrotate_gets_one_file_naming_every_apps_log_only_when_asked():
    full = apps()
    present = [a for a in f.uwsgi_public(full) if a["state"] == "present"]
    paths = dict(PATHS, logrotate="/etc/logrotate.d/backlogops-uwsgi")
    host_plan = f.uwsgi_host_plan(present, probe(), SETTINGS)
    rotated = f.uwsgi_file_plan(present, host_plan, paths, full, None, True)["templates"]
    assert [(t["path"], t["owner"], t["mode"]) for t in rotated if "logrotate" in t["src"]] == [
        ("/etc/logrotate.d/backlogops-uwsgi", "root", "0644")]
    assert not [t for t in f.uwsgi_file_plan(present, host_plan, paths, full)["templates"] if "logrotate" in t["src"]]


def test_a_logrotate_directive_cannot_add_lines_to_roots_file():
    from test_decisions import errors
    found = errors(apps(), {"logrotate_options": ["daily", "rotate 7\n}\n/etc/shadow {", "postrotate {"]})
    assert len(found) == 2 and all("must be one logrotate directive on one line" in e for e in found)


def test_a_new_apps_first_environment_is_not_reported_as_changed():
    """A new app (djsite) with no environment, beside one whose environment changed."""
    changed = {"envs": ["djsite", "flaskapp"]}
    assert f.uwsgi_changed_envs(changed, probe()) == ["flaskapp"]


def test_preflight_refuses_a_log_directory_an_app_user_can_write():
    seen = {"proc_sys_writable": True, "sysctl_settings": [],
            "log_dir_writable_by": "/srv/shop/logs (owner 33, mode 0755)"}
    found = f.uwsgi_preflight_errors({"errors": []}, seen, dict(CTX, log_dir="/srv/shop/logs"))
    assert len(found) == 1 and found[0].startswith("uwsgi_log_dir /srv/shop/logs can be changed by someone other")
    assert "(owner 33, mode 0755)" in found[0] and "symlink" in found[0]
