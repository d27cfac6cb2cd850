"""What a killed run leaves on the host, removed by the next run
(library/uwsgi_files.py sweep_dead_trials): its trials' directories and what
those trials still run."""

import os
import sys

from conftest import load
from test_lock import started

for _name in ("uwsgi_host", "uwsgi_trial"):
    if "ansible.module_utils." + _name not in sys.modules:
        load("ansible.module_utils." + _name, "module_utils/%s.py" % _name)
files = load("uwsgi_files_module", "library/uwsgi_files.py")


def test_a_dead_runs_trial_goes_with_what_it_still_runs(tmp_path):
    trial = tmp_path / "uwsgi-trial.k3x9"
    trial.mkdir()
    (trial / "env.ini").write_text("[uwsgi]\nenv = SECRET=1\n")
    (tmp_path / "other").mkdir()
    # A trial's uWSGI (or a daemon its import forked) carries the trial's marker.
    left = started(["sleep", "60"], {files.TRIAL_MARKER: str(trial), "PATH": os.environ["PATH"]},
                   start_new_session=True)
    stranger = started(["sleep", "60"], {files.TRIAL_MARKER: str(trial) + "x", "PATH": os.environ["PATH"]})
    try:
        assert files.sweep_dead_trials(run_dir=str(tmp_path)) == [str(trial)]
        assert left.wait(timeout=5) == -9 and stranger.poll() is None
        assert not trial.exists() and (tmp_path / "other").exists()
    finally:
        for proc in (left, stranger):
            proc.kill()
            proc.wait()


def test_a_link_inside_a_dead_trial_is_removed_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep")
    trial = tmp_path / "run" / "uwsgi-trial.ab12"
    trial.mkdir(parents=True)
    (trial / "link").symlink_to(victim)
    assert files.sweep_dead_trials(run_dir=str(tmp_path / "run")) == [str(trial)]
    assert (victim / "keep").read_text() == "keep"


def test_a_clean_host_has_nothing_to_sweep(tmp_path):
    assert files.sweep_dead_trials(run_dir=str(tmp_path)) == []
    assert files.sweep_dead_trials(run_dir=str(tmp_path / "missing")) == []
