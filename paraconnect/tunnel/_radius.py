"""RADIUS: who may connect (an Access-Request per new connection) and what they did
(Accounting-Request Start, Interim-Update and Stop per connection).

A side with a `Radius` asks its server after the handshake, the hello and every local check
(revocation and policy refuse first), before the verdict goes to the peer, so a refused peer
reads the Reply-Message as the reason.  The exchange is UDP on the event loop
(`_radius_wire.exchange`): no thread, and nothing blocks the loop.

An Access-Request carries User-Name = the peer as the session names it (`Identity.label`,
what logs and the accounting call it), Calling-Station-Id = its address, NAS-Identifier = this
side's own identity, Service-Type = Authorize-Only (no password: TLS proved who it is), and
paraconnect's vendor attributes for what no standard attribute says honestly (role, name,
certificate serial, node unique ID, session, server id; `radius/dictionary.paraconnect`).  A
Message-Authenticator signs every request (the BlastRADIUS countermeasure); one in a reply is
checked.

When the server does not answer, the last answer for the same certificate (User-Name, serial,
node) within `cache` seconds decides, so one RADIUS hiccup does not stop sessions that were
just admitted; without one the side follows `fail`: closed (refuse, the default) or open.

Accounting goes to PORT+1 (the 1812/1813 convention); its packets are built and sent by
`_radius_acct.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from ..tls import PeerIdentity
from ._accounting import Accounting
from ._hello import Hello
from ._radius_acct import RadiusAccounting
from ._radius_wire import RadiusConfig, dictionary, exchange, fit, peer_attributes, reply_text

__all__ = ["Radius"]

log = logging.getLogger("paraconnect.tunnel")

ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT = 1, 2, 3


class Radius:
    """One side's RADIUS client: its authorisation hook and its accounting."""

    def __init__(
        self,
        config: RadiusConfig,
        *,
        local_identity: str,
        session_id: str,
        accounting_db: Callable[[], Accounting | None] | None = None,
    ) -> None:
        """`accounting_db`: called for the side's `Accounting` (the retry queue's home), or
        None for no retry queue."""
        self.config = config
        self.local_identity = local_identity
        self.session_id = session_id
        self._answers: dict[tuple[str, ...], tuple[float, str | None]] = {}
        self.accounting = RadiusAccounting(
            config,
            local_identity=local_identity,
            session_id=session_id,
            accounting_db=accounting_db,
        )

    def _cache_key(self, attrs: Mapping[str, str]) -> tuple[str, ...]:
        keys = ("User-Name", "Paraconnect-Serial", "Paraconnect-Unique-Id")
        return tuple(attrs.get(k, "") for k in keys)

    async def authorize(self, peer: PeerIdentity, hello: Hello, where: str) -> str | None:
        """None to admit `peer`, else why it is refused (with the server's Reply-Message)."""
        try:
            return await self._authorize(peer, hello, where)
        except Exception:  # a bug here refuses this peer; it never stops the listener
            log.exception("the RADIUS check of %s failed", peer.label)
            return f"the RADIUS check of {peer.label} failed on this side (see its log)"

    async def _authorize(self, peer: PeerIdentity, hello: Hello, where: str) -> str | None:
        from pyrad.packet import AuthPacket

        attrs = peer_attributes(peer, hello, where)
        packet = AuthPacket(
            code=ACCESS_REQUEST,
            secret=self.config.secret,
            dict=dictionary(),
            message_authenticator=True,
        )
        for name, value in attrs.items():
            packet[name] = value
        packet["Service-Type"] = "Authorize-Only"
        packet["NAS-Identifier"] = fit(self.local_identity)
        reply = await exchange(self.config, packet, self.config.port)
        key = self._cache_key(attrs)
        now = time.monotonic()
        if reply is not None:
            # The server decided; only Accept admits (a Challenge asks for a person to answer,
            # and there is none: it refuses, whatever --radius-fail says).
            why = None
            if reply.code == ACCESS_REJECT:
                said = reply_text(reply, "Reply-Message") or "no Reply-Message"
                why = f"the RADIUS server {self.config.address} rejected {peer.label}: {said}"
            elif reply.code != ACCESS_ACCEPT:
                why = (
                    f"the RADIUS server {self.config.address} answered {peer.label} with code "
                    f"{reply.code}, not Access-Accept"
                )
            self._answers[key] = (now, why)
            self._prune(now)
            return why
        return self._unanswered(peer, key, now)

    def _unanswered(self, peer: PeerIdentity, key: tuple[str, ...], now: float) -> str | None:
        what = f"did not answer ({self.config.tries} tries of {self.config.timeout:g} s)"
        cached = self._answers.get(key)
        if cached is not None and now - cached[0] <= self.config.cache:
            age = now - cached[0]
            verdict = "refusing" if cached[1] else "admitting"
            log.warning(
                "the RADIUS server %s %s; %s %s on its answer of %.0f s ago",
                self.config.address, what, verdict, peer.label, age,
            )  # fmt: skip
            return cached[1]
        if self.config.fail == "open":
            log.warning(
                "the RADIUS server %s %s; admitting %s (--radius-fail open)",
                self.config.address, what, peer.label,
            )  # fmt: skip
            return None
        return (
            f"the RADIUS server {self.config.address} {what} and no recent answer for "
            f"{peer.label} stands in; refused (--radius-fail closed)"
        )

    def _prune(self, now: float) -> None:
        if len(self._answers) > 4096:
            horizon = now - self.config.cache
            self._answers = {k: v for k, v in self._answers.items() if v[0] >= horizon}

    def close(self) -> None:
        """Keep what accounting has not sent yet (the retry queue): the side is stopping."""
        self.accounting.persist()
