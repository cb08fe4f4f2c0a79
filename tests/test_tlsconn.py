"""TLSConnection: real TLS 1.3 handshakes over loopback TCP, both roles, and every way a peer
can be refused or misbehave."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from paraconnect.errors import NetworkError, ParaconnectError, ProtocolError, TrustError
from paraconnect.pki import Role, Store, load_credentials
from paraconnect.tls import client_context, server_context
from paraconnect.tunnel._tlsconn import TLSConnection

from .helpers_tunnel import tcp_pair

T = TypeVar("T")
pytestmark = pytest.mark.timeout(60)


@dataclass
class Pki:
    store: Store
    server: ssl.SSLContext
    client: ssl.SSLContext
    session_id: str


def _pki(root: Path, name: str) -> Pki:
    st = Store(root)
    s = st.create_session(name)
    s.issue("server", "srv")
    s.issue("client", "cli")
    return Pki(
        st,
        server_context(load_credentials(name, role="server", store=st)),
        client_context(load_credentials(name, role="client", store=st)),
        s.id,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _pki(tmp_path_factory.mktemp("home"), "t")


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _pki(tmp_path_factory.mktemp("other"), "other")


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(30):
            return await coro

    return asyncio.run(bounded())


async def both(
    server: Callable[[], Awaitable[TLSConnection]], client: Callable[[], Awaitable[TLSConnection]]
) -> tuple[TLSConnection | BaseException, TLSConnection | BaseException]:
    res = await asyncio.gather(server(), client(), return_exceptions=True)
    return res[0], res[1]


async def connect(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> tuple[TLSConnection | BaseException, TLSConnection | BaseException]:
    c, s = tcp_pair()
    return await both(
        lambda: TLSConnection.handshake(s, server_ctx, server_side=True, timeout=10),
        lambda: TLSConnection.handshake(c, client_ctx, server_side=False, timeout=10),
    )


def test_handshake_both_roles_peer_identity_and_data(pki: Pki) -> None:
    async def main() -> None:
        srv, cli = await connect(pki.server, pki.client)
        assert isinstance(srv, TLSConnection) and isinstance(cli, TLSConnection)
        # Each side sees what TLS proved about the other.
        assert srv.peer.identity is not None and cli.peer.identity is not None
        assert srv.peer.identity.role is Role.CLIENT and srv.peer.identity.name == "cli"
        assert cli.peer.identity.role is Role.SERVER and cli.peer.identity.name == "srv"
        assert srv.peer.identity.session_id == pki.session_id
        assert srv.peer.tls_version == "TLSv1.3"

        await cli.send(b"hello " * 10000)
        got = await srv.recv_exactly(60000)
        assert got == b"hello " * 10000
        await srv.send(b"x")
        assert await cli.recv() == b"x"
        # Half-close: the client ends its side, the server still answers.
        await cli.send_eof()
        assert await srv.recv() == b""
        assert await srv.recv() == b""
        await srv.send(b"after eof")
        assert await cli.recv_exactly(9) == b"after eof"
        await srv.send_eof()
        assert await cli.recv() == b""
        assert (cli.bytes_out, srv.bytes_in, srv.bytes_out, cli.bytes_in) == (60000, 60000, 10, 10)
        await cli.aclose()
        await srv.aclose()
        assert cli.sock.fileno() == -1 and srv.sock.fileno() == -1

    run(main())


def test_reverse_roles_accepting_side_is_tls_client(pki: Pki) -> None:
    """Reverse connections: the side that accepted TCP runs the TLS client."""

    async def main() -> None:
        dialer, accepted = tcp_pair()
        srv, cli = await both(
            lambda: TLSConnection.handshake(dialer, pki.server, server_side=True),
            lambda: TLSConnection.handshake(accepted, pki.client, server_side=False),
        )
        assert isinstance(srv, TLSConnection) and isinstance(cli, TLSConnection)
        await srv.send(b"ping")
        assert await cli.recv_exactly(4) == b"ping"
        await cli.aclose()
        assert await srv.recv() == b""
        await srv.aclose()

    run(main())


def test_recv_exactly_early_eof_is_protocol_error(pki: Pki) -> None:
    async def main() -> None:
        srv, cli = await connect(pki.server, pki.client)
        assert isinstance(srv, TLSConnection) and isinstance(cli, TLSConnection)
        await cli.send(b"abc")
        await cli.send_eof()
        with pytest.raises(ProtocolError, match="after 3 of 10 expected bytes"):
            await srv.recv_exactly(10)
        await cli.aclose()
        await srv.aclose()

    run(main())


def test_other_session_refused_both_ways(pki: Pki, other: Pki) -> None:
    async def main() -> None:
        srv, cli = await connect(pki.server, other.client)
        # The client from another session does not trust our server...
        assert isinstance(cli, TrustError), cli
        assert "not signed by the session CA" in str(cli)
        # ...and the server is told so by the client's alert, in words.
        assert isinstance(srv, TrustError), srv
        assert "refused our certificate" in str(srv)

        # A server of another session presenting to our client, with the client trusting it
        # (same context, so only the server can refuse).
        srv2, cli2 = await connect(other.server, pki.client)
        assert isinstance(cli2, TrustError)
        assert "not signed by the session CA" in str(cli2)
        assert isinstance(srv2, TrustError)

    run(main())


def test_client_certificate_of_other_session_refused_by_server(
    pki: Pki, other: Pki, tmp_path: Path
) -> None:
    """The server refuses the client's certificate; under TLS 1.3 the client learns it on its
    first read, not from the handshake."""
    # A client that trusts our CA (so only the server can refuse) but presents a certificate
    # from `other`.
    creds = load_credentials("other", role="client", store=other.store)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(creds.cert_pem() + creds.key_pem())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_cert_chain(chain)
    ca = pki.store.open_session("t").ca_cert
    ctx.load_verify_locations(cadata=ca.public_bytes(Encoding.PEM).decode())

    async def main() -> None:
        srv, cli = await connect(pki.server, ctx)
        assert isinstance(srv, TrustError), srv
        assert "not signed by the session CA" in str(srv)
        assert "\n" not in str(srv)
        if isinstance(cli, TLSConnection):
            with pytest.raises(TrustError, match="refused our certificate"):
                await cli.recv()
            await cli.aclose()
        else:
            assert isinstance(cli, TrustError | NetworkError)

    run(main())


def test_revoked_client_refused(tmp_path: Path) -> None:
    st = Store(tmp_path / "home")
    s = st.create_session("r")
    s.issue("server", "srv")
    s.issue("client", "alice")
    alice = client_context(load_credentials("r", role="client", store=st))
    s.revoke("alice")
    # Fresh contexts read the new revocation list.
    server = server_context(load_credentials("r", role="server", store=st))

    async def main() -> None:
        srv, cli = await connect(server, alice)
        assert isinstance(srv, TrustError), srv
        assert "revoked" in str(srv)
        if isinstance(cli, TLSConnection):
            with pytest.raises(TrustError, match="our certificate was revoked"):
                await cli.recv()
            await cli.aclose()
        else:
            assert isinstance(cli, TrustError)

    run(main())


def test_revoked_server_refused(tmp_path: Path) -> None:
    st = Store(tmp_path / "home")
    s = st.create_session("r")
    s.issue("server", "srv")
    s.issue("client", "cli")
    server = server_context(load_credentials("r", role="server", store=st))
    s.revoke("srv")
    client = client_context(load_credentials("r", role="client", store=st))

    async def main() -> None:
        srv, cli = await connect(server, client)
        assert isinstance(cli, TrustError), cli
        assert "peer certificate was revoked" in str(cli)
        assert isinstance(srv, TrustError)
        assert "revoked" in str(srv)

    run(main())


@pytest.mark.parametrize("server_side", [True, False])
def test_handshake_timeout_on_silent_peer(pki: Pki, server_side: bool) -> None:
    ctx = pki.server if server_side else pki.client

    async def main() -> None:
        ours, silent = tcp_pair()
        with silent, pytest.raises(NetworkError, match=r"timed out after 0\.3 s"):
            await TLSConnection.handshake(ours, ctx, server_side=server_side, timeout=0.3)
        assert ours.fileno() == -1

    run(main())


def _client_hello(ctx: ssl.SSLContext) -> bytes:
    bio_in, bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(bio_in, bio_out, server_side=False)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return bio_out.read()


def test_handshake_timeout_on_half_sent_client_hello(pki: Pki) -> None:
    hello = _client_hello(pki.client)
    assert len(hello) > 100

    async def main() -> None:
        ours, peer = tcp_pair()
        with peer:
            peer.sendall(hello[: len(hello) // 2])
            with pytest.raises(NetworkError, match="timed out"):
                await TLSConnection.handshake(ours, pki.server, server_side=True, timeout=0.3)

    run(main())


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00" * 64, b"\x16\x03\x01\xff\xff" + b"A" * 300],
)
def test_garbage_from_client_is_a_clean_error(pki: Pki, garbage: bytes) -> None:
    async def main() -> None:
        ours, peer = tcp_pair()
        with peer:
            peer.sendall(garbage)
            with pytest.raises(ParaconnectError) as info:
                await TLSConnection.handshake(ours, pki.server, server_side=True, timeout=5)
        assert isinstance(info.value, ProtocolError | NetworkError)
        assert "\n" not in str(info.value)
        assert isinstance(info.value.__cause__, ssl.SSLError | OSError)

    run(main())


def test_garbage_from_server_is_a_clean_error(pki: Pki) -> None:
    async def main() -> None:
        ours, peer = tcp_pair()
        with peer:
            peer.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n" * 10)
            with pytest.raises(ProtocolError, match="does not speak TLS"):
                await TLSConnection.handshake(ours, pki.client, server_side=False, timeout=5)

    run(main())


def test_peer_closing_during_handshake_is_network_error(pki: Pki) -> None:
    hello = _client_hello(pki.client)

    async def main() -> None:
        ours, peer = tcp_pair()
        peer.sendall(hello[:20])
        peer.close()
        with pytest.raises(NetworkError, match="closed the connection during the handshake"):
            await TLSConnection.handshake(ours, pki.server, server_side=True, timeout=5)

    run(main())


def test_reset_during_recv_is_network_error(pki: Pki) -> None:
    async def main() -> None:
        srv, cli = await connect(pki.server, pki.client)
        assert isinstance(srv, TLSConnection) and isinstance(cli, TLSConnection)
        cli.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        cli.sock.close()
        with pytest.raises(NetworkError, match="reset"):
            await srv.recv()
        await srv.aclose()

    run(main())


def test_interoperates_with_blocking_sslsocket(pki: Pki) -> None:
    """A peer built on Python's own SSLSocket (not this module) sees the same bytes."""
    ours, theirs = tcp_pair()
    got: list[bytes] = []

    def peer() -> None:
        with pki.client.wrap_socket(theirs) as tls:
            tls.sendall(b"q" * 100_000)
            buf = b""
            while len(buf) < 5:
                buf += tls.recv(5)
            got.append(buf)
            tls.unwrap()

    th = threading.Thread(target=peer)
    th.start()

    async def main() -> None:
        srv = await TLSConnection.handshake(ours, pki.server, server_side=True)
        assert await srv.recv_exactly(100_000) == b"q" * 100_000
        await srv.send(b"reply")
        assert await srv.recv() == b""
        await srv.send_eof()
        await srv.aclose()

    run(main())
    th.join(10)
    assert got == [b"reply"]


def test_cancelled_recv_leaves_no_reader(pki: Pki) -> None:
    async def main() -> None:
        srv, cli = await connect(pki.server, pki.client)
        assert isinstance(srv, TLSConnection) and isinstance(cli, TLSConnection)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await srv.recv()
        # The connection is still usable after a cancelled read.
        await cli.send(b"later")
        assert await srv.recv() == b"later"
        await cli.aclose()
        await srv.aclose()

    run(main())


def test_send_eof_keeps_data_already_received(pki: Pki) -> None:
    """Half-closing while the peer's data sits unread (decrypted in OpenSSL, and as whole
    records in the incoming BIO) must lose nothing: OpenSSL's shutdown refuses to run over
    application data unless it is set aside first."""

    async def main() -> None:
        srv, cli = await connect(pki.server, pki.client)
        assert isinstance(srv, TLSConnection) and isinstance(cli, TLSConnection)
        data = bytes(range(256)) * 400
        await srv.send(data)
        await srv.send_eof()
        await asyncio.sleep(0.05)  # let all of it arrive, so one read takes it into the BIO
        first = await cli.recv(10)
        await cli.send_eof()
        rest = await cli.recv_exactly(len(data) - len(first))
        assert first + rest == data
        assert await cli.recv() == b""
        assert await srv.recv() == b""
        await cli.aclose()
        await srv.aclose()

    run(main())
