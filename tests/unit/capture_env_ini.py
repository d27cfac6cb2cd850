"""Capture what uWSGI says of an app's environment file, for test_env_file.py.

  python tests/unit/capture_env_ini.py CONTAINER RELEASE

CONTAINER is a converged host of the default scenario (flaskapp serving). Each
case is an environment file of an app without environment: `header-only`, as
the role wrote it before (its `[uwsgi]` header and nothing in it), and
`no-environment`, as templates/etc/uwsgi/app.env.ini.j2 renders it now. Each is
read by flaskapp's ini made into a trial by the role's own trial_ini, and run
as the trial module runs it (setpriv as www-data, from /). Writes
tests/unit/fixtures/RELEASE/env-ini/CASE.ini (the file) and CASE.txt (uWSGI's
output, then rc=CODE).
"""

import importlib.util
import pathlib
import shlex
import subprocess
import sys

from test_env_file import HEADER_ONLY, render_env

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("uwsgi_trial", ROOT / "module_utils" / "uwsgi_trial.py")
trial = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trial)

CASES = {"header-only": HEADER_ONLY, "no-environment": render_env({"name": "flaskapp", "environment": {}})}
SCRIPT = (
    "rm -rf /run/env-cap && mkdir /run/env-cap && printf %s {env} > /run/env-cap/env.ini"
    " && cat > /run/env-cap/trial.ini && chown -R www-data:www-data /run/env-cap && chmod 700 /run/env-cap"
    " && cd / && setpriv --reuid=www-data --regid=www-data --init-groups --"
    " $(sed -n 's/^command=.* -- \\([^ ]*\\) --ini .*/\\1/p' /etc/supervisor/conf.d/flaskapp.conf)"
    " --ini /run/env-cap/trial.ini 2>&1; echo \"rc=$?\"; rm -rf /run/env-cap")


def main(container, release):
    out = ROOT / "tests" / "unit" / "fixtures" / release / "env-ini"
    out.mkdir(parents=True, exist_ok=True)
    ini = subprocess.run(["docker", "exec", container, "cat", "/etc/uwsgi/supervisor/flaskapp.ini"],
                         capture_output=True, text=True, check=True).stdout
    body = trial.trial_ini(ini, "/run/env-cap/env.ini", "/run/env-cap/trial.sock")
    for name, env in CASES.items():
        run = subprocess.run(["docker", "exec", "-i", container, "sh", "-c", SCRIPT.format(env=shlex.quote(env))],
                             input=body, capture_output=True, text=True, check=False)
        (out / f"{name}.ini").write_text(env)
        (out / f"{name}.txt").write_text(run.stdout)
        print(name, run.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main(*sys.argv[1:3])
