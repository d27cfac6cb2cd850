"""How each app takes its change: the gentlest action that applies it."""

import json

import pytest

from conftest import FIXTURES, filters as f, uwsgi_host as h
from test_decisions import apps, probe

LISTENERS = h.parse_ss_listeners((FIXTURES / "bookworm" / "ss-listening.txt").read_text())
NOTHING = {"programs": [], "inis": [], "envs": [], "binaries": []}


def plan(apps_, changed=None, strategy="graceful", code=None, **probe_changes):
    seen = probe(**dict({"listeners": LISTENERS, "workers": {"flaskapp": 2, "flaskapi": 2}}, **probe_changes))
    for record in seen["managed"].values():
        record.setdefault("config_mtime", 1000.0)
        record.setdefault("started", 2000.0)
    return f.uwsgi_apply_plan(f.uwsgi_public(apps_), dict(NOTHING, **(changed or {})), seen, strategy, code)


def actions(result):
    return {key: result[key] for key in ("load", "start", "restart", "reload") if result[key]} | (
        {"listen": [(i["name"], i["was"], i["backlog"]) for i in result["listen"]]} if result["listen"] else {})


def test_a_converged_host_needs_nothing():
    result = plan(apps())
    assert actions(result) == {} and result["why"] == []


@pytest.mark.parametrize("changed, expected", [
    ({"inis": ["flaskapi"]}, {"reload": ["flaskapi"]}),
    ({"envs": ["flaskapp"]}, {"reload": ["flaskapp"]}),
    ({"programs": ["flaskapp"]}, {"load": ["flaskapp"]}),
    ({"binaries": ["flaskapi"], "inis": ["flaskapi"]}, {"restart": ["flaskapi"]}),
])
def test_what_changed_decides_the_action(changed, expected):
    assert actions(plan(apps(), changed)) == expected


def test_a_new_listen_goes_onto_the_open_socket_then_a_reload():
    result = plan(apps((1, {"listen": 3000})), {"inis": ["flaskapi"]})
    assert actions(result) == {"reload": ["flaskapi"], "listen": [("flaskapi", 2048, 3000)]}
    item = result["listen"][0]
    assert (item["pid"], item["socket"], item["uid"], item["gid"]) == (200, "127.0.0.1:8001", "www-data", "www-data")
    assert "flaskapi: listen 2048 -> 3000 on the open socket, then graceful reload" in result["why"][0]


def test_an_interrupted_run_is_converged_without_a_file_change():
    # The ini is newer than what the master took, and the backlog differs: nothing changed in this run.
    managed = probe()["managed"]
    managed["flaskapi"] = dict(managed["flaskapi"], config_mtime=3000.0, started=2000.0)
    result = plan(apps((1, {"listen": 3000})), managed=managed)
    assert actions(result) == {"reload": ["flaskapi"], "listen": [("flaskapi", 2048, 3000)]}
    assert "its files changed after its master last read them" in result["why"][0]


def test_the_role_s_record_wins_over_the_master_s_start_time():
    managed = probe()["managed"]
    managed["flaskapp"] = dict(managed["flaskapp"], config_mtime=3000.0, started=1000.0)
    assert actions(plan(apps(), managed=managed, applied={"flaskapp": 3000})) == {}
    assert actions(plan(apps(), managed=managed, applied={"flaskapp": 2999})) == {"reload": ["flaskapp"]}


def test_a_wrong_worker_count_is_reloaded_unless_cheaper_scales_it():
    seen = {"workers": {"flaskapp": 5, "flaskapi": 2}}
    assert actions(plan(apps(), **seen)) == {"reload": ["flaskapp"]}
    assert actions(plan(apps((0, {"options": {"cheaper": 1}})), **seen)) == {}


def test_stopped_apps_start_and_crash_looping_ones_restart():
    programs = dict(probe()["supervisor"]["programs"])
    programs["flaskapp"] = {"state": "FATAL", "pid": None, "line": "flaskapp FATAL"}
    programs["flaskapi"] = {"state": "BACKOFF", "pid": None, "line": "flaskapi BACKOFF"}
    result = plan(apps(), supervisor={"running": True, "programs": programs})
    assert actions(result) == {"start": ["flaskapp"], "restart": ["flaskapi"]}


def test_a_moved_socket_restarts():
    result = plan(apps((1, {"socket": "127.0.0.1:8002"})), {"inis": ["flaskapi"]})
    assert result["restart"] == ["flaskapi"] and "its socket moved" in result["why"][0]


def test_strategy_restart_stops_and_starts_every_change():
    result = plan(apps((1, {"listen": 3000})), {"inis": ["flaskapi"]}, strategy="restart")
    assert actions(result) == {"restart": ["flaskapi"]}


def test_a_refused_live_listen_falls_back_to_a_restart_naming_the_reason():
    result = plan(apps((0, {"listen": 3000}), (1, {"listen": 3000})), {"inis": ["flaskapp", "flaskapi"]})
    refused = {"rc": 3, "stdout": json.dumps({"ok": False, "reason": "permission", "detail": "not dumpable"})}
    done = {"rc": 0, "stdout": json.dumps({"ok": True, "fd": 3, "backlog": 3000})}
    fallback = f.uwsgi_listen_fallbacks(result, [refused, done])
    assert fallback["restart"] == ["flaskapp"]
    assert fallback["warnings"][0].startswith("flaskapp: listen 4096 -> 3000 could not be applied to the open socket "
                                              "(permission: not dumpable); restarting it instead")


def test_the_applied_record_keeps_apps_that_passed_with_their_revision():
    verdicts = [{"name": "flaskapp", "ok": True, "revision": "9f3c2e1"}, {"name": "flaskapi", "ok": False}]
    assert f.uwsgi_applied_record(verdicts, {"managed": {"flaskapp": {"config_mtime": 1234.9},
                                                         "flaskapi": {"config_mtime": 99.0}}}) == {
        "flaskapp": {"config_mtime": 1234, "revision": "9f3c2e1"}}


def test_an_app_that_failed_the_proof_keeps_the_revision_it_took_so_the_next_run_tries_again():
    verdicts = [{"name": "flaskapp", "ok": False, "revision": "r2"}]
    previous = {"flaskapp": {"config_mtime": 5, "revision": "r1"}}
    record = f.uwsgi_applied_record(verdicts, {"managed": {"flaskapp": {"config_mtime": 5.0}}}, previous)
    assert record == previous
    code = f.uwsgi_code_changes(f.uwsgi_public(apps((0, {"revision": "r2"}))), {
        "applied": record, "supervisor": {"programs": {"flaskapp": {"state": "RUNNING"}, "flaskapi": {}}}})
    assert code == {"flaskapp": "its revision is r2, it last took r1"}


def test_the_applied_record_keeps_apps_the_run_did_not_judge():
    probe_ = {"managed": {"kept": {"config_mtime": 5.0}, "flaskapp": {"config_mtime": 7.0}}}
    record = f.uwsgi_applied_record([{"name": "flaskapp", "ok": True}], probe_, {"kept": 5, "gone": 3})
    assert record == {"flaskapp": {"config_mtime": 7, "revision": None}, "kept": 5}


def test_ready_items_say_when_workers_prove_the_app_loaded():
    plain, lazy = f.uwsgi_public(apps((0, {"code_reload": "graceful"}), (1, {"options": {"mules": 1}})))
    assert f.uwsgi_ready_item(plain) == {"name": "flaskapp", "timeout": 60, "processes": 2, "lazy": False}
    assert f.uwsgi_ready_item(lazy)["lazy"] is False
    chained = f.uwsgi_public(apps())[0]
    assert chained["chain"] and f.uwsgi_ready_item(chained)["lazy"] is True


def test_a_master_with_no_worker_is_restarted_not_reloaded():
    """A crash-looping app (or one still loading) serves nothing: a graceful
    reload would be sent to a master that may die before it takes it."""
    result = plan(apps(), {"inis": ["flaskapp"]}, workers={"flaskapp": 0, "flaskapi": 2})
    assert actions(result) == {"restart": ["flaskapp"]}
    assert "its master has no worker" in result["why"][0]


def test_in_a_container_the_fallback_names_the_seccomp_profile_it_needs():
    result = plan(apps((0, {"listen": 3000})), {"inis": ["flaskapp"]})
    refused = {"rc": 3, "stdout": json.dumps({"ok": False, "reason": "permission", "detail": "Operation not permitted"})}
    assert "seccomp" not in f.uwsgi_listen_fallbacks(result, [refused])["warnings"][0]
    warning = f.uwsgi_listen_fallbacks(result, [refused], "container")["warnings"][0]
    assert "Docker's default seccomp profile refuses pidfd_getfd" in warning
    assert 'security_opt: ["seccomp=PROFILE.json"]' in warning


def test_an_app_whose_user_changes_hands_its_socket_over():
    """In a sticky socket directory, the new user cannot replace the old user's socket: root removes it."""
    result = plan(apps((0, {"uid": "app1"})), {"programs": ["flaskapp"]})
    assert result["load"] == ["flaskapp"]
    assert result["handover"] == [{"name": "flaskapp", "socket": "/run/uwsgi/flaskapp.sock"}]
    assert plan(apps(), {"programs": ["flaskapp"]})["handover"] == []
