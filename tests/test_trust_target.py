"""The agent refuses to forward a client's data to a target another user owns (the mutation
audit's survivor: tests/test_tunnel_leg.py asserts only that the client read nothing, which a
listener that never answers gives too).  Here the refusal itself is asserted: the agent's
accounting record of that data connection says why, and the other user's listener, which
reports every connection it accepts, never got one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest

from paraconnect.tunnel import Agent, Connector
from paraconnect.tunnel._accounting import Accounting, ConnRecord

from .helpers_tunnel import Pki, ask

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user"),
]
NOBODY = 65534

# Another user's program: reports its port, then one line per connection it accepts.
_FOREIGN = (
    "import socket; s=socket.create_server(('127.0.0.1',0)); "
    "print(s.getsockname()[1], flush=True)\n"
    "while True:\n c,_=s.accept(); print('accepted', flush=True); c.close()"
)


def _foreign() -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["/usr/bin/python3", "-c", _FOREIGN], user=NOBODY, group=NOBODY, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
    )  # fmt: skip


def _closed_data(home: Path) -> list[ConnRecord]:
    """The agent's records of data connections that have ended."""
    with Accounting.in_home(home, auto_rotate=False) as acc:
        records = acc.records()
    return [r for r in records if r.side == "server" and r.kind == "data" and r.end is not None]


@pytest.mark.anyio
async def test_a_target_of_another_user_is_refused_and_never_connected(
    pki: Pki, home: Path
) -> None:
    foreign = _foreign()
    try:
        assert foreign.stdout is not None
        port = int(await anyio.to_thread.run_sync(foreign.stdout.readline))
        async with anyio.create_task_group() as tg:
            agent = Agent(pki.server, target=f"127.0.0.1:{port}", listen=["127.0.0.1:0"])
            [addr] = await tg.start(agent.run)
            local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
            assert await ask(local, "pid") == b""
            # The agent's record of that data connection, once closed, says it was refused
            # and why (polled: the bound only stops the test).
            with anyio.fail_after(20):
                while not (done := _closed_data(home)):  # noqa: ASYNC110 - a database
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        [record] = done
        assert record.reason == (
            f"refused: --target 127.0.0.1:{port} is a program of user {NOBODY}, not of this "
            f"user ({os.getuid()}); refusing to forward clients' data there"
        ), record
    finally:
        foreign.kill()
        out, _err = foreign.communicate(timeout=10)
    # The refusal comes before any connect: the other user's program never saw one.
    assert "accepted" not in out, out
