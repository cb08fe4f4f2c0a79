"""One secure listener for every accepting role: bind, accept (at most MAX_HANDSHAKES in their
handshake), TLS handshake + hello + every check (`Side.establish`), and refusals logged,
accounted and told in one place; an established peer goes to the role's handler.

The agent's forward ``--listen``, ``paraconnect listen`` and the hub's phone-home port are
this listener with a different handler.  A role that refuses a peer after its hello (an
admission rule) calls `refuse`, so that every refusal takes the same road: accounted as a
refused attempt, announced to the side's observers, logged in one line, and handed to the one
refusal hook (`handle_refusal`, as anyio's `TLSListener.handle_handshake_error`).
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import anyio.abc

from ..errors import ParaconnectError
from ..tls import PeerIdentity
from ._hello import Hello
from ._leg import Endpoint, bind_listener, bound_endpoint
from ._secure import Side
from ._stream import ByteStream
from ._util import tls_accept_loop

__all__ = ["Established", "Refusal", "SecureListener"]

log = logging.getLogger("paraconnect.tunnel")


@dataclass(frozen=True, slots=True)
class Established:
    """A peer that passed the handshake, the hello and every check of the side."""

    conn: ByteStream
    hello: Hello
    where: str  # the peer's address

    @property
    def peer(self) -> PeerIdentity:
        return self.conn.peer


@dataclass(frozen=True, slots=True)
class Refusal:
    """A peer this listener refused: in its handshake or hello (`hello` is None), or after it
    by the role's admission rule."""

    where: str
    reason: str
    peer: PeerIdentity | None = None
    hello: Hello | None = None


Handler = Callable[[Established], Awaitable[None]]


class SecureListener:
    """Accept peers of `side` on `endpoints`; each established one goes to `handle` (which then
    owns its connection), each refused one to `on_refused`."""

    def __init__(
        self,
        side: Side,
        endpoints: Sequence[Endpoint],
        handle: Handler,
        *,
        on_refused: Callable[[Refusal], None] | None = None,
    ) -> None:
        self.side = side
        self.endpoints = list(endpoints)
        self.handle = handle
        self.on_refused = on_refused
        self.addresses: list[Endpoint] = []
        self._sockets: list[socket.socket] = []

    def bind(self) -> list[Endpoint]:
        """Bind every endpoint (all or none: a failure closes those already bound)."""
        try:
            for ep in self.endpoints[len(self._sockets) :]:
                sock = bind_listener(ep)
                self._sockets.append(sock)
                self.addresses.append(bound_endpoint(sock, ep))
        except BaseException:
            self.close()
            raise
        return list(self.addresses)

    def close(self) -> None:
        """Close every bound socket; a later `bind` binds afresh."""
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        self.addresses.clear()

    async def serve(self, tg: anyio.abc.TaskGroup) -> None:
        """Accept on every bound address for ever, each peer in its own task of `tg`; the
        sockets are closed when this ends."""
        self.bind()
        try:
            async with anyio.create_task_group() as loops:
                for sock, address in zip(self._sockets, self.addresses, strict=True):
                    loops.start_soon(
                        functools.partial(
                            tls_accept_loop, sock, tg, self._incoming, str(address),
                            first_byte_timeout=self.side.handshake_timeout,
                        )
                    )  # fmt: skip
        finally:
            self.close()

    async def _incoming(self, sock: socket.socket, where: str) -> None:
        try:
            conn, hello = await self.side.establish(sock, server_side=True)
        except ParaconnectError as exc:
            # Accounted and announced by the side already; the peer is gone.
            self.handle_refusal(Refusal(where, str(exc)))
            return
        await self.handle(Established(conn, hello, where))

    async def refuse(self, peer: Established, why: str) -> None:
        """Refuse an established peer by the role's own rule: accounted and announced as a
        refused handshake is, logged, told, and closed."""
        self.side.refuse(peer.conn, peer.hello, peer.where, why)
        self.handle_refusal(Refusal(peer.where, why, peer.peer, peer.hello))
        with anyio.CancelScope(shield=True):
            await peer.conn.aclose()

    def handle_refusal(self, refusal: Refusal) -> None:
        """The one refusal hook: log, then tell `on_refused` (whose bug never stops us)."""
        if refusal.hello is None:
            log.warning("refused connection from %s: %s", refusal.where, refusal.reason)
        else:
            ident = refusal.peer.identity if refusal.peer is not None else None
            # Named as its certificate proves it (as it claims at level none).
            name = ident.name if ident is not None else refusal.hello.server_id
            role = refusal.hello.role.value
            log.warning("refused %s %r at %s: %s", role, name, refusal.where, refusal.reason)
        if self.on_refused is not None:
            try:
                self.on_refused(refusal)
            except Exception:
                log.exception("a refusal observer failed")
