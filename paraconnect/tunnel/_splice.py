"""The relay: bytes between a TLS connection and a plain socket, both ways, until both close.

`splice` runs the relay on the event loop (`_spliceloop.Splice`).  Where the C relay was built
(`_offloop`), a relay that lives moves its steady state (both sides only waiting for bytes,
nothing pending, no end of stream) onto a thread of its own, which hands it back to the loop
for everything else: `Threaded` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from typing import TYPE_CHECKING

from . import _offloop as O
from ._spliceloop import RECORD, Splice, SpliceResult
from ._tlsconn import BIO_SLICE, RECV_SIZE, TLSConnection, set_nodelay

if TYPE_CHECKING:
    from ._crelay import Relay

__all__ = ["SpliceResult", "splice"]

log = logging.getLogger("paraconnect.tunnel")

# A relay starts its thread after this many events on the loop: one that carries a request and
# its answer and closes never pays for a thread (some 40 us of CPU), one that lives does.
THREAD_AFTER = 8


class Threaded(Splice):
    """The loop's relay, with its steady state on a C thread of its own (see _offloop)."""

    __slots__ = ("crelay", "events", "in_thread", "no_thread")

    def _attached(self) -> None:
        self.in_thread = False
        self.events = 0  # loop events so far (the thread is for relays that live)
        self.crelay: Relay | None = None  # made when the relay first settles after those
        self.no_thread = False  # none can be had for this relay: it stays on the loop

    def _let_go(self) -> None:
        """Done with the C relay (the relay ends, or no thread can be had): its thread is
        stopped, its bytes counted, and the reference cycle through _notify gone."""
        crelay = self.crelay
        if crelay is None:
            return
        self.crelay = self.result.relay = None
        if self.in_thread:
            self.in_thread = False
            crelay.stop()
        a_to_b, b_to_a = crelay.counts
        self.result.bytes_a_to_b += a_to_b
        self.result.bytes_b_to_a += b_to_a

    def _finish(self, reason: str, *, reset: socket.socket | None = None) -> None:
        if not self.finished:
            self._let_go()  # before the sockets close
        super()._finish(reason, reset=reset)

    def _on_ab(self) -> None:
        Splice._on_ab(self)
        self.events += 1
        self._settle()

    def _on_ba(self) -> None:
        Splice._on_ba(self)
        self.events += 1
        self._settle()

    def start(self) -> None:
        super().start()
        self._settle()

    def _settle(self) -> None:
        """A relay in its steady state (both sides only waiting for bytes to read, nothing
        pending either way, no end of stream) goes on on its C thread (see _offloop)."""
        if (
            self.events < THREAD_AFTER
            or self.in_thread
            or self.finished
            or self.no_thread
            or not (self.r_tls and self.r_plain)
            or self.w_tls
            or self.w_plain
            or self.ab_pending is not None
            or self.ba_pending is not None
            or self.ab_eof
            or self.ba_eof
            or self.tls_fin
            or self.kick_ab
            or self.bio_in.pending
            or self.bio_out.pending
            or self.raw.pending()
        ):
            return
        crelay = self.crelay
        if crelay is None:
            crelay = O.relay_for(
                self.ssl, self.bio_in, self.bio_out, (self.tfd, self.pfd),
                (RECV_SIZE, BIO_SLICE, RECORD), self._notify,
            )  # fmt: skip
            if crelay is None:  # this Python's ssl does not fit (said once, by _offloop)
                self.no_thread = True
                return
            self.crelay = self.result.relay = crelay
        self._arm_ab(False, False)
        self._arm_ba(False, False)
        try:
            crelay.start()
        except OSError as exc:  # no thread to be had (a limit): stay on the loop
            log.warning("relay: no thread (%s); relaying on the event loop", exc)
            self._let_go()
            self.no_thread = True
            self._arm_ab(True, False)
            self._arm_ba(True, False)
            return
        self.in_thread = True

    def _notify(self) -> None:
        """On the relay thread (with the GIL), when it ended by itself: the loop takes over."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to go back to
            self.loop.call_soon_threadsafe(self._back)

    def _back(self) -> None:
        """Take the relay back from its thread, on the loop, and go on from where it stopped:
        the bytes it decrypted or encrypted but could not send go first."""
        crelay = self.crelay
        if crelay is None or self.finished or not self.in_thread:
            return  # finished meanwhile: _finish stopped the thread
        self.in_thread = False
        try:
            got = crelay.stop()
            assert got is not None  # noqa: S101 - it was running: in_thread said so
            end, err, eof, library, reason, a_left, b_left = got
            self._arm_ab(True, False)  # both sides were waiting to read when it started
            self._arm_ba(True, False)
            if a_left:
                self.ab_pending = memoryview(a_left)
            if b_left:
                self.ba_pending = [memoryview(b_left)]
            if end == O.TLS_FIN:  # as the general path takes a FIN from the TLS peer
                self.bio_in.write_eof()
                self.tls_fin = True
            elif end == O.PLAIN_FIN:
                self.ba_eof = True
            elif end == O.DECRYPTED:  # close_notify, or a record to answer (KeyUpdate)
                self.ab_eof = self.ab_eof or eof
                if self.bio_out.pending:
                    self._queue_tls(self.bio_out.read())
            elif end == O.TLS_ERROR:
                self._tls_failed(O.tls_error(library, reason, eof))
            elif end == O.TLS_RESET:
                self._tls_reset()
            elif end == O.PLAIN_RESET:
                self._plain_reset()
            elif end != O.STOPPED:  # FAILED: the thread could not go on
                self._finish(f"internal error: relay thread: {os.strerror(err)}")
        except BaseException as exc:
            self._crashed(exc)
            raise
        if not self._over():
            self.start()  # both ways on from here, as a relay starts (and back when steady)


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
    relay = Threaded if O.available() else Splice
    state = relay(loop, tls, plain, result)
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
