"""The node unique ID (after FLoM's --unique-id): a stable name for this machine.

Order of precedence:
1. ``PARACONNECT_UNIQUE_ID`` in the environment (or an explicit argument);
2. the systemd machine ID (``/etc/machine-id``, else ``/var/lib/dbus/machine-id``), never used
   raw: as systemd asks of applications, we publish an app-specific HMAC of it, so the machine ID
   itself never appears in a certificate;
3. else a random ID generated once and kept in ``<paraconnect home>/node-id``.

Containers cloned from one image can share a machine ID: set PARACONNECT_UNIQUE_ID there.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from .._fs import ensure_private_dir, read_public, write_atomic
from ..errors import CredentialError
from ._names import check_unique_id

__all__ = ["UniqueId", "node_unique_id"]

ENV_VAR = "PARACONNECT_UNIQUE_ID"
MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
_APP_KEY = b"paraconnect node unique id v1"
_MACHINE_ID_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class UniqueId:
    value: str
    source: str  # "environment", "/etc/machine-id", or the node-id file's path


def _from_machine_id(path: Path) -> str | None:
    try:
        text = path.read_text().strip().lower()
    except OSError:
        return None
    if not _MACHINE_ID_RE.fullmatch(text) or text == "0" * 32:
        return None
    digest = hmac.new(bytes.fromhex(text), _APP_KEY, hashlib.sha256).hexdigest()
    return digest[:32]


def node_unique_id(home: Path, machine_id_files: tuple[Path, ...] = MACHINE_ID_FILES) -> UniqueId:
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return UniqueId(check_unique_id(env), "environment")
    for path in machine_id_files:
        value = _from_machine_id(path)
        if value:
            return UniqueId(value, str(path))
    ensure_private_dir(home)
    id_file = home / "node-id"
    with contextlib.suppress(FileExistsError):
        write_atomic(id_file, (secrets.token_hex(16) + "\n").encode(), mode=0o600, exclusive=True)
    value = read_public(id_file, "node ID file").decode(errors="replace").strip()
    try:
        check_unique_id(value)
    except Exception:
        raise CredentialError(
            f"{id_file} does not hold a valid node ID; delete it to generate a new one"
        ) from None
    return UniqueId(value, str(id_file))
