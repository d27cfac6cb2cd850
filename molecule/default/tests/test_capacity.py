"""Is the backlog big enough? The role's listen-queue sampler on a real host:
a burst shows as a peak, Debian's node_exporter serves the series, the fleet
report names the listeners capped by the old limit, and a sampler that loses
a socket or its output directory keeps running and says so.

(Named to run before test_default.py, whose reboot restarts nginx with the
raised limit: until then nginx keeps the 128 it started with.)
"""

import json
import time

import pytest

import hostchecks as hc

PLAYBOOK = hc.PROJECT / "playbooks" / "site.yml"
APPS = hc.apps_from_playbook(PLAYBOOK)
UNIX_APP = next(a for a in APPS if a["socket"].startswith("/"))
TCP_APP = next(a for a in APPS if not a["socket"].startswith("/"))
SAMPLER = "uwsgi-sampler"
TEXTFILE = "/var/lib/prometheus/node-exporter/uwsgi.prom"
LOG = f"/var/log/supervisor/{SAMPLER}.log"


samples = hc.metric_samples


def metric(text, name, app):
    values = [s.value for s in samples(text) if s.name == name and s.labels.get("app") == app]
    assert len(values) == 1, f"{name}{{app={app}}}: {values}"
    return values[0]


def counter(text, name, **labels):
    """A counter's value (the parser names a counter's sample NAME_total)."""
    return next(s.value for s in samples(text) if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def textfile(host):
    return host.file(TEXTFILE).content_string


def wait_for(host, check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        text = textfile(host)
        if check(text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout} s:\n{text}")
        time.sleep(0.5)


def test_the_sampler_runs_unprivileged_under_supervisor(host):
    state, pid = hc.supervisor_state(host, SAMPLER)
    assert state == "RUNNING"
    assert host.check_output(f"ps -o user= --pid {pid}") == SAMPLER
    text = textfile(host)
    for app in APPS:
        assert metric(text, "uwsgi_listen_backlog", app["name"]) == app["listen"]
        assert metric(text, "uwsgi_listen_socket_up", app["name"]) == 1


def test_a_burst_of_held_connects_shows_as_the_peak(host):
    n = 1000
    held_by_workers = UNIX_APP["processes"] * UNIX_APP["threads"]
    # An earlier burst's queue, and its peak in the sampler's window, are gone first.
    hc.wait_queue_empty(host, UNIX_APP["socket"])
    wait_for(host, lambda t: metric(t, "uwsgi_listen_queue_peak_length", UNIX_APP["name"]) < n - held_by_workers,
             timeout=30)
    burst = json.loads(host.check_output(f"uwsgiprobe burst {UNIX_APP['socket']} {n} --busy {held_by_workers} --hold 3"))
    assert burst["refused"] == 0, burst
    # The peak stays for the sampler's window (15 s) after the queue drained.
    text = wait_for(host, lambda t: metric(t, "uwsgi_listen_queue_peak_length", UNIX_APP["name"]) >= n - held_by_workers)
    peak = metric(text, "uwsgi_listen_queue_peak_length", UNIX_APP["name"])
    assert n - held_by_workers <= peak <= n, peak
    print(f"burst of {n}: peak {peak:.0f} of backlog {UNIX_APP['listen']}")


def test_node_exporter_serves_the_series(host):
    scrape = host.check_output(
        "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:9100/metrics\").read().decode())'")
    for app in APPS:
        assert metric(scrape, "uwsgi_listen_backlog", app["name"]) == app["listen"]
        assert metric(scrape, "uwsgi_listen_queue_peak_length", app["name"]) >= 0
    # node_exporter read the file without error.
    assert counter(scrape, "node_textfile_scrape_error") == 0


def test_the_report_prints_the_apps_and_names_nginx_capped_by_the_old_limit():
    run = hc.ok(hc.run_playbook(hc.PROJECT / "playbooks" / "report.yml"))
    output = run.stdout
    assert f"{UNIX_APP['socket']}" in output and f"{UNIX_APP['listen']}" in output
    capped = [line for line in output.splitlines() if "0.0.0.0:8081" in line]
    assert capped and "128" in capped[0] and "nginx" in capped[0], output[-3000:]
    assert "restart each to benefit" in output
    # Read-only.
    assert set(hc.recap_changed(output).values()) == {0}


def test_an_app_that_is_gone_reads_as_down_and_the_sampler_keeps_running(host):
    _, pid = hc.supervisor_state(host, SAMPLER)
    name = TCP_APP["name"]
    # Its instances and the pool that holds its socket.
    host.check_output(f"supervisorctl stop {hc.programs_of(host, name)} {name}.socket")
    try:
        wait_for(host, lambda t: metric(t, "uwsgi_listen_socket_up", TCP_APP["name"]) == 0)
        assert f"app {TCP_APP['name']}: socket {TCP_APP['socket']} not found listening" in host.file(LOG).content_string
        assert hc.supervisor_state(host, SAMPLER) == ("RUNNING", pid)
    finally:
        host.check_output(f"supervisorctl start {name}.socket {name}.a")
    wait_for(host, lambda t: metric(t, "uwsgi_listen_socket_up", TCP_APP["name"]) == 1)


def test_an_output_directory_it_cannot_write_is_counted_and_logged_not_a_crash(host):
    _, pid = hc.supervisor_state(host, SAMPLER)
    directory = TEXTFILE.rsplit("/", 1)[0]
    before = host.check_output(f"stat -c %a {directory}")
    host.check_output(f"chmod g-w {directory}")
    try:
        time.sleep(2.5)
        log = host.file(LOG).content_string
        assert "error (output)" in log and "retrying" in log, log[-2000:]
        assert hc.supervisor_state(host, SAMPLER) == ("RUNNING", pid)
    finally:
        host.check_output(f"chmod {before} {directory}")
    deadline = time.monotonic() + 10
    while "recovered (output)" not in host.file(LOG).content_string:
        assert time.monotonic() < deadline, "the sampler did not say it writes again"
        time.sleep(0.5)
    text = wait_for(host, lambda t: counter(t, "uwsgi_sampler_errors_total", kind="output") > 0)
    assert counter(text, "uwsgi_sampler_errors_total", kind="output") > 0
    assert hc.supervisor_state(host, SAMPLER) == ("RUNNING", pid)


@pytest.mark.extended
def test_turning_the_sampler_off_gives_the_textfile_directory_back(host, tmp_path):
    """The group write the role gave the sampler's group goes with it: the
    directory gets back what it had before the role first changed it."""
    directory = "/var/lib/prometheus/node-exporter"
    record = json.loads(host.file("/etc/uwsgi/supervisor/.textfile-dir.json").content_string)
    assert record["path"] == directory
    try:
        hc.ok(hc.run_with(PLAYBOOK, tmp_path, "sampler-off", {"uwsgi_sampler": False}))
        assert host.check_output(f"stat -c '%G %a' {directory}") == f"{record['group']} {int(record['mode'], 8):o}"
        assert not host.file("/etc/uwsgi/supervisor/.textfile-dir.json").exists
        assert not host.file(TEXTFILE).exists
    finally:
        hc.ok(hc.run_with(PLAYBOOK, tmp_path, "sampler-on", {}))
    assert host.check_output(f"stat -c '%G' {directory}") == "uwsgi-sampler"
    assert host.file("/etc/uwsgi/supervisor/.textfile-dir.json").exists
