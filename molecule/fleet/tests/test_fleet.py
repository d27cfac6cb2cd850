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
HOOKS = hc.PROJECT / "molecule" / "fleet" / "hooks"
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


def test_rolling_restarts_behind_drain_hooks_fail_no_request():
    """uwsgi_apply_strategy restart stops and starts every app: the hooks drain each host first."""
    before = pids()
    with Stream() as stream:
        run, seconds = rollout("-e", "uwsgi_listen=1536", "-e", "uwsgi_rollout_serial=1",
                               "-e", "uwsgi_apply_strategy=restart")
    assert run.returncode == 0, hc.said(run)[-3000:]
    assert stream.result["failed"] == 0 and stream.result["ok"] > 100, stream.result
    assert set(backlogs().values()) == {1536}
    after = pids()
    assert all(after[h] != before[h] for h in FLEET), (before, after)  # a real restart everywhere
    # Five batches of one host each, in inventory order.
    batches = [line for line in run.stdout.splitlines() if line.startswith("PLAY [")]
    assert len(batches) == 5, batches
    print(f"rollout of 5 hosts with hooks, serial 1: {seconds:.1f} s, {stream.result['requests']} requests, 0 failed")


def test_rolling_listen_change_without_hooks_fails_no_request():
    """The default, graceful path needs no drain: a new backlog on the open socket and a graceful reload."""
    before = pids()
    with Stream() as stream:
        run, seconds = rollout("-e", "uwsgi_listen=2048", "-e", "uwsgi_rollout_serial=2", hooks=False)
    assert run.returncode == 0, hc.said(run)[-3000:]
    assert stream.result["failed"] == 0 and stream.result["ok"] > 100, stream.result
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
    assert stream.result["failed"] == 0 and stream.result["ok"] > 100, stream.result
    seen = backlogs()
    after = pids()
    assert seen["fleet-1"] == seen["fleet-2"] == 3072
    # The broken host is back on its previous config and serving.
    assert seen["fleet-3"] == 2048
    hc.check_request(HOSTS["fleet-3"], app(2048), "hello from fleet-3")
    # fleet-4 shared the failed batch; the later batch was not touched.
    assert seen["fleet-4"] == 3072
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
