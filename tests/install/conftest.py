"""The install tier: the role as ansible-galaxy installs it, on this machine
(no container). The shared helpers are in tests/harness."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "harness"))
