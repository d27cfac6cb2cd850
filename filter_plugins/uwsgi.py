"""Every filter of the role. The functions live in the role's module_utils/,
one file per stage of its path (see docs/design.md), and are imported here
the way the role's modules import them: as ansible.module_utils.uwsgi_*."""

from __future__ import annotations

import os

import ansible.module_utils

# Ansible packs a role's module_utils into its modules, but does not make them
# importable by its controller plugins (ansible/ansible#27748): this is the
# one place that does, once per process.
_SHARED = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))
if _SHARED not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_SHARED)

# pylint: disable=wrong-import-position
from ansible.module_utils import (  # noqa: E402
    uwsgi_apply,
    uwsgi_host_plan,
    uwsgi_input,
    uwsgi_proof,
    uwsgi_report,
    uwsgi_state,
    uwsgi_writes,
)

STAGES = (uwsgi_input, uwsgi_host_plan, uwsgi_state, uwsgi_apply, uwsgi_writes, uwsgi_proof, uwsgi_report)


class FilterModule:
    def filters(self):
        return {name: function for stage in STAGES for name, function in stage.FILTERS.items()}
