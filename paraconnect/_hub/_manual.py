"""What makes a hand-started agent's command line unusable on the remote host it is meant for:
this machine's loopback addresses (the hub listens on 127.0.0.1 by default) and this machine's
Python (the kinds default to it).  Said as warnings beside the line, since the same line does
work on this machine, where a test or a second terminal may run it."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["remote_warnings"]

LOOPBACK = ("127.", "localhost", "::1", "[::1]", "0.0.0.0")  # noqa: S104 - compared, not bound

# The flags whose value the remote host dials.
DIALLED = ("--enroll", "--phone-home")


def remote_warnings(argv: Sequence[str]) -> list[str]:
    """One line for each part of `argv` a remote host could not use, with what to do."""
    warnings: list[str] = []
    local = [
        f"{flag} {value}"
        for flag, value in itertools.pairwise(argv)
        if flag in DIALLED and value.rpartition(":")[0].startswith(LOOPBACK)
    ]
    if local:
        warnings.append(
            f"{' and '.join(local)} name this machine's loopback: an agent on another host "
            "cannot reach the hub there; run the hub on an address that host can reach "
            "(paraconnect hub --listen 0.0.0.0:PORT --advertise HOST, or in Jupyter "
            "c.Paraconnect.listen and c.Paraconnect.advertise)"
        )
    ours = {sys.executable, str(Path(sys.executable).resolve())}
    pythons = sorted({arg for arg in argv if arg in ours})
    if pythons:
        warnings.append(
            f"the program runs this machine's Python ({', '.join(pythons)}), which the remote "
            "host may not have: give the kind's python option (the path of a Python with "
            "paraconnect installed on that host)"
        )
    return warnings
