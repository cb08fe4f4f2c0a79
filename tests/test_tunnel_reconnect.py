"""A forward client follows its agent: when the agent goes away (stopped, restarted, a broken
network) the client says so, dials again with backoff, and carries data again, through the
same local endpoint, once an agent answers on that address."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from paraconnect.tunnel import Agent, Connector, Endpoint, Program

from .helpers_tunnel import echo_command, free_port, make_pki, pid_of

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_the_connector_reopens_the_control_channel_of_a_restarted_agent(home: Path) -> None:
    pki = make_pki(home)
    address = f"127.0.0.1:{free_port()}"
    changes: list[tuple[bool, str]] = []
    changed = anyio.Event()

    def on_control(up: bool, why: str) -> None:
        nonlocal changed
        changes.append((up, why))
        changed.set()
        changed = anyio.Event()

    async with anyio.create_task_group() as tg:
        first = anyio.CancelScope()

        async def agent(scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus) -> None:
            with scope:
                program = Program(echo_command())
                await Agent(pki.server, program=program, listen=[address]).run(
                    task_status=task_status
                )

        await tg.start(agent, first)
        connector = Connector(pki.client, address, "127.0.0.1:0", on_control=on_control)
        local: Endpoint = await tg.start(connector.run)
        before = await pid_of(local)

        waiting = changed
        first.cancel()  # the agent (and its program) stop
        with anyio.fail_after(20):  # bounds for the test, not timing assertions
            await waiting.wait()
        assert changes[-1][0] is False and "closed the control channel" in changes[-1][1]

        waiting = changed
        await tg.start(agent, anyio.CancelScope())  # a new agent on the same address
        with anyio.fail_after(30):
            await waiting.wait()
        assert changes[-1] == (True, f"control channel to {address} reopened")
        after = await pid_of(local)  # the same local endpoint reaches the new program
        assert after != before
        assert connector._control is not None and not connector._control.closed.is_set()
        tg.cancel_scope.cancel()
