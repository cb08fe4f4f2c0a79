"""An agent's own credentials renewed under load: its certificate and key (a directory of PEM
files) are replaced five times while ten streams are in flight; every stream's data arrives
whole (sha256), new handshakes present the newest certificate, and a broken file keeps the
credentials in force."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.abc
import pytest

from paraconnect.pki import load_credentials
from paraconnect.tunnel import Agent, Connector, Endpoint, Program

from .helpers_tunnel import Pki, echo_command, make_pki

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

STREAMS = 10
RENEWALS = 5
CHUNK = 256 * 1024


def _chunk(stream: int, index: int) -> bytes:
    return hashlib.shake_256(f"{stream}/{index}".encode()).digest(CHUNK)


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - the agent's files have no event to wait on
        await anyio.sleep(0.05)


async def _presented_serial(pki: Pki, addr: Endpoint) -> int:
    """The serial of the certificate the agent shows a new connection."""
    connector = Connector(pki.client, addr, "127.0.0.1:0")
    async with anyio.create_task_group() as tg:
        await tg.start(connector.run)
        peer = connector.agent_peer
        assert peer is not None and peer.serial is not None
        tg.cancel_scope.cancel()
    return peer.serial


async def test_renewed_credentials_are_taken_while_streams_flow(
    home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "paraconnect")
    pki = make_pki(home)
    creds_dir = tmp_path / "node7"
    issued = pki.session.issue("server", "node7", unique_id=pki.uid, out=creds_dir)
    serials = [issued.cert.serial_number]
    agent = Agent(load_credentials(creds_dir), program=Program(echo_command()),
                  listen=["127.0.0.1:0"])  # fmt: skip
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(agent.run)
        local: Endpoint = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        streams: list[anyio.abc.SocketStream] = []
        digests = [hashlib.sha256() for _ in range(STREAMS)]
        for _ in range(STREAMS):
            stream = await anyio.connect_tcp(local.host, local.port)
            await stream.send(b"sha256\n")
            streams.append(stream)

        async def send_round(index: int) -> None:
            for i, stream in enumerate(streams):
                data = _chunk(i, index)
                await stream.send(data)
                digests[i].update(data)

        await send_round(0)
        for round_ in range(1, RENEWALS + 1):
            again = pki.session.issue("server", "node7", unique_id=pki.uid, out=creds_dir)
            serials.append(again.cert.serial_number)
            with anyio.fail_after(20):  # a bound for the test, not a timing assertion
                await _until(lambda: agent.side.creds.cert.serial_number == serials[-1])
            assert await _presented_serial(pki, addr) == serials[-1]
            await send_round(round_)

        # A broken certificate file: refused, logged; the renewed credentials stay in force.
        (creds_dir / "node7.crt").write_text("-----BEGIN CERTIFICATE-----\nbroken\n")
        with anyio.fail_after(20):
            await _until(
                lambda: any(
                    "keeping the credentials in force" in r.getMessage() for r in caplog.records
                )
            )
        assert agent.side.creds.cert.serial_number == serials[-1]
        assert await _presented_serial(pki, addr) == serials[-1]

        for i, stream in enumerate(streams):
            await stream.send_eof()
            answer = b""
            with anyio.fail_after(30):
                while not answer.endswith(b"\n"):
                    answer += await stream.receive()
            size = CHUNK * (RENEWALS + 1)
            assert answer == f"{digests[i].hexdigest()} {size}\n".encode(), (i, answer)
            await stream.aclose()
        tg.cancel_scope.cancel()
    renewed = [r.getMessage() for r in caplog.records if "renewed" in r.getMessage()]
    assert len(renewed) >= RENEWALS
