"""The host exactly as asked, on the converged, serving host of the default
scenario: environment values byte for byte, kernel limits someone else raised
kept (live and after a reboot), and an app that fails after Supervisor called
it RUNNING rolled back. Each test puts the README's playbook back in force."""

import json
import shlex
import urllib.parse

import pytest
import yaml

import hostchecks as hc

PLAYBOOK = hc.PROJECT / "playbooks" / "site.yml"
BASE_APPS = yaml.safe_load(PLAYBOOK.read_text())[0]["vars"]["uwsgi_apps"]
APPS = hc.apps_from_playbook(PLAYBOOK)
UNIX_APP = next(a for a in APPS if a["socket"].startswith("/"))
LIMIT = hc.derived_limit(APPS)
KEYS = ("net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog")
TUNING = "/etc/sysctl.d/50-tuning.conf"

HOSTILE = {
    "MAGIC": "p%dss%(x)w$(HOME)r@(/etc/hostname)d",
    "PERCENT_END": "100%",
    "PERCENT_ONLY": "%",
    "MAGIC_VARS": "%d%n%e%%",
    "PLACEHOLDER": "%(x)s",
    "ENV_REF": "$(PATH)",
    "FILE_REF": "@(/etc/hostname)",
    "DOUBLED": "$$(PATH) @@(/etc/hostname)",
    "DSN": "postgres://u:p;w@db/x?opt=1#frag",
    "SEMI_HASH": "semi;colon and # hash",
    "QUOTES": "quote\" and ' and \\ backslash",
    "UNICODE": "unicodé ✓ 雪 🐍",
    "BLANKS": "  leading and trailing  ",
    "TAB": "\ttab\t",
    "EQUALS": "a=b==c",
    "LONG": "x" * 4000 + "%$(PATH)",
}


def run_with(tmp_path, name, extra, *args):
    return hc.run_with(PLAYBOOK, tmp_path, name, extra, *args)


ok = hc.ok


def app_env(host, keys):
    query = "&".join("k=" + urllib.parse.quote(k) for k in keys)
    out = host.check_output(f"uwsgiprobe request {shlex.quote(UNIX_APP['socket'])} {shlex.quote('/env?' + query)}")
    return json.loads(out.split("\n", 1)[1])


def restore(host, tmp_path, **extra):
    ok(run_with(tmp_path, "restore", dict({"uwsgi_apps": BASE_APPS}, **extra)))
    for app in APPS:
        hc.check_running_as(host, app)
        hc.check_backlog(host, app)
        hc.check_request(host, app, f"hello from {app['name']}")


def live(host):
    return {key: int(host.file("/proc/sys/" + key.replace(".", "/")).content_string) for key in KEYS}


def test_hostile_environment_arrives_byte_for_byte(host, tmp_path):
    env = dict(HOSTILE, APP_NAME=UNIX_APP["name"])
    try:
        ok(run_with(tmp_path, "hostile", {"uwsgi_apps": [dict(BASE_APPS[0], environment=env), BASE_APPS[1]]}))
        assert app_env(host, list(HOSTILE)) == HOSTILE
        # The ini and the running master keep the role's values: nothing was injected.
        hc.check_running_as(host, UNIX_APP)
        hc.check_backlog(host, UNIX_APP)
    finally:
        restore(host, tmp_path)


@pytest.mark.extended
def test_a_host_tuned_higher_keeps_its_limits_live_and_after_a_reboot(host, tmp_path):
    host.run_test(f"printf 'net.core.somaxconn = 16384\\nnet.ipv4.tcp_max_syn_backlog = 16384\\n' > {TUNING}")
    host.run_test(f"sysctl -q -p {TUNING}")
    try:
        run = ok(run_with(tmp_path, "tuned", {}))
        assert "net.core.somaxconn = 16384 kept" in hc.said(run), hc.said(run)[-3000:]
        assert live(host) == {key: 16384 for key in KEYS}
        hc.restart_container(host.backend.get_hostname())
        hc.wait_until_serving(host, APPS)
        assert live(host) == {key: 16384 for key in KEYS}
        for app in APPS:
            hc.check_backlog(host, app)
        again = ok(run_with(tmp_path, "tuned-again", {}))
        assert hc.recap_changed(again.stdout) == {host.backend.get_hostname(): 0}, again.stdout[-3000:]
    finally:
        host.run_test(f"rm -f {TUNING}")
        # Going back down takes the documented opt-in, and the run says what it lowered.
        lowered = ok(run_with(tmp_path, "lower", {"uwsgi_somaxconn": LIMIT, "uwsgi_tcp_max_syn_backlog": LIMIT,
                                                  "uwsgi_sysctl_allow_lower": True}))
    assert f"net.core.somaxconn = {LIMIT}: LOWERED from 16384" in hc.said(lowered), hc.said(lowered)[-3000:]
    hc.check_sysctls(host, LIMIT)


def test_slow_app_that_fails_after_startsecs_is_refused_by_its_trial(host, tmp_path):
    """Its import takes 4 s and then raises: the trial waits for it and quotes
    the exception; the serving master never sees the change."""
    pid = hc.supervisor_state(host, UNIX_APP["name"])[1]
    run = run_with(tmp_path, "slowfail", {"uwsgi_apps": [dict(BASE_APPS[0], module="slowfail:app"), BASE_APPS[1]]})
    assert run.returncode != 0
    said = hc.said(run)
    assert f"app {UNIX_APP['name']} (its ini changed) was tried aside" in said, said[-3000:]
    assert "did not load: RuntimeError: broken setting" in said, said[-3000:]
    assert hc.supervisor_state(host, UNIX_APP["name"]) == ("RUNNING", pid)
    hc.check_request(host, UNIX_APP, f"hello from {UNIX_APP['name']}")
    assert "module = app:app" in host.file(f"/etc/uwsgi/supervisor/{UNIX_APP['name']}.ini").content_string


@pytest.mark.extended
def test_slow_app_that_fails_after_startsecs_is_rolled_back_without_the_trial(host, tmp_path):
    pid = hc.supervisor_state(host, UNIX_APP["name"])[1]
    run = run_with(tmp_path, "slowfail-untried", {"uwsgi_apps": [dict(BASE_APPS[0], module="slowfail:app"),
                                                                 BASE_APPS[1]], "uwsgi_trial": False})
    assert run.returncode != 0
    said = hc.said(run)
    assert f"app {UNIX_APP['name']} failed the proof" in said and "its app did not load" in said, said[-3000:]
    assert "RuntimeError: broken setting" in said, said[-3000:]
    assert "restored and it is RUNNING again" in said
    # The new instance never served: the one that served before serves on, its files restored.
    assert hc.supervisor_state(host, UNIX_APP["name"]) == ("RUNNING", pid)
    hc.check_backlog(host, UNIX_APP)
    hc.check_request(host, UNIX_APP, f"hello from {UNIX_APP['name']}")
    assert "module = app:app" in host.file(f"/etc/uwsgi/supervisor/{UNIX_APP['name']}.ini").content_string


@pytest.mark.extended
def test_check_path_must_answer(host, tmp_path):
    good = ok(run_with(tmp_path, "check-good", {"uwsgi_apps": [dict(BASE_APPS[0], check_path="/about"), BASE_APPS[1]]}))
    assert f"app {UNIX_APP['name']}: RUNNING, backlog {UNIX_APP['listen']}" in hc.said(good)
    assert "GET /about answered 200" in hc.said(good), hc.said(good)[-3000:]
    bad = run_with(tmp_path, "check-bad", {"uwsgi_apps": [dict(BASE_APPS[0], check_path="/no-such-page",
                                                               processes=3), BASE_APPS[1]]})
    assert bad.returncode != 0 and "GET /no-such-page answered 404" in hc.said(bad), hc.said(bad)[-3000:]
    # Rolled back to its previous ini: two workers, serving.
    hc.check_running_as(host, UNIX_APP)
    hc.check_request(host, UNIX_APP, f"hello from {UNIX_APP['name']}")
