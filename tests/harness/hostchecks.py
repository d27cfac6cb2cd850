"""Checks of the role's promises on a real host, shared by the molecule verifiers.

Each check reads the host itself (kernel values, `ss`, Supervisor, a real
connection) through a testinfra `host` and returns what it saw, asserting on it.
The host's reports are read with the role's own parsers (module_utils/
uwsgi_host.py), which the unit tier tests against output captured on Debian
11, 12 and 13. What a test expects never comes from the role's normaliser.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pathlib
import re
import shlex
import subprocess
import time

import yaml

PROJECT = pathlib.Path(__file__).resolve().parents[2]
SYSCTL_FILE = "/etc/sysctl.d/60-uwsgi-backlog.conf"
# What the README documents for an app that does not set a key.
DOCUMENTED_DEFAULTS = {"listen": 1024, "processes": 2, "threads": 1, "uid": "www-data",
                       "socket_dir": "/run/uwsgi", "protocol": "uwsgi"}


def _role_parsers():
    spec = importlib.util.spec_from_file_location("uwsgi_host", PROJECT / "module_utils/uwsgi_host.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


parsers = _role_parsers()


def readme_block(first_line: str, kind: str = "yaml") -> str:
    """The README's fenced block of `kind` that starts with `first_line`."""
    readme = (PROJECT / "README.md").read_text()
    for block in re.findall(r"```%s\n(.*?)```" % re.escape(kind), readme, re.S):
        if block.startswith(first_line + "\n"):
            return block
    raise AssertionError(f"README.md has no {kind} block starting with {first_line!r}")


def metric_samples(text: str) -> list:
    """Every sample of a Prometheus text exposition, by the Prometheus client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def apps_from_playbook(path: str | pathlib.Path) -> list[dict]:
    """The present apps of a playbook's play vars, as the test expects them:
    what the playbook says, else the README's documented default. A value
    the playbook sets is taken as it is (a 0 stays 0 and fails the check)."""
    plays = yaml.safe_load(pathlib.Path(path).read_text())
    apps = []
    for play in plays:
        for app in play.get("vars", {}).get("uwsgi_apps", []):
            if app.get("state", "present") != "present":
                continue
            given = {key: app[key] for key in ("listen", "processes", "threads", "uid", "protocol") if key in app}
            apps.append({
                "name": app["name"],
                "socket": app["socket"] if "socket" in app else f"{DOCUMENTED_DEFAULTS['socket_dir']}/{app['name']}.sock",
                **{key: DOCUMENTED_DEFAULTS[key] for key in ("listen", "processes", "threads", "uid", "protocol")},
                **given,
                "virtualenv": app.get("virtualenv"),
            })
    return apps


def derived_limit(apps: list[dict]) -> int:
    return max([4096] + [a["listen"] for a in apps])


def sysctl_file(host) -> dict[str, int]:
    grep = host.run(f"grep -Hs -E '^[^#;]*=' {SYSCTL_FILE}").stdout
    return {s["key"]: int(s["value"]) for s in parsers.parse_sysctl_grep(grep)}


def check_sysctls(host, expected: int) -> dict[str, int]:
    persisted = sysctl_file(host)
    live = {}
    for key in ("net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"):
        live[key] = int(host.file("/proc/sys/" + key.replace(".", "/")).content_string)
        assert persisted.get(key) == expected, f"{SYSCTL_FILE}: {key}={persisted.get(key)}, want {expected}"
        assert live[key] == expected, f"live {key}={live[key]}, want {expected}"
    return live


def listen_backlogs(host) -> dict[str, int]:
    """Send-Q of every LISTEN socket: the backlog in effect."""
    out = host.check_output("ss -H --listening --numeric --unix --tcp")
    return {item["local"]: item["backlog"] for item in parsers.parse_ss_listeners(out)}


def unix_listener(host, socket: str):
    """(listener, problem) of a unix socket path, read as the role's probe reads it: by
    the file at the path, so a socket renamed over it (bound as PATH.new) is found too."""
    listeners = parsers.with_extended(
        parsers.parse_ss_listeners(host.check_output("ss -H --listening --numeric --unix")),
        host.check_output("ss -H --listening --numeric --unix --extended"))
    ino, dev = host.check_output(f"stat -c '%i %d' {socket}").split()
    found = {"exists": True, "ino": int(ino), "dev": parsers.ss_device(int(dev))}
    return parsers.socket_in_effect(socket, parsers.moved_in(listeners, {socket: found}), found)


def check_backlog(host, app: dict) -> int:
    backlogs = listen_backlogs(host)
    key = app["socket"]
    if not key.startswith("/") and key.startswith(":"):
        key = "0.0.0.0" + key
    seen = backlogs.get(key)
    if seen is None and key.startswith("/") and host.file(key).is_socket:
        # A pool that took the path over from another user is named PATH.new by ss (moved_in).
        listener, _ = unix_listener(host, key)
        seen = listener and listener["backlog"]
    assert seen == app["listen"], f"{app['name']}: ss shows backlog {seen} on {key}, want {app['listen']} ({backlogs})"
    return seen


def supervisord_pid(host) -> int:
    return int(host.file("/run/supervisord.pid").content_string.strip())


def supervisor_state(host, name: str) -> tuple[str, int | None]:
    # The whole status: a beside app is its serving instance under its own name (serving_slots).
    status = parsers.parse_supervisor_status(host.run("supervisorctl status").stdout).get(name)
    return (status["state"], status["pid"]) if status else ("missing", None)


def supervisor_entry(host, name: str) -> dict:
    """The app's entry in `supervisorctl status` (a beside app's: its serving instance, with slot and pool)."""
    return parsers.parse_supervisor_status(host.run("supervisorctl status").stdout).get(name) or {}


def programs_of(host, name: str) -> str:
    """The Supervisor programs that run the app's workers: both instances of a beside app, or NAME."""
    return f"{name}.a {name}.b" if "slot" in supervisor_entry(host, name) else name


def app_log(host, name: str, log_dir: str = "/var/log/supervisor") -> str:
    """The log of the program that serves the app: its serving instance's in the beside layout."""
    entry = supervisor_entry(host, name)
    return f"{log_dir}/{name}.{entry['slot']}.log" if "slot" in entry else f"{log_dir}/{name}.log"


def pool_pid(host, name: str) -> int | None:
    """The pid of a beside app's zerg pool, the process that holds its socket."""
    return (supervisor_entry(host, name).get("pool") or {}).get("pid")


def check_running_as(host, app: dict) -> int:
    state, pid = supervisor_state(host, app["name"])
    assert state == "RUNNING", f"{app['name']}: Supervisor says {state}"
    users = host.check_output(f"ps -o user= --pid {pid} --ppid {pid}").split()
    assert users and set(users) == {app["uid"]}, f"{app['name']}: processes run as {users}"
    # master + workers
    assert len(users) == 1 + app["processes"], f"{app['name']}: {len(users)} processes, want 1 + {app['processes']}"
    return pid


def check_request(host, app: dict, body: str) -> str:
    cmd = host.run(f"uwsgiprobe request {app['socket']} / --protocol {app['protocol']}")
    assert cmd.rc == 0, f"{app['name']}: request failed: {cmd.stdout} {cmd.stderr}"
    assert body in cmd.stdout, f"{app['name']}: unexpected response {cmd.stdout!r}"
    return cmd.stdout


def about(host, app: dict) -> dict:
    """The test app's /about: the Python prefix and Flask version it runs with."""
    cmd = host.run(f"uwsgiprobe request {app['socket']} /about --protocol {app['protocol']}")
    assert cmd.rc == 0, f"{app['name']}: /about failed: {cmd.stdout} {cmd.stderr}"
    return json.loads(cmd.stdout.split("\n", 1)[1])


def program_command(host, name: str) -> str:
    """The command= of an app's Supervisor program file."""
    for line in host.file(f"/etc/supervisor/conf.d/{name}.conf").content_string.splitlines():
        if line.startswith("command="):
            return line.partition("=")[2].strip()
    raise AssertionError(f"{name}: no command= in its program file")


def program_binary(host, name: str) -> str:
    """The uwsgi binary an app's program starts (after setpriv's `--`)."""
    argv = program_command(host, name).split()
    return argv[argv.index("--") + 1] if "--" in argv else argv[0]


def check_master_binary(host, app: dict, binary: str) -> int:
    """The app's program runs `binary`, and its running master is that file."""
    assert program_binary(host, app["name"]) == binary, program_command(host, app["name"])
    state, pid = supervisor_state(host, app["name"])
    assert state == "RUNNING", f"{app['name']}: Supervisor says {state}"
    # /proc/PID/exe of another user's process needs CAP_SYS_PTRACE, which a
    # container's root lacks; its command line is readable by everyone.
    args = host.check_output(f"ps -o args= --pid {pid}").split()
    assert args and args[0] == binary, f"{app['name']}: master {pid} runs {args}, want {binary}"
    return pid


def queued(host, socket: str) -> int:
    """Connections waiting in the accept queue of the unix socket at `socket` (Recv-Q of its LISTEN line)."""
    return max([item["queue"] for item in parsers.parse_ss_listeners(
        host.check_output("ss -H --listening --numeric --unix")) if item["local"] == socket] or [0])


def wait_queue_empty(host, socket: str, timeout: float = 90.0) -> None:
    """Until the queue an earlier burst left on `socket` is accepted: a burst
    that starts on top of it measures the leftovers, not its own."""
    deadline = time.monotonic() + timeout
    while (left := queued(host, socket)) > 0:
        assert time.monotonic() < deadline, f"{socket}: {left} connections still queued after {timeout} s"
        time.sleep(0.5)


def check_burst(host, app: dict) -> dict:
    """A burst as large as `listen` while every worker is busy: nothing refused."""
    busy = app["processes"] * app["threads"]
    wait_queue_empty(host, app["socket"])
    out = host.check_output(f"uwsgiprobe burst {app['socket']} {app['listen']} --busy {busy} --hold 4")
    result = json.loads(out)
    assert result["refused"] == 0 and result["queued"] == app["listen"], f"{app['name']}: {result}"
    return result


def wait_until_serving(host, apps: list[dict], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if all(supervisor_state(host, a["name"])[0] == "RUNNING" for a in apps):
                backlogs = listen_backlogs(host)
                if all(any(k.endswith(a["socket"].rsplit(":", 1)[-1]) if not a["socket"].startswith("/")
                           else k == a["socket"] for k in backlogs) for a in apps):
                    return
        except Exception:  # the host may still be booting  # noqa: BLE001
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"apps not serving {timeout} s after boot")
        time.sleep(2)


def restart_container(name: str) -> None:
    subprocess.run(["docker", "restart", "--time", "20", name], check=True, capture_output=True)


def roles_path() -> str:
    """Where playbooks find this checkout as backlogops.uwsgi: the Makefile's
    link outside the tree (made here too when the tests run without make)."""
    digest = hashlib.sha256(str(PROJECT).encode()).hexdigest()[:12]
    path = pathlib.Path.home() / ".cache" / "backlogops-uwsgi" / digest / "roles"
    link = path / "backlogops.uwsgi"
    if not link.is_symlink() or os.readlink(link) != str(PROJECT):
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".backlogops.uwsgi.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(PROJECT, target_is_directory=True)
        tmp.replace(link)
    return str(path)


def run_playbook(playbook: str | pathlib.Path, *args: str, inventory: str | None = None,
                 timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a playbook against the scenario's inventory (or `inventory`) with molecule's settings;
    a run that outlives `timeout` seconds raises subprocess.TimeoutExpired."""
    inventory = inventory or os.environ["MOLECULE_INVENTORY_FILE"]
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_ROLES_PATH=roles_path())
    return subprocess.run(
        ["ansible-playbook", "-i", inventory, str(playbook), *args],
        capture_output=True, text=True, check=False, env=env, timeout=timeout,
    )


def run_with(playbook, tmp_path, name: str, extra: dict, *args: str) -> subprocess.CompletedProcess:
    """Run a playbook with `extra` as an extra-vars file (JSON: values stay exact)."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(extra))
    return run_playbook(playbook, "-e", f"@{path}", *args)


def ok(run: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return run


def said(run: subprocess.CompletedProcess) -> str:
    """Everything a playbook run printed, with line folding undone."""
    return " ".join((run.stdout + run.stderr).split())


def recap_changed(output: str) -> dict[str, int]:
    """changed= per host from a PLAY RECAP."""
    changed = {}
    in_recap = False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        if in_recap and ":" in line and "changed=" in line:
            host, _, stats = line.partition(":")
            fields = dict(f.split("=", 1) for f in stats.split())
            changed[host.strip()] = int(fields["changed"])
            if int(fields.get("failed", 0)) or int(fields.get("unreachable", 0)):
                raise AssertionError(output[-3000:])
    return changed


NGINX_ERRORS = "/var/log/nginx/error.log"


def nginx_errors(host) -> int:
    return int(host.check_output(f"wc -l < {NGINX_ERRORS}").strip() or 0)


class Load:
    """A request stream through nginx to each app (name -> nginx's port on the
    host), bounded in time and count: `with Load(host, tag, ports) as load:`,
    then load.check()."""

    def __init__(self, host, tag: str, ports: dict, path: str = "/", bodies: bool = False):
        self.host, self.tag, self.ports, self.path, self.bodies = host, tag, ports, path, bodies

    def __enter__(self):
        self.errors_before = nginx_errors(self.host)
        for name, port in self.ports.items():
            out, stop = f"/srv/load-{self.tag}-{name}.json", f"/srv/stop-{self.tag}-{name}"
            self.host.run_test(f"rm -f {out} {stop}")
            stream = (f"loadstream http://127.0.0.1:{port}{self.path} --workers 6 --pause 0.01 --stop-file {stop} "
                      f"--max-seconds 240 --max-requests 200000{' --bodies' if self.bodies else ''} > {out} 2>&1")
            self.host.run_test(f"setsid -f sh -c {shlex.quote(stream)}")
        time.sleep(1)
        return self

    def __exit__(self, *exc):
        for name in self.ports:
            self.host.run_test(f"touch /srv/stop-{self.tag}-{name}")
        self.results = {}
        for name in self.ports:
            out = f"/srv/load-{self.tag}-{name}.json"
            for _ in range(150):
                text = self.host.run(f"cat {out}").stdout.strip()
                if text.endswith("}"):
                    self.results[name] = json.loads(text)
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"request stream {name} did not report")
        self.new_nginx_errors = self.host.run(f"tail -n +{self.errors_before + 1} {NGINX_ERRORS}").stdout.strip()
        return False

    def check(self, minimum=100):
        for name, stats in self.results.items():
            assert stats["failed"] == 0 and not stats["errors"], f"{self.tag} {name}: {stats}"
            assert stats["ok"] >= minimum, f"{self.tag} {name}: too few requests to tell: {stats}"
        assert not self.new_nginx_errors, self.new_nginx_errors
