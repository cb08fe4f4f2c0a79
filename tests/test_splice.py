"""splice: the relay between a TLS connection and a plain socket, over real loopback TCP.

Layout of every test (the splice runs in the middle)::

    far TLS peer  <== TLS ==>  near TLSConnection -- splice -- near plain  <-- TCP -->  far plain

with the splice's TLS side as the TLS server or the TLS client (reverse connections swap roles),
and every test twice: the relay on the event loop only, in Python, and with its steady state on
its C thread from the first byte (`_offloop`), which must behave the same in every way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
import pytest

from paraconnect.errors import NetworkError
from paraconnect.pki import Store, load_credentials
from paraconnect.tls import client_context, server_context
from paraconnect.tunnel import _offloop, _splice
from paraconnect.tunnel._splice import SpliceResult, splice
from paraconnect.tunnel._tlsconn import TLSConnection

from .helpers_tunnel import tcp_pair

T = TypeVar("T")
pytestmark = pytest.mark.timeout(60)
RST = b"\x01\0\0\0\0\0\0\0"  # struct linger {on, 0 s}: close() sends a reset


@pytest.fixture(autouse=True, params=["loop", "thread"])
def relay_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test with the relay on the loop only, and with its C thread from the start."""
    if request.param == "loop":
        monkeypatch.setattr(_offloop, "_RELAY", None)
    else:
        assert _offloop.available(), "the C relay (_crelay.c) was not built: make builds it"
        monkeypatch.setattr(_splice, "THREAD_AFTER", 0)
    return str(request.param)


@dataclass
class Ctx:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    st = Store(tmp_path_factory.mktemp("home"))
    s = st.create_session("t")
    s.issue("server", "srv")
    s.issue("client", "cli")
    return Ctx(
        server_context(load_credentials("t", role="server", store=st)),
        client_context(load_credentials("t", role="client", store=st)),
    )


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(45):
            return await coro

    return asyncio.run(bounded())


async def tls_pair(ctx: Ctx, near_is_server: bool) -> tuple[TLSConnection, TLSConnection]:
    """(near, far) connected TLS connections."""
    a, b = tcp_pair()
    near, far = await asyncio.gather(
        TLSConnection.handshake(a, ctx.server if near_is_server else ctx.client,
                                server_side=near_is_server),
        TLSConnection.handshake(b, ctx.client if near_is_server else ctx.server,
                                server_side=not near_is_server),
    )  # fmt: skip
    return near, far


@dataclass
class Rig:
    far_tls: TLSConnection
    far_plain: socket.socket
    near_tls: TLSConnection
    near_plain: socket.socket
    task: asyncio.Task[SpliceResult]
    result: SpliceResult


@contextlib.asynccontextmanager
async def rig(
    ctx: Ctx,
    near_is_server: bool,
    *,
    initial_to_plain: bytes = b"",
    initial_to_tls: bytes = b"",
    rcvbuf: int = 0,
) -> AsyncIterator[Rig]:
    near, far = await tls_pair(ctx, near_is_server)
    near_plain, far_plain = tcp_pair(rcvbuf)
    far_plain.setblocking(False)
    result = SpliceResult()
    task = asyncio.create_task(
        splice(near, near_plain, initial_to_plain=initial_to_plain,
               initial_to_tls=initial_to_tls, result=result)
    )  # fmt: skip
    r = Rig(far, far_plain, near, near_plain, task, result)
    try:
        yield r
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await far.aclose()
        far_plain.close()


async def plain_send(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)


async def plain_recv(sock: socket.socket, n: int = 1 << 20) -> bytes:
    return await asyncio.get_running_loop().sock_recv(sock, n)


async def plain_read_all(sock: socket.socket) -> bytes:
    parts = []
    while chunk := await plain_recv(sock):
        parts.append(chunk)
    return b"".join(parts)


async def tls_read_all(conn: TLSConnection) -> bytes:
    parts = []
    while chunk := await conn.recv(1 << 20):
        parts.append(chunk)
    return b"".join(parts)


def pattern(size: int, seed: int) -> bytes:
    """Incompressible-looking, position-dependent bytes, so reordering or loss changes the hash."""
    block = hashlib.sha256(str(seed).encode()).digest() * 4096  # 128 KiB
    out = bytearray()
    i = 0
    while len(out) < size:
        out += i.to_bytes(8, "little") + block[(i * 7919) % 4096 :][: 65536 - 8]
        i += 1
    return bytes(out[:size])


both_roles = pytest.mark.parametrize(
    "near_is_server", [True, False], ids=["tls-server", "tls-client"]
)


@both_roles
def test_full_duplex_64_mib_integrity(ctx: Ctx, near_is_server: bool) -> None:
    size = 64 << 20
    up, down = pattern(size, 1), pattern(size, 2)

    async def main() -> None:
        async with rig(ctx, near_is_server) as r:

            async def tls_side() -> bytes:
                async def writer() -> None:
                    await r.far_tls.send(up)
                    await r.far_tls.send_eof()

                w = asyncio.create_task(writer())
                data = await tls_read_all(r.far_tls)
                await w
                return data

            async def plain_side() -> bytes:
                async def writer() -> None:
                    await plain_send(r.far_plain, down)
                    r.far_plain.shutdown(socket.SHUT_WR)

                w = asyncio.create_task(writer())
                data = await plain_read_all(r.far_plain)
                await w
                return data

            got_at_tls, got_at_plain = await asyncio.gather(tls_side(), plain_side())
            res = await r.task
        assert hashlib.sha256(got_at_plain).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(got_at_tls).digest() == hashlib.sha256(down).digest()
        assert (res.bytes_a_to_b, res.bytes_b_to_a, res.reason) == (size, size, "eof")
        assert r.near_plain.fileno() == -1 and r.near_tls.sock.fileno() == -1

    run(main())


def test_integrity_against_blocking_sslsocket_peer(ctx: Ctx) -> None:
    """The far TLS end is Python's own SSLSocket in a thread, not this package's code."""
    size = 16 << 20
    up, down = pattern(size, 3), pattern(size, 4)
    near_sock, far_sock = tcp_pair()
    got: dict[str, bytes] = {}

    def far() -> None:
        with ctx.client.wrap_socket(far_sock) as tls:
            sender = threading.Thread(target=tls.sendall, args=(up,))
            sender.start()
            buf = bytearray()
            while chunk := tls.recv(1 << 16):
                buf += chunk
            sender.join()
            got["far"] = bytes(buf)

    th = threading.Thread(target=far)
    th.start()

    async def main() -> SpliceResult:
        near = await TLSConnection.handshake(near_sock, ctx.server, server_side=True)
        near_plain, far_plain = tcp_pair()
        far_plain.setblocking(False)
        with far_plain:
            task = asyncio.create_task(splice(near, near_plain))
            await plain_send(far_plain, down)
            far_plain.shutdown(socket.SHUT_WR)
            got["plain"] = b""
            while len(got["plain"]) < size:
                got["plain"] += await plain_recv(far_plain)
            far_plain.close()
            return await task

    res = run(main())
    th.join(20)
    assert got["plain"] == up
    assert got["far"] == down
    # The far peer closed TCP without close_notify: taken as its EOF, and counted in full.
    assert (res.bytes_a_to_b, res.bytes_b_to_a, res.reason) == (size, size, "eof")


@both_roles
def test_many_tiny_writes_both_ways(ctx: Ctx, near_is_server: bool) -> None:
    msgs = [bytes([i % 251]) * (1 + i % 97) for i in range(3000)]
    expected = b"".join(msgs)

    async def main() -> None:
        async with rig(ctx, near_is_server) as r:
            r.far_plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            async def from_tls() -> None:
                for i, m in enumerate(msgs):
                    await r.far_tls.send(m)
                    if i % 50 == 0:
                        await asyncio.sleep(0)  # let the splice see small segments
                await r.far_tls.send_eof()

            async def from_plain() -> None:
                for i, m in enumerate(msgs):
                    await plain_send(r.far_plain, m)
                    if i % 50 == 0:
                        await asyncio.sleep(0)
                r.far_plain.shutdown(socket.SHUT_WR)

            _, _, at_plain, at_tls = await asyncio.gather(
                from_tls(), from_plain(), plain_read_all(r.far_plain), tls_read_all(r.far_tls)
            )
            res = await r.task
        assert at_plain == expected and at_tls == expected
        assert res.reason == "eof"

    run(main())


@both_roles
def test_half_close_from_plain_side_keeps_other_way_open(ctx: Ctx, near_is_server: bool) -> None:
    async def main() -> None:
        async with rig(ctx, near_is_server) as r:
            await plain_send(r.far_plain, b"request")
            r.far_plain.shutdown(socket.SHUT_WR)
            # The TLS peer sees the data, then a clean EOF (close_notify)...
            assert await r.far_tls.recv_exactly(7) == b"request"
            assert await r.far_tls.recv() == b""
            assert not r.task.done()
            # ...and can still answer, at length, after it.
            answer = pattern(3 << 20, 5)
            await r.far_tls.send(answer)
            got = b""
            while len(got) < len(answer):
                got += await plain_recv(r.far_plain)
            assert got == answer
            await r.far_tls.send_eof()
            assert await plain_recv(r.far_plain) == b""
            res = await r.task
        assert res == SpliceResult(len(answer), 7, "eof")

    run(main())


@both_roles
def test_half_close_from_tls_side_keeps_other_way_open(ctx: Ctx, near_is_server: bool) -> None:
    async def main() -> None:
        async with rig(ctx, near_is_server) as r:
            await r.far_tls.send(b"request")
            await r.far_tls.send_eof()
            got = b""
            while len(got) < 7:
                got += await plain_recv(r.far_plain)
            assert got == b"request"
            assert await plain_recv(r.far_plain) == b""  # FIN forwarded
            assert not r.task.done()
            answer = pattern(3 << 20, 6)
            await plain_send(r.far_plain, answer)
            assert await r.far_tls.recv_exactly(len(answer)) == answer
            r.far_plain.shutdown(socket.SHUT_WR)
            assert await r.far_tls.recv() == b""
            res = await r.task
        assert res == SpliceResult(7, len(answer), "eof")

    run(main())


def test_close_notify_while_unread_tls_data_is_buffered(ctx: Ctx) -> None:
    """The plain peer half-closes while TLS data it has not read yet sits decrypted in the
    relay (its socket is full): nothing may be lost or refused (OpenSSL fails a shutdown that
    finds application data, unless the relay sets it aside)."""

    async def main() -> None:
        async with rig(ctx, True, rcvbuf=4096) as r:
            big = pattern(8 << 20, 7)
            sender = asyncio.create_task(r.far_tls.send(big))
            await asyncio.sleep(0.2)  # the plain side does not read: everything backs up
            r.far_plain.shutdown(socket.SHUT_WR)
            got = await plain_read_all_until(r.far_plain, len(big))
            await sender
            assert got == big
            assert await r.far_tls.recv() == b""
            await r.far_tls.send_eof()
            assert await plain_recv(r.far_plain) == b""
            res = await r.task
        assert res.reason == "eof"

    run(main())


async def plain_read_all_until(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await plain_recv(sock)
        assert chunk, "EOF before all data arrived"
        buf += chunk
    return bytes(buf)


@both_roles
def test_plain_reset_resets_tls_side(ctx: Ctx, near_is_server: bool) -> None:
    async def main() -> None:
        async with rig(ctx, near_is_server) as r:
            await plain_send(r.far_plain, b"x")
            assert await r.far_tls.recv_exactly(1) == b"x"
            r.far_plain.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
            r.far_plain.close()
            res = await r.task
            assert res.reason == "reset by plain peer"
            assert r.near_tls.sock.fileno() == -1 and r.near_plain.fileno() == -1
            with pytest.raises(NetworkError, match="reset"):
                await r.far_tls.recv()

    run(main())


@both_roles
def test_tls_reset_resets_plain_side(ctx: Ctx, near_is_server: bool) -> None:
    async def main() -> None:
        async with rig(ctx, near_is_server) as r:
            await r.far_tls.send(b"y")
            assert await plain_recv(r.far_plain) == b"y"
            r.far_tls.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
            r.far_tls.sock.close()
            res = await r.task
            assert res.reason == "reset by tls peer"
            assert r.near_tls.sock.fileno() == -1 and r.near_plain.fileno() == -1
            with pytest.raises(ConnectionResetError):
                await plain_recv(r.far_plain)

    run(main())


def test_reset_while_blocked_sending_is_noticed(ctx: Ctx) -> None:
    """The relay is stuck writing to a plain peer that does not read; the peer then resets."""

    async def main() -> None:
        async with rig(ctx, True) as r:
            sender = asyncio.create_task(r.far_tls.send(pattern(16 << 20, 8)))
            await asyncio.sleep(0.2)
            r.far_plain.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
            r.far_plain.close()
            res = await r.task
            assert res.reason == "reset by plain peer"
            with pytest.raises(NetworkError):
                await sender

    run(main())


@both_roles
def test_cancellation_closes_both(ctx: Ctx, near_is_server: bool) -> None:
    async def main() -> None:
        async with rig(ctx, near_is_server) as r:
            await r.far_tls.send(b"z")
            assert await plain_recv(r.far_plain) == b"z"
            r.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await r.task
            assert r.result.reason == "cancelled"
            assert r.result.bytes_a_to_b == 1
            assert r.near_tls.sock.fileno() == -1 and r.near_plain.fileno() == -1
            # Both far ends see their connection end.
            assert await plain_recv(r.far_plain) == b""
            assert await r.far_tls.recv() == b""

    run(main())


def test_anyio_cancel_scope_closes_both(ctx: Ctx) -> None:
    async def main() -> None:
        near, far = await tls_pair(ctx, True)
        near_plain, far_plain = tcp_pair()
        result = SpliceResult()
        with anyio.move_on_after(0.2) as scope:
            await splice(near, near_plain, result=result)
        assert scope.cancelled_caught
        assert result.reason == "cancelled"
        assert near.sock.fileno() == -1 and near_plain.fileno() == -1
        await far.aclose()
        far_plain.close()

    anyio.run(main)


def test_initial_bytes_go_first(ctx: Ctx) -> None:
    async def main() -> None:
        async with rig(ctx, True, initial_to_plain=b"early-", initial_to_tls=b"hello-") as r:
            await r.far_tls.send(b"late")
            await r.far_tls.send_eof()
            await plain_send(r.far_plain, b"world")
            r.far_plain.shutdown(socket.SHUT_WR)
            assert await plain_read_all(r.far_plain) == b"early-late"
            assert await tls_read_all(r.far_tls) == b"hello-world"
            res = await r.task
        assert res == SpliceResult(10, 11, "eof")

    run(main())


def test_refused_tls_client_ends_with_tls_error(tmp_path: Path) -> None:
    """A TLS client whose certificate the server refuses (TLS 1.3: it learns it only when
    reading) ends the splice with the reason in words, and closes the plain side."""
    st = Store(tmp_path / "home")
    s = st.create_session("r")
    s.issue("server", "srv")
    s.issue("client", "alice")
    alice = client_context(load_credentials("r", role="client", store=st))
    s.revoke("alice")
    server = server_context(load_credentials("r", role="server", store=st))

    async def main() -> None:
        a, b = tcp_pair()
        srv_task = asyncio.create_task(TLSConnection.handshake(b, server, server_side=True))
        near = await TLSConnection.handshake(a, alice, server_side=False)
        with pytest.raises(Exception, match="revoked"):
            await srv_task
        near_plain, far_plain = tcp_pair()
        with far_plain:
            res = await splice(near, near_plain)
            assert res.reason.startswith("tls error:") and "revoked" in res.reason
            far_plain.setblocking(False)
            with contextlib.suppress(ConnectionResetError):
                assert await plain_recv(far_plain) == b""

    run(main())


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_fd_leak_after_200_connections(ctx: Ctx) -> None:
    async def one(i: int) -> None:
        async with rig(ctx, i % 2 == 0) as r:
            await r.far_tls.send(b"ping")
            assert await plain_recv(r.far_plain) == b"ping"
            if i % 3 == 0:
                r.far_plain.shutdown(socket.SHUT_WR)
                await r.far_tls.send_eof()
                assert await r.far_tls.recv() == b""
                await r.task
            elif i % 3 == 1:
                r.far_plain.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
                r.far_plain.close()
                await r.task
            # else: cancelled by the rig on the way out

    async def main() -> None:
        await one(0)  # warm up whatever the loop opens once (selector, self-pipe)
        # Sockets earlier tests left to the garbage collector must not close mid-count.
        gc.collect()
        before = _fd_count()
        for start in range(0, 200, 20):
            await asyncio.gather(*(one(i) for i in range(start, start + 20)))
        assert _fd_count() == before

    run(main())


@both_roles
@pytest.mark.parametrize("behind", [0, 19_000], ids=["in-openssl", "in-bio-too"])
def test_data_read_past_the_hello_is_not_lost(ctx: Ctx, near_is_server: bool, behind: int) -> None:
    """The caller reads a short hello with recv_exactly, and the peer's first bytes of payload
    came in the same TLS record (left decrypted inside OpenSSL) and maybe right behind it (left
    in the BIO): splice must deliver them at once, before anything else."""
    payload = pattern(300_000, 9)
    first = 1000 + behind

    async def main() -> None:
        near, far = await tls_pair(ctx, near_is_server)
        await far.send(b"HELLO" + payload[:1000])
        if behind:
            await far.send(payload[1000:first])
        await asyncio.sleep(0.05)  # let it all arrive, so the first read takes in all of it
        assert await near.recv_exactly(5) == b"HELLO"
        near_plain, far_plain = tcp_pair()
        far_plain.setblocking(False)
        with far_plain:
            task = asyncio.create_task(splice(near, near_plain))
            # Nothing more is sent until this arrives: no later traffic may be needed to
            # flush what was already received.
            assert await plain_read_all_until(far_plain, first) == payload[:first]
            await far.send(payload[first:])
            assert await plain_read_all_until(far_plain, len(payload) - first) == payload[first:]
            await far.send_eof()
            far_plain.shutdown(socket.SHUT_WR)
            assert await plain_recv(far_plain) == b""
            assert await far.recv() == b""
            res = await task
        assert res == SpliceResult(len(payload), 0, "eof")
        await far.aclose()

    run(main())
