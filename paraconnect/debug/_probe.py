"""What answers on a port: a TLS handshake whose raw bytes are kept, so that whatever comes
back (a ServerHello, an HTTP status line, an SSH banner, nothing) can be named; and two more
probes for peers that wait for the client to speak (ParaView's handshake, HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from dataclasses import dataclass, field

from .. import _wire
from ..errors import ProtocolError

__all__ = ["TLSProbe", "classify", "http_probe", "paraview_probe", "tls_probe"]

_KEEP = 4096
# vtkSocketCommunicator's first message: ENDIAN_TAG (0x3c3c3c3c, "<<<<"), a length of 1 and one
# byte saying "little endian".  pvserver waits for it; a ParaView client sends it first.
PARAVIEW_HELLO = b"<<<<" + struct.pack("<i", 1) + b"\x00"


@dataclass(slots=True)
class TLSProbe:
    """The outcome of one TLS handshake attempt."""

    # "tls" (handshake done), "tls-error" (a TLS peer that refused the handshake), "data"
    # (bytes that are not TLS), "silence", "closed" (EOF, no bytes), "reset"
    outcome: str
    raw: bytes = b""
    error: BaseException | None = None
    sslobj: ssl.SSLObject | None = None
    bio_in: ssl.MemoryBIO | None = None
    bio_out: ssl.MemoryBIO | None = None
    details: dict[str, object] = field(default_factory=dict)


async def tls_probe(
    sock: socket.socket,
    ctx: ssl.SSLContext,
    *,
    server_side: bool,
    timeout: float,  # noqa: ASYNC109 - one budget for the handshake, applied inside
) -> TLSProbe:
    """Run a TLS handshake on `sock`, keeping the first bytes the peer sent."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    bio_in, bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = ctx.wrap_bio(bio_in, bio_out, server_side=server_side)
    raw = bytearray()
    probe = TLSProbe("silence", sslobj=sslobj, bio_in=bio_in, bio_out=bio_out)
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    sslobj.do_handshake()
                except ssl.SSLWantReadError:
                    if bio_out.pending:
                        await loop.sock_sendall(sock, bio_out.read())
                    data = await loop.sock_recv(sock, 65536)
                    raw += data[: max(0, _KEEP - len(raw))]
                    if not data:
                        probe.outcome = "closed" if not raw else "data"
                        return _done(probe, raw)
                    bio_in.write(data)
                    continue
                if bio_out.pending:
                    await loop.sock_sendall(sock, bio_out.read())
                probe.outcome = "tls"
                return _done(probe, raw)
    except TimeoutError:
        probe.outcome = "silence" if not raw else ("tls-error" if _is_tls(bytes(raw)) else "data")
    except ssl.SSLError as exc:
        probe.error = exc
        probe.outcome = "tls-error" if _is_tls(bytes(raw)) or not raw else "data"
        if bio_out.pending:  # our alert, so the peer's log says why
            with contextlib.suppress(OSError):
                sock.send(bio_out.read())
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
        probe.error = exc
        probe.outcome = "reset" if not raw else "data"
    except OSError as exc:
        probe.error = exc
        probe.outcome = "reset"
    return _done(probe, raw)


def _done(probe: TLSProbe, raw: bytearray) -> TLSProbe:
    probe.raw = bytes(raw)
    return probe


def _is_tls(raw: bytes) -> bool:
    return len(raw) >= 3 and raw[0] in (0x15, 0x16, 0x17) and raw[1] == 0x03


def _first_line(raw: bytes) -> str:
    line = raw.split(b"\n", 1)[0].rstrip(b"\r")[:120]
    return line.decode("ascii", errors="replace")


def classify(raw: bytes) -> tuple[str, str]:
    """(kind, what it looks like) for the first bytes a peer sent."""
    if not raw:
        return "nothing", "nothing"
    if _is_tls(raw):
        return "tls", "a TLS record"
    if raw.startswith(b"SSH-"):
        return "ssh", f"an SSH server (banner {_first_line(raw)!r})"
    if raw.startswith(b"HTTP/"):
        return "http", f"an HTTP server (status line {_first_line(raw)!r})"
    head = raw[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "http", "an HTTP server (it answered with an HTML page)"
    method = raw.split(b" ", 1)[0]
    if method in (b"GET", b"POST", b"HEAD", b"PUT", b"CONNECT", b"OPTIONS", b"DELETE"):
        return "http-request", f"an HTTP client (request {_first_line(raw)!r})"
    if raw.startswith(b"<<<<"):
        return "paraview", "ParaView's own clear-text handshake (vtkSocketCommunicator)"
    if len(raw) > 4 and raw[4:5] == b"{":
        with contextlib.suppress(ProtocolError):
            obj = _wire.decode(raw[4 : 4 + int.from_bytes(raw[:4], "big")])
            if "v" in obj:
                return "paraconnect-plain", "a paraconnect hello in CLEAR TEXT (level none)"
    text = raw[:200]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in text):
        return "text", f"plain text ({_first_line(raw)!r})"
    return "binary", f"binary data ({raw[:16].hex(' ')}{' ...' if len(raw) > 16 else ''})"


async def _exchange(sock: socket.socket, send: bytes, timeout: float) -> bytes | None:  # noqa: ASYNC109
    """Send `send`, return what comes back within `timeout`; None on silence."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    got = bytearray()
    try:
        await loop.sock_sendall(sock, send)
        async with asyncio.timeout(timeout):
            while len(got) < 512:
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    break
                got += data
                if got.startswith(b"HTTP/") and b"\r\n\r\n" not in got:
                    continue
                if len(got) >= len(PARAVIEW_HELLO) or not got.startswith(b"<<<<"):
                    break
    except TimeoutError:
        if not got:
            return None
    except OSError:
        pass
    return bytes(got)


async def paraview_probe(sock: socket.socket, timeout: float) -> bytes | None:  # noqa: ASYNC109
    try:
        return await _exchange(sock, PARAVIEW_HELLO, timeout)
    finally:
        sock.close()


async def http_probe(sock: socket.socket, host: str, timeout: float) -> bytes | None:  # noqa: ASYNC109
    try:
        request = f"HEAD / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: paraconnect-debug\r\n\r\n"
        return await _exchange(sock, request.encode(), timeout)
    finally:
        sock.close()


def http_server_header(reply: bytes) -> str | None:
    for line in reply.split(b"\r\n")[1:]:
        if line.lower().startswith(b"server:"):
            return line[7:].strip().decode("ascii", errors="replace")
    return None
