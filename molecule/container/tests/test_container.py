"""Containers: an image built with the role (playbooks/image.yml,
uwsgi_target: image), run the way docker-compose runs it, and the role applied
to running containers without systemd (uwsgi_target: container).

The build container (the molecule instance, `host` here) has no systemd and a
read-only /proc/sys. The image committed from it runs with supervisord as
PID 1: with --sysctl net.core.somaxconn it serves through nginx with the backlog
it asked for; without, uWSGI refuses to start with its own message. Each
container the tests start is removed at the end, and so is the image.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shlex
import subprocess
import tempfile
import time
import urllib.request

import pytest
import testinfra
import yaml

import hostchecks as hc

PLAYBOOK = hc.PROJECT / "playbooks" / "image.yml"
APP = hc.apps_from_playbook(PLAYBOOK)[0]
PLAY_APPS = yaml.safe_load(PLAYBOOK.read_text())[0]["vars"]["uwsgi_apps"]
LISTEN = APP["listen"]
# The molecule instance (the build container), as .config/molecule/config.yml names it.
PREFIX = f"{os.environ.get('UWSGI_TEST_PREFIX', 'uwsgi')}-container-{os.environ.get('MOLECULE_DISTRO', 'bookworm')}"
IMAGE = f"{PREFIX}-app:test"
SUPERVISORD = ["/usr/bin/supervisord", "--nodaemon", "--configuration", "/etc/supervisor/supervisord.conf"]
PROM = "/var/lib/prometheus/node-exporter/uwsgi.prom"
FILES = "sha256sum /etc/uwsgi/supervisor/* /etc/supervisor/conf.d/*; ls -A /etc/sysctl.d"


def docker(*args: str, check: bool = True) -> str:
    run = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and run.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {run.stderr}")
    return run.stdout.strip()


def start(name: str, *args: str, command: list[str] | None = None) -> testinfra.host.Host:
    """A container of the image, started detached; its testinfra host."""
    docker("rm", "-f", name, check=False)
    docker("run", "-d", "--name", name, *args, IMAGE, *(command or []))
    return testinfra.get_host(f"docker://{name}")


def inventory(tmp_path, name: str) -> str:
    """An inventory of container `name`, in a file of its own (runs may be concurrent)."""
    handle, path = tempfile.mkstemp(dir=tmp_path, prefix=f"{name}-", suffix=".yml")
    with os.fdopen(handle, "w") as out:
        yaml.safe_dump({"all": {"hosts": {name: {"ansible_connection": "community.docker.docker",
                                                 "ansible_python_interpreter": "/usr/bin/python3"}}}}, out)
    return path


def play(tmp_path, name: str, extra: dict, *args: str) -> subprocess.CompletedProcess:
    """playbooks/image.yml against container `name`, with `extra` as extra vars (JSON)."""
    handle, path = tempfile.mkstemp(dir=tmp_path, prefix=f"{name}-", suffix=".json")
    with os.fdopen(handle, "w") as out:
        json.dump(extra, out)
    return hc.run_playbook(PLAYBOOK, "-e", f"@{path}", *args, inventory=inventory(tmp_path, name))


def somaxconn(host) -> int:
    return int(host.check_output("cat /proc/sys/net/core/somaxconn"))


def wait_for_state(host, name: str, states: set[str], timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = hc.supervisor_state(host, name)[0]
        if state in states or time.monotonic() > deadline:
            return state
        time.sleep(1)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 a test container's own address
        assert answer.status == 200, answer.status
        return answer.read().decode()


@pytest.fixture(scope="module")
def image(host):
    """The build container, committed with supervisord as its command."""
    docker("commit", "--change", f"CMD {json.dumps(SUPERVISORD)}", PREFIX, IMAGE)
    names = []
    yield names
    for name in names:
        docker("rm", "-f", name, check=False)
    docker("rmi", "-f", IMAGE, check=False)


@pytest.fixture(scope="module")
def served(image):
    """A container of the image with the sysctl, as docker-compose starts it."""
    name = f"{PREFIX}-run"
    image.append(name)
    box = start(name, "--sysctl", f"net.core.somaxconn={LISTEN}")
    hc.wait_until_serving(box, [APP])
    return box


@pytest.fixture(scope="module")
def without_sysctl(image):
    name = f"{PREFIX}-nosysctl"
    image.append(name)
    box = start(name)
    wait_for_state(box, APP["name"], {"FATAL", "RUNNING"})
    return box


def test_the_build_started_nothing_and_left_the_kernel_alone(host):
    assert not host.file("/run/systemd/system").exists
    assert host.run("pgrep -x supervisord").rc == 1
    assert host.run("pgrep -x uwsgi").rc == 1
    assert not host.file("/etc/sysctl.d/60-uwsgi-backlog.conf").exists
    assert host.file(f"/etc/supervisor/conf.d/{APP['name']}.conf").exists
    assert f"listen = {LISTEN}" in host.file(f"/etc/uwsgi/supervisor/{APP['name']}.socket.ini").content_string


def test_supervisord_is_pid_1_and_the_backlog_in_effect_is_the_listen(served):
    assert hc.supervisord_pid(served) == 1
    assert SUPERVISORD[0] in served.check_output("cat /proc/1/cmdline").split("\0")
    assert somaxconn(served) == LISTEN
    hc.check_backlog(served, APP)
    hc.check_running_as(served, APP)


def test_real_requests_through_nginx_and_a_burst_as_large_as_the_listen(served):
    address = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", served.backend.name)
    for _ in range(50):
        assert get(f"http://{address}/") == "hello from flaskapp\n"
    hc.check_burst(served, APP)


def test_the_sampler_reports_the_backlog_in_the_container(served):
    deadline = time.monotonic() + 30
    while not served.file(PROM).exists and time.monotonic() < deadline:
        time.sleep(1)
    samples = hc.metric_samples(served.file(PROM).content_string)
    backlog = [s.value for s in samples if s.name == "uwsgi_listen_backlog" and s.labels.get("app") == APP["name"]]
    assert backlog == [LISTEN], samples


def test_without_the_sysctl_uwsgi_refuses_to_start_with_its_own_message(without_sysctl):
    live = somaxconn(without_sysctl)
    # The container's network namespace starts at the kernel's default.
    assert live < LISTEN, f"this kernel's default somaxconn ({live}) is not below the image's listen ({LISTEN})"
    assert wait_for_state(without_sysctl, APP["name"], {"FATAL"}) == "FATAL"
    # The process that binds the socket with its listen says it: the app's pool in the beside layout.
    pool_log = without_sysctl.file(f"/var/log/supervisor/{APP['name']}.socket.log")
    log = (pool_log if pool_log.exists else without_sysctl.file(hc.app_log(without_sysctl, APP["name"]))).content_string
    assert f"Listen queue size is greater than the system max net.core.somaxconn ({live})." in log, log[-2000:]
    # The README names that message and the fixes.
    readme = (hc.PROJECT / "README.md").read_text()
    for words in ("Listen queue size is greater than the system max net.core.somaxconn", "sysctls:",
                  "securityContext:", "allowed-unsafe-sysctls"):
        assert words in readme


def test_bad_container_inputs_are_refused_before_any_change(without_sysctl, tmp_path):
    name = without_sysctl.backend.name
    before = without_sysctl.check_output(FILES)
    cases = {
        "host-without-systemd": ({"uwsgi_target": "host", "uwsgi_manage_sysctl": False},
                                 ["no systemd runs on", "set uwsgi_target: container"]),
        "container-managing-sysctl": ({"uwsgi_target": "container", "uwsgi_manage_sysctl": True},
                                      ["uwsgi_target is container", "set uwsgi_manage_sysctl: false"]),
        "target-choice": ({"uwsgi_target": "docker"}, ["uwsgi_target", "host, container, image"]),
        "sysctl-too-low": ({"uwsgi_target": "container"},
                           [f"is {somaxconn(without_sysctl)}, below the largest listen ({LISTEN})",
                            f"--sysctl net.core.somaxconn={LISTEN}", "compose sysctls:", "securityContext.sysctls"]),
    }
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = dict(zip(cases, pool.map(lambda c: play(tmp_path, name, c[0]), cases.values())))
    for case, (_, words) in cases.items():
        output = hc.said(runs[case])
        assert runs[case].returncode != 0, f"{case}: {output[-2000:]}"
        for word in words:
            assert word in output, f"{case}: {word!r} missing from:\n{output[-2500:]}"
    assert without_sysctl.check_output(FILES) == before


def test_the_role_changes_a_running_container_without_losing_a_request(served, tmp_path):
    name = served.backend.name
    pid, pool = hc.supervisor_state(served, APP["name"])[1], hc.pool_pid(served, APP["name"])
    assert pool is not None
    stop, out = "/tmp/stream.stop", "/tmp/stream.json"
    served.check_output(f"rm -f {stop} {out}")
    served.check_output(
        "setsid -f sh -c "
        + shlex.quote(f"loadstream http://127.0.0.1/ --workers 6 --pause 0.01 --stop-file {stop} "
                      f"--max-seconds 240 --max-requests 200000 > {out} 2>&1"))
    apps = [dict(app, environment={"APP_NAME": "flaskapp-v2"}) for app in PLAY_APPS]
    try:
        first = hc.ok(play(tmp_path, name, {"uwsgi_target": "container", "uwsgi_apps": apps}))
    finally:
        served.check_output(f"touch {stop}")
    deadline = time.monotonic() + 30
    while not served.file(out).exists or not served.file(out).content_string.strip():
        assert time.monotonic() < deadline, "the request stream did not finish"
        time.sleep(0.5)
    stream = json.loads(served.file(out).content_string)
    assert stream["failed"] == 0 and stream["ok"] > 100, stream
    assert f"{APP['name']}: a new instance beside the serving one" in hc.said(first), hc.said(first)[-2500:]
    # A new instance on the pool's socket: the new value, the same backlog.
    assert hc.supervisor_state(served, APP["name"])[1] != pid and hc.pool_pid(served, APP["name"]) == pool
    assert served.check_output("uwsgiprobe request /run/uwsgi/flaskapp.sock /").endswith("hello from flaskapp-v2")
    hc.check_backlog(served, APP)
    again = hc.ok(play(tmp_path, name, {"uwsgi_target": "container", "uwsgi_apps": apps}))
    assert hc.recap_changed(again.stdout) == {name: 0}, again.stdout[-3000:]
    checked = hc.ok(play(tmp_path, name, {"uwsgi_target": "container", "uwsgi_apps": apps}, "--check", "--diff"))
    assert hc.recap_changed(checked.stdout) == {name: 0}, checked.stdout[-3000:]


@pytest.mark.parametrize("trial", [True, pytest.param(False, marks=pytest.mark.extended)])
def test_a_broken_change_in_a_container_never_stays_and_it_keeps_serving(served, tmp_path, trial):
    """Refused by its trial aside; without the trial, rolled back."""
    name = served.backend.name
    ini = f"/etc/uwsgi/supervisor/{APP['name']}.ini"
    before = served.check_output(f"sha256sum {ini}")
    answer = served.check_output("uwsgiprobe request /run/uwsgi/flaskapp.sock /")
    # An option uWSGI does not know: strict mode refuses it at start.
    apps = [dict(app, environment={"APP_NAME": "flaskapp-v2"}, options={"no-such-option": "1"}) for app in PLAY_APPS]
    run = play(tmp_path, name, {"uwsgi_target": "container", "uwsgi_apps": apps, "uwsgi_trial": trial})
    assert run.returncode != 0
    said = hc.said(run)
    if trial:
        assert "was tried aside" in said and "unknown config directive: no-such-option" in said, said[-2500:]
    else:
        assert "its previous ini and program file were restored and it is RUNNING again on them" in said, said[-2500:]
    assert served.check_output(f"sha256sum {ini}") == before
    # It serves as it did before (the extended tier runs this without the test before it).
    assert served.check_output("uwsgiprobe request /run/uwsgi/flaskapp.sock /") == answer
    assert answer.startswith("HTTP/1.1 200 OK\nhello from flaskapp")
    hc.check_backlog(served, APP)


def test_a_restarted_container_serves_the_config_the_role_applied(served):
    docker("restart", "--time", "20", served.backend.name)
    hc.wait_until_serving(served, [APP])
    assert hc.supervisord_pid(served) == 1
    hc.check_backlog(served, APP)
    assert served.check_output("uwsgiprobe request /run/uwsgi/flaskapp.sock /").endswith("hello from flaskapp-v2")


def test_the_role_starts_supervisor_in_a_container_whose_command_is_not_supervisord(image, tmp_path):
    name = f"{PREFIX}-sleep"
    image.append(name)
    box = start(name, "--sysctl", f"net.core.somaxconn={LISTEN}", command=["sleep", "infinity"])
    assert box.run("pgrep -x supervisord").rc == 1
    first = hc.ok(play(tmp_path, name, {"uwsgi_target": "container"}))
    assert "Start Supervisor with its init script" in first.stdout
    assert hc.supervisord_pid(box) != 1
    hc.check_backlog(box, APP)
    hc.check_running_as(box, APP)
    assert box.check_output("uwsgiprobe request /run/uwsgi/flaskapp.sock /").endswith("hello from flaskapp")
    again = hc.ok(play(tmp_path, name, {"uwsgi_target": "container"}))
    assert hc.recap_changed(again.stdout) == {name: 0}, again.stdout[-3000:]


def test_the_readme_compose_example_serves_with_its_sysctl(image, tmp_path):
    compose = yaml.safe_load(hc.readme_block("services:"))
    service = next(iter(compose["services"].values()))
    service["image"] = IMAGE
    wanted = int(service["sysctls"]["net.core.somaxconn"])
    assert wanted >= LISTEN and service["command"] == SUPERVISORD
    (tmp_path / "compose.yml").write_text(yaml.safe_dump(compose))
    project = ["docker-compose", "--project-name", f"{PREFIX}-compose", "--file", str(tmp_path / "compose.yml")]
    subprocess.run([*project, "up", "--detach"], check=True, capture_output=True, text=True)
    try:
        name = docker("ps", "--filter", f"label=com.docker.compose.project={PREFIX}-compose", "--format", "{{.Names}}")
        box = testinfra.get_host(f"docker://{name}")
        hc.wait_until_serving(box, [APP])
        assert somaxconn(box) == wanted
        hc.check_backlog(box, APP)
        port = service["ports"][0].rsplit(":", 1)[0]
        deadline = time.monotonic() + 30
        while True:
            try:
                assert get(f"http://{port}/") == "hello from flaskapp\n"
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(1)
    finally:
        subprocess.run([*project, "down", "--timeout", "5"], check=False, capture_output=True)
