"""App users stay in their lane. Two app users, alice and bob, both with the
web server's group (www-data) as their primary group, as the README's
several-apps set-up has them; each runs an app with a secret of its own. As
each of them and as www-data: no other app's secret, no other app's socket;
and what an app user can set up (root by another name, a name Supervisor
reads as every program, another socket option, a hand-written program) is
refused or left alone, with nothing changed."""

import copy
import shlex
import time

import pytest
import yaml

import hostchecks as hc

PLAYBOOK = hc.PROJECT / "playbooks" / "site.yml"
BASE_APPS = yaml.safe_load(PLAYBOOK.read_text())[0]["vars"]["uwsgi_apps"]
SECRETS = {"alice": "alice-db-password-7f3a9c", "bob": "bob-db-password-2e81d4"}
SNAPSHOT = ("find /etc/supervisor /etc/uwsgi -type f -exec sha256sum {} + | sort;"
            " supervisorctl status | awk '{print $1, $2, $4}'")


def user_app(user):
    return {"name": f"{user}app", "module": "app:app", "chdir": "/srv/flaskapp", "uid": user, "gid": "www-data",
            "socket": f"/run/uwsgi/{user}app.sock", "listen": 1024,
            "environment": {"APP_NAME": f"{user}app", "DB_PASSWORD": SECRETS[user]}}


APPS = copy.deepcopy(BASE_APPS) + [user_app("alice"), user_app("bob")]


def as_user(host, user, command):
    return host.run(f"runuser -u {user} -- sh -c {shlex.quote(command)}")


def run(tmp_path, name, extra, *args):
    return hc.run_with(PLAYBOOK, tmp_path, name, extra, *args)


@pytest.fixture(scope="module")
def two_users(host, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    for user in SECRETS:
        host.run(f"id {user} || useradd --system --gid www-data --no-create-home --shell /usr/sbin/nologin {user}")
    hc.ok(run(tmp, "two-users", {"uwsgi_apps": APPS}))
    yield tmp
    gone = [dict(user_app(user), state="absent") for user in SECRETS]
    hc.ok(run(tmp, "two-users-gone", {"uwsgi_apps": copy.deepcopy(BASE_APPS) + gone}))
    for user in list(SECRETS) + ["toor"]:
        host.run(f"userdel {user}")


@pytest.mark.parametrize("reader", ["alice", "bob", "www-data"])
def test_no_other_apps_secret_is_readable(host, two_users, reader):
    for owner, secret in SECRETS.items():
        env = f"/etc/uwsgi/supervisor/{owner}app.env.ini"
        readable = as_user(host, reader, f"cat {env}")
        assert (readable.rc == 0) == (reader == owner), (reader, env, readable.stdout, readable.stderr)
        if reader == owner:
            continue
        # Nowhere this user can read: files, backups, logs, and every process's command line.
        found = as_user(host, reader, f"grep -rIls {shlex.quote(secret)} /etc /run /srv /tmp /var/log /var/lib "
                                      "2>/dev/null")
        assert found.stdout.strip() == "", (reader, owner, found.stdout)
        assert secret not in as_user(host, reader, "ps -eo args").stdout


def test_each_app_receives_its_own_secret(host, two_users):
    for user, secret in SECRETS.items():
        out = host.check_output(f"uwsgiprobe request /run/uwsgi/{user}app.sock '/env?k=DB_PASSWORD'")
        assert secret in out


def test_no_app_user_can_remove_or_replace_another_apps_socket(host, two_users):
    bob = "/run/uwsgi/bobapp.sock"
    before = host.check_output(f"stat -c %i {bob}")
    for attempt in (f"rm -f {bob}", f"mv {bob} /run/uwsgi/stolen.sock", f"ln -sf /tmp/x {bob}"):
        assert as_user(host, "alice", attempt).rc != 0, attempt
    assert host.check_output(f"stat -c %i {bob}") == before
    assert "hello from bobapp" in host.check_output(f"uwsgiprobe request {bob} /")


@pytest.mark.extended
def test_a_deleted_socket_fails_the_proof_and_the_next_run_brings_it_back(host, two_users):
    """ss keeps the name of a deleted socket; the proof reads the file at the path."""
    bob = "/run/uwsgi/bobapp.sock"
    host.run_test(f"rm -f {bob}")
    rerun = hc.ok(run(two_users, "socket-gone", {"uwsgi_apps": APPS}))
    assert f"its socket file {bob} is gone" in hc.said(rerun), hc.said(rerun)[-3000:]
    assert "hello from bobapp" in host.check_output(f"uwsgiprobe request {bob} /")


@pytest.fixture(scope="module")
def refused(host, two_users):
    """Inputs an app user could arrange, each refused before any change."""
    host.run("id toor || useradd --non-unique --uid 0 --gid 0 --no-create-home --shell /usr/sbin/nologin toor")
    host.run_test("mkdir -p /etc/uwsgi/apps-enabled && printf '[program:legacy]\\ncommand=/bin/sleep 86400\\n'"
                  " > /etc/supervisor/conf.d/legacy.conf && supervisorctl update legacy")
    for _ in range(30):
        if hc.supervisor_state(host, "legacy")[0] == "RUNNING":
            break
        time.sleep(0.5)
    cases = {
        "root-alias": ({"uwsgi_apps": APPS[:2] + [dict(user_app("alice"), uid="toor")] + APPS[3:]},
                       "user toor has uid 0 on this host"),
        "name-all": ({"uwsgi_apps": APPS + [dict(user_app("alice"), name="all", socket="/run/uwsgi/all.sock")]},
                     'name "all" means something of its own to Supervisor'),
        "socket-option": ({"uwsgi_apps": APPS[:3] + [dict(user_app("bob"), options={
            "fastcgi-socket": "/run/uwsgi/flaskapp.sock"})]}, "options.fastcgi-socket binds a socket"),
        "foreign-name": ({"uwsgi_apps": APPS + [dict(user_app("alice"), name="legacy",
                                                     socket="/run/uwsgi/legacy.sock")]},
                         "Supervisor already has a program legacy that this role did not write"),
    }
    before = host.check_output(SNAPSHOT)
    runs = {name: run(two_users, name, extra) for name, (extra, _) in cases.items()}
    after = host.check_output(SNAPSHOT)
    # A hand-written program is not the role's: never removed, stopped or restarted.
    legacy_pid = hc.supervisor_state(host, "legacy")[1]
    removing = run(two_users, "unlisted-remove", {"uwsgi_apps": APPS, "uwsgi_unlisted_apps": "remove"})
    legacy = (hc.supervisor_state(host, "legacy"), legacy_pid,
              host.file("/etc/supervisor/conf.d/legacy.conf").exists)
    host.run("supervisorctl stop legacy; rm -f /etc/supervisor/conf.d/legacy.conf; supervisorctl update")
    yield cases, runs, before, after, removing, legacy


@pytest.mark.extended
@pytest.mark.parametrize("case", ["root-alias", "name-all", "socket-option", "foreign-name"])
def test_what_an_app_user_could_arrange_is_refused_before_any_change(refused, case):
    cases, runs, before, after, _, _ = refused
    said = hc.said(runs[case])
    assert runs[case].returncode != 0 and cases[case][1] in said, said[-3000:]
    assert before == after


@pytest.mark.extended
def test_a_hand_written_program_is_never_the_roles(refused):
    _, _, _, _, removing, (state, pid, file_kept) = refused
    hc.ok(removing)
    assert "legacy" not in hc.said(removing), hc.said(removing)[-3000:]
    assert state == ("RUNNING", pid) and file_kept
