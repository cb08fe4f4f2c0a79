"""What one side trusts now: its credentials with the revocation list in force, and the policy
in force, following their files and what the session owner pushes.

Credentials from a session follow that session's ``crl.pem`` and ``policy.json``; credentials
from a directory of PEM files (what an agent on a remote node holds) follow the files beside
them, so copying a fresh CRL there revokes a friend without restarting the agent, and what the
owner pushes over a control channel is kept there.  A broken or older list or policy never
weakens a running side: the previous one stays in force, and the highest numbers applied are
kept beside the credentials (`TrustState`), so neither does a restart.  The owner's side signs
its policy with the session key for its agents (:meth:`Trust.signed_policy`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .._fs import FileStamp, file_stamp
from ..errors import CredentialError, ParaconnectError, StorageError
from ..pki import (
    Credentials,
    Session,
    crl_number,
    load_credentials,
    load_crl,
    policy_path,
    revoked_entry,
    save_policy,
    sign_policy,
    verify_crl,
    verify_policy,
    write_crl_beside,
)
from ..tls import PeerIdentity, PolicyWatcher
from ._trust_state import TrustState, state_path

__all__ = ["Trust"]

log = logging.getLogger("paraconnect.tunnel")


def _beside_pem_files(path: Path | None) -> bool:
    """Whether `path` lies in a directory of PEM files (kept there), not a session's."""
    return path is not None and not (path.parent / "session.json").exists()


class Trust:
    """The revocation list and policy in force for one side.  `crl_generation` grows with
    every new list (SSL contexts built before hold the old one); `unpushed` is set when the
    list or policy changed here, for an owner to push them to its agents."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self.crl_path = creds.crl_path
        self._crl_stamp: FileStamp = None
        self.crl_generation = 0
        self.unpushed = False
        self._signed: tuple[FileStamp, str] | None = None
        # The newest policy and list ever applied here, across restarts.
        self.state = TrustState(state_path(creds), creds.identity.session_id)
        # Credentials that are a directory of PEM files follow their files too (a renewed
        # certificate and key are taken without a restart).
        source = Path(creds.source)
        self._own_dir = source if source.is_dir() else None
        self._own_stamp = self._own_files()
        self.refresh_crl()
        self._check_crl_not_older(self.state.crl)  # the list on disk now, not `creds`'
        self.unpushed = False  # the list read at start is not news
        # The policy lives beside the revocation list; a bundle has neither.
        self.policy = PolicyWatcher(policy_path(self.crl_path) if self.crl_path else None)

    @property
    def _policy_number(self) -> int:
        return self.state.policy

    def _check_crl_not_older(self, recorded: int) -> None:
        """Refuse to start on a list older than one applied here before (a restored backup, a
        copy of the files as first issued): it would let revoked certificates in again."""
        crl = self.creds.crl
        if self.crl_path is None or recorded == 0:
            return  # a bundle keeps no list on disk: the owner pushes the newest again
        have = crl_number(crl) if crl is not None else None
        if have is not None and have >= recorded:
            return
        held = f"revocation list number {have}" if have is not None else "no revocation list"
        raise CredentialError(
            f"{self.crl_path} holds {held}, older than list {recorded} applied here before "
            f"(recorded in {self.state.path}): it would let revoked certificates in again; "
            "copy the session's newest crl.pem there (if it is lost: revoke again what it "
            f"revoked, then delete {self.state.path})"
        )

    def refresh_crl(self) -> bool:
        """Re-read the CRL file if it changed; True when a new list is in force."""
        stamp = file_stamp(self.crl_path)
        if stamp == self._crl_stamp or self.crl_path is None or stamp is None:
            return False
        self._crl_stamp = stamp
        try:
            crl = load_crl(self.crl_path, self.creds.ca_cert)
        except ParaconnectError as exc:
            log.error("%s; keeping the previous revocation list", exc)
            return False
        if crl is None:
            return False
        old = self.creds.crl
        if old is not None and crl.public_bytes(Encoding.PEM) == old.public_bytes(Encoding.PEM):
            return False
        newest = max(crl_number(old) if old is not None else 0, self.state.crl)
        if crl_number(crl) < newest:
            log.error(
                "%s holds revocation list number %d, older than the newest applied here (%d): "
                "refused (a list never goes back); restore the newest crl.pem",
                self.crl_path, crl_number(crl), newest,
            )  # fmt: skip
            return False
        self._apply_crl(crl)
        self.unpushed = True
        log.info("revocation list %s changed: reloaded", self.crl_path)
        return True

    def _own_files(self) -> tuple[tuple[str, int, int, int], ...] | None:
        if self._own_dir is None:
            return None
        try:
            entries = list(os.scandir(self._own_dir))
        except OSError:
            return None
        stamps = []
        for entry in entries:
            if entry.name.endswith((".crt", ".key")):
                try:
                    st = entry.stat()
                except OSError:
                    continue
                stamps.append((entry.name, st.st_mtime_ns, st.st_ino, st.st_size))
        return tuple(sorted(stamps))

    def own_changed(self) -> Credentials | None:
        """New credentials if this side's certificate or key files changed and load as a
        whole (a certificate with its matching key, signed by our session CA); None if
        nothing changed, or if what is there now is broken (logged: the credentials in
        force stay, and a later complete write is taken)."""
        stamp = self._own_files()
        if self._own_dir is None or stamp == self._own_stamp:
            return None
        self._own_stamp = stamp
        try:
            fresh = load_credentials(self._own_dir)
        except ParaconnectError as exc:
            log.error("%s; keeping the credentials in force", exc)
            return None
        if fresh.ca_cert != self.creds.ca_cert:
            log.error("%s now holds credentials of another session; keeping the ones in force",
                      self._own_dir)  # fmt: skip
            return None
        if fresh.cert == self.creds.cert:
            return None
        return fresh

    def adopt_own(self, fresh: Credentials) -> None:
        """Put renewed credentials in force, with the newer of the two revocation lists."""
        crl = self.creds.crl
        if fresh.crl is not None and (crl is None or crl_number(fresh.crl) > crl_number(crl)):
            crl = fresh.crl
        self.creds = dataclasses.replace(fresh, crl=crl, crl_path=self.creds.crl_path)
        self.crl_generation += 1  # SSL contexts are built again, with the new certificate

    def refresh(self) -> bool:
        """Look at the CRL and policy files (two stats); True when either changed."""
        changed = self.refresh_crl()
        if self.policy.refresh():
            changed = True
            self.unpushed = True  # agents follow the owner's policy too
        return changed

    def refusal(self, peer: PeerIdentity) -> str | None:
        """Why `peer` is refused now (revoked, or denied by policy), or None."""
        crl = self.creds.crl
        if crl is not None and peer.serial is not None:
            entry = revoked_entry(crl, peer.serial)
            if entry is not None:
                return (
                    f"{peer.label} (serial {peer.serial:x}) was revoked at "
                    f"{entry.revocation_date_utc:%Y-%m-%d %H:%M:%S} UTC"
                )
        return self.policy.refusal(peer)

    def _apply_crl(self, crl: x509.CertificateRevocationList) -> None:
        self.creds = dataclasses.replace(self.creds, crl=crl)
        self.crl_generation += 1
        self.state.raise_to(crl=crl_number(crl))

    def accept_crl(self, data: bytes | str, source: str) -> bool:
        """A revocation list pushed by the session owner (over a control channel): applied if
        the session CA signed it and it is newer than ours, written beside credentials that
        are a directory of PEM files.  True when applied; a list signed by another CA or an
        older one is refused (logged), and the current one stays in force."""
        try:
            crl = verify_crl(data, self.creds.ca_cert, source)
        except ParaconnectError as exc:
            log.error("%s", exc)
            return False
        current = self.creds.crl
        theirs = crl_number(crl)
        # The newest ever applied here counts too: after a restart with no list in force (a
        # bundle), a replayed older one is still refused.
        ours = max(crl_number(current) if current is not None else 0, self.state.crl)
        if theirs < ours:
            # A stale copy (a friend's imported session), or a replay: never a rollback.
            log.warning(
                "the revocation list from %s is older (number %d) than the newest applied here "
                "(%d); refused, the current one stays in force", source, theirs, ours,
            )  # fmt: skip
            return False
        if current is not None and theirs == crl_number(current):
            return False
        if _beside_pem_files(self.crl_path):
            assert self.crl_path is not None  # noqa: S101 - checked just above
            try:
                write_crl_beside(self.crl_path, crl)
                self._crl_stamp = file_stamp(self.crl_path)
            except StorageError as exc:
                log.error("cannot keep the revocation list from %s: %s", source, exc)
        self._apply_crl(crl)
        log.info("revocation list %d from %s applied", crl_number(crl), source)
        return True

    def signed_policy(self) -> str | None:
        """The policy in force, signed with the session key, for agents to follow; None
        unless this side is the session's owner (its credentials are a session directory
        with an unencrypted session key).  Numbered by the policy file's change time, so
        that an agent never goes back to an older one."""
        path = self.policy.path
        if path is None or _beside_pem_files(path):
            return None
        stamp = self.policy.stamp
        if self._signed is not None and self._signed[0] == stamp:
            return self._signed[1]
        try:
            session = Session(path.parent)
            if not session.owner or session.ca_key_encrypted:
                return None
            key = session.signer()  # the key file's key, or the session's PKCS#11 token
            text = sign_policy(self.policy.policy, key, stamp[0] if stamp else 0)
        except ParaconnectError as exc:
            log.warning("cannot sign the policy for agents: %s", exc)
            return None
        self._signed = (stamp, text)
        return text

    def accept_policy(self, text: str, source: str) -> bool:
        """A policy pushed by the session owner: applied if the session CA signed it and it is
        newer than the last one applied, kept beside credentials that are a directory of PEM
        files.  True when applied."""
        try:
            policy, number = verify_policy(text, self.creds.ca_cert, source)
        except ParaconnectError as exc:
            log.error("%s", exc)
            return False
        if number < self._policy_number:
            # A replay of a policy the session key signed long ago (one that let a friend in).
            log.warning(
                "policy %d from %s is older than policy %d applied here before; refused, the "
                "current one stays in force", number, source, self._policy_number,
            )  # fmt: skip
            return False
        if number == self._policy_number:
            return False  # the owner pushes the same one on every control channel
        self.state.raise_to(policy=number)
        path = self.policy.path
        if path is not None and _beside_pem_files(path):
            try:
                save_policy(path, policy)
            except StorageError as exc:
                log.error("cannot keep the policy from %s: %s", source, exc)
        self.policy.apply(policy)
        log.info("policy %d from %s applied: %d rule(s), default %s", number, source,
                 len(policy.rules), policy.default)  # fmt: skip
        return True

    def crl_pem(self) -> str | None:
        crl = self.creds.crl
        return None if crl is None else crl.public_bytes(Encoding.PEM).decode()
