"""Real programs the tests drive (Debian's ParaView, Xvfb, Open MPI): when one is missing the
test module fails with the command that installs it, rather than skipping, since a skipped peer
proves nothing and the test command installs them all (scripts/system-deps.sh)."""

from __future__ import annotations

import shutil

import pytest


def require_programs(*names: str) -> None:
    """Call at a test module's top level: fails its collection when a program is not on PATH."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not on PATH: run scripts/system-deps.sh (make test does)",
            pytrace=False,
        )
