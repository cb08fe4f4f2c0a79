"""The policy check at handshake, and a policy that follows its file while a side runs.

`check_policy` applies a session's `Policy` (``paraconnect.pki``) to what TLS proved about a
peer.  `PolicyWatcher` holds the policy in force and re-reads ``policy.json`` when its stat
changes (one ``os.stat`` per call: cheap enough for every handshake); a malformed file is
refused with a logged error and the previous policy stays in force.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .._fs import FileStamp, file_stamp
from ..errors import ConfigError, TrustError
from ..pki import Policy, load_policy
from ._peer import PeerIdentity

__all__ = ["PolicyWatcher", "check_policy", "policy_refusal"]

log = logging.getLogger("paraconnect.tls")


def policy_refusal(policy: Policy, peer: PeerIdentity) -> str | None:
    """Why `policy` refuses `peer`, or None.  A peer without an identity (level none) is not
    subject to policy: nothing was proved about it."""
    ident = peer.identity
    if ident is None:
        return None
    allowed, why = policy.decide(ident.role.value, ident.name, peer.serial, ident.unique_id)
    if allowed:
        return None
    return f"{peer.label} (serial {peer.serial:x}) is denied by the policy {policy.source}: {why}"


def check_policy(policy: Policy, peer: PeerIdentity) -> None:
    why = policy_refusal(policy, peer)
    if why is not None:
        raise TrustError(why)


class PolicyWatcher:
    """The policy in force for one side, reloaded when `path` changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.policy = Policy()
        self._stamp: FileStamp = None
        if path is not None:
            self._stamp = file_stamp(path)
            if self._stamp is not None:
                # At start there is no previous policy to keep: a broken file stops the start.
                self.policy = load_policy(path)

    @property
    def stamp(self) -> FileStamp:
        """The file's (mtime_ns, inode, size) when last read; None if there was none."""
        return self._stamp

    def apply(self, policy: Policy) -> None:
        """Put `policy` in force now (one pushed by the session owner), and take the file as
        read: a copy written beside it must not count as a second change."""
        self.policy = policy
        if self.path is not None:
            self._stamp = file_stamp(self.path)

    def refresh(self) -> bool:
        """Reload if the file changed; True when the policy in force changed."""
        if self.path is None:
            return False
        stamp = file_stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        if stamp is None:
            log.warning("policy file %s was removed: allowing every certificate", self.path)
            self.policy = Policy()
            return True
        try:
            policy = load_policy(self.path)
        except ConfigError as exc:
            log.error("%s", exc)
            return False
        if policy == self.policy:
            return False
        self.policy = policy
        log.info(
            "policy %s changed: %d rule(s), default %s",
            self.path,
            len(policy.rules),
            policy.default,
        )
        return True

    def refusal(self, peer: PeerIdentity) -> str | None:
        return policy_refusal(self.policy, peer)
