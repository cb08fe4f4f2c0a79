"""Relay one tunnel connection to its plaintext socket, whatever the security level.

TLS connections go through the fast splice (``_splice``); at level ``none`` the connection is a
`PlainConnection` and a plain two-way pump does (clear text is a test and loopback mode only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from ..errors import ParaconnectError
from ._stream import ByteStream, PlainConnection

if TYPE_CHECKING:
    from ._hello import Hello
    from ._secure import Side
    from ._splice import SpliceResult
    from ._tracked import Tracked

__all__ = ["RelayResult", "relay", "relay_logged", "relay_tracked"]

log = logging.getLogger("paraconnect.tunnel")

_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class RelayResult:
    bytes_to_plain: int
    bytes_to_peer: int
    reason: str


class _Counts:
    """The plain pump's counters, in the shape of SpliceResult's (for live readers)."""

    def __init__(self, live: SpliceResult | None) -> None:
        self.live = live
        self.counts = [0, 0]

    def add(self, index: int, n: int) -> None:
        self.counts[index] += n
        if self.live is not None:
            if index == 0:
                self.live.bytes_a_to_b += n
            else:
                self.live.bytes_b_to_a += n


async def _pump_plain(
    conn: PlainConnection, plain: socket.socket, live: SpliceResult | None
) -> RelayResult:
    loop = asyncio.get_running_loop()
    counter = _Counts(live)
    counts = counter.counts
    reasons: list[str] = []

    async def one_way(src: socket.socket, dst: socket.socket, index: int, name: str) -> None:
        try:
            while True:
                data = await loop.sock_recv(src, _CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    reasons.append(f"{name} closed")
                    return
                await loop.sock_sendall(dst, data)
                counter.add(index, len(data))
        except OSError as exc:
            reasons.append(f"{name}: {exc.strerror or exc}")
            tg.cancel_scope.cancel()

    plain.setblocking(False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(one_way, conn.sock, plain, 0, "peer")
        tg.start_soon(one_way, plain, conn.sock, 1, "local side")
    return RelayResult(counts[0], counts[1], ", ".join(reasons) or "closed")


async def relay(
    conn: ByteStream,
    plain: socket.socket,
    *,
    preamble: bytes = b"",
    live: SpliceResult | None = None,
) -> RelayResult:
    """Copy both ways until both directions end; half-close is forwarded.  `preamble` goes to
    the plain side first (a PROXY protocol header).  `live` receives the byte counts while the
    relay runs (and keeps them, with the reason, if it is cancelled)."""
    try:
        if isinstance(conn, PlainConnection):
            if preamble:
                plain.setblocking(False)
                await asyncio.get_running_loop().sock_sendall(plain, preamble)
            try:
                return await _pump_plain(conn, plain, live)
            except BaseException:
                if live is not None and not live.reason:
                    live.reason = "cancelled"
                raise
        from ._splice import splice
        from ._tlsconn import TLSConnection

        if not isinstance(conn, TLSConnection):
            raise TypeError(f"cannot relay a {type(conn).__name__}")
        result = await splice(conn, plain, initial_to_plain=preamble, result=live)
        return RelayResult(result.bytes_a_to_b, result.bytes_b_to_a, result.reason)
    finally:
        plain.close()
        if not getattr(conn, "closed", False):  # a splice closes both ends itself
            with anyio.CancelScope(shield=True):
                await conn.aclose()


async def relay_tracked(
    side: Side, conn: ByteStream, hello: Hello, local: socket.socket, where: str, *, sent: int = 0
) -> None:
    """Relay a data connection under the side's registry and accounting.  `sent`: bytes of
    `local`'s already sent to the peer (with the hello), counted with the relay's."""
    with side.track(conn, hello, where) as tracked:
        what = f"tunnel to {conn.peer.label} for {where}"
        await relay_logged(conn, local, tracked, what, sent=sent)


async def relay_logged(
    conn: ByteStream,
    local: socket.socket,
    tracked: Tracked,
    what: str,
    *,
    preamble: bytes = b"",
    sent: int = 0,
) -> None:
    """Relay a tracked connection: how it ended becomes its accounting reason and a log line
    that starts with `what`.  `sent`: bytes of `local`'s the peer has already."""
    from ._splice import SpliceResult

    tracked.live = SpliceResult(bytes_b_to_a=sent)
    try:
        result = await relay(conn, local, preamble=preamble, live=tracked.live)
    except ParaconnectError as exc:
        tracked.reason = f"failed: {exc}"
        log.warning("%s failed: %s", what, exc)
        return
    tracked.reason = result.reason
    log.info(
        "%s closed: %d bytes in, %d out (%s)",
        what,
        result.bytes_to_plain,
        result.bytes_to_peer,
        result.reason,
    )
