"""The relay on the event loop: bytes between a TLS connection and a plain socket, both ways.

Selector callbacks on the asyncio loop, not tasks (no task, future or frame per chunk): an event
runs its direction's callback, which moves what it can without blocking and re-arms only what
that direction still needs.  One large read per event into buffers shared by the thread;
plaintext goes from ``SSLObject.read`` straight into ``send``, copied only when a destination
cannot take it all at once.  `_splice` runs this, and moves a relay's steady state onto a C
thread of its own where that was built (`_offloop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any

from ._tlsconn import BIO_SLICE, BUFFERS, RECV_SIZE, TLSConnection, describe_ssl_error

__all__ = ["RECORD", "Splice", "SpliceResult"]

# Reads a direction an event before the loop's other connections (level-triggered: it returns).
_MAX_READS = 4
# Room kept for one whole TLS record when decrypting: a read never stops mid-record.
RECORD = 16 * 1024
_LINGER_RESET = struct.pack("ii", 1, 0)
# Plaintext gathered past this is sent before the next recv, which then still gets a slice.
_GATHER_MAX = RECV_SIZE - 3 * RECORD - BIO_SLICE
# The first read of an event from the TLS socket takes what an empty plain buffer can hold.
_FIRST_READ = RECV_SIZE - 3 * RECORD
# sendmsg() takes at most IOV_MAX (1024) buffers; a queue never gets near that.
_IOV_MAX = 512


@dataclass(slots=True)
class SpliceResult:
    """What one relay carried.  ``a`` is the TLS side, ``b`` the plain socket.

    ``reason`` says why it ended: ``"eof"`` (both sides closed cleanly), ``"reset by tls
    peer"``, ``"reset by plain peer"``, ``"tls error: ..."`` (a broken or refused TLS session,
    in plain words), ``"cancelled"``.  Pass one in as ``result=`` to watch the counters move
    while the relay runs, and to keep them when it is cancelled.
    """

    bytes_a_to_b: int = 0
    bytes_b_to_a: int = 0
    reason: str = ""
    # While the relay runs on its C thread (_offloop), the bytes that thread moved.
    relay: Any = field(default=None, compare=False, repr=False)

    def counts(self) -> tuple[int, int]:
        """(a to b, b to a) now, the relay thread's bytes included."""
        relay = self.relay
        if relay is None:
            return self.bytes_a_to_b, self.bytes_b_to_a
        a_to_b, b_to_a = relay.counts
        return self.bytes_a_to_b + a_to_b, self.bytes_b_to_a + b_to_a


class Splice:
    __slots__ = (
        "ab_done",
        "ab_eof",
        "ab_pending",
        "ba_done",
        "ba_eof",
        "ba_pending",
        "bio_in",
        "bio_out",
        "done",
        "finished",
        "kick_ab",
        "loop",
        "p",
        "pbuf",
        "pfd",
        "r_plain",
        "r_tls",
        "raw",
        "rbuf",
        "result",
        "ssl",
        "t",
        "tfd",
        "tls",
        "tls_fin",
        "w_plain",
        "w_tls",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tls: TLSConnection,
        plain: socket.socket,
        result: SpliceResult,
    ) -> None:
        self.loop = loop
        self.tls = tls
        self.t = tls.sock
        self.tfd = tls.sock.fileno()
        self.p = plain
        self.pfd = plain.fileno()
        self.ssl = tls._ssl
        # SSLObject's methods are thin Python wrappers around the _ssl object; calling that
        # directly saves a Python frame per record (same signatures, untyped: hence Any).
        self.raw: Any = getattr(tls._ssl, "_sslobj", tls._ssl)
        self.bio_in = tls._in
        self.bio_out = tls._out
        self.result = result
        # This thread's shared buffers (splice runs on the loop's thread), looked up once.
        self.rbuf = BUFFERS.recv_view
        self.pbuf = BUFFERS.plain_view
        self.done: asyncio.Future[None] = loop.create_future()
        self.finished = False
        # a -> b: TLS peer to plain peer
        self.ab_pending: memoryview | None = None  # plaintext the plain socket has not taken
        self.ab_eof = tls._peer_eof  # the TLS peer closed its side
        self.ab_done = False  # ... and everything before it reached the plain peer
        self.tls_fin = False  # TCP EOF seen on the TLS socket (with or without close_notify)
        self.kick_ab = False  # b -> a made work for a -> b (see _send_close_notify)
        # b -> a: plain peer to TLS peer
        # Ciphertext the TLS socket has not taken, oldest first; None when empty.
        self.ba_pending: list[memoryview] | None = None
        self.ba_eof = False
        self.ba_done = tls._eof_sent
        # What is armed on the loop right now.
        self.r_tls = self.w_tls = self.r_plain = self.w_plain = False
        self._attached()

    def _attached(self) -> None:
        """Set up what a subclass adds (before anything runs)."""

    # -- ending --------------------------------------------------------------------------

    def _finish(self, reason: str, *, reset: socket.socket | None = None) -> None:
        """Disarm, close both sockets, resolve the future.  `reset` is the side that reset:
        the other one is closed with an RST too, so the reset travels on to its peer."""
        if self.finished:
            return
        self.finished = True
        self.result.reason = reason
        self._arm_ab(False, False)
        self._arm_ba(False, False)
        for sock in (self.t, self.p):
            if reset is not None and sock is not reset and sock.fileno() >= 0:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            sock.close()
        self.tls._closed = True
        if not self.done.done():  # a cancelled task has cancelled it already
            self.done.set_result(None)

    def _over(self) -> bool:
        # A method, not the attribute: the steps above may have finished the relay.
        return self.finished

    def _tls_reset(self) -> None:
        self._finish("reset by tls peer", reset=self.t)

    def _plain_reset(self) -> None:
        self._finish("reset by plain peer", reset=self.p)

    def _tls_failed(self, exc: ssl.SSLError) -> None:
        # Tell the TLS peer what went wrong (the alert is in the outgoing BIO), then drop both.
        if self.bio_out.pending:
            with contextlib.suppress(OSError):
                self.t.send(self.bio_out.read())
        self._finish(f"tls error: {describe_ssl_error(exc, self.tls.where)}", reset=self.t)

    # -- arming: one callback a direction; the selector is touched only when a wish changes.

    def _arm_ab(self, r_tls: bool, w_plain: bool) -> None:
        loop = self.loop
        if r_tls != self.r_tls:
            if r_tls:
                loop.add_reader(self.tfd, self._on_ab)
            else:
                loop.remove_reader(self.tfd)
            self.r_tls = r_tls
        if w_plain != self.w_plain:
            if w_plain:
                loop.add_writer(self.pfd, self._on_ab)
            else:
                loop.remove_writer(self.pfd)
            self.w_plain = w_plain

    def _arm_ba(self, r_plain: bool, w_tls: bool) -> None:
        loop = self.loop
        if r_plain != self.r_plain:
            if r_plain:
                loop.add_reader(self.pfd, self._on_ba)
            else:
                loop.remove_reader(self.pfd)
            self.r_plain = r_plain
        if w_tls != self.w_tls:
            if w_tls:
                loop.add_writer(self.tfd, self._on_ba)
            else:
                loop.remove_writer(self.tfd)
            self.w_tls = w_tls

    # -- the work ------------------------------------------------------------------------

    def _on_ab(self) -> None:
        """TLS readable or plain writable."""
        if self.finished:
            return
        try:
            first = None
            if self.ab_pending is None and not (self.w_plain or self.ab_eof or self.tls_fin):
                # Fast path for the steady state of interactive traffic: one small read,
                # decrypted and sent on, nothing to re-arm.  Anything else: the general path.
                try:
                    got = self.t.recv_into(self.rbuf, _FIRST_READ)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    self._tls_reset()
                    return
                if 0 < got <= BIO_SLICE:
                    self.bio_in.write(self.rbuf[:got])
                    n = self._decrypt(0)
                    if self._over():
                        return
                    if (
                        (not n or self._to_plain(self.pbuf[:n], False))
                        and not (self.ab_eof or self.bio_in.pending or self.raw.pending())
                        and self.ba_pending is None
                    ):
                        return
                    if self._over():
                        return
                else:
                    first = got
            self._run_ab(first)
            if self.ab_done and self.ba_done and self.ba_pending is None and not self.finished:
                self._finish("eof")
        except BaseException as exc:
            self._crashed(exc)
            raise

    def _on_ba(self) -> None:
        """Plain readable or TLS writable."""
        if self.finished:
            return
        try:
            first = None
            if self.ba_pending is None and not (self.w_tls or self.ba_eof or self.ba_done):
                # Fast path, as in _on_ab: one small read, encrypted and sent on.
                try:
                    got = self.p.recv_into(self.rbuf)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    self._plain_reset()
                    return
                if 0 < got <= BIO_SLICE:
                    try:
                        self.raw.write(self.rbuf[:got])
                    except ssl.SSLError as exc:
                        self._tls_failed(exc)
                        return
                    self.result.bytes_b_to_a += got
                    if self._to_tls():
                        return
                    if self._over():
                        return
                    got = -1  # sent part of it: the general path arms the writer
                first = got
            self._run_ba(first)
            if self.ab_done and self.ba_done and self.ba_pending is None and not self.finished:
                self._finish("eof")
        except BaseException as exc:
            self._crashed(exc)
            raise

    def start(self) -> None:
        try:
            self._run_ab()
            if not self.finished:
                self._run_ba()
            if self.ab_done and self.ba_done and self.ba_pending is None and not self.finished:
                self._finish("eof")
        except BaseException as exc:
            self._crashed(exc)
            raise

    def _crashed(self, exc: BaseException) -> None:
        if not self.finished:
            self._finish(f"internal error: {exc!r}")

    def _run_ab(self, first: int | None = None) -> None:
        r_tls, w_plain = self._tls_to_plain(first)
        if self._over():
            return
        if r_tls != self.r_tls or w_plain != self.w_plain:
            self._arm_ab(r_tls, w_plain)
        if self.ba_pending is not None and not self.w_tls:
            self._run_ba()  # reading queued a record to send back (a KeyUpdate answer)

    def _run_ba(self, first: int | None = None) -> None:
        r_plain, w_tls = self._plain_to_tls(first)
        if self._over():
            return
        if r_plain != self.r_plain or w_tls != self.w_tls:
            self._arm_ba(r_plain, w_tls)
        if self.kick_ab:
            self.kick_ab = False
            self._run_ab()  # close_notify set decrypted plaintext aside: deliver it

    def _to_plain(self, view: memoryview, owned: bool) -> bool:
        """Send to the plain peer; False if it could not take everything (or reset)."""
        try:
            sent = self.p.send(view)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._plain_reset()
            return False
        self.result.bytes_a_to_b += sent
        if sent == len(view):
            self.ab_pending = None
            return True
        # A shared buffer is reused by the next event: keep our own copy of the rest.
        self.ab_pending = view[sent:] if owned else memoryview(bytes(view[sent:]))
        return False

    def _tls_to_plain(self, first: int | None) -> tuple[bool, bool]:
        """Returns (want TLS readable, want plain writable).  `first`: the size of a read
        already made into the shared buffer by the fast path.

        One large recv of ciphertext per round (recvs cost per call), fed to the BIO a
        BIO_SLICE at a time with decryption in between (so the BIO stays small), plaintext
        gathered in the shared buffer and sent in one piece when full or when the socket is
        empty (sends on loopback cost more per call still).
        """
        if self.ab_done:
            return False, False
        if self.ab_pending is not None and not self._to_plain(self.ab_pending, True):
            return False, not self.finished
        bio_in = self.bio_in
        raw = self.raw
        room = len(self.pbuf) - RECORD
        reads = 0
        drained = False
        n = 0  # plaintext gathered in the shared buffer
        src: memoryview | None = None  # ciphertext read but not yet fed to the BIO
        while True:
            while True:
                # Decrypt what the BIO holds (skipping the SSLWantReadError that an empty
                # one would cost), then feed it the next slice.
                if n <= room and (bio_in.pending or raw.pending() or self.tls_fin):
                    n = self._decrypt(n)
                    if self.finished:
                        return False, False
                if n > room or src is None:
                    break
                bio_in.write(src[:BIO_SLICE])
                src = src[BIO_SLICE:] if len(src) > BIO_SLICE else None
            if n and (
                n > room
                or (
                    src is None
                    and (drained or self.ab_eof or reads >= _MAX_READS or n > _GATHER_MAX)
                )
            ):
                if not self._to_plain(self.pbuf[:n], False):
                    if src is not None:
                        # The shared buffer is reused next event: the BIO keeps the rest
                        # (at most a slice or two, given how much each recv may take).
                        bio_in.write(src)
                    return False, not self.finished
                n = 0
                continue
            if src is not None:
                continue
            if self.ab_eof:
                self.ab_done = True
                try:
                    self.p.shutdown(socket.SHUT_WR)
                except OSError:
                    self._plain_reset()
                return False, False
            # A short read emptied the socket: no recv that would only say EAGAIN.
            if drained or reads >= _MAX_READS:
                return True, False
            reads += 1
            buf = self.rbuf
            # Take no more than what the plain buffer can hold once decrypted, with the
            # partial record the BIO may already hold: then every slice gets fed this round.
            # (n <= _GATHER_MAX here, so this is at least BIO_SLICE.)
            want = room - n - 2 * RECORD
            if first is not None:
                got, first = first, None
                want = _FIRST_READ
            else:
                try:
                    got = self.t.recv_into(buf, want)
                except (BlockingIOError, InterruptedError):
                    drained = True
                    continue
                except OSError:
                    self._tls_reset()
                    return False, False
            if got <= BIO_SLICE:
                if got:
                    bio_in.write(buf[:got])  # small: straight in, no slicing
                    drained = got < want
                else:
                    bio_in.write_eof()  # a FIN with no close_notify ends the stream too
                    self.tls_fin = True
            else:
                src = buf[:got]
                drained = got < want

    def _decrypt(self, n: int) -> int:
        """Plaintext from the incoming BIO into the shared plain buffer from offset `n`;
        returns the new end.  Sets ab_eof."""
        raw = self.raw
        bio_in = self.bio_in
        view = self.pbuf
        room = len(view) - RECORD
        try:
            while n <= room:
                got: int = raw.read(RECORD, view[n:])  # with a buffer: a count
                if not got:
                    self.ab_eof = True
                    break
                n += got
                if not (bio_in.pending or raw.pending() or self.tls_fin):
                    break
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self.ab_eof = True
        except ssl.SSLError as exc:
            self._tls_failed(exc)
            return 0
        if self.bio_out.pending:
            # Reading can produce records to send back (a KeyUpdate answer): queue them.
            self._queue_tls(self.bio_out.read())
        return n

    def _queue_tls(self, data: bytes) -> None:
        if self.ba_pending is None:
            self.ba_pending = [memoryview(data)]
        else:
            self.ba_pending.append(memoryview(data))

    def _to_tls(self) -> bool:
        """Send queued ciphertext to the TLS peer; False if it could not take it all."""
        queue = self.ba_pending
        if queue is None:
            # The usual case, one buffer just encrypted: no queue, a plain send().
            if not self.bio_out.pending:
                return True
            data = self.bio_out.read()
            try:
                sent = self.t.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._tls_reset()
                return False
            if sent == len(data):
                return True
            self.ba_pending = [memoryview(data)[sent:]]
            return False
        if self.bio_out.pending:
            queue.append(memoryview(self.bio_out.read()))
        try:
            # Several buffers (slices of one large read) go out in one sendmsg.
            sent = self.t.send(queue[0]) if len(queue) == 1 else self.t.sendmsg(queue[:_IOV_MAX])
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self._tls_reset()
            return False
        while queue and sent >= len(queue[0]):
            sent -= len(queue.pop(0))
        if sent:
            queue[0] = queue[0][sent:]
        if queue:
            return False
        self.ba_pending = None
        return True

    def _plain_to_tls(self, first: int | None) -> tuple[bool, bool]:
        """Returns (want plain readable, want TLS writable).  `first`: the size of a read
        already made into the shared buffer by the fast path (-1: data already handled)."""
        if first == -1:
            first = None
        if (self.ba_pending is not None or self.bio_out.pending) and not self._to_tls():
            return False, not self.finished
        if self.ba_done:
            return False, False
        raw = self.raw
        reads = 0
        while True:
            if self.ba_eof:
                self._send_close_notify()
                if not self._to_tls():
                    return False, not self.finished
                self.ba_done = True
                try:
                    self.t.shutdown(socket.SHUT_WR)
                except OSError:
                    self._tls_reset()
                return False, False
            if reads >= _MAX_READS:
                return True, False
            reads += 1
            buf = self.rbuf
            if first is not None:
                got, first = first, None
            else:
                try:
                    got = self.p.recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    return True, False
                except OSError:
                    self._plain_reset()
                    return False, False
            if not got:
                self.ba_eof = True
                continue
            try:
                if got <= BIO_SLICE:
                    raw.write(buf[:got])
                else:
                    for start in range(0, got, BIO_SLICE):
                        raw.write(buf[start : min(got, start + BIO_SLICE)])
                        self._queue_tls(self.bio_out.read())
            except ssl.SSLError as exc:
                self._tls_failed(exc)
                return False, False
            self.result.bytes_b_to_a += got
            if not self._to_tls():
                return False, not self.finished
            if got < len(buf):
                # A short read emptied the socket: no recv that would only say EAGAIN.
                return True, False

    def _send_close_notify(self) -> None:
        tls = self.tls
        if tls._eof_sent:
            return
        tls._close_notify()
        if tls._stash:
            # Plaintext that OpenSSL had decrypted but we had not read: it goes first.
            extra = tls._stash
            tls._stash = b""
            before = bytes(self.ab_pending) if self.ab_pending is not None else b""
            self.ab_pending = memoryview(before + extra)
            self.kick_ab = True
