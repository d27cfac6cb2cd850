"""Capture uWSGI's real output of trials on the dev host (docker exec)."""
import subprocess, sys, pathlib
sys.path.insert(0, "module_utils")
import uwsgi_trial as t
C = sys.argv[1]
release = sys.argv[2]
out = pathlib.Path("tests/unit/fixtures") / release / "trial"
out.mkdir(parents=True, exist_ok=True)
ini = subprocess.run(["docker", "exec", C, "cat", "/etc/uwsgi/supervisor/flaskapp.ini"], capture_output=True, text=True, check=True).stdout
cases = {
    "loaded": {},
    "chdir-missing": {"chdir = /srv/flaskapp": "chdir = /srv/flaskap"},
    "no-callable": {"module = app:app": "module = app:nope"},
    "import-raises": {"module = app:app": "module = slowfail:app"},
    "no-module": {"module = app:app": "module = ledger:app"},
    "unknown-option": {"vacuum = true": "vacuum = true\nno-such-option = 1"},
}
for name, edits in cases.items():
    text = ini
    for a, b in edits.items():
        assert a in text, a
        text = text.replace(a, b)
    trial = t.trial_ini(text, "/run/trial-cap/env.ini", "/run/trial-cap/trial.sock")
    script = ("rm -rf /run/trial-cap && mkdir /run/trial-cap && cp /etc/uwsgi/supervisor/flaskapp.env.ini /run/trial-cap/env.ini && "
              "cat > /run/trial-cap/trial.ini && chown -R www-data:www-data /run/trial-cap && chmod 700 /run/trial-cap && "
              "cd / && SLOWFAIL_SECONDS=0 setpriv --reuid=www-data --regid=www-data --init-groups -- /usr/bin/uwsgi --ini /run/trial-cap/trial.ini 2>&1; echo \"rc=$?\"")
    r = subprocess.run(["docker", "exec", "-i", C, "sh", "-c", script], input=trial, capture_output=True, text=True)
    (out / f"{name}.txt").write_text(r.stdout)
    print(name, r.stdout.strip().splitlines()[-1])
