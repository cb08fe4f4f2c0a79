"""The hub's renewals: an agent's fresh key certified over its control channel, the event that
says so, and the certificate it replaces revoked (``superseded``) once nothing uses it.

Why revoke, and why only then: a renewed certificate leaves the old key valid for the third of
its life that is left; revoking it makes a copy of the old key worthless at once.  But the
hub's side closes every open connection whose certificate the list now revokes, so revoking at
the swap would cut the streams the renewal must not interrupt.  The agent dials a control
channel with its new certificate right after the swap (the hub then drops the old channel);
the old certificate is revoked when the last connection made with it has closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import ParaconnectError
from ..pki import Store
from ..servers import ServerRegistry, certify_renewal
from ..tunnel import AgentLink, ReverseListener

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
        # (session, server id, serial) of certificates renewed but still carrying connections.
        self.superseded: set[tuple[str, str, int]] = set()
        hub.subscribe(self._event)

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
        if done.old_serial is not None:
            self.superseded.add((session, link.server_id, done.old_serial))
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
        if self.superseded and event.get("event") in ("connection", "phone_home"):
            self.sweep()

    def sweep(self) -> None:
        """Revoke the superseded certificates no open connection of the hub uses any more."""
        for entry in sorted(self.superseded):
            session, server_id, serial = entry
            agents = self.hub.session_agents(session) if session in self.hub.sessions else None
            if agents is not None and any(t.peer.serial == serial for t in agents.side.open):
                continue
            self.superseded.discard(entry)
            try:
                sess = self.hub.store.open_session(session)
                rec = next((r for r in sess.records() if int(r.serial, 16) == serial), None)
                if rec is None or rec.revoked:
                    continue
                sess.revoke(rec.serial, reason="superseded")
            except ParaconnectError as exc:
                log.warning("hub: the superseded certificate %x stays valid: %s", serial, exc)
                continue
            log.info("hub: revoked %s's superseded certificate %x", server_id, serial)
            self._publish(server_id, session, "superseded", serial=format(serial, "x"))
