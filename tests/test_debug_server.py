"""`paraconnect debug server`: listen once, as `paraconnect listen` does for agents phoning
home, and explain what arrives; and the bind errors a listener meets."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from pathlib import Path

import anyio
import pytest

from paraconnect.debug import Report, Status, diagnose_server
from paraconnect.tunnel import Agent, Home, Program

from .helpers_cli import PARACONNECT
from .helpers_tunnel import Pki, echo_command, free_port, make_pki

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def _serve_once(pki: Pki, creds: str, peer: object, timeout: float = 10) -> Report:  # noqa: ASYNC109
    """Run diagnose_server on a free loopback port; `peer(port)` connects to it."""
    ready = anyio.Event()
    bound: list[int] = []

    def listening(port: int) -> None:
        bound.append(port)
        ready.set()

    result: list[Report] = []

    async with anyio.create_task_group() as tg:

        async def run() -> None:
            result.append(
                await diagnose_server("127.0.0.1:0", creds, timeout=timeout, on_listening=listening)
            )
            tg.cancel_scope.cancel()  # and whatever the peer started in `tg`

        tg.start_soon(run)
        await ready.wait()
        await peer(bound[0], tg)  # type: ignore[operator]
    return result[0]


async def test_agent_phoning_home_passes(pki: Pki) -> None:
    async def phone(port: int, tg: anyio.abc.TaskGroup) -> None:
        agent = Agent(
            pki.server,
            program=Program(echo_command()),
            phone_home=[Home.parse(f"127.0.0.1:{port}", 0.05)],
        )
        tg.start_soon(agent.run)

    report = await _serve_once(pki, "lab", phone)
    assert report.passed, report.render()
    assert report.step("arrival").status is Status.PASS
    assert report.step("answer").reason == "a TLS ClientHello arrived"
    assert report.step("peer-ca").status is Status.PASS
    assert "server 'srv'" in report.step("hello").reason


async def test_agent_of_another_session_phoning_home(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "elsewhere", "other")

    async def phone(port: int, tg: anyio.abc.TaskGroup) -> None:
        agent = Agent(
            other.server,
            program=Program(echo_command()),
            unique_id=other.uid,
            phone_home=[Home.parse(f"127.0.0.1:{port}", 0.05)],
        )
        tg.start_soon(agent.run)

    report = await _serve_once(pki, "lab", phone)
    # The agent (the TLS client here) checks our certificate first and sends an alert.
    step = report.step("accepted")
    assert step.status is Status.FAIL
    assert "UNKNOWN_CA" in step.reason and "belongs to another session" in step.reason
    assert "before it sends its own" in step.reason


async def test_plain_http_client_arrives(pki: Pki) -> None:
    async def get(port: int, tg: anyio.abc.TaskGroup) -> None:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await stream.receive()

    report = await _serve_once(pki, "lab", get)
    step = report.step("answer")
    assert step.status is Status.FAIL
    assert "HTTP client" in step.reason and "GET / HTTP/1.1" in step.reason


async def test_paraview_client_arrives(pki: Pki) -> None:
    async def pvclient(port: int, tg: anyio.abc.TaskGroup) -> None:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"<<<<\x01\x00\x00\x00\x00")  # what pvpython sends first
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await stream.receive()

    report = await _serve_once(pki, "lab", pvclient)
    step = report.step("answer")
    assert step.status is Status.FAIL
    assert "ParaView" in step.reason and "--local" in (step.fix or "")


async def test_silent_client(pki: Pki) -> None:
    held: list[socket.socket] = []

    async def silent(port: int, tg: anyio.abc.TaskGroup) -> None:
        held.append(socket.create_connection(("127.0.0.1", port)))

    report = await _serve_once(pki, "lab", silent, timeout=0.5)
    for s in held:
        s.close()
    step = report.step("answer")
    assert step.status is Status.FAIL and step.reason.startswith("silence")
    assert "waits for us to speak first" in step.reason


async def test_nobody_connects(pki: Pki) -> None:
    report = await diagnose_server("127.0.0.1:0", "lab", timeout=0.2)
    step = report.step("arrival")
    assert step.status is Status.FAIL and "nobody connected within 0.2 s" in step.reason
    assert "--phone-home" in (step.fix or "")


async def test_address_in_use(pki: Pki) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        report = await diagnose_server(f"127.0.0.1:{port}", "lab", timeout=1)
    step = report.step("bind")
    assert step.status is Status.FAIL and step.details["kind"] == "in-use"
    assert "already in use" in step.reason and f"sport = :{port}" in (step.fix or "")


async def test_not_an_address_of_this_host(pki: Pki) -> None:
    report = await diagnose_server(f"192.0.2.77:{free_port()}", "lab", timeout=1)  # TEST-NET-1
    step = report.step("bind")
    assert step.status is Status.FAIL and step.details["kind"] == "not-local"
    assert "not an address of this host" in step.reason


def test_cli_server_bind_error_json(pki: Pki, home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*PARACONNECT, "debug", "server", f"127.0.0.1:{port}", "--creds", "lab", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PARACONNECT_HOME": str(home), "PATH": "/usr/bin:/bin"},
        )
    assert proc.returncode == 1, proc
    data = json.loads(proc.stdout)
    [bind] = [s for s in data["steps"] if s["step"] == "bind"]
    assert bind["status"] == "FAIL" and "already in use" in bind["reason"]
