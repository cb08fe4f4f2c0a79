"""Robustness of the tunnel end to end: silent and garbage peers, handshake timeouts, resets on
either side, a listener restarted under a phoning server, descriptor exhaustion, no leaks, and
data integrity for large, tiny-write and full-duplex transfers."""

from __future__ import annotations

import gc
import hashlib
import os
import socket
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import anyio
import pytest

from paraconnect.tunnel import Agent, Connector, Endpoint, Home, Program, ReverseListener

from .helpers_tunnel import ECHO, Pki, ask, echo_command, pid_of, sha_check

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


def _agent(pki: Pki, **kw: object) -> Agent:
    kw.setdefault("listen", ["127.0.0.1:0"])
    return Agent(pki.server, program=Program(echo_command()), **kw)  # type: ignore[arg-type]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_silent_and_garbage_peers_do_not_starve_a_client(pki: Pki) -> None:
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki).run)  # the default 10 s handshake timeout
        silent = [socket.create_connection((addr.host, addr.port)) for _ in range(40)]
        garbage = []
        for i in range(20):
            s = socket.create_connection((addr.host, addr.port))
            s.sendall(b"GET / HTTP/1.0\r\n\r\n" if i % 2 else os.urandom(300))
            garbage.append(s)
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        async with anyio.create_task_group() as clients:
            for seed in range(5):
                clients.start_soon(sha_check, local, 100_000, seed)
        for s in silent + garbage:
            s.close()
        tg.cancel_scope.cancel()


async def test_handshake_timeout_drops_silent_and_half_sent_peers(pki: Pki) -> None:
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki, handshake_timeout=0.3).run)
        silent = socket.create_connection((addr.host, addr.port))
        half = socket.create_connection((addr.host, addr.port))
        half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(20))
        for s in (silent, half):
            s.settimeout(20)
            with s:
                # The agent closes them (no bytes, or a TLS alert, then EOF).
                data = await anyio.to_thread.run_sync(s.recv, 4096)
                while data:
                    data = await anyio.to_thread.run_sync(s.recv, 4096)
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        await sha_check(local, 1000)
        tg.cancel_scope.cancel()


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_resets_mid_stream_on_either_side_repeatedly(pki: Pki) -> None:
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki).run)
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        pid = await pid_of(local)
        for _ in range(10):
            # The local client resets in the middle of a transfer...
            s = socket.create_connection((local.host, local.port))
            s.sendall(b"sha256\n" + os.urandom(200_000))
            _reset(s)
            # ...and the program resets its side.
            answer = await ask(local, "reset")
            assert answer in (b"", b"resetting\n")
        await sha_check(local, 300_000)
        assert await pid_of(local) == pid
        tg.cancel_scope.cancel()


async def test_listener_restarted_while_the_server_phones_home(pki: Pki) -> None:
    async with anyio.create_task_group() as tg:
        first = ReverseListener(pki.client, "127.0.0.1:0", "127.0.0.1:0")
        with anyio.CancelScope() as first_scope:
            async with anyio.create_task_group() as inner:
                addr, local = await inner.start(first.run)
                await tg.start(_agent(pki, listen=[], phone_home=[Home(addr, interval=0.05)]).run)
                pid = await pid_of(local)
                first_scope.cancel()
        second = ReverseListener(pki.client, addr, "127.0.0.1:0")
        _addr, local = await tg.start(second.run)
        assert await pid_of(local) == pid
        tg.cancel_scope.cancel()


async def _settled(agent: Agent | None = None) -> tuple[int, int]:
    """Descriptor and task counts once they stop changing (closes finish asynchronously).
    The spare sockets `agent` holds for its program do not count: the namespace broker hands
    them over in batches, so how many are in hand at a given moment varies by one batch's
    refill, connections or no connections."""
    last = (-1, -1)
    with anyio.fail_after(30):
        while True:
            program = agent.program if agent is not None else None
            spares = program._spares if isinstance(program, Program) else None
            held = len(spares._pool) if spares is not None else 0
            now = (_fds() - held, len(anyio.get_running_tasks()))
            if now == last:
                return now
            last = now
            await anyio.sleep(0.1)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_no_leaked_descriptors_tasks_or_memory_after_600_connections(pki: Pki) -> None:
    """Both tunnel ends run in this process: 600 connections through them leave the same
    descriptors and tasks, and memory stops growing once the first 100 have warmed the pools.
    A leak of one SSL object or one buffer per connection (>= 30 KiB each) would add more
    than 15 MiB over the last 500; Python-level growth is checked tighter with tracemalloc."""
    before = _fds()
    async with anyio.create_task_group() as tg:
        agent = _agent(pki)
        [addr] = await tg.start(agent.run)
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        await ask(local, "pid")
        baseline = await _settled(agent)

        async def batches(count: int, offset: int) -> None:
            for batch in range(offset, offset + count):
                async with anyio.create_task_group() as clients:
                    for i in range(10):
                        clients.start_soon(ask, local, "echo", bytes([batch, i]))

        await batches(10, 0)
        await _settled(agent)
        gc.collect()
        tracemalloc.start()
        python_before = tracemalloc.get_traced_memory()[0]
        rss_before = _rss_kib()
        await batches(50, 10)
        assert await _settled(agent) == baseline
        gc.collect()
        python_growth = tracemalloc.get_traced_memory()[0] - python_before
        tracemalloc.stop()
        rss_growth = _rss_kib() - rss_before
        assert python_growth < 512 * 1024, f"Python heap grew {python_growth} B over 500 conns"
        assert rss_growth < 8 * 1024, f"RSS grew {rss_growth} KiB over 500 connections"
        tg.cancel_scope.cancel()
    assert _fds() == before


async def test_integrity_large_tiny_writes_and_full_duplex(pki: Pki) -> None:
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki).run)
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        await sha_check(local, 64 * 1024 * 1024 + 3)

        # Tiny writes: 3,000 one- to seven-byte writes.
        async with await anyio.connect_tcp(local.host, local.port) as stream:
            await stream.send(b"sha256\n")
            digest, total = hashlib.sha256(), 0
            for i in range(3000):
                piece = bytes([i % 251]) * (i % 7 + 1)
                digest.update(piece)
                total += len(piece)
                await stream.send(piece)
            await stream.send_eof()
            answer = b""
            with pytest.raises(anyio.EndOfStream):
                while True:
                    answer += await stream.receive()
        assert answer == f"{digest.hexdigest()} {total}\n".encode()

        # Full duplex: write 16 MiB while reading the echo at the same time.
        data = os.urandom(16 * 1024 * 1024)
        async with await anyio.connect_tcp(local.host, local.port) as stream:
            received = bytearray()

            async def writer() -> None:
                await stream.send(b"echo\n")
                for off in range(0, len(data), 1 << 20):
                    await stream.send(data[off : off + (1 << 20)])
                await stream.send_eof()

            async def reader() -> None:
                while True:
                    try:
                        received.extend(await stream.receive(1 << 20))
                    except anyio.EndOfStream:
                        return

            async with anyio.create_task_group() as duplex:
                duplex.start_soon(writer)
                duplex.start_soon(reader)
        assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
        tg.cancel_scope.cancel()


@pytest.mark.skipif(not os.path.exists("/usr/bin/prlimit"), reason="needs util-linux prlimit")
async def test_descriptor_exhaustion_recovers(pki: Pki, home: Path, tmp_path: Path) -> None:
    log = open(tmp_path / "agent.log", "w")  # noqa: SIM115, ASYNC230 - closed below
    cmd = [
        "prlimit", "--nofile=40:40", sys.executable, "-m", "paraconnect.cli", "serve",
        "--creds", "lab", "--listen", "127.0.0.1:0", "--json", "--handshake-timeout", "30",
        "--", sys.executable, ECHO, "--port", "{port}",
    ]  # fmt: skip
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, read from a thread
        cmd, stdout=subprocess.PIPE, stderr=log, text=True,
        env={**os.environ, "PARACONNECT_HOME": str(home)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await anyio.to_thread.run_sync(proc.stdout.readline)
        assert line, (tmp_path / "agent.log").read_text()
        import json

        [addr_text] = json.loads(line)["listen"]
        host, port = addr_text.rsplit(":", 1)
        addr = Endpoint(host, int(port))
        hogs = [socket.create_connection((host, int(port))) for _ in range(60)]
        await anyio.sleep(0.5)  # the agent runs out of descriptors and says so
        for s in hogs:
            s.close()
        async with anyio.create_task_group() as tg:
            local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
            await sha_check(local, 10_000)
            tg.cancel_scope.cancel()
        assert proc.poll() is None
        assert "Too many open files" in (tmp_path / "agent.log").read_text()
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_reverse_listener_survives_bad_peers(pki: Pki) -> None:
    async with anyio.create_task_group() as tg:
        listener = ReverseListener(pki.client, "127.0.0.1:0", "127.0.0.1:0", handshake_timeout=1)
        addr, local = await tg.start(listener.run)
        silent = [socket.create_connection((addr.host, addr.port)) for _ in range(10)]
        for payload in (b"GET / HTTP/1.1\r\n\r\n", os.urandom(500), b"\x16\x03\x01\x00\x05hello"):
            with socket.create_connection((addr.host, addr.port)) as bad:
                bad.sendall(payload)
        await tg.start(_agent(pki, listen=[], phone_home=[Home(addr, interval=0.05)]).run)
        await sha_check(local, 200_000)
        for s in silent:
            s.close()
        tg.cancel_scope.cancel()
