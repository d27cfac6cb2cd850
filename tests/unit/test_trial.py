"""Trying a change aside: the trial's ini, what uWSGI's real output means
(captured from uWSGI on each release, tests/unit/fixtures/RELEASE/trial), and the
process runner's bounds."""

import os
import sys
import time

import pytest

from conftest import FIXTURES, uwsgi_trial as t
from test_decisions import apps, probe
from conftest import filters as f

APP = {"chdir": "/srv/flaskap", "module": "app:nope"}


def captured(release, name):
    text = (FIXTURES / release / "trial" / f"{name}.txt").read_text()
    body, _, code = text.rpartition("rc=")
    return body, int(code)


RELEASES = sorted(p.parent.name for p in FIXTURES.glob("*/trial"))


@pytest.mark.parametrize("release", RELEASES)
def test_a_loaded_app_passes(release):
    assert t.verdict(*captured(release, "loaded")) == {"ok": True, "why": "the app loaded", "lines": []}


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("case, app, why", [
    ("chdir-missing", {"chdir": "/srv/flaskap"}, "chdir /srv/flaskap: No such file or directory"),
    ("no-callable", {"module": "app:nope"}, "module app was imported, but uWSGI found no callable 'nope' in it"),
    ("import-raises", {"module": "slowfail:app"}, "RuntimeError: broken setting: DATABASE_URL is not set"),
    ("no-module", {"module": "ledger:app"}, "ModuleNotFoundError: No module named 'ledger'"),
    ("unknown-option", {}, "[strict-mode] unknown config directive: no-such-option"),
])
def test_a_failed_trial_says_why_in_uwsgi_s_words(release, case, app, why):
    seen = t.verdict(*captured(release, case), app=app)
    assert not seen["ok"]
    assert seen["why"].startswith(why), seen["why"]
    # The lines quoted are uWSGI's own, without its start-up chatter.
    assert seen["lines"] and not any(line.startswith(("*** Starting uWSGI", "compiled with", "VACUUM"))
                                     for line in seen["lines"]), seen["lines"]


def test_the_marker_alone_or_the_exit_code_alone_is_no_pass():
    body, _ = captured(RELEASES[0], "loaded")
    assert not t.verdict(body, 0)["ok"]
    assert not t.verdict("WSGI app 0 ready\n", t.EXIT_LOADED)["ok"]
    # uWSGI's own line announcing the hook is not the hook's output.
    assert not t.verdict('running "print:%s" (post app)...\n' % t.MARKER, t.EXIT_LOADED)["ok"]


def test_a_timeout_says_so_and_keeps_the_last_lines():
    seen = t.verdict("importing a big project\n", None, timed_out=True, timeout=5)
    assert not seen["ok"] and "after 5 s" in seen["why"] and seen["lines"] == ["importing a big project"]


INI = """# Ansible managed
[uwsgi]
set-placeholder = uwsgi_role_dollar=$
strict = true
master = true
processes = 4
socket = /run/uwsgi/flaskapp.sock
listen = 4096
chmod-socket = 660
chdir = /srv/flaskapp
module = app:app
vacuum = true
need-app = true
ini = /etc/uwsgi/supervisor/flaskapp.env.ini
lazy-apps = true
http = :8080
fastcgi-socket = /run/uwsgi/other.sock
stats = 127.0.0.1:9191
master-fifo = /run/uwsgi/flaskapp.fifo
attach-daemon = celery worker
logger = file:/var/log/uwsgi/flaskapp.log
touch-reload = /srv/flaskapp/reload
http-socket-modifier1 = 9
no-such-option = 1
"""


def test_the_trial_ini_leaves_out_what_would_touch_the_serving_app():
    text = t.trial_ini(INI, "/run/uwsgi-trial.x/env.ini", "/run/uwsgi-trial.x/trial.sock")
    keys = [line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line and not line.startswith(";")]
    for gone in ("listen", "chmod-socket", "lazy-apps", "http", "fastcgi-socket", "stats", "master-fifo",
                 "attach-daemon", "logger", "touch-reload"):
        assert gone not in keys, gone
    # One socket, the trial's; the environment is the trial's copy.
    assert [line for line in text.splitlines() if line.startswith("socket")] == [
        "socket = /run/uwsgi-trial.x/trial.sock"]
    assert "ini = /run/uwsgi-trial.x/env.ini" in text and "/etc/uwsgi/supervisor/flaskapp.env.ini" not in text
    # What decides how the app loads stays, and so does what strict mode must refuse.
    for kept in ("strict = true", "need-app = true", "chdir = /srv/flaskapp", "module = app:app",
                 "set-placeholder = uwsgi_role_dollar=$", "http-socket-modifier1 = 9", "no-such-option = 1",
                 "processes = 4"):
        assert kept in text, kept
    assert text.endswith("hook-post-app = print:%s\nhook-post-app = exit:%d\n" % (t.MARKER, t.EXIT_LOADED))


@pytest.mark.parametrize("key", ["lazy_apps", "Lazy-Apps", "uwsgi-socket", "shared-socket", "https", "stats-server",
                                 "smart-attach-daemon", "legion-node", "subscribe-to", "pidfile2", "daemonize"])
def test_spellings_and_families_of_dropped_options(key):
    assert t.dropped(key)


@pytest.mark.parametrize("key", ["module", "pythonpath", "wsgi-file", "mount", "env", "harakiri", "http-modifier1",
                                 "enable-threads", "hook-pre-app"])
def test_options_that_shape_the_load_are_kept(key):
    assert not t.dropped(key)


def test_run_returns_the_output_and_the_exit_code():
    output, code, timed_out, _, _ = t.run([sys.executable, "-c", "print('hello'); raise SystemExit(75)"], 10)
    assert (output.strip(), code, timed_out) == ("hello", 75, False)


def test_run_stops_a_trial_that_outlives_its_bound_with_everything_it_started():
    started = time.monotonic()
    script = "import subprocess, time; subprocess.Popen(['sleep', '30']); print('loading', flush=True); time.sleep(30)"
    output, _, timed_out, seconds, _ = t.run([sys.executable, "-c", script], 1)
    assert timed_out and "loading" in output and time.monotonic() - started < 15
    assert seconds >= 1


def test_run_keeps_only_the_end_of_a_flood():
    output, code, _, _, _ = t.run([sys.executable, "-c", "import sys; sys.stdout.write('x' * 3000000 + 'END')"], 20)
    assert code == 0 and len(output) == t.OUTPUT_LIMIT and output.endswith("END")


def test_run_says_when_the_binary_cannot_start():
    output, code, _, _, _ = t.run(["/nonexistent/uwsgi"], 5)
    assert code is None and "cannot start /nonexistent/uwsgi" in output


def test_run_all_runs_trials_at_once():
    started = time.monotonic()
    results = t.run_all([{"argv": [sys.executable, "-c", "import time; time.sleep(1)"], "timeout": 10}] * 3)
    assert [r[1] for r in results] == [0, 0, 0] and time.monotonic() - started < 2.8


DAEMONIZING_IMPORT = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(60)
    os._exit(0)
print("loaded", flush=True)
time.sleep(0.5)
raise SystemExit(75)
"""


def test_a_trial_whose_import_starts_a_daemon_ends_with_the_import_and_leaves_nothing(tmp_path):
    """The daemon leaves the trial's session and holds its output open: the
    trial still ends when its process exits, and the daemon is killed."""
    pidfile = tmp_path / "daemon.pid"
    started = time.monotonic()
    [(output, code, timed_out, _, _)] = t.run_all(
        [{"argv": [sys.executable, "-c", DAEMONIZING_IMPORT, str(pidfile)], "timeout": 30}])
    assert (output.strip(), code, timed_out) == ("loaded", 75, False)
    assert time.monotonic() - started < 5
    daemon = int(pidfile.read_text())
    assert not os.path.exists(f"/proc/{daemon}"), "the daemon the import started is still there"


PATHS = {"config_dir": "/etc/uwsgi/supervisor", "supervisor_conf_dir": "/etc/supervisor/conf.d"}
SETTINGS = {"trial": True, "setpriv": "/usr/bin/setpriv"}


def test_every_present_app_is_offered_to_the_trial_with_its_files():
    plan = f.uwsgi_trial_plan(f.uwsgi_public(apps()), probe(), PATHS, SETTINGS)
    assert [p["name"] for p in plan] == ["flaskapp", "flaskapi"]
    assert plan[0]["ini"] == "/etc/uwsgi/supervisor/flaskapp.ini" and plan[0]["force"] == ""
    assert plan[0]["program"] == "/etc/supervisor/conf.d/flaskapp.conf"


def test_the_trial_can_be_turned_off():
    assert f.uwsgi_trial_plan(f.uwsgi_public(apps()), probe(), PATHS, dict(SETTINGS, trial=False)) == []


def test_a_new_binary_new_packages_or_files_never_read_are_tried_even_when_no_file_changes():
    seen = probe()
    seen["managed"]["flaskapp"].update(config_mtime=3000, started=2000)
    plan = f.uwsgi_trial_plan(f.uwsgi_public(apps()), seen, PATHS, SETTINGS,
                              {"binaries": ["flaskapi"], "deps": ["flaskapi"]})
    why = {p["name"]: p["force"] for p in plan}
    assert why == {"flaskapp": "its files changed after its master last read them",
                   "flaskapi": "its uwsgi binary changed; its packages changed"}


def test_an_app_that_is_not_running_is_not_forced():
    seen = probe()
    seen["supervisor"]["programs"]["flaskapp"]["state"] = "FATAL"
    seen["managed"]["flaskapp"].update(config_mtime=3000, started=None)
    assert f.uwsgi_trial_plan(f.uwsgi_public(apps()), seen, PATHS, SETTINGS)[0]["force"] == ""


def test_staged_packages_are_imported_from_the_virtualenv_aside():
    ini = INI.replace("chdir = /srv/flaskapp\n", "chdir = /srv/flaskapp\nhome = /srv/flaskapp/venv\n")
    text = t.trial_ini(ini, "/run/x/env.ini", "/run/x/trial.sock", home="/var/lib/uwsgi-role/staged-venvs/abc")
    assert "home = /var/lib/uwsgi-role/staged-venvs/abc" in text and "/srv/flaskapp/venv" not in text
    assert "home = /srv/flaskapp/venv" in t.trial_ini(ini, "/run/x/env.ini", "/run/x/trial.sock")


LOADED_THEN_SERVES = """
import sys, time
print('running "print:%s" (post app)...' % sys.argv[1])
print(sys.argv[1], flush=True)
print("[pid: 7|app: 0] GET /health => generated 0 bytes (HTTP/1.1 500)", flush=True)
time.sleep(30)
"""


def test_a_trial_with_a_check_is_asked_once_loaded_and_stopped():
    asked = []
    started = time.monotonic()
    output, code, timed_out, _, answer = t.run(
        [sys.executable, "-c", LOADED_THEN_SERVES, t.MARKER], 20, check={"socket": "/x/trial.sock", "path": "/health"},
        ask=lambda check: asked.append(check) or {"status": 500, "error": None})
    assert answer == {"status": 500, "error": None} and not timed_out and code != t.EXIT_LOADED
    assert [(c["socket"], c["path"]) for c in asked] == [("/x/trial.sock", "/health")] and asked[0]["timeout"] <= 10
    assert time.monotonic() - started < 10, "the trial was not stopped once asked"
    seen = t.verdict(output, code, timed_out, 20, {"check_path": "/health"}, answer)
    assert not seen["ok"] and seen["why"] == "the app loaded, but GET /health answered 500"
    assert seen["lines"] == ["[pid: 7|app: 0] GET /health => generated 0 bytes (HTTP/1.1 500)"]


def test_a_trial_that_answers_2xx_or_3xx_passes_and_no_answer_is_no_pass():
    loaded = 'running "print:%s" (post app)...\n%s\n' % (t.MARKER, t.MARKER)
    assert t.verdict(loaded, -9, app={"check_path": "/h"}, answer={"status": 302})["ok"]
    refused = t.verdict(loaded, -9, app={"check_path": "/h"}, answer={"status": None, "error": "timed out"})
    assert not refused["ok"] and refused["why"] == "the app loaded, but GET /h answered timed out"
    # The hook's own echo of the marker is not the marker: not loaded, not asked.
    echo_only = 'running "print:%s" (post app)...\n' % t.MARKER
    assert not t.verdict(echo_only, 22, app={"check_path": "/h"}, answer=None)["ok"]


def test_a_trial_that_never_loads_is_never_asked():
    asked = []
    output, code, _, _, answer = t.run([sys.executable, "-c", "print('GAME OVER'); raise SystemExit(22)"], 10,
                                       check={"socket": "/x", "path": "/"}, ask=asked.append)
    assert asked == [] and answer is None and code == 22


def test_a_trial_with_a_check_path_serves_instead_of_exiting():
    text = t.trial_ini("[uwsgi]\nmodule = app:app\n", "/t/env.ini", "/t/trial.sock", serve=True)
    assert text.endswith("socket = /t/trial.sock\nprotocol = uwsgi\nhook-post-app = print:%s\n" % t.MARKER)
    assert "exit:" not in text
