"""ParaView versions on both ends, and the one line that explains a mismatch.

ParaView's client and server must share major.minor (5.11.x with 5.11.y); otherwise its own
handshake fails with an obscure "incompatible version" or just a dropped connection, the most
common complaint on HPC centres' ParaView pages.  The agent reports its pvserver's version
(``serve --version-command "pvserver --version"``) in its ``info`` message; whoever holds the
client side (``connect``, the hub, ``debug``) compares it with the local ``pvpython --version``
and says which versions and what to do, before ParaView's handshake is tried.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Sequence

__all__ = ["local_paraview", "paraview_mismatch", "program_version"]

_VERSION_RE = re.compile(r"\bversion\s+(\d+\.\d+(?:\.\d+)?(?:[-.\w]*)?)", re.IGNORECASE)
_TIMEOUT = 20.0


def program_version(argv: Sequence[str], timeout: float = _TIMEOUT) -> str | None:
    """The version `argv` (``pvserver --version``) prints, or None if it says none."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_RE.search(done.stdout + "\n" + done.stderr)
    return match.group(1) if match else None


_local: dict[str, str | None] = {}
_started: set[str] = set()
_lock = threading.Lock()


def local_paraview(pvpython: str = "pvpython", *, wait: bool = True) -> str | None:
    """This machine's ParaView client version (``pvpython --version``), asked once.  With
    `wait` false it never blocks (a hub's loop calls it): None until a background ask has
    answered."""
    with _lock:
        if pvpython in _local:
            return _local[pvpython]
        start = pvpython not in _started
        _started.add(pvpython)

    def ask() -> None:
        found = shutil.which(pvpython)
        version = program_version([found, "--version"]) if found else None
        with _lock:
            _local[pvpython] = version

    if wait:
        ask()
        return _local[pvpython]
    if start:
        threading.Thread(target=ask, name="paraconnect-pvpython-version", daemon=True).start()
    return None


def _major_minor(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def paraview_mismatch(server: str | None, client: str | None, where: str = "") -> str | None:
    """One line when ParaView `server` and `client` versions cannot talk, else None."""
    if not server or not client:
        return None
    s, c = _major_minor(server), _major_minor(client)
    if s is None or c is None or s == c:
        return None
    at = f" of {where}" if where else ""
    return (
        f"ParaView version mismatch: the pvserver{at} is {server}, this machine's pvpython is "
        f"{client}; ParaView needs the same major.minor on both ends: use a {s[0]}.{s[1]} "
        f"client here (e.g. 'module load paraview/{s[0]}.{s[1]}') or launch a {c[0]}.{c[1]} "
        "pvserver (option pvserver=PATH)"
    )
