"""The agent's one dispatch of control messages, over a real mutual-TLS control channel: its
info first, ping answered, an unknown type and a message of the other direction answered with
an error, a malformed phone_home refused naming what is wrong, a malformed revocation list
ignored without losing the channel."""

from __future__ import annotations

import socket

import anyio
import pytest

from paraconnect.pki import Role
from paraconnect.tunnel import Agent, Program, Purpose, Side
from paraconnect.tunnel._hello import read_message, write_frame
from paraconnect.tunnel._messages import Error, Info, Pong, decode

from .helpers_tunnel import Pki, echo_command

pytestmark = [pytest.mark.timeout(90)]


@pytest.mark.anyio
async def test_the_agent_answers_each_control_message_as_its_type_says(pki: Pki) -> None:
    agent = Agent(pki.server, program=Program(echo_command()), listen=["127.0.0.1:0"])
    client = Side(pki.client, Role.CLIENT, accounting=False)
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(agent.run)
        sock = socket.create_connection((addr.host, addr.port))
        conn, _hello = await client.establish(sock, server_side=False, purpose=Purpose.CONTROL)

        async def ask(obj: dict[str, object]) -> object:
            await write_frame(conn, obj)
            with anyio.fail_after(30):
                reply = await read_message(conn)
            assert reply is not None
            return decode(reply)

        with anyio.fail_after(30):
            first = await read_message(conn)
        assert first is not None
        info = decode(first)
        # Its info also says how the program's leg is protected (`debug server` reports it).
        assert isinstance(info, Info) and (info.server_id, info.connect_id) == ("srv", None)
        assert info.leg is not None and info.leg.startswith("private network namespace"), info
        assert await ask({"type": "ping"}) == Pong()
        assert await ask({"type": "reboot"}) == Error("unknown 'reboot'")
        assert await ask({"type": "open", "channel": "c" * 32}) == Error("unknown 'open'")
        reply = await ask({"type": "phone_home", "host": "127.0.0.1", "port": "7000"})
        assert reply == Error("a phone_home message needs a host and a port")
        # A malformed list is ignored (no answer), and the channel still serves.
        await write_frame(conn, {"type": "crl", "pem": "x", "part": 3, "parts": 2})
        await write_frame(conn, {"type": "policy", "signed": 7})
        assert await ask({"type": "ping"}) == Pong()
        await conn.aclose()
        client.close()
        tg.cancel_scope.cancel()
