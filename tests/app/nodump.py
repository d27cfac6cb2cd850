"""The test app in a master that makes itself non-dumpable at import, as some
hardening libraries do: no other process of its user may then take its file
descriptors, so the role's live listen change is refused and it must restart."""

import ctypes

PR_SET_DUMPABLE = 4
ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)

from app import app  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
