"""The relay: bytes between a TLS connection and a plain socket, both ways, until both close.

`splice` runs the relay on the event loop (`_spliceloop.Splice`).
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from ._spliceloop import Splice, SpliceResult
from ._tlsconn import TLSConnection, set_nodelay

__all__ = ["SpliceResult", "splice"]


async def splice(
    tls: TLSConnection,
    plain: socket.socket,
    *,
    initial_to_plain: bytes = b"",
    initial_to_tls: bytes = b"",
    result: SpliceResult | None = None,
) -> SpliceResult:
    """Relay between `tls` (side a) and `plain` (side b) until both directions are closed.

    An EOF one way (close_notify or FIN from the TLS peer, FIN from the plain peer) is passed on
    as a half-close (shutdown(SHUT_WR) on the plain socket, close_notify + SHUT_WR on TLS) and
    the other way keeps flowing.  A reset or TLS error on either side ends both at once, the
    other side with a reset too.  `initial_to_plain` / `initial_to_tls` are bytes the caller
    already holds (e.g. read past the hello) and are sent first.

    splice owns both sockets: closed when it returns or is cancelled (which re-raises, with
    ``result.reason == "cancelled"``)."""
    loop = asyncio.get_running_loop()
    if result is None:
        result = SpliceResult()
    plain.setblocking(False)
    tls.sock.setblocking(False)
    set_nodelay(plain)
    set_nodelay(tls.sock)
    if tls._stash:
        initial_to_plain = tls._stash + initial_to_plain
        tls._stash = b""
    if tls._closed:
        plain.close()
        result.reason = "tls connection already closed"
        return result
    state = Splice(loop, tls, plain, result)
    if initial_to_plain:
        state.ab_pending = memoryview(bytes(initial_to_plain))
    if initial_to_tls:
        try:
            state.ssl.write(initial_to_tls)
        except ssl.SSLError as exc:
            state._tls_failed(exc)
            return result
        result.bytes_b_to_a += len(initial_to_tls)
    state.start()
    try:
        await state.done
    except BaseException:
        # Cancelled (or the loop is going away): close both ends, report why, re-raise.
        state._finish("cancelled")
        raise
    return result
