"""New code: when a revision counts as new, what the handler selects, how the
app takes it (chain or graceful reload), and how the proof reads its
workers' start times from /proc."""

from conftest import FIXTURES, filters as f, uwsgi_host as h
from test_apply_plan import actions, plan
from test_decisions import apps, errors, probe

PROC = FIXTURES / "bookworm" / "proc"


def public(*changes):
    return f.uwsgi_public(apps(*changes))


def took(**entries):
    return probe(applied=entries)


# When a revision counts as new

def test_a_revision_other_than_the_one_the_app_last_took_is_new_code():
    code = f.uwsgi_code_changes(public((0, {"revision": "b2"})), took(flaskapp={"config_mtime": 5, "revision": "b1"}))
    assert code == {"flaskapp": "its revision is b2, it last took b1"}


def test_the_same_revision_is_not_new_code():
    assert f.uwsgi_code_changes(public((0, {"revision": "b1"})),
                                took(flaskapp={"config_mtime": 5, "revision": "b1"})) == {}


def test_a_first_revision_on_a_running_app_is_new_code_and_a_record_from_before_revisions_reads():
    """The role cannot know what a running app's code is until it has
    recorded a revision: the first one given is reloaded (a chain reload
    costs no capacity), whatever the record's older format (an mtime)."""
    code = f.uwsgi_code_changes(public((0, {"revision": "b1"})), took(flaskapp=1700000000))
    assert code == {"flaskapp": "its revision is b1, it last took none"}
    assert f.uwsgi_applied("flaskapp", took(flaskapp=1700000000)) == {"config_mtime": 1700000000}


def test_an_app_that_does_not_run_yet_takes_its_code_by_starting_not_by_a_reload():
    seen = probe(supervisor={"running": True, "programs": {}})
    assert f.uwsgi_code_changes(public((0, {"revision": "b1"})), seen) == {}


def test_no_revision_means_the_role_does_not_track_the_code():
    assert f.uwsgi_code_changes(public(), took(flaskapp={"config_mtime": 5, "revision": "b1"})) == {}


# What the handler selects

def test_the_handler_reloads_every_present_app_or_the_ones_named():
    every = f.uwsgi_code_changes(public(), probe(), notified=True)
    assert sorted(every) == ["flaskapi", "flaskapp"]
    assert set(every.values()) == {"the play notified uwsgi reload"}
    assert list(f.uwsgi_code_changes(public(), probe(), notified=True, only=["flaskapi"])) == ["flaskapi"]


def test_the_handler_never_reloads_an_absent_app():
    assert list(f.uwsgi_code_changes(public((1, {"state": "absent"})), probe(), notified=True)) == ["flaskapp"]


def test_a_reload_list_that_names_no_present_app_is_refused_before_the_host_is_touched():
    found = errors(apps(), {"reload_apps": ["flaskap", "flaskapi"]})
    assert found == ["uwsgi_reload_apps names flaskap, which is no present app in uwsgi_apps; name apps from "
                     "uwsgi_apps (flaskapi, flaskapp), or leave it empty for all of them."]


def test_a_revision_must_be_one_printable_word():
    found = " ".join(errors(apps((0, {"revision": "b1\nchdir = /tmp"}))))
    assert "revision 'b1\\nchdir = /tmp' must be one word" in found
    assert errors(apps((0, {"revision": "9f3c2e1a"}))) == []


def test_lazy_apps_and_the_chain_file_are_the_roles_own():
    found = " ".join(errors(apps((0, {"options": {"lazy-apps": False, "touch-chain-reload": "/tmp/x"}}))))
    assert "options.lazy-apps is set by the role" in found and "use the app's code_reload" in found
    assert "options.touch-chain-reload is set by the role" in found


# How the app takes it

CODE = {"flaskapp": "its revision is b2, it last took b1"}


def test_new_code_alone_is_a_chain_reload_and_the_trial_tries_it_first():
    result = plan(public(), code=CODE)
    assert actions(result) == {} and result["chain"] == ["flaskapp"]
    assert result["why"] == ["flaskapp: chain reload, one worker at a time while the others serve "
                             "(its revision is b2, it last took b1)"]
    trial = f.uwsgi_trial_plan(public(), probe(), {"config_dir": "/etc/uwsgi", "supervisor_conf_dir": "/etc/sv"},
                               {"setpriv": "/usr/bin/setpriv"}, code=CODE)
    assert next(t for t in trial if t["name"] == "flaskapp")["force"] == (
        "its code is new: its revision is b2, it last took b1")
    assert next(t for t in trial if t["name"] == "flaskapi")["force"] == ""


def test_new_code_with_a_changed_ini_takes_the_graceful_reload_that_loads_both():
    result = plan(public(), {"inis": ["flaskapp"]}, code=CODE)
    assert actions(result) == {"reload": ["flaskapp"]} and result["chain"] == []
    assert "its ini or environment changed; its revision is b2" in result["why"][0]


def test_an_app_with_a_mule_or_code_reload_graceful_takes_a_graceful_reload():
    mule = plan(public((0, {"options": {"mules": 1}})), code=CODE, workers={"flaskapp": 3, "flaskapi": 2})
    assert actions(mule) == {"reload": ["flaskapp"]}
    assert "a chain reload would leave on the old code" in mule["why"][0]
    graceful = plan(public((0, {"code_reload": "graceful"})), code=CODE)
    assert actions(graceful) == {"reload": ["flaskapp"]} and "code_reload is graceful" in graceful["why"][0]


def test_new_code_with_the_restart_strategy_is_a_restart():
    assert actions(plan(public(), code=CODE, strategy="restart")) == {"restart": ["flaskapp"]}


def test_an_app_that_is_not_running_takes_its_new_code_by_starting():
    seen = {"supervisor": {"running": True, "programs": {
        "flaskapp": {"state": "FATAL", "pid": None, "line": "flaskapp FATAL"},
        "flaskapi": {"state": "RUNNING", "pid": 200, "line": "flaskapi RUNNING"}}}}
    result = plan(public(), code=CODE, **seen)
    assert actions(result) == {"start": ["flaskapp"]} and result["chain"] == []


# How the proof reads the workers' start times

def test_a_proc_stat_line_is_read_past_a_command_name_with_blanks_and_parentheses():
    line = (PROC / "stat-odd-comm.txt").read_text()
    assert "(w) (x y)" in line
    assert h.parse_proc_stat(line) == {"ppid": 1, "start_ticks": 1282843}
    assert h.parse_proc_stat("") is None and h.parse_proc_stat("12 (x) S") is None


def test_the_boot_time_is_read_from_proc_stat():
    text = (PROC / "stat.txt").read_text()
    btime = next(line for line in text.splitlines() if line.startswith("btime"))
    assert h.parse_btime(text) == float(btime.split()[1]) > 1.7e9
    assert h.parse_btime("cpu 1\n") is None and h.parse_btime("btime x\n") is None


def test_a_uwsgi_worker_line_gives_its_master_and_start():
    line = (PROC / "stat-uwsgi-worker.txt").read_text()
    stat_ = h.parse_proc_stat(line)
    assert line.split()[1] == "(uwsgi)" and stat_["ppid"] == int(line.split()[3]) and stat_["start_ticks"] > 0


def test_workers_started_before_the_reload_are_left_behind_oldest_first():
    workers = [{"pid": 11, "started": 100.5}, {"pid": 12, "started": 90.0}, {"pid": 13, "started": 120.0},
               {"pid": 14, "started": 121.0}]
    left = h.workers_left_behind(workers, since=110.0, processes=4)
    assert [w["pid"] for w in left["old"]] == [12, 11] and left["complete"] is True
    assert h.workers_left_behind(workers[2:], since=110.0, processes=4) == {"old": [], "complete": False}
    assert h.workers_left_behind(workers[2:], since=110.0)["complete"] is None


def test_a_chain_reload_that_stopped_halfway_fails_the_app_naming_the_workers_on_the_old_code():
    fresh = {"ok": False, "seconds": 150.2, "now": 500.0, "old": [{"pid": 12, "started": 90.0}],
             "workers": [{"pid": 12, "started": 90.0}, {"pid": 31, "started": 400.0}], "complete": True}
    verdict = f.uwsgi_proof(public(), probe(fresh={"flaskapp": fresh}, workers={"flaskapp": 2, "flaskapi": 2},
                                            listeners=h.parse_ss_listeners(
                                                (FIXTURES / "bookworm" / "ss-listening.txt").read_text())))
    failed = [v for v in verdict if not v["ok"]]
    assert [v["name"] for v in failed] == ["flaskapp"]
    assert "its chain reload did not finish within 150.2 s: 1 worker still runs the code from before it " \
           "(pid 12, started 410 s before the check)" in failed[0]["message"]


def test_the_fresh_wait_covers_each_worker_loading_in_turn():
    items = f.uwsgi_fresh_items(public((0, {"processes": 4, "ready_timeout": 10})), ["flaskapp"], 1234.5)
    assert items == [{"name": "flaskapp", "since": 1234.5, "processes": 4, "timeout": 70}]
    scaled = f.uwsgi_fresh_items(public((0, {"options": {"cheaper": 1}})), ["flaskapp"], 1.0)
    assert scaled[0]["processes"] is None


def test_a_failed_code_reload_says_the_role_keeps_no_earlier_build():
    failed = [{"name": "flaskapp", "message": "app flaskapp: expected RUNNING ...; its chain reload did not finish"}]
    line = f.uwsgi_rollback_report(failed, [], [], {}, {}, "/var/log/uwsgi", {}, CODE)[0]
    assert "its code was new in this run (its revision is b2, it last took b1), and the role keeps no earlier " \
           "build" in line


def test_a_run_without_a_revision_keeps_the_one_the_app_runs():
    """A listen change rolled out by site.yml between two deploys: the next
    deploy of the same build is not taken for new code."""
    record = f.uwsgi_applied_record([{"name": "flaskapp", "ok": True, "revision": None}],
                                    {"managed": {"flaskapp": {"config_mtime": 9.0}}},
                                    {"flaskapp": {"config_mtime": 5, "revision": "b1"}})
    assert record == {"flaskapp": {"config_mtime": 9, "revision": "b1"}}
    assert f.uwsgi_code_changes(public((0, {"revision": "b1"})), took(**record)) == {}
