"""The byte-stream shape every tunnel connection has, and its clear-text form for level `none`.

`TLSConnection` (``_tlsconn``) is the real thing; `PlainConnection` gives a bare TCP socket the
same shape so that the hello protocol and the relay need no second copy for level `none`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Protocol

from ..errors import NetworkError
from ..tls import PeerIdentity

__all__ = ["ByteStream", "PlainConnection"]


class ByteStream(Protocol):
    """What the hello protocol needs of a connection (TLSConnection and PlainConnection)."""

    peer: PeerIdentity
    sock: socket.socket

    async def recv(self, max_bytes: int = 65536) -> bytes: ...

    async def recv_exactly(self, n: int) -> bytes: ...

    async def send(self, data: bytes) -> None: ...

    async def send_eof(self) -> None: ...

    async def aclose(self) -> None: ...


class PlainConnection:
    """A connected, non-blocking TCP socket in clear text (security level `none` only)."""

    def __init__(self, sock: socket.socket, peer: PeerIdentity) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.peer = peer
        self.bytes_in = 0
        self.bytes_out = 0
        self._buffer = bytearray()

    def _where(self) -> str:
        try:
            return str(self.sock.getpeername()[:2])
        except OSError:
            return "the peer"

    async def recv(self, max_bytes: int = 65536) -> bytes:
        if self._buffer:
            data = bytes(self._buffer[:max_bytes])
            del self._buffer[:max_bytes]
            return data
        try:
            data = await asyncio.get_running_loop().sock_recv(self.sock, max_bytes)
        except OSError as exc:
            raise NetworkError(f"connection to {self._where()} failed: {exc}") from exc
        self.bytes_in += len(data)
        return data

    async def recv_exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = await self.recv(n - len(out))
            if not chunk:
                raise NetworkError(
                    f"{self._where()} closed the connection after {len(out)} of {n} bytes"
                )
            out += chunk
        return bytes(out)

    async def send(self, data: bytes) -> None:
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
        except OSError as exc:
            raise NetworkError(f"connection to {self._where()} failed: {exc}") from exc
        self.bytes_out += len(data)

    async def send_eof(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        self.sock.close()
