"""The TLS Pool call for Python programs: `secure(sock, creds, role=, server_side=)`."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import anyio
import pytest

from paraconnect.errors import TrustError
from paraconnect.pki import Role
from paraconnect.tunnel import secure

from .helpers_tunnel import Pki, make_pki

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def _both(server: object, client: object) -> dict[str, object]:
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.setblocking(False)
    port = lsock.getsockname()[1]
    out: dict[str, object] = {}

    async def accept() -> None:
        sock, _ = await asyncio.get_running_loop().sock_accept(lsock)
        try:
            out["server"] = await server(sock)  # type: ignore[operator]
        except Exception as exc:
            out["server"] = exc

    async def dial() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        try:
            out["client"] = await client(sock)  # type: ignore[operator]
        except Exception as exc:
            out["client"] = exc

    with lsock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(accept)
            tg.start_soon(dial)
    return out


async def test_secure_gives_a_stream_and_the_proven_peer(home: Path) -> None:
    pki = make_pki(home)

    async def server(sock: socket.socket) -> object:
        stream, peer = await secure(sock, pki.server, role=Role.SERVER, server_side=True)
        data = await stream.recv_exactly(5)
        await stream.send(data.upper())
        await stream.aclose()
        return peer

    async def client(sock: socket.socket) -> object:
        stream, peer = await secure(sock, pki.client, role="client", server_side=False)
        await stream.send(b"hello")
        answer = await stream.recv_exactly(5)
        await stream.aclose()
        return (peer, answer)

    out = await _both(server, client)
    server_saw = out["server"]
    client_peer, answer = out["client"]  # type: ignore[misc]
    assert answer == b"HELLO"
    assert server_saw.identity.name == "alice"  # type: ignore[attr-defined]
    assert server_saw.identity.role is Role.CLIENT  # type: ignore[attr-defined]
    assert client_peer.identity.name == "srv"
    assert client_peer.tls_version == "TLSv1.3"


async def test_secure_refusal_is_clear_on_both_sides(home: Path, tmp_path: Path) -> None:
    pki: Pki = make_pki(home)
    other = make_pki(tmp_path / "other", "other")

    async def server(sock: socket.socket) -> object:
        return await secure(sock, pki.server, role=Role.SERVER, server_side=True)

    async def client(sock: socket.socket) -> object:
        from paraconnect.tunnel import Side

        side = Side(other.client, Role.CLIENT, unique_id=other.uid)
        return await side.establish(sock, server_side=False)

    out = await _both(server, client)
    assert isinstance(out["server"], TrustError)
    assert isinstance(out["client"], TrustError)
