"""The role's decisions: normalisation, input errors, the host plan, the
sysctl overrides, the proof and the rollback report. The expected values are
written out here, never computed by the role's own code."""

import copy

import pytest

from conftest import FIXTURES, filters as f, uwsgi_host as h

SETTINGS = {
    "socket_dir": "/run/uwsgi", "listen": 1024, "processes": 2, "threads": 1, "user": "www-data",
    "group": "www-data", "chmod_socket": "660", "startsecs": 2, "install_method": "apt",
    "pip_virtualenv": "/opt/uwsgi/venv", "binary": "/usr/bin/uwsgi", "plugins": ["python3"],
    "allow_root": False, "allow_world_writable_socket": False, "unlisted_apps": "warn",
    "config_dir": "/etc/uwsgi/supervisor", "supervisor_conf_dir": "/etc/supervisor/conf.d",
    "log_dir": "/var/log/supervisor",
    # The decisions of the graceful and restart ways; the beside cases set their own.
    "apply_strategy": "graceful",
}
SYSCTLS = {"net.core.somaxconn": 4096, "net.ipv4.tcp_max_syn_backlog": 4096}
BASE = [
    {"name": "flaskapp", "module": "app:app", "chdir": "/srv/flaskapp", "socket": "/run/uwsgi/flaskapp.sock",
     "listen": 4096, "environment": {"APP_NAME": "flaskapp"}},
    {"name": "flaskapi", "module": "app:app", "chdir": "/srv/flaskapp", "socket": "127.0.0.1:8001", "listen": 2048,
     "threads": 2},
]


def apps(*changes, base=BASE):
    out = copy.deepcopy(base)
    for index, change in changes:
        out[index].update(change)
    return f.uwsgi_normalize(out, SETTINGS)


def errors(apps_, settings=None, sysctls=None):
    return f.uwsgi_input_errors(apps_, dict(SETTINGS, **(settings or {})), sysctls or SYSCTLS)


def test_normalize_fills_in_the_defaults():
    app = f.uwsgi_normalize([{"name": "x", "module": "m:app"}], SETTINGS)[0]
    assert app == {
        "name": "x", "state": "present", "module": "m:app", "chdir": None, "virtualenv": None,
        "socket": "/run/uwsgi/x.sock", "socket_kind": "unix", "socket_dir": "/run/uwsgi", "protocol": "uwsgi",
        "processes": 2, "threads": 1, "listen": 1024, "uid": "www-data", "gid": "www-data", "chmod_socket": "660",
        "startsecs": 2, "options": {}, "environment": {}, "uwsgi_venv": None, "binary": "/usr/bin/uwsgi",
        "ready_timeout": 60, "check_path": None, "packages": [], "requirements": None,
        "revision": None, "code_reload": "chain", "chain": True,
        "log_max_bytes": "50MB", "log_backups": 10, "request_logging": "errors",
        "apply_strategy": "graceful", "beside": False, "zerg": "/var/lib/uwsgi-zerg/x/pool.zerg",
        "stage_mark": "/run/backlogops-uwsgi-stage/x",
    }


def test_normalize_keeps_an_explicit_zero_for_validation():
    assert f.uwsgi_normalize([{"name": "x", "listen": 0}], SETTINGS)[0]["listen"] == 0
    assert "listen (0) must be between 1 and 65535" in " ".join(errors(apps((0, {"listen": 0}))))


def test_the_default_way_is_beside():
    settings = {key: value for key, value in SETTINGS.items() if key != "apply_strategy"}
    app = f.uwsgi_normalize([{"name": "x", "module": "m:app"}], settings)[0]
    assert app["apply_strategy"] == "beside" and app["beside"] is True


def test_pip_apps_run_the_uwsgi_of_their_venv():
    pip = dict(SETTINGS, install_method="pip")
    own, shared = f.uwsgi_normalize([{"name": "a", "virtualenv": "/srv/a/venv"}, {"name": "b"}], pip)
    assert own["binary"] == "/srv/a/venv/bin/uwsgi" and shared["binary"] == "/opt/uwsgi/venv/bin/uwsgi"


def test_public_apps_carry_no_environment_values():
    public = f.uwsgi_public(apps((0, {"environment": {"TOKEN": "s3cret", "A": "1"}})))
    assert public[0]["environment"] == ["A", "TOKEN"]
    assert "s3cret" not in repr(public)


def test_the_readme_playbook_is_valid():
    assert errors(apps()) == []


# (case, changes to the apps or settings, words the error must hold). The same
# cases run against a real host in molecule/default/tests/test_guardrails.py.
BAD = [
    ("name-dotdot", [(0, {"name": "../x"})], {}, ["letters, digits"]),
    ("name-duplicate", [(1, {"name": "flaskapp"})], {}, ["used by another app"]),
    ("listen-above-somaxconn", [], {"sysctls": {"net.core.somaxconn": 1024}}, ["listen (4096) exceeds uwsgi_somaxconn (1024)"]),
    ("somaxconn-too-big", [], {"sysctls": {"net.core.somaxconn": 70000}}, ["uwsgi_somaxconn (70000)", "65535"]),
    ("listen-too-big", [(0, {"listen": 70000})], {}, ["listen (70000)", "between 1 and 65535"]),
    ("socket-relative", [(0, {"socket": "run/app.sock"})], {}, ["absolute unix socket path"]),
    ("socket-port-range", [(1, {"socket": "127.0.0.1:99999"})], {}, ["port from 1 to 65535"]),
    ("socket-port-name", [(1, {"socket": "127.0.0.1:http"})], {}, ["host:port"]),
    ("socket-dotdot", [(0, {"socket": "/run/uwsgi/../x.sock"})], {}, ["not a plain absolute path"]),
    ("socket-newline", [(0, {"socket": "/run/uwsgi/x\nprocesses = 7"})], {}, ["not a plain absolute path"]),
    ("socket-shared", [(1, {"socket": "/run/uwsgi/flaskapp.sock"})], {}, ["already used by app flaskapp"]),
    ("port-shared", [(0, {"socket": "0.0.0.0:8001"})], {}, ["already used by app"]),
    ("processes-zero", [(0, {"processes": 0})], {}, ["processes (0)", "at least 1"]),
    ("chmod-not-octal", [(0, {"chmod_socket": "999"})], {}, ["not an octal mode"]),
    ("chmod-world-writable", [(0, {"chmod_socket": "666"})], {}, ["uwsgi_allow_world_writable_socket"]),
    ("uid-root", [(0, {"uid": "root"})], {}, ["runs the app as root", "uwsgi_allow_root"]),
    ("uid-newline", [(0, {"uid": "www-data\nx"})], {}, ['uid "www-data\nx" is not a user']),
    ("no-module", [(0, {"module": None})], {}, ["no app to load"]),
    ("options-chmod-socket", [(0, {"options": {"chmod-socket": 666}})], {}, ["options.chmod-socket is set by the role", "chmod_socket instead"]),
    ("options-underscore", [(0, {"options": {"chmod_socket": 666}})], {}, ["options.chmod_socket is set by the role"]),
    ("options-uid", [(0, {"options": {"uid": "root"}})], {}, ["uid instead"]),
    ("options-gid", [(0, {"options": {"gid": "root"}})], {}, ["gid instead"]),
    ("options-processes", [(1, {"options": {"workers": 7}})], {}, ["options.workers", "processes instead"]),
    ("options-listen", [(1, {"options": {"listen": 100}})], {}, ["options.listen", "listen instead"]),
    ("options-master", [(1, {"options": {"master": False}})], {}, ["options.master", "the role handles it (always on)"]),
    ("options-env", [(0, {"options": {"env": "TOKEN=x"}})], {}, ["options.env", "environment instead"]),
    ("options-socket", [(0, {"options": {"http-socket": ":80"}})], {}, ["options.http-socket", "protocol: http"]),
    ("options-dict-value", [(0, {"options": {"harakiri": {"seconds": 30}}})], {}, ["has a dict value"]),
    ("options-nested-list", [(0, {"options": {"route": [["a"]]}})], {}, ["has a list value"]),
    ("options-none", [(0, {"options": {"harakiri": None}})], {}, ["has no value"]),
    ("options-newline", [(0, {"options": {"harakiri": "30\nprocesses = 7"}})], {}, ["options.harakiri holds a line break"]),
    ("options-bad-key", [(0, {"options": {"a b": 1}})], {}, ['options key "a b" is not a uWSGI option name']),
    ("environment-newline", [(0, {"environment": {"TOKEN": "abc\nprocesses = 7"}})], {}, ["environment.TOKEN holds a line break"]),
    ("environment-nul", [(0, {"environment": {"TOKEN": "a\0b"}})], {}, ["environment.TOKEN holds a NUL"]),
    ("environment-key", [(0, {"environment": {"MY-VAR": "1"}})], {}, ['environment key "MY-VAR"']),
    ("environment-dict", [(0, {"environment": {"A": {"b": 1}}})], {}, ["environment.A must be a string"]),
    ("chdir-newline", [(0, {"chdir": "/srv\nprocesses = 7"})], {}, ["chdir holds a line break"]),
    ("chdir-relative", [(0, {"chdir": "srv/app"})], {}, ["chdir 'srv/app' must be an absolute path"]),
    ("environment-uwsgi-key", [(0, {"environment": {"UWSGI_PROCESSES": "7"}})], {}, ["reads UWSGI_* variables"]),
    ("check-path-relative", [(0, {"check_path": "healthz"})], {}, ["check_path 'healthz' must be a path"]),
    ("config-dir-blank", [], {"settings": {"config_dir": "/etc/uwsgi apps"}}, ["uwsgi_config_dir '/etc/uwsgi apps'"]),
    ("log-dir-percent", [], {"settings": {"log_dir": "/var/log/%(here)s"}}, ["uwsgi_log_dir"]),
    ("pip-plugins", [], {"settings": {"install_method": "pip"}}, ["cannot be loaded by a uWSGI built by pip"]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_refused_saying_what_to_change(case):
    _, changes, extra, words = case
    sysctls = dict(SYSCTLS, **extra.get("sysctls", {}))
    found = " ".join(errors(apps(*changes), extra.get("settings"), sysctls))
    for word in words:
        assert word in found, found


def test_absent_apps_are_not_checked_beyond_their_name():
    assert errors(apps((1, {"state": "absent", "module": None, "socket": "bad"}))) == []


def test_wsgi_file_is_an_app_to_load_and_opt_ins_work():
    assert errors(apps((0, {"module": None, "options": {"wsgi-file": "/srv/app.py"}}))) == []
    assert errors(apps((0, {"uid": "root", "chmod_socket": "666"})),
                  {"allow_root": True, "allow_world_writable_socket": True}) == []


# The probe as a fresh, converged host reports it.
def probe(**changes):
    base = {
        "supervisor": {"running": True, "programs": {
            "flaskapp": {"state": "RUNNING", "pid": 100, "line": "flaskapp RUNNING pid 100, uptime 0:01:00"},
            "flaskapi": {"state": "RUNNING", "pid": 200, "line": "flaskapi RUNNING pid 200, uptime 0:01:00"}}},
        "listeners": h.parse_ss_listeners((FIXTURES / "bookworm" / "ss-listening.txt").read_text()),
        "users": {"www-data": {"exists": True, "uid": 33, "gid": 33, "groups": [33]},
                  "app1": {"exists": True, "uid": 999, "gid": 999, "groups": [999]}},
        "groups": {"www-data": {"exists": True, "gid": 33}, "webapps": {"exists": True, "gid": 998}},
        "dirs": {"/run/uwsgi": {"exists": True, "is_dir": True, "uid": 0, "gid": 33, "owner": "root",
                                "group": "www-data", "mode": "0775"}},
        "managed": {
            "flaskapp": {"name": "flaskapp", "user": "www-data", "group": "www-data", "ini_group": "www-data",
                         "program_file": "/etc/supervisor/conf.d/flaskapp.conf", "sockets": ["/run/uwsgi/flaskapp.sock"]},
            "flaskapi": {"name": "flaskapi", "user": "www-data", "group": "www-data", "ini_group": "www-data",
                         "program_file": "/etc/supervisor/conf.d/flaskapi.conf", "sockets": ["127.0.0.1:8001"]}},
        "tmpfiles_dirs": ["/run/uwsgi"],
    }
    base.update(changes)
    return base


def plan(apps_, probe_, **settings):
    return f.uwsgi_host_plan(f.uwsgi_public(apps_), probe_, dict(SETTINGS, **settings))


def test_converged_host_plans_nothing_to_remove():
    result = plan(apps(), probe())
    assert result["errors"] == [] and result["warnings"] == [] and result["removals"] == []
    assert result["dirs"] == [{"path": "/run/uwsgi", "group": "www-data", "app": "flaskapp", "exists": True,
                               "previous_group": "www-data"}]


def test_a_fresh_host_gets_its_socket_directory_created():
    result = plan(apps(), probe(dirs={"/run/uwsgi": {"exists": False, "parent_exists": True}}, managed={},
                                listeners=[], tmpfiles_dirs=[], supervisor={"running": False, "programs": {}}))
    assert result["errors"] == []
    assert [(d["path"], d["group"], d["exists"]) for d in result["dirs"]] == [("/run/uwsgi", "www-data", False)]


def test_plain_rename_is_refused_naming_the_program_that_holds_the_socket():
    renamed = apps((0, {"name": "ledger2"}))
    result = plan(renamed, probe())
    assert any('socket /run/uwsgi/flaskapp.sock is already held by Supervisor program "flaskapp"' in e
               for e in result["errors"]), result["errors"]
    assert any("not listed in uwsgi_apps and keep running as they are: flaskapp" in w for w in result["warnings"])


def test_plain_rename_with_remove_removes_the_old_program_first():
    result = plan(apps((0, {"name": "ledger2"})), probe(), unlisted_apps="remove")
    assert result["errors"] == []
    (removal,) = result["removals"]
    assert removal["name"] == "flaskapp" and removal["program_file"] == "/etc/supervisor/conf.d/flaskapp.conf"
    # Its socket is ledger2's now: not removed.
    assert "/run/uwsgi/flaskapp.sock" not in removal["files"]
    assert "/var/log/supervisor/flaskapp.log" in removal["files"]


def test_unlisted_fail_stops_the_run():
    result = plan(apps()[:1], probe(), unlisted_apps="fail")
    assert any("not listed in uwsgi_apps: flaskapi" in e for e in result["errors"])


def test_absent_removes_only_what_the_app_owned():
    gone = apps((0, {"state": "absent"}))
    result = plan(gone, probe())
    (removal,) = result["removals"]
    assert "/run/uwsgi/flaskapp.sock" in removal["files"] and removal["loaded"]
    # An absent app the host no longer has: its socket path is not guessed.
    again = plan(gone, probe(managed={k: v for k, v in probe()["managed"].items() if k != "flaskapp"},
                             listeners=[]))
    assert not any(p.endswith(".sock") for p in again["removals"][0]["files"])


def test_absent_after_rename_keeps_the_new_apps_socket():
    apps_ = apps((0, {"name": "ledger3"}), base=BASE) + f.uwsgi_normalize([{"name": "flaskapp", "state": "absent"}],
                                                                          SETTINGS)
    managed = dict(probe()["managed"])
    managed["ledger3"] = dict(managed.pop("flaskapp"), name="ledger3", program_file="/etc/supervisor/conf.d/ledger3.conf")
    programs = {"ledger3": {"state": "RUNNING", "pid": 100, "line": "ledger3 RUNNING"},
                "flaskapi": probe()["supervisor"]["programs"]["flaskapi"]}
    result = plan(apps_, probe(managed=managed, supervisor={"running": True, "programs": programs}))
    assert result["errors"] == []
    assert not any(p.endswith(".sock") for r in result["removals"] for p in r["files"])


def test_unlisted_app_keeps_its_socket_directory_in_tmpfiles():
    result = plan(apps()[1:], probe())
    assert [d["path"] for d in result["dirs"]] == ["/run/uwsgi"] and result["kept"] == ["flaskapp"]
    assert not result["empty"]


def test_no_app_left_empties_everything():
    result = plan(f.uwsgi_normalize([{"name": "flaskapp", "state": "absent"}, {"name": "flaskapi", "state": "absent"}],
                                    SETTINGS), probe())
    assert result["empty"] and result["dirs"] == [] and result["stale_dirs"] == ["/run/uwsgi"]


def test_existing_directory_keeps_owner_and_mode_when_the_app_can_write():
    side = apps((0, {"socket": "/srv/sockets/flaskapp.sock"}))
    dirs = {"/srv/sockets": {"exists": True, "is_dir": True, "uid": 0, "gid": 33, "owner": "root", "group": "www-data",
                             "mode": "2770"}}
    result = plan(side, probe(dirs=dirs, listeners=[]))
    assert result["errors"] == [] and result["dirs"] == []


def test_existing_directory_the_app_cannot_write_is_refused():
    side = apps((0, {"socket": "/srv/ledger/ledger.sock"}))
    dirs = {"/srv/ledger": {"exists": True, "is_dir": True, "uid": 0, "gid": 0, "owner": "root", "group": "root",
                            "mode": "0755"}}
    result = plan(side, probe(dirs=dirs, listeners=[]))
    (error,) = result["errors"]
    assert "cannot create socket /srv/ledger/ledger.sock: /srv/ledger is root:root 0755" in error
    assert "was not created by this role" in error


def test_a_system_directory_is_never_the_roles_even_if_listed_in_tmpfiles():
    side = apps((0, {"socket": "/var/lib/quotes.sock"}))
    dirs = {"/var/lib": {"exists": True, "is_dir": True, "uid": 0, "gid": 0, "owner": "root", "group": "root",
                         "mode": "0755"}}
    result = plan(side, probe(dirs=dirs, listeners=[], tmpfiles_dirs=["/run/uwsgi", "/var/lib"]))
    assert any("/var/lib is root:root 0755" in e for e in result["errors"])
    assert "/var/lib" not in [d["path"] for d in result["dirs"]] + result["stale_dirs"]


def test_apps_of_different_groups_cannot_share_a_directory_the_role_creates():
    both = apps((1, {"socket": "/run/uwsgi/api.sock", "gid": "webapps"}))
    result = plan(both, probe())
    assert any("shared with app flaskapp of group www-data" in e for e in result["errors"])


def test_different_users_of_one_group_share_a_directory():
    both = apps((1, {"socket": "/run/uwsgi/api.sock", "uid": "app1"}))
    assert plan(both, probe())["errors"] == []


def test_missing_user_and_group_are_named():
    result = plan(apps((0, {"uid": "nosuch", "gid": "nogroup"})), probe())
    assert any("user nosuch does not exist" in e for e in result["errors"])
    assert any("group nogroup does not exist" in e for e in result["errors"])


def test_a_socket_path_over_the_limit_is_refused_with_its_length():
    long = "/run/uwsgi/" + "x" * 100 + ".sock"
    result = plan(apps((0, {"socket": long})), probe())
    assert any("is 116 bytes long" in e and "at most 102" in e for e in result["errors"])


def test_a_port_held_by_another_process_is_named():
    listeners = h.parse_ss_listeners('tcp LISTEN 0 128 0.0.0.0:8001 0.0.0.0:* users:(("nginx",pid=485,fd=5))\n')
    result = plan(apps(), probe(listeners=listeners))
    assert any("127.0.0.1:8001 is already held by process nginx (pid 485)" in e for e in result["errors"])


def test_an_app_replacing_its_own_classic_program_is_not_refused():
    # The demo's starting point: a hand-written program of the same name, not the role's.
    result = plan(apps(), probe(managed={}))
    assert result["errors"] == []


def test_sysctl_overrides_from_captured_grep():
    settings = h.parse_sysctl_grep((FIXTURES / "bookworm" / "sysctl-grep.txt").read_text())
    found = f.uwsgi_sysctl_overrides(settings, "/etc/sysctl.d/60-uwsgi-backlog.conf", SYSCTLS)
    # /usr/lib (and /lib) 99-zz-masked.conf are masked by /etc's file of the same name (65535).
    assert found == [
        {"file": "/run/sysctl.d/70-low.conf", "key": "net.ipv4.tcp_max_syn_backlog", "value": "512", "wanted": 4096},
        {"file": "/etc/sysctl.conf", "key": "net.core.somaxconn", "value": "2048", "wanted": 4096},
    ]


def test_sysctl_files_that_sort_before_ours_do_not_win():
    settings = [{"path": "/etc/sysctl.d/10-low.conf", "key": "net.core.somaxconn", "value": "128"}]
    assert f.uwsgi_sysctl_overrides(settings, "/etc/sysctl.d/60-uwsgi-backlog.conf", SYSCTLS) == []


def test_proof_verdicts():
    listeners = h.parse_ss_listeners((FIXTURES / "bookworm" / "ss-listening.txt").read_text())
    seen = probe(listeners=listeners, workers={"flaskapp": 2, "flaskapi": 2})
    ok = f.uwsgi_proof(f.uwsgi_public(apps()), seen)
    assert [v["ok"] for v in ok] == [True, True]
    assert ok[1]["message"] == "app flaskapi: RUNNING, backlog 2048 on 127.0.0.1:8001, 2 workers"
    wrong = f.uwsgi_proof(f.uwsgi_public(apps((1, {"listen": 3000}))), seen)
    assert wrong[1]["message"] == ("app flaskapi: expected RUNNING with a listen backlog of 3000 on 127.0.0.1:8001 "
                                   "and 2 workers; ss shows backlog 2048")


def test_proof_catches_an_app_that_did_not_load_a_worker_count_and_a_failed_check():
    listeners = h.parse_ss_listeners((FIXTURES / "bookworm" / "ss-listening.txt").read_text())
    seen = probe(listeners=listeners, workers={"flaskapp": 7, "flaskapi": 2},
                 ready={"flaskapi": {"ok": False, "why": "uWSGI gave up: no app loaded. GAME OVER"}})
    verdicts = f.uwsgi_proof(f.uwsgi_public(apps()), seen)
    assert "its master has 7 workers, not 2" in verdicts[0]["message"]
    assert "its app did not load: uWSGI gave up: no app loaded. GAME OVER" in verdicts[1]["message"]
    checked = f.uwsgi_proof(f.uwsgi_public(apps((0, {"check_path": "/healthz"}))),
                            probe(listeners=listeners, workers={"flaskapp": 2, "flaskapi": 2},
                                  checks={"flaskapp": {"status": 500, "error": None}}))
    assert "GET /healthz answered 500" in checked[0]["message"] and not checked[0]["ok"]
    scaled = f.uwsgi_proof(f.uwsgi_public(apps((0, {"options": {"cheaper": 1}}))),
                           probe(listeners=listeners, workers={"flaskapp": 1, "flaskapi": 2}))
    assert scaled[0]["ok"]


def test_rollback_report_gives_each_app_its_own_line_and_cause():
    failed = [{"name": "a", "message": "app a: expected RUNNING with a listen backlog of 10 on /x; ..."},
              {"name": "b", "message": "app b: expected RUNNING ..."}]
    status = {"supervisor": {"programs": {"a": {"state": "RUNNING"}}}}
    logs = {"a": "[strict-mode] unknown config directive: no-such-option\n", "b": ""}
    lines = f.uwsgi_rollback_report(failed, ["a"], ["b"], status, logs, "/var/log/supervisor")
    assert len(lines) == 2
    assert lines[0].startswith("app a failed the proof: expected RUNNING")
    assert "restored and it is RUNNING again" in lines[0] and "unknown config directive: no-such-option" in lines[0]
    assert "removed again" in lines[1] and "(nothing new)" in lines[1]


@pytest.mark.parametrize("target, manage, refused", [
    ("host", True, False), ("host", False, False),
    ("container", True, True), ("container", False, False),
    ("image", True, True), ("image", False, False),
])
def test_a_container_or_image_takes_its_sysctls_from_its_creation(target, manage, refused):
    found = [e for e in errors(apps(), {"target": target, "manage_sysctl": manage}) if "uwsgi_target" in e]
    assert bool(found) == refused
    if refused:
        assert found[0].startswith("uwsgi_target is %s" % target) and "set uwsgi_manage_sysctl: false" in found[0]


def test_the_cheap_checks_ask_for_chdir_and_where_the_module_can_be():
    present = f.uwsgi_public(apps())
    paths = f.uwsgi_path_checks(present, SETTINGS)
    assert "/srv/flaskapp/" in paths and "/srv/flaskapp/app.py" in paths and "/srv/flaskapp/app/" in paths
    assert "/usr/lib/python3/dist-packages/app.py" in paths


@pytest.mark.parametrize("found, expected", [
    ({"/srv/flaskapp/": False}, ["chdir /srv/flaskapp is not a directory on this host"]),
    ({"/srv/flaskapp/app/": True}, []),
    ({"/usr/lib/python3/dist-packages/app.py": True}, []),
    ({}, ["module app:app: there is no app.py nor package app/ in chdir /srv/flaskapp"]),
])
def test_the_cheap_checks_name_a_missing_chdir_or_module(found, expected):
    present = f.uwsgi_public(apps())
    seen = {g: False for g in f.uwsgi_path_checks(present, SETTINGS)}
    seen["/srv/flaskapp/"] = True
    seen.update(found)
    errors_ = [e for e in plan(apps(), probe(paths=seen))["errors"] if "flaskapp)" in e]
    assert len(errors_) == len(expected) and all(x in e for x, e in zip(expected, errors_)), errors_


@pytest.mark.parametrize("change", [{"options": {"pythonpath": "/opt/lib"}}, {"chdir": None},
                                    {"module": None, "options": {"wsgi-file": "/srv/x.py"}}])
def test_a_module_whose_place_cannot_be_known_is_left_to_the_trial(change):
    app = dict(f.uwsgi_public(apps())[0], **change)
    assert not any(p.endswith((".py", "/")) and "/app" in p for p in f.uwsgi_path_checks([app], SETTINGS)
                   if p != "/srv/flaskapp/")


def test_log_sizes_supervisor_cannot_read_are_refused():
    found = " ".join(errors(apps((0, {"log_max_bytes": "50M"}), (1, {"log_backups": -1}))))
    assert "log_max_bytes '50M' is not a size Supervisor reads" in found
    assert "log_backups (-1) must be 0 or more" in found
    assert errors(apps((0, {"log_max_bytes": "1GB", "log_backups": 0}))) == []
    assert "options.disable-logging is set by the role" in " ".join(
        errors(apps((0, {"options": {"disable-logging": True}}))))
