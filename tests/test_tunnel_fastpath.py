"""The product path's shortcuts keep their promises: a dialler about to relay sends its hello,
its yes and its first bytes in one write (and its hello at once when it has none), the
acceptor holds it to what it demanded, and the sockets an agent connects to its
program itself are the program namespace's, never the host's."""

from __future__ import annotations

import socket
import sys

import anyio
import pytest

from paraconnect.errors import NetworkError, TrustError
from paraconnect.pki import Role
from paraconnect.tunnel import Agent, Connector, Endpoint, Program
from paraconnect.tunnel._leg import connect_endpoint
from paraconnect.tunnel._secure import Side
from paraconnect.tunnel._tlsconn import TLSConnection

from .helpers_tunnel import Pki, ask, echo_command, tcp_pair

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

# A program that speaks first: it greets each client and closes, never reading.
GREETER = r"""
import socket, sys
srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    conn, _ = srv.accept()
    conn.sendall(b"hello from the program\n")
    conn.close()
"""


async def test_a_leading_dialler_sends_hello_yes_and_first_bytes_in_one_write(pki: Pki) -> None:
    """The acceptor finishes its hello and holds the first bytes with nothing more from the
    dialler: no second write, no relay started (before, it waited a round trip more for the
    dialler's yes, which went with the relay's first data)."""
    server = Side(pki.server, Role.SERVER, server_id="srv", accounting=False)
    client = Side(pki.client, Role.CLIENT, accounting=False)
    dial_sock, accept_sock = tcp_pair()
    accepted: list[TLSConnection] = []
    done = anyio.Event()
    asked: list[int] = []

    async def accept() -> None:
        conn, _hello = await server.establish(accept_sock, server_side=True)
        assert isinstance(conn, TLSConnection)
        accepted.append(conn)
        done.set()

    def lead() -> bytes:
        asked.append(1)
        return b"first bytes"

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(accept)
            conn, hello = await client.establish(dial_sock, server_side=False, lead=lead)
            assert isinstance(conn, TLSConnection) and hello.server_id == "srv"
            assert asked == [1]
            with anyio.fail_after(5):
                await done.wait()
                [theirs] = accepted
                assert await theirs.recv_exactly(11) == b"first bytes"
            assert conn._out.pending == 0  # nothing held back for later
            await theirs.aclose()
            await conn.aclose()
            tg.cancel_scope.cancel()
    finally:
        server.close()
        client.close()


async def test_an_acceptor_refuses_a_leading_dialler_that_wants_another_server(pki: Pki) -> None:
    """The dialler said yes before it saw the acceptor's hello; what that hello would have
    told (which server) it demanded instead, and the acceptor holds itself to it: refused,
    both sides told why, and its first bytes never handed on."""
    server = Side(pki.server, Role.SERVER, server_id="srv", accounting=False)
    client = Side(pki.client, Role.CLIENT, accounting=False)
    dial_sock, accept_sock = tcp_pair()
    refusals: list[str] = []

    async def accept() -> None:
        with pytest.raises(TrustError) as info:
            await server.establish(accept_sock, server_side=True)
        refusals.append(str(info.value))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(accept)
            with pytest.raises(TrustError) as info:
                await client.establish(
                    dial_sock, server_side=False, expect_server_id="other", lead=lambda: b"secret"
                )
            assert "wants server 'other'; this is 'srv'" in str(info.value)
    finally:
        server.close()
        client.close()
    [refusal] = refusals
    assert "wants server 'other'; this is 'srv'" in refusal


async def test_a_program_that_speaks_first_reaches_a_client_that_never_writes(pki: Pki) -> None:
    """Nothing to send from the local side: the dialler's hello and yes go out at once without
    any bytes, or the agent would wait for them until the hello timed out and the client would
    see nothing."""
    program = Program([sys.executable, "-c", GREETER, "{port}"])
    agent = Agent(pki.server, program=program, listen=["127.0.0.1:0"], accounting=False)
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(agent.run)
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0", accounting=False).run)
        for _ in range(3):
            with anyio.fail_after(5):  # well under the 10 s hello timeout
                async with await anyio.connect_tcp(local.host, local.port) as stream:
                    got = b""
                    while not got.endswith(b"\n"):
                        got += await stream.receive()
            assert got == b"hello from the program\n"
        tg.cancel_scope.cancel()


async def test_the_agents_spare_sockets_live_in_the_programs_namespace(pki: Pki) -> None:
    """The agent connects spare sockets to 127.0.0.1:PORT itself: made anywhere but in the
    program's namespace, they would reach whatever listens on that port of the host (another
    user's program).  A port that listens on the host only must be unreachable from them."""
    program = Program(echo_command())
    agent = Agent(pki.server, program=program, listen=["127.0.0.1:0"], accounting=False)
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(agent.run)
        if "namespace" not in program.protection:
            pytest.fail(f"no private network namespace here: {program.protection}")
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0", accounting=False).run)
        assert await ask(local, "echo", b"through a spare") == b"through a spare"
        spares = program._spares
        assert spares is not None
        with socket.create_server(("127.0.0.1", 0)) as host_only:
            port = host_only.getsockname()[1]
            host_sock = await connect_endpoint(Endpoint("127.0.0.1", port))
            host_sock.close()  # the host's own sockets do reach it
            for _ in range(20):  # more than one batch from the broker
                spare = await spares.take()
                with pytest.raises(NetworkError, match="refused"):
                    await connect_endpoint(Endpoint("127.0.0.1", port), sock=spare)
        tg.cancel_scope.cancel()
