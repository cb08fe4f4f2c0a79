"""Who is refused, and how clearly: other sessions, revoked friends, wrong roles, copied
certificates; bad peers that must not stop a listener; the program behind the agent dying."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest

from paraconnect.errors import ConfigError, CredentialError, TrustError
from paraconnect.pki import SecurityLevel
from paraconnect.tunnel import (
    Agent,
    Connector,
    Home,
    Program,
    ProgramExited,
    ReverseListener,
    Side,
)

from .helpers_tunnel import Pki, ask, echo_command, make_pki, pid_of, sha_check

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def _agent(pki: Pki, **kw: object) -> Agent:
    kw.setdefault("listen", ["127.0.0.1:0"])
    program = kw.pop("program", None) or Program(echo_command())
    return Agent(pki.server, program=program, **kw)  # type: ignore[arg-type]


def _refusals(side: Side) -> list[dict[str, Any]]:
    """The refusals `side` itself reports from now on (its events, not its log)."""
    seen: list[dict[str, Any]] = []
    side.observers.append(lambda e, _exc: seen.append(e) if e["event"] == "refused" else None)
    return seen


async def _first(seen: list[dict[str, Any]]) -> dict[str, Any]:
    with anyio.fail_after(20):  # bounds the test only
        while not seen:  # noqa: ASYNC110 - appended by the side as it refuses
            await anyio.sleep(0.02)
    return seen[0]


async def test_client_of_another_session_is_refused_and_the_agent_goes_on(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = make_pki(tmp_path / "elsewhere", "other")
    async with anyio.create_task_group() as tg:
        agent = _agent(pki)
        refused = _refusals(agent.side)
        [addr] = await tg.start(agent.run)
        with (
            anyio.fail_after(20),
            pytest.raises(TrustError, match=r"refused|unknown ca|certificate"),
        ):
            await Connector(other.client, addr, "127.0.0.1:0", unique_id=other.uid).run()
        # The agent's own record of it: no identity got through, and why (under TLS 1.3 the
        # client checks the agent's certificate first, against its own session CA).
        event = await _first(refused)
        assert event["peer"] is None and event["session"] == pki.session.id, event
        assert "it says our certificate is not signed by a CA it trusts" in event["reason"], event
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        await sha_check(local, 10_000)
        tg.cancel_scope.cancel()
    assert any("refused connection" in r.getMessage() for r in caplog.records)


async def test_server_of_another_session_is_refused_by_the_client(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "elsewhere", "other")
    async with anyio.create_task_group() as tg:
        agent = _agent(other, unique_id=other.uid)
        refused = _refusals(agent.side)
        [addr] = await tg.start(agent.run)
        # The client's own verdict (not the agent's refusal relayed to it).
        with (
            anyio.fail_after(20),
            pytest.raises(
                TrustError, match="peer certificate is not signed by the session CA"
            ) as info,
        ):
            await Connector(pki.client, addr, "127.0.0.1:0").run()
        assert "refused our certificate" not in str(info.value)
        # And the agent saw that it was the client that refused it.
        event = await _first(refused)
        assert "refused our certificate" in event["reason"], event
        tg.cancel_scope.cancel()


async def test_revoked_friend_is_refused_from_the_next_connection(pki: Pki, home: Path) -> None:
    bob = pki.friend("bob", home, unique_id="bob-laptop")
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki).run)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as before:
                local = await before.start(
                    Connector(bob, addr, "127.0.0.1:0", unique_id="bob-laptop").run
                )
                await sha_check(local, 1000)
                scope.cancel()
        pki.session.revoke("bob")
        with anyio.fail_after(20), pytest.raises(TrustError, match="revoked"):
            await Connector(bob, addr, "127.0.0.1:0", unique_id="bob-laptop").run()
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        await sha_check(local, 1000)  # the others go on
        tg.cancel_scope.cancel()


async def test_client_certificate_cannot_serve_at_level_mutual(pki: Pki) -> None:
    with pytest.raises(CredentialError, match="cannot act as a server"):
        Agent(pki.client, program=Program(echo_command()), listen=["127.0.0.1:0"])


async def test_copied_node_certificate_is_refused_on_another_machine(pki: Pki) -> None:
    with pytest.raises(CredentialError, match="copied certificate"):
        Connector(pki.client, "127.0.0.1:1", "127.0.0.1:0", unique_id="another-machine")


async def test_a_listener_refuses_a_server_of_another_session(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "elsewhere", "other")
    async with anyio.create_task_group() as tg:
        listener = ReverseListener(pki.client, "127.0.0.1:0", "127.0.0.1:0", agent_wait=0.5)
        refused = _refusals(listener.side)
        addr, local = await tg.start(listener.run)
        intruder = Agent(
            other.server,
            program=Program(echo_command()),
            phone_home=[Home(addr, interval=0.05)],
            unique_id=other.uid,
        )
        await tg.start(intruder.run)
        # The listener's own refusal of the intruder (an event, not a fixed wait), then the
        # negative checks.
        event = await _first(refused)
        assert event["peer"] is None, event
        assert "it says our certificate is not signed by a CA it trusts" in event["reason"], event
        assert listener.agents == []
        assert await ask(local, "pid") == b""  # nobody to forward to: closed, nothing leaked
        tg.cancel_scope.cancel()


async def test_bad_peers_do_not_stop_the_agent(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki).run)
        silent = [socket.create_connection((addr.host, addr.port)) for _ in range(10)]
        for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00" * 100, b"\x16\x03\x01\xff"):
            with socket.create_connection((addr.host, addr.port)) as bad:
                bad.sendall(payload)
        half = socket.create_connection((addr.host, addr.port))
        half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # half a ClientHello
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        await sha_check(local, 200_000)
        for s in [*silent, half]:
            s.close()
        tg.cancel_scope.cancel()


async def test_program_dying_stops_the_agent_with_a_clear_message(pki: Pki) -> None:
    agent = _agent(pki)
    caught: list[ProgramExited] = []
    try:
        async with anyio.create_task_group() as tg:
            [addr] = await tg.start(agent.run)
            local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
            await ask(local, "die 7")
            await anyio.sleep(30)  # the agent's failure cancels this
    except* ProgramExited as group:
        caught += [e for e in group.exceptions if isinstance(e, ProgramExited)]
    [exc] = caught
    assert exc.returncode == 7
    assert "exited with status 7; the agent stops" in str(exc)
    assert "--restart on-failure" in str(exc)


async def test_program_restarted_on_failure_when_asked(pki: Pki) -> None:
    program = Program(echo_command(), restart="on-failure")
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki, program=program).run)
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        first = await pid_of(local)
        await ask(local, "die 5")
        second = first
        with anyio.fail_after(20):
            while second == first:
                try:
                    second = await pid_of(local)
                except AssertionError:
                    await anyio.sleep(0.05)  # between the death and the restart
        assert second != first
        tg.cancel_scope.cancel()


async def test_program_that_never_listens(pki: Pki) -> None:
    import sys

    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", "{port}"]
    never = Program(sleeper, ready_timeout=0.5)
    with pytest.raises(ProgramExited, match="did not listen"):
        await _agent(pki, program=never).run()
    crash = Program([sys.executable, "-c", "raise SystemExit(4)", "{port}"])
    with pytest.raises(ProgramExited, match="exited with status 4 before"):
        await _agent(pki, program=crash).run()


async def test_program_command_line_needs_one_placeholder() -> None:
    with pytest.raises(ConfigError, match="exactly one of"):
        Program(["echo-server", "--port", "8000"])
    with pytest.raises(ConfigError):
        Program([])


async def test_level_none_is_clear_text_loopback_only(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = make_pki(home, "plain", SecurityLevel.NONE)
    with pytest.raises(ConfigError, match="--insecure"):
        await Agent(pki.server, program=Program(echo_command()), listen=["0.0.0.0:0"]).run()
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki).run)
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        await sha_check(local, 100_000)
        tg.cancel_scope.cancel()
    assert any("CLEAR TEXT" in r.getMessage() for r in caplog.records)
    logging.getLogger("paraconnect.tunnel").info("done")


async def _next_pid(local: object, old: int) -> int:
    with anyio.fail_after(20):
        while True:
            try:
                pid = await pid_of(local)  # type: ignore[arg-type]
            except AssertionError:
                pid = old  # between the exit and the restart: nothing answers
            if pid != old:
                return pid
            await anyio.sleep(0.02)


async def test_restart_always_survives_any_number_of_clean_exits(pki: Pki) -> None:
    program = Program(echo_command(), restart="always", max_restarts=2)
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki, program=program).run)
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        pids = [await pid_of(local)]
        for _ in range(5):  # more than max_restarts: clean exits do not count
            await ask(local, "die 0")
            pids.append(await _next_pid(local, pids[-1]))
        assert len(set(pids)) == 6
        tg.cancel_scope.cancel()


async def test_repeated_quick_failures_give_up(pki: Pki) -> None:
    program = Program(echo_command(), restart="on-failure", max_restarts=2)
    caught: list[ProgramExited] = []
    try:
        async with anyio.create_task_group() as tg:
            [addr] = await tg.start(_agent(pki, program=program).run)
            local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
            pid = await pid_of(local)
            for _ in range(3):
                await ask(local, "die 3")
                pid = await _next_pid(local, pid)
            await anyio.sleep(30)  # the agent's failure cancels this
    except* ProgramExited as group:
        caught += [e for e in group.exceptions if isinstance(e, ProgramExited)]
    [exc] = caught
    assert "failing 3 times in a row; giving up" in str(exc)
    assert exc.returncode == 3


async def test_client_refuses_a_server_with_another_id(pki: Pki) -> None:
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki).run)
        with anyio.fail_after(20), pytest.raises(TrustError, match="not 'render-7'"):
            await Connector(pki.client, addr, "127.0.0.1:0", server_id="render-7").run()
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0", server_id="srv").run)
        await sha_check(local, 1000)
        tg.cancel_scope.cancel()


async def test_agent_with_pem_files_follows_a_copied_revocation_list(
    pki: Pki, home: Path, tmp_path: Path
) -> None:
    import shutil

    from paraconnect.pki import load_credentials

    node = tmp_path / "node"  # what the agent on a remote node holds: PEM files
    pki.session.issue("server", "remote", unique_id=pki.uid, out=node)
    bob = pki.friend("bob", home, unique_id="bob-laptop")
    agent = Agent(load_credentials(node), program=Program(echo_command()), listen=["127.0.0.1:0"])
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(agent.run)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as before:
                local = await before.start(
                    Connector(bob, addr, "127.0.0.1:0", unique_id="bob-laptop").run
                )
                await sha_check(local, 1000)
                scope.cancel()
        pki.session.revoke("bob")
        shutil.copy(pki.session.crl_path, node / "crl.pem")  # the owner copies the new CRL
        with anyio.fail_after(20), pytest.raises(TrustError, match="revoked"):
            await Connector(bob, addr, "127.0.0.1:0", unique_id="bob-laptop").run()
        tg.cancel_scope.cancel()
