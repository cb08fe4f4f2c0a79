"""The six seed use cases of the tunnel, end to end: real loopback sockets, real TLS 1.3, and
the echo/sha256 program run by the agent as a real subprocess on a private leg."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from paraconnect.tunnel import Agent, Connector, Endpoint, Home, Program, ReverseListener

from .helpers_tunnel import Pki, ask, echo_command, free_port, make_pki, pid_of, sha_check

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def _agent(pki: Pki, **kw: object) -> Agent:
    kw.setdefault("listen", ["127.0.0.1:0"])
    return Agent(pki.server, program=Program(echo_command()), **kw)  # type: ignore[arg-type]


async def test_1_forward_connection(pki: Pki) -> None:
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki).run)
        connector = Connector(pki.client, addr, "127.0.0.1:0")
        local = await tg.start(connector.run)
        assert await ask(local, "echo", b"hello through TLS") == b"hello through TLS"
        await sha_check(local, 3 * 1024 * 1024 + 17)
        assert connector.agent is not None and connector.agent.server_id == "srv"
        tg.cancel_scope.cancel()


async def test_1_forward_over_ipv6(pki: Pki) -> None:
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki, listen=["[::1]:0"]).run)
        assert addr.host == "::1"
        local = await tg.start(Connector(pki.client, addr, "[::1]:0").run)
        await sha_check(local, 100_000)
        tg.cancel_scope.cancel()


async def test_2_client_reconnects_server_keeps_running(pki: Pki) -> None:
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki).run)
        pids = []
        for _ in range(3):
            with anyio.CancelScope() as client_scope:
                async with anyio.create_task_group() as client:
                    local = await client.start(Connector(pki.client, addr, "127.0.0.1:0").run)
                    pids.append(await pid_of(local))
                    await sha_check(local, 50_000)
                    client_scope.cancel()
        assert len(set(pids)) == 1  # the same program served all three clients
        tg.cancel_scope.cancel()


async def test_3_friends_with_new_certificates_several_at_once(pki: Pki, home: Path) -> None:
    bob = pki.friend("bob", home, unique_id="bob-laptop")
    carol = pki.friend("carol", home, unique_id="carol-desktop")
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki).run)
        locals_ = [
            await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run),
            await tg.start(Connector(bob, addr, "127.0.0.1:0", unique_id="bob-laptop").run),
            await tg.start(Connector(carol, addr, "127.0.0.1:0", unique_id="carol-desktop").run),
        ]
        async with anyio.create_task_group() as at_once:
            for i, local in enumerate(locals_):
                for j in range(3):
                    at_once.start_soon(sha_check, local, 200_000 + i * 1000 + j, i * 10 + j)
        pids = {await pid_of(local) for local in locals_}
        assert len(pids) == 1
        tg.cancel_scope.cancel()


async def test_3_friend_with_a_copy_of_the_credentials_at_level_encrypt(home: Path) -> None:
    from paraconnect.pki import SecurityLevel, load_credentials

    pki = make_pki(home, "shared", SecurityLevel.ENCRYPT)
    # The friend gets a PEM directory copied from ours and runs on another machine.
    issued = pki.session.issue("client", "team", out=home / "copy")
    assert issued.files
    copy = load_credentials(home / "copy")
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki, level="encrypt").run)
        local = await tg.start(
            Connector(copy, addr, "127.0.0.1:0", level="encrypt", unique_id="friend-pc").run
        )
        await sha_check(local, 10_000)
        tg.cancel_scope.cancel()


async def test_4_reverse_connection(pki: Pki) -> None:
    async with anyio.create_task_group() as tg:
        listener = ReverseListener(pki.client, "127.0.0.1:0", "127.0.0.1:0")
        addr, local = await tg.start(listener.run)
        await tg.start(_agent(pki, listen=[], phone_home=[Home(addr, interval=0.05)]).run)
        await sha_check(local, 2 * 1024 * 1024)
        assert await ask(local, "echo", b"reverse") == b"reverse"
        link = await listener.wait_for_agent(5)
        assert link.hello.server_id == "srv"
        tg.cancel_scope.cancel()


async def test_5_server_phones_home_after_the_client_disconnects(pki: Pki) -> None:
    home_ep = Endpoint("127.0.0.1", free_port())
    async with anyio.create_task_group() as tg:
        agent = _agent(pki)
        [addr] = await tg.start(agent.run)
        pid = None
        with anyio.CancelScope() as client_scope:
            async with anyio.create_task_group() as client:
                connector = Connector(pki.client, addr, "127.0.0.1:0")
                local = await client.start(connector.run)
                pid = await pid_of(local)
                # Nothing listens at home yet: the agent must keep dialling until it does.
                await connector.request_phone_home(Home(home_ep, interval=0.05, deadline=30))
                client_scope.cancel()
        await anyio.sleep(0.3)  # several refused dials pass while nobody listens
        listener = ReverseListener(pki.client, home_ep, "127.0.0.1:0")
        _addr, local = await tg.start(listener.run)
        assert await pid_of(local) == pid  # the same server, now reached in reverse
        await sha_check(local, 500_000)
        tg.cancel_scope.cancel()


async def test_6_server_phones_a_friend(pki: Pki, home: Path) -> None:
    bob = pki.friend("bob", home, unique_id="bob-laptop")
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki).run)
        bob_listener = ReverseListener(bob, "127.0.0.1:0", "127.0.0.1:0", unique_id="bob-laptop")
        bob_addr, bob_local = await tg.start(bob_listener.run)
        with anyio.CancelScope() as alice_scope:
            async with anyio.create_task_group() as alice:
                connector = Connector(pki.client, addr, "127.0.0.1:0")
                local = await alice.start(connector.run)
                pid = await pid_of(local)
                await connector.request_phone_home(Home(bob_addr, interval=0.05))
                alice_scope.cancel()
        link = await bob_listener.wait_for_agent(10)
        assert link.hello.server_id == "srv"
        assert await pid_of(bob_local) == pid
        await sha_check(bob_local, 300_000)
        tg.cancel_scope.cancel()


async def test_6_reverse_listener_hands_the_server_to_a_friend(pki: Pki, home: Path) -> None:
    bob = pki.friend("bob", home, unique_id="bob-laptop")
    async with anyio.create_task_group() as tg:
        alice = ReverseListener(pki.client, "127.0.0.1:0", "127.0.0.1:0")
        alice_addr, alice_local = await tg.start(alice.run)
        bob_listener = ReverseListener(bob, "127.0.0.1:0", "127.0.0.1:0", unique_id="bob-laptop")
        bob_addr, bob_local = await tg.start(bob_listener.run)
        await tg.start(_agent(pki, listen=[], phone_home=[Home(alice_addr, interval=0.05)]).run)
        pid = await pid_of(alice_local)
        await alice.request_phone_home(Home(bob_addr, interval=0.05))
        await bob_listener.wait_for_agent(10)
        assert await pid_of(bob_local) == pid
        tg.cancel_scope.cancel()


async def test_level_encrypt_one_shared_certificate_serves_every_peer(home: Path) -> None:
    from paraconnect.errors import CredentialError
    from paraconnect.pki import SecurityLevel, load_credentials

    pki = make_pki(home, "shared", SecurityLevel.ENCRYPT)
    pki.session.issue("node", "everywhere")
    # A node certificate, on both ends: it acts as either role, and encrypt binds no node.
    # A client certificate stays a client at every level (issue 12, item 9).
    shared = load_credentials("shared", role="node", store=pki.store)
    with pytest.raises(CredentialError, match=r"client certificate .* cannot act as a server"):
        Agent(pki.client, program=Program(echo_command()), listen=["127.0.0.1:0"])
    async with anyio.create_task_group() as tg:
        agent = Agent(shared, program=Program(echo_command()), listen=["127.0.0.1:0"])
        [addr] = await tg.start(agent.run)
        local = await tg.start(Connector(shared, addr, "127.0.0.1:0").run)
        await sha_check(local, 10_000)
        tg.cancel_scope.cancel()


async def test_local_endpoint_on_a_unix_socket(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "local.sock"
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki).run)
        local = await tg.start(Connector(pki.client, addr, f"unix:{path}").run)
        assert local.path == str(path)
        assert path.stat().st_mode & 0o077 == 0  # only this user may even connect
        async with await anyio.connect_unix(path) as stream:
            await stream.send(b"echo\nover unix")
            await stream.send_eof()
            answer = b""
            with pytest.raises(anyio.EndOfStream):
                while True:
                    answer += await stream.receive()
        assert answer == b"over unix"
        tg.cancel_scope.cancel()


async def test_clients_learn_the_programs_connect_id(pki: Pki) -> None:
    import sys

    from .helpers_tunnel import ECHO

    command = [sys.executable, ECHO, "--port", "{port}", "--connect-id={connect_id}"]
    program = Program(command)
    assert program.connect_id is not None and program.connect_id > 0
    async with anyio.create_task_group() as tg:
        listener = ReverseListener(pki.client, "127.0.0.1:0", "127.0.0.1:0")
        home_addr, rlocal = await tg.start(listener.run)
        agent = Agent(
            pki.server,
            program=program,
            listen=["127.0.0.1:0"],
            phone_home=[Home(home_addr, interval=0.05)],
        )
        [addr] = await tg.start(agent.run)
        connector = Connector(pki.client, addr, "127.0.0.1:0")
        local = await tg.start(connector.run)
        assert connector.connect_id == program.connect_id
        assert int(await ask(local, "connect_id")) == program.connect_id
        link = await listener.wait_for_agent(10)
        assert link.connect_id == program.connect_id
        assert int(await ask(rlocal, "connect_id")) == program.connect_id
        tg.cancel_scope.cancel()
