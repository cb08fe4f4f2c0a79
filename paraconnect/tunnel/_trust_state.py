"""The highest signed-policy and revocation-list numbers a side ever applied, kept beside its
credentials so that a restart never lowers them.

Without it an agent restarted with its counters at 0, and any policy the session key ever
signed (one that still let a friend in) or any older list (one before a revocation) was taken
again from whoever replayed it.  The file is small JSON, 0600, written atomically (temp, fsync,
rename) under a lock, and only ever raised: two processes sharing credentials merge by maximum.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .._fs import locked, read_private, write_atomic
from ..errors import CredentialError, ParaconnectError
from ..pki import Credentials

__all__ = ["STATE_NAME", "TrustState", "state_path"]

log = logging.getLogger("paraconnect.tunnel")

STATE_NAME = "trust-state.json"


def state_path(creds: Credentials) -> Path | None:
    """Beside the credentials: the directory of PEM files or the session (where crl.pem
    lives), else beside a PKCS#12 bundle."""
    if creds.crl_path is not None:
        return creds.crl_path.parent / STATE_NAME
    source = Path(creds.source)
    if source.is_file():
        return source.with_name(f"{source.name}.{STATE_NAME}")
    return None


class TrustState:
    """`policy` and `crl`: the highest numbers applied here for `session_id`, ever."""

    def __init__(self, path: Path | None, session_id: str) -> None:
        self.path = path
        self.session_id = session_id
        self.policy = 0
        self.crl = 0
        self._read()

    def _read(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            obj = json.loads(read_private(self.path, "trust state file"))
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or not all(
            type(obj.get(k)) is int and obj[k] >= 0 for k in ("policy", "crl")
        ):
            # Fail closed: without the numbers a replayed old policy or list would be taken.
            raise CredentialError(
                f"trust state file {self.path} is malformed; it holds the newest policy and "
                "revocation list numbers applied here: restore it, or put the session's newest "
                "crl.pem beside it and delete it"
            )
        if obj.get("session") != self.session_id:
            return  # another session's credentials were here before: not ours to follow
        self.policy, self.crl = obj["policy"], obj["crl"]

    def raise_to(self, *, policy: int = 0, crl: int = 0) -> None:
        """Record higher numbers (never lower ones); a failed write is logged, and the numbers
        in memory still hold for this run."""
        if policy <= self.policy and crl <= self.crl:
            return
        self.policy, self.crl = max(self.policy, policy), max(self.crl, crl)
        if self.path is None:
            return
        try:
            with locked(self.path.with_name(f".{self.path.name}.lock")):
                on_disk = TrustState(self.path, self.session_id)
                self.policy = max(self.policy, on_disk.policy)
                self.crl = max(self.crl, on_disk.crl)
                text = json.dumps(
                    {"session": self.session_id, "policy": self.policy, "crl": self.crl}
                )
                write_atomic(self.path, text.encode() + b"\n", mode=0o600)
        except ParaconnectError as exc:
            log.error(
                "cannot keep the newest policy and revocation list numbers in %s: %s; after a "
                "restart an older one could be taken again", self.path, exc,
            )  # fmt: skip
