"""Trying an app's new config aside, before the serving app takes it.

uWSGI is started with the app's own binary, user, group, ini and environment,
but on a private throwaway socket and without anything that would touch the
serving app (its socket, listen, logs, pidfiles, daemons, routers). It loads
the app exactly as the serving master would; a hook right after the app is
loaded prints a marker and exits. An app with a check_path forks its workers
instead, answers that one request on the private socket, and is stopped.
Nothing is served or bound outside the trial's own directory.

Pure functions (trial_ini, verdict) are unit-tested against uWSGI's real
output; run() and run_all() start the processes (library/uwsgi_files.py)."""

from __future__ import annotations

import ctypes
import os
import re
import select
import signal
import subprocess
import threading
import time

# The hook that ends a trial once uWSGI has loaded the app (need-app makes
# uWSGI exit with 22 when no app loads). uWSGI's exit hook reads a code of
# two digits or more.
MARKER = "backlogops-uwsgi trial: the app loaded"
EXIT_LOADED = 75
# How much of a trial's output is kept (its end), whatever the app prints.
OUTPUT_LIMIT = 256 * 1024

# Options of the app's ini that a trial leaves out: they bind sockets and
# ports, write the serving app's files, start daemons or routers, or make the
# app load in the workers (a trial loads it once, in the master, and exits
# before any worker is forked). Anything else stays, so that strict mode
# still refuses an option uWSGI does not know.
TRIAL_DROPS = {
    "socket", "uwsgi-socket", "http-socket", "https-socket", "http", "https", "http2", "shared-socket",
    "fastcgi-socket", "fastcgi-nph-socket", "scgi-socket", "scgi-nph-socket", "raw-socket", "puwsgi-socket",
    "suwsgi-socket", "ssl-socket", "zerg", "zerg-server", "listen", "chmod-socket", "chown-socket",
    "stats", "stats-server", "master-fifo", "pidfile", "pidfile2", "safe-pidfile", "safe-pidfile2",
    "daemonize", "daemonize2", "logto", "logto2", "logger", "req-logger", "log-socket", "lazy", "lazy-apps",
    "emperor", "ini",
}
TRIAL_DROP_PREFIXES = (
    "http-", "https-", "attach-", "smart-attach-", "legion", "subscribe", "fastrouter", "rawrouter",
    "sslrouter", "forkpty-router", "tuntap-router", "touch-", "cron", "unique-cron", "spooler", "mule",
    "stats-push", "logger-", "emperor-", "zerg-",
)
# ... except these, which change how the app loads or the request it gets.
TRIAL_KEEPS = {"http-socket-modifier1", "http-modifier1", "http-modifier2"}

_INI_LINE = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*=\s*(.*)$")


def trial_key(key):
    return key.strip().lower().replace("_", "-")


def dropped(key):
    key = trial_key(key)
    if key in TRIAL_KEEPS:
        return False
    return key in TRIAL_DROPS or key.startswith(TRIAL_DROP_PREFIXES) or key.endswith("-socket")


HOME_KEYS = {"home", "virtualenv", "venv", "pyhome"}


def trial_ini(ini_text, env_path, socket_path, home=None, serve=False):
    """The app's ini as a trial reads it: its `ini = ` (the environment file)
    points at the trial's copy, what TRIAL_DROPS names is left out, and the
    trial's socket and the hook that ends it are added. `home`: a virtualenv
    to import the app from instead of its own (new packages, staged aside).
    `serve`: no exit once loaded; the workers answer uWSGI's protocol on the
    trial's socket (its check_path is asked there)."""
    out = []
    for line in ini_text.splitlines():
        match = _INI_LINE.match(line)
        if match and trial_key(match.group(1)) == "ini":
            out.append("ini = %s" % env_path)
        elif match and home and trial_key(match.group(1)) in HOME_KEYS:
            out.append("home = %s" % home)
        elif match and dropped(match.group(1)):
            out.append("; left out of the trial: %s" % trial_key(match.group(1)))
        else:
            out.append(line)
    out += [
        "; the trial: a private socket, the app loaded once in the master, then %s"
        % ("one request on its check_path" if serve else "exit"),
        "socket = %s" % socket_path,
    ] + (["protocol = uwsgi"] if serve else []) + ["hook-post-app = print:%s" % MARKER] + (
        [] if serve else ["hook-post-app = exit:%d" % EXIT_LOADED])
    return "\n".join(out) + "\n"


# uWSGI's start-up chatter: never the cause of a failure.
_CHATTER = re.compile(
    r"^(\*\*\* Starting uWSGI|compiled with|os: |nodename: |machine: |clock source|pcre jit|detected number of CPU|"
    r"current working directory|detected binary path|your processes number limit|your memory page size|"
    r"detected max file descriptor|lock engine|thunder lock|uwsgi socket \d+ bound|uWSGI running as root|"
    r"Python version|Python main interpreter|python threads support|your server socket listen backlog|"
    r"your mercy for graceful|mapped \d+ bytes|\*\*\* Operational MODE|\*\*\* uWSGI is running in multiple|"
    r"\[uWSGI\] getting INI configuration|\*\*\* WARNING: you are running uWSGI without its master|"
    r"!!! no internal routing support|!!! UNABLE to load uWSGI plugin|setgid\(\) to|setuid\(\) to|chdir\(\) to |"
    r"\*\*\* has_emperor mode|\*\*\* Python threads support is disabled|Set PythonHome to|"
    r"spawned uWSGI|\*\*\* no app loaded\. going in full dynamic mode|added .* to pythonpath|"
    r"VACUUM: |running \".*\" \(post app\)|%s)" % re.escape(MARKER))
# The lines that say why an app did not load, in uWSGI's and Python's words.
_CAUSE = re.compile(
    r"(unknown config directive|chdir\(\)|unable to find callable|unable to load app|callable not found|"
    r"Error|Exception|error|No such file|Permission denied|GAME OVER|not found|failed|refused|Fatal|"
    r"cannot|unable to|invalid)")


# Python's last line of an exception: `ModuleNotFoundError: No module named 'x'`.
_EXCEPTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Exit|Interrupt)(: |$)")


def _significant(lines):
    return [line for line in lines if line.strip() and not _CHATTER.match(line.strip())]


def _callable(module):
    """(module, callable) of an app's `module` (uWSGI's default callable is `application`)."""
    name, _, call = (module or "").partition(":")
    return name, call or "application"


def _answered(answer, app, lines):
    """The verdict of a trial that loaded and was asked its check_path."""
    status = answer.get("status")
    if status and 200 <= status < 400:
        return {"ok": True, "why": "the app loaded and GET %s answered %s" % (app.get("check_path"), status),
                "lines": []}
    after = lines[[line.strip() for line in lines].index(MARKER) + 1:]
    return {"ok": False, "why": "the app loaded, but GET %s answered %s" % (
        app.get("check_path"), status or answer.get("error")), "lines": _significant(after)[-15:]}


def verdict(output, returncode, timed_out=False, timeout=None, app=None, answer=None):
    """What a trial's output means: {ok, why, lines}. `why` says in a line
    what went wrong, in uWSGI's (or Python's) words and with the app's own
    values (app: its chdir and module) where uWSGI leaves them out; `lines`
    is the output that shows it. `answer`: check_path's, when it was asked."""
    app = app or {}
    lines = [line.rstrip() for line in (output or "").splitlines()]
    loaded = MARKER in (line.strip() for line in lines)
    if loaded and answer is not None:
        return _answered(answer, app, lines)
    if returncode == EXIT_LOADED and loaded:
        return {"ok": True, "why": "the app loaded", "lines": []}
    significant = _significant(lines)
    if timed_out:
        why = "it had not loaded the app after %s s (its ready_timeout), so the trial was stopped" % timeout
        return {"ok": False, "why": why, "lines": significant[-12:]}
    exception = None
    for index, line in enumerate(significant):
        if line.startswith("Traceback (most recent call last)"):
            for later in significant[index + 1:]:
                if not later.startswith((" ", "\t")):
                    exception = later.strip()
                    break
        elif exception is None and _EXCEPTION.match(line):
            # uWSGI prints an ImportError's line without its traceback.
            exception = line.strip()
    traceback = exception is not None
    causes = [line.strip() for line in significant
              if not line.startswith((" ", "\t", "Traceback")) and _CAUSE.search(line)]
    if exception:
        why = exception
    elif any(line.startswith("chdir()") for line in causes) and app.get("chdir"):
        why = "chdir %s: %s" % (app["chdir"], next(x for x in causes if x.startswith("chdir()")).split(": ", 1)[-1])
    elif not traceback and any("callable not found" in line for line in causes) and app.get("module"):
        module, call = _callable(app["module"])
        why = ("module %s was imported, but uWSGI found no callable %r in it (module = %s): name the WSGI "
               "callable after the colon" % (module, call, app["module"]))
    elif causes:
        why = causes[0]
    elif significant:
        why = significant[-1].strip()
    else:
        why = "uWSGI exited with %s and said nothing" % returncode
    return {"ok": False, "why": why, "lines": significant[-15:]}


# Set to the trial's directory in its environment: whatever the trial starts
# carries it, so a later run finds what a killed run's trial left running.
TRIAL_MARKER = "BACKLOGOPS_UWSGI_TRIAL"


def _clean_env(marker=None):
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    if marker:
        env[TRIAL_MARKER] = marker
    for key in ("LANG", "LC_ALL", "TZ"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


_MARKER_LINE = re.compile(b"(^|\n)" + re.escape(MARKER.encode()) + b"\r?\n")


def _read_until_exit(proc, deadline, marker=False):
    """What the trial prints until its process exits (or `deadline`, or with
    `marker` the marker's own line): (data, timed_out). Its exit ends the
    wait even when something it forked still holds the pipe open (an import
    that starts a daemon)."""
    data = b""
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, True
        exited = proc.poll() is not None
        ready, _, _ = select.select([fd], [], [], 0 if exited else min(left, 0.2))
        chunk = b""
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                return data, False
            data = (data + (chunk or b""))[-OUTPUT_LIMIT:]
            if marker and _MARKER_LINE.search(data):
                return data, False
        if exited and not chunk:
            return data, False


def _ask(proc, data, deadline, check, ask):
    """Once the marker is out: `ask` (the request) check on the trial's
    socket, the app's lines about it, then the trial is stopped."""
    answer = ask(dict(check, timeout=max(1.0, min(10.0, deadline - time.monotonic()))))
    more, _ = _read_until_exit(proc, time.monotonic() + 0.5)
    _kill(proc)
    return (data + more)[-OUTPUT_LIMIT:], answer


def run(argv, timeout, cwd="/", check=None, ask=None, marker=None):
    """Run one trial: (output, returncode, timed_out, seconds, answer). The
    process runs in a session of its own, killed whole when `timeout`
    passes; only the last OUTPUT_LIMIT bytes of what it prints are kept.
    With `check` (a request) and `ask` (what makes it), the loaded trial is
    asked it and stopped; `answer` is what ask returned, None otherwise."""
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                cwd=cwd, env=_clean_env(marker), start_new_session=True, close_fds=True)
    except OSError as exc:
        return "cannot start %s: %s" % (argv[0], exc), None, False, 0.0, None
    answer = None
    data, timed_out = _read_until_exit(proc, started + timeout, marker=bool(check and ask))
    if check and ask and not timed_out and _MARKER_LINE.search(data):
        data, answer = _ask(proc, data, started + timeout, check, ask)
    if timed_out:
        _kill(proc)
    proc.stdout.close()
    try:
        returncode = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _kill(proc)
        returncode = proc.wait()
    # Whatever the app may have left behind in its session goes too.
    _kill(proc)
    return data.decode("utf-8", "replace"), returncode, timed_out, time.monotonic() - started, answer


PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper():
    """Orphans of the trials (a daemon an import forked, even in a session
    of its own) become this process's children instead of init's, so that
    none escapes the sweep after the trials."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def descendants(pid, parents):
    """Every process below `pid` in `parents` ({pid: ppid})."""
    found, todo = [], [pid]
    while todo:
        here = todo.pop()
        children = [child for child, parent in parents.items() if parent == here]
        found += children
        todo += children
    return found


def _parents():
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry, encoding="ascii", errors="replace") as handle:
                    parents[int(entry)] = int(handle.read().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return parents


def sweep():
    """Kill and reap every process the trials left below this one; how many there were."""
    killed = 0
    for _ in range(20):
        left = descendants(os.getpid(), _parents())
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.05)
        _reap()
    _reap()
    return killed


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_all(trials, ask=None):
    """Run every trial at once (each is {argv, timeout}, and check: the
    request `ask` makes of it once loaded); their results in order. Nothing
    a trial started outlives run_all."""
    _become_subreaper()
    results = [None] * len(trials)

    def one(index, trial):
        results[index] = run(trial["argv"], trial["timeout"], trial.get("cwd", "/"), trial.get("check"), ask,
                             trial.get("marker"))

    threads = [threading.Thread(target=one, args=(i, t)) for i, t in enumerate(trials)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sweep()
    return results
