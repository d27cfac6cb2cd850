"""The default scenario's proof: the README's playbook on a Debian host that
started with net.core.somaxconn = 128 and had no uWSGI or Supervisor."""

import json

import pytest
import yaml

import hostchecks as hc

PLAYBOOK = hc.PROJECT / "playbooks" / "site.yml"
APPS = hc.apps_from_playbook(PLAYBOOK)
LIMIT = hc.derived_limit(APPS)
APP_IDS = [a["name"] for a in APPS]


def test_playbook_has_unix_and_tcp_apps_above_old_default():
    kinds = {a["socket"].startswith("/") for a in APPS}
    assert kinds == {True, False}
    listens = [a["listen"] for a in APPS]
    assert min(listens) > 128 and len(set(listens)) == len(listens)


def test_sysctls_live_equal_persisted(host):
    hc.check_sysctls(host, LIMIT)


@pytest.mark.parametrize("app", APPS, ids=APP_IDS)
def test_backlog_in_effect_equals_listen(host, app):
    hc.check_backlog(host, app)


@pytest.mark.parametrize("app", APPS, ids=APP_IDS)
def test_running_as_unprivileged_user(host, app):
    hc.check_running_as(host, app)


@pytest.mark.parametrize("app", APPS, ids=APP_IDS)
def test_real_request(host, app):
    hc.check_request(host, app, f"hello from {app['name']}")


def test_the_log_keeps_failed_requests_and_rotates_at_its_bounds(host):
    """request_logging errors (the default): a request answered 200 leaves no
    line, one answered 500 does; Supervisor rotates at 50MB, keeping 10."""
    app = APPS[0]
    log = hc.app_log(host, app["name"])
    before = int(host.check_output(f"wc -l < {log}"))
    hc.check_request(host, app, f"hello from {app['name']}")
    failed = host.run(f"uwsgiprobe request {app['socket']} '/slow?t=not-a-number'")
    assert "500" in failed.stdout.splitlines()[0], failed.stdout
    new = host.check_output(f"tail -n +{before + 1} {log}")
    assert "GET /slow?t=not-a-number" in new and "GET / " not in new, new
    program = host.file(f"/etc/supervisor/conf.d/{app['name']}.conf").content_string
    assert "stdout_logfile_maxbytes=50MB\nstdout_logfile_backups=10\n" in program


def test_unix_socket_not_world_writable(host):
    for app in APPS:
        if app["socket"].startswith("/"):
            sock = host.file(app["socket"])
            assert sock.is_socket
            assert sock.mode & 0o002 == 0 and sock.mode & 0o060 == 0o060, oct(sock.mode)
            assert sock.group == "www-data"


def test_config_files_root_owned(host):
    for app in APPS:
        for path in (f"/etc/uwsgi/supervisor/{app['name']}.ini", f"/etc/supervisor/conf.d/{app['name']}.conf"):
            f = host.file(path)
            assert f.user == "root" and f.mode & 0o002 == 0, path
            if path.endswith(".ini"):  # may hold the app's environment: not world-readable
                assert f.mode & 0o007 == 0, oct(f.mode)
            assert "Ansible managed" in f.content_string


@pytest.mark.parametrize("app", [a for a in APPS if a["socket"].startswith("/")], ids=lambda a: a["name"])
def test_burst_of_listen_connections_while_busy_is_not_refused(host, app):
    hc.check_burst(host, app)


def test_a_rerun_during_a_burst_leaves_the_serving_app_alone(host):
    """With thousands of connections queued (every worker busy), a rerun
    still reads the app's socket as listening and changes nothing: it does not
    restart a serving app and drop its queue."""
    app = next(a for a in APPS if a["socket"].startswith("/"))
    _, pid = hc.supervisor_state(host, app["name"])
    busy = app["processes"] * app["threads"]
    # The workers stay busy for `hold` s, past a rerun (about 12 s), so the
    # queue is still deep when the run ends.
    hold = 30
    hc.wait_queue_empty(host, app["socket"])
    burst = hc.subprocess.Popen(
        ["docker", "exec", host.backend.get_hostname(), "uwsgiprobe", "burst", app["socket"], str(app["listen"]),
         "--busy", str(busy), "--hold", str(hold)], stdout=hc.subprocess.PIPE, text=True)
    try:
        queue = 0
        for _ in range(50):
            queue = hc.queued(host, app["socket"])
            if queue >= 2000:
                break
            hc.time.sleep(0.2)
        assert queue >= 2000, f"{app['name']}: only {queue} connections queued"
        started = hc.time.monotonic()
        run = hc.run_playbook(PLAYBOOK)
        took = hc.time.monotonic() - started
        # Still deep once the run ended: its probe met the queue.
        after = hc.queued(host, app["socket"])
    finally:
        burst.communicate(timeout=hold + 60)
        # The workers free again for the tests after this one.
        hc.wait_queue_empty(host, app["socket"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert hc.recap_changed(run.stdout) == {host.backend.get_hostname(): 0}, run.stdout[-3000:]
    assert hc.supervisor_state(host, app["name"]) == ("RUNNING", pid)
    assert after >= 1000, (f"only {after} connections still queued after the run ({took:.1f} s): "
                           "it proves nothing about a deep queue")


def test_check_diff_on_converged_host_changes_nothing():
    run = hc.run_playbook(PLAYBOOK, "--check", "--diff")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    changed = hc.recap_changed(run.stdout)
    assert changed and all(v == 0 for v in changed.values()), run.stdout[-3000:]


def run_with_apps(tmp_path, apps):
    extra = tmp_path / "apps.json"
    extra.write_text(json.dumps({"uwsgi_apps": apps}))
    run = hc.run_playbook(PLAYBOOK, "-e", f"@{extra}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return run


def test_everything_holds_after_reboot_even_for_an_unlisted_app(host, tmp_path):
    """A run that no longer lists flaskapp keeps it (and says so); after a
    reboot its socket directory is back (tmpfiles.d) and everything serves."""
    apps = yaml.safe_load(PLAYBOOK.read_text())[0]["vars"]["uwsgi_apps"]
    unix_app = next(a for a in APPS if a["socket"].startswith("/"))
    run = run_with_apps(tmp_path, [a for a in apps if a["name"] != unix_app["name"]])
    assert f"keep running as they are: {unix_app['name']}" in hc.said(run), hc.said(run)[-3000:]
    marker = "/run/uwsgi-test-before-reboot"  # /run is a tmpfs: a boot empties it
    host.run_test(f"touch {marker}")
    hc.restart_container(host.backend.get_hostname())
    hc.wait_until_serving(host, APPS)
    assert not host.file(marker).exists, "the container did not restart"
    hc.check_sysctls(host, LIMIT)
    for app in APPS:
        hc.check_backlog(host, app)
        hc.check_running_as(host, app)
        hc.check_request(host, app, f"hello from {app['name']}")
        if app["socket"].startswith("/"):
            hc.check_burst(host, app)
    again = run_with_apps(tmp_path, apps)
    assert hc.recap_changed(again.stdout) == {host.backend.get_hostname(): 0}, again.stdout[-3000:]


def test_the_image_has_no_python3_apt_so_the_first_check_ran_without_it():
    """The sequence's first `check` ran on this image as built: a minimal Debian
    without python3-apt, which apt's own check mode needs."""
    image = f"uwsgi-role-test:{hc.os.environ.get('MOLECULE_DISTRO', 'bookworm')}"
    probe = hc.subprocess.run(["docker", "run", "--rm", "--entrypoint", "dpkg-query", image, "-W", "python3-apt"],
                              capture_output=True, text=True, check=False)
    assert probe.returncode != 0 and "no packages found matching python3-apt" in probe.stderr, probe


def test_the_probe_reads_supervisor_over_its_socket_as_supervisorctl_sees_it(host, tmp_path, monkeypatch):
    """The probe asks supervisord's XML-RPC socket, not supervisorctl, and sees what supervisorctl prints."""
    playbook = tmp_path / "probe.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "roles": [], "tasks": [
        {"name": "Probe", "uwsgi_probe": {"supervisor_conf_dir": "/etc/supervisor/conf.d", "config_dir": "/etc/uwsgi/supervisor",
                                          "log_dir": "/var/log/supervisor", "tmpfiles_file": "/etc/tmpfiles.d/uwsgi-supervisor.conf"},
         "register": "seen"},
        {"name": "Keep", "ansible.builtin.copy": {"content": "{{ seen.probe.supervisor | to_json }}", "dest": "/root/probe-supervisor.json",
                                                  "mode": "0600"}}]}]))
    monkeypatch.setenv("ANSIBLE_LIBRARY", str(hc.PROJECT / "library"))
    monkeypatch.setenv("ANSIBLE_MODULE_UTILS", str(hc.PROJECT / "module_utils"))
    hc.ok(hc.run_playbook(playbook))
    seen = json.loads(host.file("/root/probe-supervisor.json").content_string)
    status = hc.parsers.parse_supervisor_status(host.run("supervisorctl status").stdout)
    assert seen["source"] == "rpc", seen
    assert {name: (s["state"], s["pid"]) for name, s in seen["programs"].items()} == {
        name: (s["state"], s["pid"]) for name, s in status.items()}
    host.run("rm -f /root/probe-supervisor.json")


def test_a_converged_run_compares_on_fingerprints_and_still_sees_a_file_changed_in_place(host):
    """A converged host's look runs no module: the probe's fingerprints say every file is as the role
    writes it. A file changed in place (same size, owner and mode) differs, and the next run writes it again."""
    run = hc.run_playbook(PLAYBOOK, "-v")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert hc.recap_changed(run.stdout) == {host.backend.get_hostname(): 0}, run.stdout[-3000:]
    assert "by the probe's fingerprints" in run.stdout, run.stdout[-3000:]
    env = f"/etc/uwsgi/supervisor/{APPS[0]['name']}.env.ini"
    before = host.check_output(f"sha256sum {env} && stat -c %U:%G:%a {env}")
    # One byte flipped where it is: the inode, size, owner and mode stay.
    host.run_test(f"python3 -c \"import sys; f = open(sys.argv[1], 'r+b'); data = f.read(); f.seek(len(data) - 2); "
                  f"f.write(b'#' if data[-2:-1] != b'#' else b'!'); f.close()\" {env}")
    assert host.check_output(f"sha256sum {env} && stat -c %U:%G:%a {env}") != before
    run = hc.run_playbook(PLAYBOOK)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert hc.recap_changed(run.stdout)[host.backend.get_hostname()] >= 1, run.stdout[-3000:]
    assert host.check_output(f"sha256sum {env} && stat -c %U:%G:%a {env}") == before
    hc.wait_until_serving(host, APPS)
