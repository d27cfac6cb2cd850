"""Rolling a listen change across five hosts behind nginx: no failed request,
a fault stops the rollout at its batch, and a fixed input completes it."""

import json
import os
import subprocess
import time

import pytest
import testinfra

import hostchecks as hc

testinfra_hosts = ["fleet-1"]  # the tests drive the fleet themselves

ROLLING = hc.PROJECT / "playbooks" / "rolling.yml"
HOOKS = hc.PROJECT / "playbooks" / "hooks"
FLEET = [f"fleet-{n}" for n in range(1, 6)]
LB = "fleet-lb"
STOP = "/tmp/stop-stream"


def host_of(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


HOSTS = {name: host_of(name) for name in FLEET}


def app(listen):
    return {"name": "flaskapp", "socket": "/srv/sock/flaskapp.sock", "listen": listen,
            "processes": 2, "threads": 1, "uid": "www-data", "protocol": "uwsgi"}


def pids():
    return {name: hc.supervisor_state(h, "flaskapp")[1] for name, h in HOSTS.items()}


def pools():
    return {name: hc.pool_pid(h, "flaskapp") for name, h in HOSTS.items()}


def backlogs():
    return {name: hc.listen_backlogs(h).get("/srv/sock/flaskapp.sock") for name, h in HOSTS.items()}


class Stream:
    """The bounded request stream through the load balancer, run in its container."""

    def __enter__(self):
        subprocess.run(["docker", "exec", LB, "rm", "-f", STOP], check=True)
        self.proc = subprocess.Popen(
            ["docker", "exec", LB, "loadstream", "http://127.0.0.1/", "--workers", "8",
             "--stop-file", STOP, "--max-seconds", "900"],
            stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        return self

    def __exit__(self, *exc):
        subprocess.run(["docker", "exec", LB, "touch", STOP], check=True)
        out, _ = self.proc.communicate(timeout=120)
        self.result = json.loads(out)
        print("request stream:", self.result)
        # The stream covered the whole rollout: it ran until told to stop.
        assert self.result["stopped_by"] == "stop-file", self.result

    def check(self):
        """No request failed at the load balancer, and enough ran to tell."""
        assert self.result["failed"] == 0 and self.result["ok"] > 100, self.result


def rollout(*extra, hooks=True):
    started = time.monotonic()
    drain = ["-e", f"uwsgi_rollout_pre_tasks={HOOKS / 'lb-drain.yml'}",
             "-e", f"uwsgi_rollout_post_tasks={HOOKS / 'lb-restore.yml'}"] if hooks else []
    run = hc.run_playbook(ROLLING, "--limit", "uwsgi_fleet", *drain, *extra)
    seconds = time.monotonic() - started
    print(f"rollout {' '.join(extra)}: rc {run.returncode}, {seconds:.1f} s")
    return run, seconds


def test_baseline_serves_through_the_load_balancer():
    assert set(backlogs().values()) == {1024}
    lb = host_of(LB)
    bodies = {lb.check_output("python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1/').read().decode())\"")
              for _ in range(10)}
    assert len(bodies) >= 2, bodies  # round robin reaches several hosts


def test_rolling_new_instances_behind_drain_hooks_fail_no_request():
    """A new worker count is a new instance beside the serving one on every host, batch by batch, with the
    hooks around each host; the pool that holds each socket stays."""
    before, held = pids(), pools()
    with Stream() as stream:
        run, seconds = rollout("-e", "uwsgi_listen=1536", "-e", "uwsgi_rollout_serial=1", "-e", "uwsgi_processes=3")
    assert run.returncode == 0, hc.said(run)[-3000:]
    stream.check()
    assert set(backlogs().values()) == {1536}
    after = pids()
    assert all(after[h] != before[h] for h in FLEET), (before, after)  # a new instance everywhere
    assert None not in held.values() and pools() == held, (held, pools())
    # Five batches of one host each, in inventory order.
    batches = [line for line in run.stdout.splitlines() if line.startswith("PLAY [")]
    assert len(batches) == 5, batches
    print(f"rollout of 5 hosts with hooks, serial 1: {seconds:.1f} s, {stream.result['requests']} requests, 0 failed")


def test_rolling_listen_change_without_hooks_fails_no_request():
    """A new backlog needs no drain: it goes to the pool's open socket, and no instance is replaced."""
    before = pids()
    with Stream() as stream:
        run, seconds = rollout("-e", "uwsgi_listen=2048", "-e", "uwsgi_rollout_serial=2", "-e", "uwsgi_processes=3",
                               hooks=False)
    assert run.returncode == 0, hc.said(run)[-3000:]
    stream.check()
    assert set(backlogs().values()) == {2048}
    assert pids() == before  # no app was stopped
    print(f"rollout of 5 hosts without hooks, serial 2: {seconds:.1f} s, {stream.result['requests']} requests, "
          "0 failed")


def test_fault_stops_the_rollout_and_the_others_keep_serving():
    before = pids()
    with Stream() as stream:
        # Batches [fleet-1, fleet-2], [fleet-3, fleet-4], [fleet-5]: the second fails.
        run, _ = rollout("-e", "uwsgi_listen=3072", "-e", "uwsgi_rollout_serial=2",
                         "-e", "fleet_break_host=fleet-3")
    output = hc.said(run)
    assert run.returncode != 0
    # Refused by its trial aside: the broken config never reached the serving app.
    assert "app flaskapp (its ini changed) was tried aside" in output, output[-3000:]
    assert "unknown config directive: no-such-option" in output, output[-3000:]
    stream.check()
    seen = backlogs()
    after = pids()
    assert seen["fleet-1"] == seen["fleet-2"] == 3072
    # The broken host is back on its previous config and serving.
    assert seen["fleet-3"] == 2048
    hc.check_request(HOSTS["fleet-3"], app(2048), "hello from fleet-3")
    # Every host of a batch is tried before any writes: fleet-4, which shared the
    # failed batch, was not touched either (its files too are as they were).
    assert seen["fleet-4"] == 2048 and after["fleet-4"] == before["fleet-4"], (seen, before, after)
    assert "listen = 2048" in HOSTS["fleet-4"].file("/etc/uwsgi/supervisor/flaskapp.socket.ini").content_string
    recap = "\n".join(line for line in run.stdout.splitlines() if line.startswith(("PLAY", "fleet-", "TASK [Take")))
    assert "fleet-5" not in run.stdout, recap
    assert seen["fleet-5"] == 2048 and after["fleet-5"] == before["fleet-5"], (seen, before, after, recap)


def test_fixed_input_completes_the_rollout():
    with Stream() as stream:
        run, _ = rollout("-e", "uwsgi_listen=3072", "-e", "uwsgi_rollout_serial=3")
    assert run.returncode == 0, hc.said(run)[-3000:]
    assert stream.result["failed"] == 0, stream.result
    assert set(backlogs().values()) == {3072}
    for name, h in HOSTS.items():
        hc.check_request(h, app(3072), f"hello from {name}")


@pytest.mark.parametrize("name", FLEET)
def test_every_host_serves_with_its_backlog(name):
    h = HOSTS[name]
    hc.check_backlog(h, app(3072))
    hc.check_running_as(h, app(3072))


# Deploys: playbooks/deploy.yml checks a tag out of each host's own copy of
# the app's repository into /srv/app/releases/<tag>, points /srv/app/current
# at it and applies the role with the checkout's commit as the app's revision.
DEPLOY = hc.PROJECT / "playbooks" / "deploy.yml"
REPO = "/srv/git/app.git"
BREAK = """echo 'raise RuntimeError("broken build: SETTINGS_MODULE is not set")' >> app.py"""


def tag_build(name, tag, broken=False):
    """Commit a build (app.py and a BUILD file naming it) to the host's repository and tag it."""
    breaks = BREAK if broken else ""
    script = f"""set -e
mkdir -p /srv/git
[ -d {REPO} ] || git init -q --bare {REPO}
rm -rf /srv/git/work && git clone -q {REPO} /srv/git/work 2>/dev/null && cd /srv/git/work
git config user.email builds@example.com && git config user.name builds
cp /srv/flaskapp/app.py app.py && echo {tag} > BUILD
{breaks}
git add -A && git commit -qm {tag} && git tag {tag} && git push -q origin HEAD:refs/heads/main --tags
"""
    HOSTS[name].run_test(script)


def served_builds():
    return {name: (h.run("uwsgiprobe request /srv/sock/flaskapp.sock /build").stdout.strip().splitlines() or [""])[-1]
            for name, h in HOSTS.items()}


def deploy(tag, serial, tmp_path):
    apps = tmp_path / f"deploy-{tag}.json"
    apps.write_text(json.dumps({"uwsgi_apps": [{
        "name": "flaskapp", "module": "app:app", "chdir": "/srv/app/current", "socket": "/srv/sock/flaskapp.sock",
        "listen": 3072, "environment": {"APP_NAME": "{{ inventory_hostname }}"},
        "revision": "{{ deploy_build.after | default('') }}"}]}))
    started = time.monotonic()
    run = hc.run_playbook(DEPLOY, "--limit", "uwsgi_fleet", "-e", f"@{apps}", "-e", f"deploy_repo={REPO}",
                          "-e", f"deploy_version={tag}", "-e", "deploy_root=/srv/app",
                          "-e", f"deploy_serial={serial}")
    print(f"deploy {tag}, serial {serial}: rc {run.returncode}, {time.monotonic() - started:.1f} s")
    return run


def test_a_deploy_rolls_a_new_build_across_the_fleet(tmp_path):
    for name in FLEET:
        tag_build(name, "v1")
        tag_build(name, "v2")
    with Stream() as stream:
        first = deploy("v1", 5, tmp_path)
        second = deploy("v2", 2, tmp_path)
    assert first.returncode == 0, hc.said(first)[-3000:]
    assert second.returncode == 0, hc.said(second)[-3000:]
    assert "flaskapp: a new instance beside the serving one (its revision is" in hc.said(second)
    stream.check()
    assert set(served_builds().values()) == {"v2"}, served_builds()


def test_a_broken_build_stops_the_deploy_at_its_host(tmp_path):
    for name in FLEET:
        tag_build(name, "v3", broken=name == "fleet-3")
    before = pids()
    with Stream() as stream:
        # Batches [fleet-1, fleet-2], [fleet-3, fleet-4], [fleet-5]: fleet-3's build does not load.
        run = deploy("v3", 2, tmp_path)
    output = hc.said(run)
    assert run.returncode != 0
    assert "RuntimeError: broken build: SETTINGS_MODULE is not set" in output, output[-3000:]
    assert "v3 was not deployed on this host; it serves /srv/app/releases/v2 again" in output, output[-3000:]
    stream.check()
    builds = served_builds()
    assert builds["fleet-1"] == builds["fleet-2"] == "v3", builds
    # The broken host serves the build it had, from the same instance, and its link points at it again.
    assert builds["fleet-3"] == "v2" and pids()["fleet-3"] == before["fleet-3"], builds
    assert HOSTS["fleet-3"].file("/srv/app/current").linked_to == "/srv/app/releases/v2"
    # fleet-4 shared the failed batch; the later batch was not touched.
    assert "fleet-5" not in run.stdout and builds["fleet-5"] == "v2", builds
