"""Every filter of the role. The functions live in the role's module_utils/,
one file per stage of its path (see docs/design.md), and are imported here
the way the role's modules import them: as ansible.module_utils.uwsgi_*."""

from __future__ import annotations

import importlib
import os

import ansible.module_utils

# Ansible packs a role's module_utils into its modules, but does not make them
# importable by its controller plugins (ansible/ansible#27748): this is the
# one place that does, once per process.
_SHARED = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))
if _SHARED not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_SHARED)

# Each stage's filters, named as its functions. Ansible loads every filter file
# for any filter a task names (`length` too), in each task's own process: a
# stage is imported when one of its filters is first called, not before.
STAGES = {
    "uwsgi_input": ("uwsgi_role_variables", "uwsgi_input", "uwsgi_input_errors", "uwsgi_ini_escape"),
    "uwsgi_host_plan": ("uwsgi_host_needs", "uwsgi_unsettled", "uwsgi_decisions", "uwsgi_host_plan",
                        "uwsgi_sysctl_overrides", "uwsgi_sysctl_targets", "uwsgi_path_checks", "uwsgi_preflight_errors",
                        "uwsgi_venv_plan", "uwsgi_socket_key"),
    "uwsgi_state": ("uwsgi_other_children", "uwsgi_unserved", "uwsgi_code_changes"),
    "uwsgi_apply": ("uwsgi_apply_plan", "uwsgi_trial_plan", "uwsgi_trial_line", "uwsgi_listen_fallbacks"),
    "uwsgi_writes": ("uwsgi_file_plan", "uwsgi_file_paths", "uwsgi_sampler_files", "uwsgi_sampler_action",
                     "uwsgi_changed_apps", "uwsgi_changed_envs", "uwsgi_dirs_restored"),
    "uwsgi_proof": ("uwsgi_prove_live", "uwsgi_proof", "uwsgi_rollback_report", "uwsgi_check_request",
                    "uwsgi_ready_item", "uwsgi_fresh_items", "uwsgi_applied_record", "uwsgi_rollback_files"),
    "uwsgi_report": ("uwsgi_report",),
}


def function(stage, name):
    """The filter `name` of `stage` itself (imports the stage)."""
    return getattr(importlib.import_module("ansible.module_utils." + stage), name)


def _deferred(stage, name):
    def call(*args, **kwargs):
        return function(stage, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


class FilterModule:
    def filters(self):
        return {name: _deferred(stage, name) for stage, names in STAGES.items() for name in names}
