"""What the role owns, touches and prints, on the converged, serving host of
the default scenario: renames, unlisted programs, directories it did not
create, identities, secrets and the rollback's evidence. Each test puts the
README's playbook back in force before it ends."""

import json
import shlex

import pytest
import yaml

import hostchecks as hc

PLAYBOOK = hc.PROJECT / "playbooks" / "site.yml"
BASE_APPS = yaml.safe_load(PLAYBOOK.read_text())[0]["vars"]["uwsgi_apps"]
APPS = hc.apps_from_playbook(PLAYBOOK)
UNIX_APP = next(a for a in APPS if a["socket"].startswith("/"))
TCP_APP = next(a for a in APPS if not a["socket"].startswith("/"))
SOCKET_DIR = UNIX_APP["socket"].rsplit("/", 1)[0]
TMPFILES = "/etc/tmpfiles.d/uwsgi-supervisor.conf"


def run_with(tmp_path, name, extra, *args):
    return hc.run_with(PLAYBOOK, tmp_path, name, extra, *args)


ok = hc.ok


def app_env(host, app, *keys):
    query = "&".join(f"k={k}" for k in keys)
    out = host.check_output(f"uwsgiprobe request {shlex.quote(app['socket'])} {shlex.quote('/env?' + query)}")
    return json.loads(out.split("\n", 1)[1])


def restore(host, tmp_path, *absent):
    """The README's playbook again, removing the test's extra apps."""
    ok(run_with(tmp_path, "restore", {"uwsgi_apps": BASE_APPS + [{"name": n, "state": "absent"} for n in absent]}))
    for app in APPS:
        hc.check_running_as(host, app)
        hc.check_backlog(host, app)
        hc.check_request(host, app, f"hello from {app['name']}")


def programs(host):
    """The apps under Supervisor (the role's listen-queue sampler aside): a beside app by its own name."""
    names = set(hc.parsers.parse_supervisor_status(host.run("supervisorctl status").stdout)) - {"uwsgi-sampler"}
    return {name for name in names if hc.parsers.slot_app(name) is None}


@pytest.mark.extended
def test_rename_with_absent_keeps_the_new_apps_socket(host, tmp_path):
    renamed = dict(BASE_APPS[0], name="ledger3")  # same socket as the old app
    apps = [{"name": UNIX_APP["name"], "state": "absent"}, renamed, BASE_APPS[1]]
    try:
        ok(run_with(tmp_path, "rename", {"uwsgi_apps": apps}))
        # The second run must not remove the socket the absent app once had: ledger3 holds it now.
        again = ok(run_with(tmp_path, "rename-again", {"uwsgi_apps": apps}))
        assert hc.recap_changed(again.stdout) == {host.backend.get_hostname(): 0}, again.stdout[-3000:]
        assert host.file(UNIX_APP["socket"]).is_socket
        assert programs(host) == {"ledger3", TCP_APP["name"]}
        hc.check_request(host, dict(UNIX_APP, name="ledger3"), "hello from flaskapp")
    finally:
        restore(host, tmp_path, "ledger3")
    assert "ledger3" not in programs(host)
    for path in ("/etc/supervisor/conf.d/ledger3.conf", "/etc/uwsgi/supervisor/ledger3.ini",
                 "/etc/uwsgi/supervisor/ledger3.env.ini", "/var/log/supervisor/ledger3.log"):
        assert not host.file(path).exists, path


@pytest.mark.extended
def test_plain_rename_names_the_old_program_and_removes_it_on_request(host, tmp_path):
    apps = [dict(BASE_APPS[0], name="ledger2"), BASE_APPS[1]]
    before = host.check_output("sha256sum /etc/supervisor/conf.d/* /etc/uwsgi/supervisor/*; supervisorctl pid all")
    refused = run_with(tmp_path, "plain-rename", {"uwsgi_apps": apps})
    assert refused.returncode != 0
    said = hc.said(refused)
    assert f'socket {UNIX_APP["socket"]} is already held by Supervisor program "{UNIX_APP["name"]}"' in said, said[-3000:]
    assert "Nothing was changed." in said
    assert host.check_output("sha256sum /etc/supervisor/conf.d/* /etc/uwsgi/supervisor/*; supervisorctl pid all") == before
    try:
        ok(run_with(tmp_path, "plain-rename-remove", {"uwsgi_apps": apps, "uwsgi_unlisted_apps": "remove"}))
        assert programs(host) == {"ledger2", TCP_APP["name"]}
        assert not host.file(f"/etc/supervisor/conf.d/{UNIX_APP['name']}.conf").exists
        hc.check_request(host, dict(UNIX_APP, name="ledger2"), "hello from flaskapp")
    finally:
        restore(host, tmp_path, "ledger2")


@pytest.mark.extended
def test_socket_in_an_existing_directory_keeps_its_owner_and_mode(host, tmp_path):
    shared = "/srv/sockets"
    host.run_test(f"install -d -o root -g www-data -m 2770 {shared}")
    side = {"name": "sideapp", "module": "app:app", "chdir": "/srv/flaskapp", "socket": f"{shared}/sideapp.sock",
            "listen": 256, "environment": {"APP_NAME": "sideapp"}}
    try:
        ok(run_with(tmp_path, "side", {"uwsgi_apps": BASE_APPS + [side]}))
        d = host.file(shared)
        assert (d.user, d.group, d.mode) == ("root", "www-data", 0o2770)
        assert shared not in host.file(TMPFILES).content_string
        hc.check_request(host, {**side, "protocol": "uwsgi"}, "hello from sideapp")
    finally:
        restore(host, tmp_path, "sideapp")
    d = host.file(shared)
    assert (d.user, d.group, d.mode) == ("root", "www-data", 0o2770)
    assert not host.file(f"{shared}/sideapp.sock").exists


OLD_SECRET, NEW_SECRET = "s3cret-old-7f1c", "s3cret-new-9a2e"


def with_token(value, **changes):
    return {"uwsgi_apps": [dict(BASE_APPS[0], environment={"APP_NAME": UNIX_APP["name"], "SECRET_TOKEN": value},
                                **changes), BASE_APPS[1]]}


@pytest.mark.extended
def test_secrets_never_appear_in_output_or_backups(host, tmp_path):
    old, new = OLD_SECRET, NEW_SECRET
    try:
        first = ok(run_with(tmp_path, "secret-1", with_token(old), "--diff", "-v"))
        check = ok(run_with(tmp_path, "secret-check", with_token(new), "--check", "--diff", "-v"))
        rotated = ok(run_with(tmp_path, "secret-2", with_token(new), "--diff", "-v"))
        assert app_env(host, UNIX_APP, "SECRET_TOKEN") == {"SECRET_TOKEN": new}
        # A failed update rotating it back, with -v: refused by its trial.
        failed = run_with(tmp_path, "secret-3", with_token(old, options={"no-such-option": 1}), "--diff", "-v")
        assert failed.returncode != 0 and "was tried aside" in hc.said(failed)
        for run in (first, check, rotated, failed):
            output = run.stdout + run.stderr
            assert old not in output and new not in output, output[-3000:]
        assert f"environment of {UNIX_APP['name']} changed; its values are never shown" in hc.said(rotated)
        assert not host.run("ls /etc/uwsgi/supervisor /etc/supervisor/conf.d | grep '~$'").stdout.strip(), "backups left"
        assert app_env(host, UNIX_APP, "SECRET_TOKEN") == {"SECRET_TOKEN": new}
        env_file = host.file(f"/etc/uwsgi/supervisor/{UNIX_APP['name']}.env.ini")
        # The app's own user alone reads it (not its group: the web server, other apps).
        assert (env_file.mode, env_file.user, env_file.group) == (0o400, UNIX_APP["uid"], "root")
    finally:
        restore(host, tmp_path)


@pytest.mark.extended
def test_secrets_never_appear_when_a_failed_proof_rolls_back(host, tmp_path):
    """The trial off: the serving app takes the broken update, the proof fails
    and the rollback restores the environment from its backup; neither value
    is printed, and no backup is left."""
    try:
        ok(run_with(tmp_path, "secret-1", with_token(NEW_SECRET)))
        untried = run_with(tmp_path, "secret-4", dict(with_token(OLD_SECRET, options={"no-such-option": 1}),
                                                      uwsgi_trial=False), "--diff", "-v")
        assert untried.returncode != 0 and "failed the proof" in hc.said(untried)
        output = untried.stdout + untried.stderr
        assert OLD_SECRET not in output and NEW_SECRET not in output, output[-3000:]
        assert not host.run("ls /etc/uwsgi/supervisor /etc/supervisor/conf.d | grep '~$'").stdout.strip(), "backups left"
        assert app_env(host, UNIX_APP, "SECRET_TOKEN") == {"SECRET_TOKEN": NEW_SECRET}
    finally:
        restore(host, tmp_path)


@pytest.mark.extended
def test_uid_and_gid_change_apply_and_roll_back(host, tmp_path):
    host.run_test("getent passwd app1 || useradd --system --no-create-home app1")
    host.run_test("getent group webapps || groupadd --system webapps")
    # The socket's client (uwsgi_socket_client, www-data) reaches the socket through its group.
    host.run_test("usermod -a -G webapps www-data")
    moved = {"uwsgi_apps": [dict(BASE_APPS[0], uid="app1", gid="webapps"), BASE_APPS[1]]}
    try:
        ok(run_with(tmp_path, "uid", moved))
        sock = host.file(UNIX_APP["socket"])
        assert (sock.user, sock.group) == ("app1", "webapps")
        _, pid = hc.supervisor_state(host, UNIX_APP["name"])
        ids = set(host.check_output(f"ps -o user=,group= --pid {pid} --ppid {pid}").splitlines())
        assert {tuple(i.split()) for i in ids} == {("app1", "webapps")}, ids
        assert host.file(SOCKET_DIR).group == "webapps"
        hc.check_request(host, UNIX_APP, f"hello from {UNIX_APP['name']}")
        # Back to www-data with a broken option, the trial off: rolled back to
        # app1/webapps, still serving, and tmpfiles.d keeps the group it had.
        broken = {"uwsgi_apps": [dict(BASE_APPS[0], options={"no-such-option": 1}), BASE_APPS[1]], "uwsgi_trial": False}
        run = run_with(tmp_path, "uid-broken", broken)
        assert run.returncode != 0
        assert "restored and it is RUNNING again" in hc.said(run), hc.said(run)[-3000:]
        sock = host.file(UNIX_APP["socket"])
        assert (sock.user, sock.group) == ("app1", "webapps")
        assert host.file(SOCKET_DIR).group == "webapps"
        assert f"d {SOCKET_DIR} 1775 root webapps -" in host.file(TMPFILES).content_string
        hc.check_request(host, UNIX_APP, f"hello from {UNIX_APP['name']}")
    finally:
        host.run("gpasswd -d www-data webapps")
        restore(host, tmp_path)
    sock = host.file(UNIX_APP["socket"])
    assert (sock.user, sock.group) == ("www-data", "www-data")
    assert host.file(SOCKET_DIR).group == "www-data"


@pytest.mark.extended
def test_two_failed_apps_each_report_their_own_cause(host, tmp_path):
    """With the trial off, the proof and the rollback report each app apart."""
    broken = {"uwsgi_apps": [dict(BASE_APPS[0], module="no_such_module:app", options={"pythonpath": "/srv/lib"}),
                             dict(BASE_APPS[1], options={"no-such-option": 1})], "uwsgi_trial": False}
    run = run_with(tmp_path, "two-broken", broken)
    assert run.returncode != 0
    said = hc.said(run)
    first = said.rindex(f"app {UNIX_APP['name']} failed the proof")
    second = said.rindex(f"app {TCP_APP['name']} failed the proof")
    assert first < second, said[-4000:]
    # Each app's own log lines from its failed start, one item per app.
    assert "ModuleNotFoundError: No module named" in said[first:second], said[-4000:]
    assert "no_such_module" in said[first:second]
    assert "unknown config directive: no-such-option" in said[second:], said[-4000:]
    assert "\\n" not in said[first:]
    for app in APPS:
        hc.check_running_as(host, app)
        hc.check_request(host, app, f"hello from {app['name']}")
