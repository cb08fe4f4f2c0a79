"""TLS on a connected non-blocking socket, driven by the running asyncio loop through
``ssl.MemoryBIO``.

Why MemoryBIO rather than asyncio's SSLProtocol or anyio's TLSStream: asyncio's TLS layer keeps
a 256 KiB buffer per connection (too much for a thousand idle tunnels) and anyio's stream runs at
a third of stunnel's speed (FACTS.md).  With memory BIOs this module decides the buffer sizes:
large reads go into buffers shared by every connection of the thread, and a BIO is fed in
slices, so an idle connection holds ~30 KiB (mostly OpenSSL's) and one that has carried a burst
~100 KiB.  :func:`~paraconnect.tunnel._splice.splice` runs the bulk phase from selector
callbacks with no task or future per chunk.

asyncio only (``add_reader``): it runs under anyio's asyncio backend, not under trio.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import threading
from collections.abc import Callable

from .._wire import address_label
from ..errors import NetworkError, ParaconnectError, ProtocolError, TrustError
from ..tls import PeerIdentity, peer_identity

__all__ = [
    "BIO_SLICE",
    "BUFFERS",
    "TLSConnection",
    "describe_ssl_error",
    "peer_label",
    "set_nodelay",
]

# One ciphertext read fills at most this much; large reads mean fewer syscalls and fewer trips
# through the loop, and the buffer is shared by all connections of a thread (see _Buffers).
RECV_SIZE = 256 * 1024
# A MemoryBIO keeps its largest allocation for good (OpenSSL's BUF_MEM never shrinks), so what
# goes into one at a time bounds what a connection holds after a burst: ciphertext is read from
# the socket, and plaintext is encrypted, in slices of this size, never in whole buffers.
BIO_SLICE = 32 * 1024


# What a peer's certificate says, by its DER (with the session's version and cipher): parsing a
# certificate costs more than the rest of a handshake's Python, and a tunnel's peers present
# the same few certificates again and again.  Only what the certificate itself holds is kept:
# revocation, policy and node binding are judged afresh on every connection.
_PEERS: dict[tuple[bytes, str | None, str | None], PeerIdentity] = {}
_PEERS_MAX = 256


def _peer_of(sslobj: ssl.SSLObject) -> PeerIdentity:
    der = sslobj.getpeercert(binary_form=True)
    cipher = sslobj.cipher()
    key = (der or b"", sslobj.version(), cipher[0] if cipher else None)
    peer = _PEERS.get(key)
    if peer is None:
        peer = peer_identity(sslobj)  # raises when there is no certificate: never cached
        if len(_PEERS) >= _PEERS_MAX:
            _PEERS.clear()
        _PEERS[key] = peer
    return peer


class _Buffers(threading.local):
    """Scratch buffers shared by every connection of one thread (one event loop).

    Safe because a buffer is filled and emptied within one callback or one uninterrupted stretch
    of a coroutine, with no ``await`` in between; data that must wait is copied out first.
    Per-connection buffers of this size would break the memory budget for idle connections.
    """

    def __init__(self) -> None:
        self.recv = bytearray(RECV_SIZE)
        self.recv_view = memoryview(self.recv)
        self.plain = bytearray(RECV_SIZE)
        self.plain_view = memoryview(self.plain)


BUFFERS = _Buffers()


def peer_label(sock: socket.socket) -> str:
    """'host:port' of the peer for messages; never raises."""
    try:
        addr = sock.getpeername()
    except OSError:
        return "an unconnected peer"
    return address_label(addr)


# OpenSSL verify codes (X509_V_ERR_*) that have a plain-words explanation.
_VERIFY_WORDS: dict[int, str] = {
    2: "is not signed by the session CA",
    3: "cannot be checked for revocation (no revocation list for its CA: another session?)",
    18: "is self-signed, not issued by the session CA",
    19: "is not signed by the session CA (its chain ends in another self-signed CA)",
    20: "is not signed by the session CA",
    21: "is not signed by the session CA",
    7: "has a bad signature (not signed by the session CA)",
    9: "is not valid yet (check both clocks)",
    10: "has expired",
    23: "was revoked",
    26: "may not be used for this purpose (wrong certificate role)",
}

# Alerts the peer sent about *our* certificate, by OpenSSL reason code.
_ALERT_WORDS: dict[str, str] = {
    "TLSV1_ALERT_UNKNOWN_CA": "is not signed by a CA it trusts (it belongs to another session?)",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "was revoked",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "has expired (or is not valid yet on its clock)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "is not acceptable",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "is of an unsupported kind",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "is not acceptable",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "is missing (it requires one)",
    "TLSV1_ALERT_ACCESS_DENIED": "is not allowed",
    "TLSV1_ALERT_DECRYPT_ERROR": "could not be verified",
}

# Reasons that mean "what came in was not TLS 1.3 at all".
_NOT_TLS = {
    "WRONG_VERSION_NUMBER",
    "HTTP_REQUEST",
    "HTTPS_PROXY_REQUEST",
    "UNKNOWN_PROTOCOL",
    "UNSUPPORTED_PROTOCOL",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
    "TLSV1_ALERT_PROTOCOL_VERSION",
    "NO_SHARED_CIPHER",
    "UNEXPECTED_MESSAGE",
    "TLSV1_ALERT_DECODE_ERROR",
    "TLSV1_ALERT_ILLEGAL_PARAMETER",
    "LENGTH_MISMATCH",
    "BAD_PACKET_LENGTH",
    "WRONG_SSL_VERSION",
    "BAD_EXTENSION",
    "BAD_RECORD_TYPE",
    "TLSV1_ALERT_INSUFFICIENT_SECURITY",
}


def describe_ssl_error(exc: BaseException, where: str) -> ParaconnectError:
    """Translate an ssl/socket exception into the paraconnect error a user can act on."""
    if isinstance(exc, ParaconnectError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        words = _VERIFY_WORDS.get(exc.verify_code)
        if words is None:
            words = f"was refused ({exc.verify_message})"
        fix = (
            "the peer needs a newly issued certificate"
            if exc.verify_code in (9, 10, 23)
            else "connect to an endpoint of the same session"
        )
        return TrustError(f"TLS peer {where}: peer certificate {words}; {fix}")
    if isinstance(exc, ssl.SSLEOFError):
        return NetworkError(
            f"TLS peer {where} closed the connection in the middle of TLS; it may have refused "
            "our certificate or is not a paraconnect endpoint: check its log"
        )
    if isinstance(exc, ssl.SSLError):
        reason = str(getattr(exc, "reason", None) or "")
        if reason in _ALERT_WORDS:
            return TrustError(
                f"TLS peer {where} refused our certificate: it says our certificate "
                f"{_ALERT_WORDS[reason]}; use credentials of the peer's session that are valid"
            )
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return TrustError(
                f"TLS peer {where} sent no certificate; it must connect with credentials of "
                "this session"
            )
        if reason in _NOT_TLS:
            return ProtocolError(
                f"peer {where} does not speak TLS 1.3 ({reason.lower().replace('_', ' ')}); "
                "is it a paraconnect endpoint of this version?"
            )
        detail = reason.lower().replace("_", " ") if reason else str(exc)
        return ProtocolError(f"TLS error with {where}: {detail}; the connection was dropped")
    if isinstance(exc, TimeoutError):
        return NetworkError(f"connection to {where} timed out")
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return NetworkError(f"connection to {where} was reset by the peer")
    if isinstance(exc, OSError):
        return NetworkError(f"connection to {where} failed: {exc.strerror or exc}")
    return NetworkError(f"connection to {where} failed: {exc!r}")


def set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY where it applies: a relay forwards writes the application already made, and
    Nagle's algorithm against delayed ACKs costs 40 ms per handshake flight or small message."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _wake(fut: asyncio.Future[None]) -> None:
    # A level-triggered selector may fire again before the waiting coroutine runs.
    if not fut.done():
        fut.set_result(None)


class TLSConnection:
    """TLS over a connected socket on the running asyncio loop.

    Owns the socket once :meth:`handshake` returns.  ``bytes_in`` and ``bytes_out`` count
    plaintext.  One reader and one writer at a time (as for any stream); :func:`splice` takes
    the connection over completely.

    Under TLS 1.3 a *client* completes its handshake before the server has checked the client
    certificate: a refusal ("certificate revoked", "unknown CA") arrives as an alert on the
    client's first read.  ``handshake(server_side=False)`` therefore proves the server to us,
    not us to the server; the caller's first round trip (the hello) confirms it, and a refusal
    then surfaces from :meth:`recv` as a :class:`TrustError`.
    """

    __slots__ = (
        "_closed",
        "_eof_sent",
        "_in",
        "_loop",
        "_out",
        "_peer_eof",
        "_ssl",
        "_stash",
        "_waiter",
        "bytes_in",
        "bytes_out",
        "peer",
        "sock",
        "where",
    )

    def __init__(
        self, sock: socket.socket, sslobj: ssl.SSLObject, bio_in: ssl.MemoryBIO,
        bio_out: ssl.MemoryBIO, loop: asyncio.AbstractEventLoop,
    ) -> None:  # fmt: skip
        self.sock = sock
        self.where = peer_label(sock)
        self.peer: PeerIdentity
        self.bytes_in = 0
        self.bytes_out = 0
        self._ssl = sslobj
        self._in = bio_in
        self._out = bio_out
        self._loop = loop
        self._stash = b""  # plaintext decrypted early (see send_eof), handed out first
        self._peer_eof = False  # the peer's close_notify or FIN was seen
        self._eof_sent = False
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<TLSConnection {self.where} {state} in={self.bytes_in} out={self.bytes_out}>"

    # -- handshake ---------------------------------------------------------------------------

    @classmethod
    async def handshake(
        cls,
        sock: socket.socket,
        ctx: ssl.SSLContext,
        *,
        server_side: bool,
        timeout: float = 10.0,  # noqa: ASYNC109 - the API others call; applied inside
        hold_last_flight: bool = False,
    ) -> TLSConnection:
        """Run the TLS handshake on `sock` (connected; made non-blocking here).

        Raises :class:`NetworkError` on timeout, reset or early close, :class:`TrustError`
        when a certificate is refused (by us or, as an alert, by the peer), and
        :class:`ProtocolError` when the peer does not speak TLS 1.3.  On any failure the
        socket is closed (after telling the peer why, when TLS has an alert for it).

        `hold_last_flight`: a client that writes first leaves its last flight (certificate,
        Finished) in the outgoing BIO, to go out in one segment with that first write: one
        send and one wakeup of the peer fewer per connection.  Every read, write and close
        sends what is held first.
        """
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        set_nodelay(sock)
        bio_in, bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        try:
            sslobj = ctx.wrap_bio(bio_in, bio_out, server_side=server_side)
        except ssl.SSLError as exc:
            sock.close()
            raise ProtocolError(f"could not start TLS with {peer_label(sock)}: {exc}") from exc
        conn = cls(sock, sslobj, bio_in, bio_out, loop)
        try:
            async with asyncio.timeout(timeout):
                await conn._handshake(hold_last_flight)
            conn.peer = _peer_of(sslobj)
        except TimeoutError as exc:
            conn._abort()
            raise NetworkError(
                f"TLS handshake with {conn.where} timed out after {timeout:g} s; the peer is "
                "not answering TLS: check that the address is a paraconnect endpoint"
            ) from exc
        except BaseException as exc:
            # Send our alert (e.g. "certificate revoked") so the peer learns why, then close.
            conn._flush_nowait()
            conn._abort()
            if isinstance(exc, (OSError, ssl.SSLError)):
                raise describe_ssl_error(exc, conn.where) from exc
            if isinstance(exc, Exception) and not isinstance(exc, ParaconnectError):
                # e.g. a certificate cryptography cannot parse: still one of ours, cause kept.
                raise ProtocolError(
                    f"TLS handshake with {conn.where} failed: {exc}; check the peer's log"
                ) from exc
            raise
        return conn

    async def _handshake(self, hold_last_flight: bool = False) -> None:
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                sent = bool(self._out.pending)
                await self._flush()
                # A flight just sent is answered no sooner than the peer's turn: wait for it
                # rather than pay for a recv that would only say EAGAIN.
                if not await self._fill(wait_first=sent):
                    raise NetworkError(
                        f"TLS peer {self.where} closed the connection during the handshake; it "
                        "may have refused our certificate or is not a paraconnect endpoint: "
                        "check its log"
                    ) from None
                continue
            if not hold_last_flight:
                await self._flush()
            return

    # -- plumbing ----------------------------------------------------------------------------

    async def _wait(self, add: Callable[..., None], remove: Callable[[int], object]) -> None:
        fd = self.sock.fileno()
        if fd < 0:
            raise NetworkError(f"connection to {self.where} is closed")
        fut = self._loop.create_future()
        add(fd, _wake, fut)
        self._waiter = fut
        try:
            await fut
        finally:
            self._waiter = None
            if self.sock.fileno() >= 0:
                remove(fd)

    async def _fill(self, *, wait_first: bool = False) -> bool:
        """Move ciphertext from the socket into the incoming BIO; False at TCP EOF."""
        buf = BUFFERS.recv_view
        if wait_first:
            await self._wait(self._loop.add_reader, self._loop.remove_reader)
        while True:
            try:
                n = self.sock.recv_into(buf, BIO_SLICE)
            except (BlockingIOError, InterruptedError):
                await self._wait(self._loop.add_reader, self._loop.remove_reader)
                continue
            except OSError as exc:
                raise describe_ssl_error(exc, self.where) from exc
            if n == 0:
                self._in.write_eof()
                return False
            # No await between recv_into and this copy: the shared buffer is ours here.
            self._in.write(buf[:n])
            return True

    async def _sendall(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                n = self.sock.send(view)
            except (BlockingIOError, InterruptedError):
                await self._wait(self._loop.add_writer, self._loop.remove_writer)
                continue
            except OSError as exc:
                raise describe_ssl_error(exc, self.where) from exc
            view = view[n:]

    async def _flush(self) -> None:
        if self._out.pending:
            await self._sendall(self._out.read())

    def _flush_nowait(self) -> None:
        """Best effort, never blocks: used for alerts and close_notify on the way out."""
        if self._out.pending and self.sock.fileno() >= 0:
            with contextlib.suppress(OSError):
                self.sock.send(self._out.read())

    def _abort(self) -> None:
        self._closed = True
        fd = self.sock.fileno()
        if fd >= 0:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(NetworkError(f"connection to {self.where} was closed"))
        self.sock.close()

    # -- stream API --------------------------------------------------------------------------

    async def recv(self, max_bytes: int = 65536) -> bytes:
        """Up to `max_bytes` of plaintext; b"" once the peer has closed its side (close_notify,
        or a TCP FIN without one)."""
        if self._stash:
            data, self._stash = self._stash[:max_bytes], self._stash[max_bytes:]
            self.bytes_in += len(data)
            return data
        if self._closed:
            raise NetworkError(f"connection to {self.where} is closed")
        while True:
            if self._peer_eof:
                return b""
            try:
                data = self._ssl.read(max_bytes)
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._peer_eof = True
                return b""
            except ssl.SSLError as exc:
                self._flush_nowait()
                raise describe_ssl_error(exc, self.where) from exc
            if not data:
                self._peer_eof = True
                return b""
            if self._out.pending:  # e.g. a KeyUpdate answer
                await self._flush()
            self.bytes_in += len(data)
            return data

    async def recv_exactly(self, n: int) -> bytes:
        """Exactly `n` bytes; ProtocolError if the peer closes first, NetworkError on reset."""
        parts: list[bytes] = []
        got = 0
        while got < n:
            chunk = await self.recv(n - got)
            if not chunk:
                raise ProtocolError(
                    f"TLS peer {self.where} closed the connection after {got} of {n} expected bytes"
                )
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise NetworkError(f"connection to {self.where} is closed")
        if self._eof_sent:
            raise NetworkError(f"cannot send to {self.where}: our side was already closed")
        view = memoryview(data).cast("B")
        for start in range(0, len(view), BIO_SLICE):
            try:
                self._ssl.write(view[start : start + BIO_SLICE])
            except ssl.SSLError as exc:
                raise describe_ssl_error(exc, self.where) from exc
            await self._flush()
        self.bytes_out += len(view)

    def _close_notify(self) -> None:
        """Queue close_notify in the outgoing BIO, keeping whatever the peer already sent.

        OpenSSL's second SSL_shutdown call (made by ``unwrap``) reads from the incoming BIO and
        fails with APPLICATION_DATA_AFTER_CLOSE_NOTIFY if it finds application data there, so
        decrypted-but-unread plaintext is stashed and raw ciphertext is set aside around it.
        """
        if self._eof_sent:
            return
        self._eof_sent = True
        while self._ssl.pending():
            self._stash += self._ssl.read(self._ssl.pending())
        raw = self._in.read()
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            pass  # close_notify sent; the peer's comes later, through recv
        except ssl.SSLError:
            pass  # the session is broken already; closing the socket is all that is left
        finally:
            if raw:
                self._in.write(raw)

    async def send_eof(self) -> None:
        """Close our direction: TLS close_notify, then TCP shutdown(SHUT_WR).  Reading goes on
        until the peer closes its side."""
        if self._closed or self._eof_sent:
            return
        self._close_notify()
        await self._flush()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise describe_ssl_error(exc, self.where) from exc

    async def aclose(self) -> None:
        """Close now: close_notify if it can be sent without waiting, then the socket."""
        if self._closed:
            return
        try:
            self._close_notify()
            self._flush_nowait()
        finally:
            self._abort()

    @property
    def closed(self) -> bool:
        return self._closed
