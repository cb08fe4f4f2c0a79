"""Why a tunnel refused a local connection, left where this user's other programs can read it.

A local endpoint of ``paraconnect connect`` is plain TCP: when the agent refuses our
certificate (revoked, denied by policy), all the program on the local port sees is a closed
connection.  The tunnel writes the refusal here first, keyed by the local endpoint, and the
render client reads it to say "revoked" instead of "connection reset".  The directory is this
user's alone (0700, in ``$XDG_RUNTIME_DIR`` or the temporary directory), as the local endpoints
only take this user's connections.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

from ._fs import ensure_private_dir, write_atomic
from .errors import ParaconnectError

__all__ = ["clear_refusal", "read_refusal", "write_refusal"]

FRESH = 120.0  # seconds a refusal is worth repeating to a program that lost its connection


def _dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path(tempfile.gettempdir())
    return base / f"paraconnect-notes-{os.getuid()}"


def _path(local: str) -> Path:
    return _dir() / ("refused-" + re.sub(r"[^A-Za-z0-9.]", "_", local) + ".json")


def write_refusal(local: str, reason: str) -> None:
    """Note that a connection to `local` (HOST:PORT) was refused upstream, and why."""
    try:
        ensure_private_dir(_dir())
        data = json.dumps({"local": local, "reason": reason, "time": time.time()})
        write_atomic(_path(local), data.encode(), mode=0o600)
    except ParaconnectError:
        pass  # a note we cannot write costs only a plainer message elsewhere


def clear_refusal(local: str) -> None:
    path = _path(local)
    if path.exists():
        path.unlink(missing_ok=True)


def read_refusal(local: str) -> str | None:
    """The reason noted for `local` in the last FRESH seconds, if any."""
    path = _path(local)
    try:
        if path.parent.stat().st_uid != os.getuid() or path.stat().st_uid != os.getuid():
            return None
        note = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(note, dict) or time.time() - float(note.get("time", 0)) > FRESH:
        return None
    return str(note.get("reason") or "") or None
