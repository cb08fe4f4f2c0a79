"""A flood of half-open connections (bare TCP connects that never speak TLS) against a listener
with few descriptors: the handshakes in progress per listener are capped, so the flood waits in
the kernel's backlog and the agent keeps descriptors for a good client's relay and its program
leg (issue 12).  Before the cap, every descriptor went to a half-open handshake and the good
client's data connection failed."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from paraconnect.pki import Session
from paraconnect.tunnel import parse_endpoint

from .helpers_cli import Proc, procs_fixture  # noqa: F401 - the fixture `procs`
from .helpers_robust import enrol_tls, recv_frame, running_hub
from .helpers_tunnel import ECHO, Pki, ask

pytestmark = pytest.mark.timeout(120)

FD_LIMIT = 128  # the cap (64) plus what the agent needs besides, with room to spare
FLOOD = 3000  # bounded: the flood ends on its own


class Flood:
    """Bare TCP connects to `address`, one every 2 ms, held open until stop()."""

    def __init__(self, host: str, port: int, most: int = FLOOD) -> None:
        self.address = (host, port)
        self.most = most
        self.socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.socks) < self.most:
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(self.address)
            self.socks.append(sock)
            self._stop.wait(0.002)

    def start(self, at_least: int) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while len(self.socks) < at_least and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.socks:
            sock.close()


@pytest.fixture
def flood_stopper() -> Iterator[list[Flood]]:
    floods: list[Flood] = []
    yield floods
    for flood in floods:
        flood.stop()


@pytest.mark.anyio
async def test_a_flood_of_half_open_connections_leaves_room_for_a_good_client(
    pki: Pki, procs: object, flood_stopper: list[Flood]
) -> None:
    agent: Proc = procs(  # type: ignore[operator]
        "serve", "--creds", "lab", "--json", "--listen", "127.0.0.1:0",
        "--handshake-timeout", "1", "--", sys.executable, ECHO, "--port", "{port}",
    )  # fmt: skip
    [addr] = agent.ready()["listen"]  # type: ignore[misc]
    await anyio.run_process(
        ["prlimit", "--pid", str(agent.popen.pid), f"--nofile={FD_LIMIT}:{FD_LIMIT}"]
    )
    host, _, port = str(addr).rpartition(":")
    flood = Flood(host, int(port))
    flood_stopper.append(flood)
    flood.start(at_least=400)
    client = procs(  # type: ignore[operator]
        "connect", addr, "--creds", "lab", "--local", "127.0.0.1:0", "--json"
    )
    local = parse_endpoint(str(client.ready(timeout=90)["local"]))
    assert await ask(local, "echo", b"still here") == b"still here"
    assert agent.popen.poll() is None
    assert "Too many open files" not in agent.log.read_text()


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.anyio
async def test_a_flood_at_the_hub_enrolment_endpoint_with_few_descriptors(
    home: Path, session: Session, flood_stopper: list[Flood]
) -> None:
    """anyio's Listener.serve ended on the accept error (EMFILE), and the hub with it."""
    with running_hub(home, session.name) as hub:
        pid = hub.proc.pid
        await anyio.run_process(["prlimit", "--pid", str(pid), f"--nofile={FD_LIMIT}:{FD_LIMIT}"])
        before = _descriptors(pid)
        flood = Flood(*hub.enroll, most=400)
        flood_stopper.append(flood)
        flood.start(at_least=400)
        # Until the hub holds as many as the cap lets it (or, before the cap, died trying).
        deadline = time.monotonic() + 60
        while hub.alive() and time.monotonic() < deadline:
            if _descriptors(pid) >= before + 64:
                break
            await anyio.sleep(0.05)
        assert hub.serves()
        flood.stop()
        with enrol_tls(hub.enroll, hub.sni) as good:
            assert recv_frame(good)["type"] == "ca"
        assert "Too many open files" not in hub.log.read_text()
