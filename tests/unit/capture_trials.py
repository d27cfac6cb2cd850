"""Capture uWSGI's own output of a trial, for each case test_trial.py reads.

  python tests/unit/capture_trials.py CONTAINER RELEASE

CONTAINER is a converged host of the default scenario (flaskapp serving, the
test app in /srv/flaskapp); the trial's ini is made by the role's own
trial_ini from flaskapp's ini, with one change per case, and run as the
module runs it (setpriv as www-data, from /). Writes
tests/unit/fixtures/RELEASE/trial/CASE.txt: the output, then rc=CODE.
"""

import importlib.util
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("uwsgi_trial", ROOT / "module_utils" / "uwsgi_trial.py")
trial = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trial)

CASES = {
    "loaded": {},
    "chdir-missing": {"chdir = /srv/flaskapp": "chdir = /srv/flaskap"},
    "no-callable": {"module = app:app": "module = app:nope"},
    "import-raises": {"module = app:app": "module = slowfail:app"},
    "no-module": {"module = app:app": "module = ledger:app"},
    "unknown-option": {"vacuum = true": "vacuum = true\nno-such-option = 1"},
}
SCRIPT = (
    "rm -rf /run/trial-cap && mkdir /run/trial-cap && cp /etc/uwsgi/supervisor/flaskapp.env.ini /run/trial-cap/env.ini"
    " && cat > /run/trial-cap/trial.ini && chown -R www-data:www-data /run/trial-cap && chmod 700 /run/trial-cap"
    " && cd / && SLOWFAIL_SECONDS=0 setpriv --reuid=www-data --regid=www-data --init-groups --"
    " $(sed -n 's/^command=.* -- \\([^ ]*\\) --ini .*/\\1/p' /etc/supervisor/conf.d/flaskapp.conf)"
    " --ini /run/trial-cap/trial.ini 2>&1; echo \"rc=$?\"; rm -rf /run/trial-cap")


def main(container, release):
    out = ROOT / "tests" / "unit" / "fixtures" / release / "trial"
    out.mkdir(parents=True, exist_ok=True)
    ini = subprocess.run(["docker", "exec", container, "cat", "/etc/uwsgi/supervisor/flaskapp.ini"],
                         capture_output=True, text=True, check=True).stdout
    for name, edits in CASES.items():
        text = ini
        for old, new in edits.items():
            assert old in text, old
            text = text.replace(old, new)
        body = trial.trial_ini(text, "/run/trial-cap/env.ini", "/run/trial-cap/trial.sock")
        run = subprocess.run(["docker", "exec", "-i", container, "sh", "-c", SCRIPT], input=body,
                             capture_output=True, text=True, check=False)
        (out / f"{name}.txt").write_text(run.stdout)
        print(name, run.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main(*sys.argv[1:3])
