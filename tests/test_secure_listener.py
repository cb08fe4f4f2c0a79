"""SecureListener, the one accepting path of every role: a peer with a certificate of another
CA (openssl s_client, a peer nobody here wrote) reaches the refusal hook, accounted as refused,
and never the role's handler; a good peer of the session is handed to the handler with what
TLS and the hello proved; an admission refusal by the role takes the same hook."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import anyio
import pytest

from paraconnect.pki import Role
from paraconnect.tunnel import (
    Endpoint,
    Established,
    Purpose,
    Refusal,
    SecureListener,
    Side,
)

from .helpers_tunnel import Pki, make_pki

pytestmark = [pytest.mark.timeout(90)]


def _pem_files(tmp: Path, pki: Pki) -> tuple[Path, Path]:
    cert, key = tmp / "stranger.crt", tmp / "stranger.key"
    cert.write_bytes(pki.client.cert_pem())
    key.touch(mode=0o600)
    key.write_bytes(pki.client.key_pem())
    assert os.stat(key).st_mode & 0o777 == 0o600
    return cert, key


class _Seen(list[object]):
    """What a hook was handed, and an event for each arrival (no polling, no sleeps)."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = anyio.Event()

    def __call__(self, item: object) -> None:
        self.append(item)
        self.changed.set()

    async def wait(self, count: int = 1) -> None:
        with anyio.fail_after(30):  # the bound only stops a broken test
            while len(self) < count:
                self.changed = anyio.Event()
                await self.changed.wait()


@pytest.mark.anyio
async def test_a_stranger_reaches_the_refusal_hook_and_a_good_peer_the_handler(
    pki: Pki, tmp_path: Path
) -> None:
    stranger = make_pki(tmp_path / "elsewhere", "other")
    cert, key = _pem_files(tmp_path, stranger)
    side = Side(pki.server, Role.SERVER, server_id="srv", accounting=False)
    handed = _Seen()
    refused = _Seen()
    events: list[dict[str, object]] = []
    side.observers.append(lambda event, _exc: events.append(event))

    async def handle(peer: Established) -> None:
        handed(peer)
        await peer.conn.aclose()

    listener = SecureListener(side, [Endpoint("127.0.0.1", 0)], handle, on_refused=refused)
    [address] = listener.bind()
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, tg)
        # The stranger: a client certificate of another session's CA, over a real TLS 1.3.
        with anyio.fail_after(60):
            await anyio.run_process(
                ["openssl", "s_client", "-connect", str(address), "-tls1_3", "-quiet",
                 "-cert", str(cert), "-key", str(key)],
                input=b"", check=False,
            )  # fmt: skip
        await refused.wait()
        [refusal] = refused
        assert isinstance(refusal, Refusal)
        assert refusal.hello is None and refusal.where.startswith("127.0.0.1:")
        assert refusal.reason
        assert handed == []
        assert any(e.get("event") == "refused" for e in events), events

        # The good peer: the session's client, node-bound, through the side's own dialler.
        client = Side(pki.client, Role.CLIENT, accounting=False)
        sock = socket.create_connection((address.host, address.port))
        conn, hello = await client.establish(sock, server_side=False, purpose=Purpose.CONTROL)
        await handed.wait()
        [peer] = handed
        assert isinstance(peer, Established)
        assert peer.hello.role is Role.CLIENT and peer.hello.purpose is Purpose.CONTROL
        assert peer.peer.identity is not None and peer.peer.identity.name == "alice"
        assert hello.server_id == "srv"
        assert len(refused) == 1  # the good peer was never refused
        await conn.aclose()
        client.close()
        tg.cancel_scope.cancel()
    side.close()


@pytest.mark.anyio
async def test_a_role_refusal_takes_the_same_hook_and_is_accounted(pki: Pki) -> None:
    side = Side(pki.server, Role.SERVER, server_id="srv", accounting=False)
    refused = _Seen()
    events: list[dict[str, object]] = []
    side.observers.append(lambda event, _exc: events.append(event))
    listener: SecureListener

    async def handle(peer: Established) -> None:
        await listener.refuse(peer, "this role takes nobody today")

    listener = SecureListener(side, [Endpoint("127.0.0.1", 0)], handle, on_refused=refused)
    [address] = listener.bind()
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, tg)
        client = Side(pki.client, Role.CLIENT, accounting=False)
        sock = socket.create_connection((address.host, address.port))
        conn, _hello = await client.establish(sock, server_side=False, purpose=Purpose.DATA)
        await refused.wait()
        [refusal] = refused
        assert isinstance(refusal, Refusal)
        assert refusal.reason == "this role takes nobody today"
        assert refusal.hello is not None and refusal.hello.role is Role.CLIENT
        assert refusal.peer is not None and refusal.peer.identity is not None
        assert any(
            e.get("event") == "refused" and e.get("reason") == "this role takes nobody today"
            for e in events
        ), events
        # The refused peer's connection is closed: it reads the end.
        with anyio.fail_after(30):
            assert await conn.recv() == b""
        await conn.aclose()
        client.close()
        tg.cancel_scope.cancel()
    side.close()
