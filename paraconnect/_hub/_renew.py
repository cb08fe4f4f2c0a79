"""The hub's renewals: an agent's fresh key certified over its control channel, the event that
says so, and the certificate it replaces revoked (``superseded``) once nothing uses it.

Why revoke, and why only then: a renewed certificate leaves the old key valid for the third of
its life that is left; revoking it makes a copy of the old key worthless at once.  But the
hub's side closes every open connection whose certificate the list now revokes, so revoking at
the swap would cut the streams the renewal must not interrupt.  The agent dials a control
channel with its new certificate right after the swap (the hub then drops the old channel).
The new certificate becomes the one recorded for the server when the hub first sees it on a
connection (an answer lost on the way leaves the agent its old, still recorded, certificate:
it asks again); the old one is revoked once the new one is in use and the last connection
made with the old one has closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import ParaconnectError
from ..pki import Store, fingerprint
from ..servers import ServerRegistry, certify_renewal
from ..tunnel import AgentLink, ReverseListener
from ..vocab import ServerState

__all__ = ["Renewals"]

log = logging.getLogger("paraconnect.hub")


class _Hub(Protocol):
    """What renewals use of the hub."""

    store: Store
    registry: ServerRegistry

    @property
    def sessions(self) -> list[str]: ...

    def session_agents(self, session: str) -> ReverseListener: ...

    def publish(self, event: dict[str, Any]) -> None: ...

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]: ...


class Renewals:
    def __init__(self, hub: _Hub) -> None:
        self.hub = hub
        # Per server id: (session, old serial, the new certificate's SHA-256) of a renewal whose
        # new certificate has not been seen yet, or whose old one still carries connections.
        self.pending: dict[str, tuple[str, int, str]] = {}
        hub.subscribe(self._event)

    def in_force(self, server_id: str, recorded: str | None, sha256: str | None) -> bool:
        """Whether a peer showing certificate `sha256` may be `server_id`: the one recorded
        for it, or one renewed for it and not recorded yet (nothing to check: level none)."""
        if not recorded or sha256 is None or sha256 == recorded:
            return True
        entry = self.pending.get(server_id)
        return entry is not None and entry[2] == sha256

    async def renew(self, session: str, link: AgentLink, csr: str) -> tuple[str, str | None]:
        """Certify the fresh key of the agent on `link` (see servers.certify_renewal)."""
        hub = self.hub
        peer = link.peer
        try:
            done = certify_renewal(
                hub.store.open_session(session), hub.registry, link.server_id,
                peer.identity, peer.sha256, peer.serial, csr,
            )  # fmt: skip
        except ParaconnectError as exc:
            self._publish(link.server_id, session, "refused", reason=str(exc))
            raise
        earlier = self.pending.pop(link.server_id, None)
        if earlier is not None:
            self._revoke_unused(link.server_id, session, earlier[2])
        if done.old_serial is not None:
            self.pending[link.server_id] = (session, done.old_serial, fingerprint(done.cert))
        self._publish(
            link.server_id, session, "renewed",
            serial=format(done.cert.serial_number, "x"),
            old_serial=format(done.old_serial, "x") if done.old_serial is not None else None,
            not_after=done.cert.not_valid_after_utc.timestamp(),
        )  # fmt: skip
        log.info(
            "hub: renewed the certificate of %s (serial %x, until %s UTC)",
            link.server_id, done.cert.serial_number,
            f"{done.cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}",
        )  # fmt: skip
        return done.cert_pem, done.crl_pem

    def _publish(self, server_id: str, session: str, outcome: str, **extra: Any) -> None:
        self.hub.publish({
            "event": "renewal", "server_id": server_id, "session": session,
            "outcome": outcome, "at": time.time(), **extra,
        })  # fmt: skip

    def _event(self, event: dict[str, Any]) -> None:
        if not self.pending:
            return
        if event.get("event") == "server" and event.get("state") == ServerState.SUBMITTED:
            # A new job (restarted, resubmitted) enrols anew: what the old one renewed is
            # revoked by that enrolment, and no longer admitted here either.
            self.pending.pop(str(event.get("server_id")), None)
        elif event.get("event") in ("connection", "phone_home"):
            self.sweep()

    def sweep(self) -> None:
        """Record the renewed certificates the hub now sees in use, and revoke the ones they
        superseded that no open connection of the hub uses any more."""
        for server_id, (session, serial, new) in sorted(self.pending.items()):
            if session not in self.hub.sessions:
                continue
            open_ = self.hub.session_agents(session).side.open
            rec = self.hub.registry.get(server_id)
            if rec is None or rec.final:
                self.pending.pop(server_id, None)  # its end revokes them all
                continue
            if rec.cert_sha256 != new:
                if not any(t.peer.sha256 == new for t in open_):
                    continue
                self.hub.registry.update(server_id, cert_sha256=new)
            if any(t.peer.serial == serial for t in open_):
                continue
            self.pending.pop(server_id, None)
            self._revoke(server_id, session, serial)

    def _revoke_unused(self, server_id: str, session: str, sha256: str) -> None:
        """A certificate renewed earlier that its agent never used (the answer was lost)."""
        sess = self.hub.store.open_session(session)
        rec = next((r for r in sess.records() if r.sha256 == sha256), None)
        if rec is not None:
            self._revoke(server_id, session, int(rec.serial, 16))

    def _revoke(self, server_id: str, session: str, serial: int) -> None:
        try:
            sess = self.hub.store.open_session(session)
            rec = next((r for r in sess.records() if int(r.serial, 16) == serial), None)
            if rec is None or rec.revoked:
                return
            sess.revoke(rec.serial, reason="superseded")
        except ParaconnectError as exc:
            log.warning("hub: the superseded certificate %x stays valid: %s", serial, exc)
            return
        log.info("hub: revoked %s's superseded certificate %x", server_id, serial)
        self._publish(server_id, session, "superseded", serial=format(serial, "x"))
