"""The relay's steady state on a C thread of its own (`_crelay.c`, `_offloop`): a relay that
lives moves there and back without losing a byte or a count, leaves no thread or descriptor
behind, answers what a peer nobody here wrote (openssl s_client) asks of it, and refuses a forged
record in the same words as the relay on the loop.  `test_splice.py` runs every relay test both
ways as well."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from paraconnect.pki import Credentials, Store, load_credentials
from paraconnect.tls import client_context, server_context
from paraconnect.tunnel import _offloop, _splice
from paraconnect.tunnel._splice import SpliceResult, splice
from paraconnect.tunnel._tlsconn import TLSConnection

from .helpers_tunnel import tcp_pair

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Credentials]:
    store = Store(tmp_path_factory.mktemp("home"))
    session = store.create_session("t")
    session.issue("server", "srv")
    session.issue("client", "cli")
    return {role: load_credentials("t", role=role, store=store) for role in ("server", "client")}


async def _rig(
    creds: dict[str, Credentials],
) -> tuple[TLSConnection, TLSConnection, socket.socket, socket.socket]:
    """(near TLS, far TLS, near plain, far plain): the splice goes between the two nears."""
    a, b = tcp_pair()
    near, far = await asyncio.gather(
        TLSConnection.handshake(a, server_context(creds["server"]), server_side=True),
        TLSConnection.handshake(b, client_context(creds["client"]), server_side=False),
    )
    near_plain, far_plain = tcp_pair()
    far_plain.setblocking(False)
    return near, far, near_plain, far_plain


def _blocked_signals(tid: int) -> int:
    """The signal mask of one of this process's threads (bit n-1: signal n)."""
    status = Path(f"/proc/self/task/{tid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("SigBlk:")).split()[1], 16)


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _recv_until(sock: socket.socket, want: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    buf = b""
    while not buf.endswith(want):
        chunk = await loop.sock_recv(sock, 4096)
        assert chunk, f"EOF before {want!r}"
        buf += chunk
    return buf


def test_the_c_relay_is_built_here_and_can_be_turned_off() -> None:
    assert _offloop.available(), "the C relay (_crelay.c) was not built: make builds it"
    code = "from paraconnect.tunnel import _offloop; print(_offloop.available())"
    env = {**os.environ, _offloop.ENV: "loop"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_a_relay_that_lives_moves_to_its_own_thread_and_leaves_nothing_behind(
    creds: dict[str, Credentials],
) -> None:
    """A connection that carries a request and its answer stays on the loop; one that goes on
    gets a thread, whose bytes count while it runs and after; when it ends (a FIN each way,
    taken back to the loop) the thread and every descriptor are gone."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        near, far, near_plain, far_plain = await _rig(creds)
        threads, fds = _threads(), _fds()
        tasks = set(os.listdir("/proc/self/task"))
        result = SpliceResult()
        task = asyncio.create_task(splice(near, near_plain, result=result))
        sent = 0
        for i in range(_splice.THREAD_AFTER + 4):
            msg = b"ping %d\n" % i
            await far.send(msg)
            assert await _recv_until(far_plain, msg) == msg
            await loop.sock_sendall(far_plain, b"pong\n")
            assert await far.recv(5) == b"pong\n"
            sent += len(msg)
            if i == 0:  # one exchange: still on the loop, and no C relay made for it
                assert result.relay is None
        assert result.relay is not None and result.relay.running
        assert _threads() == threads + 1
        # Signals stay Python's: the thread takes none (SIGINT, SIGTERM, SIGCHLD blocked).
        (tid,) = set(os.listdir("/proc/self/task")) - tasks
        blocked = _blocked_signals(int(tid))
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            assert blocked >> (sig - 1) & 1, f"{sig.name} not blocked on the relay thread"
        # Its bytes count while it runs (the accounting reads them every few seconds).
        assert result.counts() == (sent, 5 * (_splice.THREAD_AFTER + 4))
        far_plain.shutdown(socket.SHUT_WR)
        assert await far.recv() == b""
        await far.send(b"last\n")
        await far.send_eof()
        assert await _recv_until(far_plain, b"last\n") == b"last\n"
        assert await loop.sock_recv(far_plain, 10) == b""
        res = await task
        assert res.reason == "eof"
        assert (res.bytes_a_to_b, res.bytes_b_to_a) == (sent + 5, 5 * (_splice.THREAD_AFTER + 4))
        assert res.relay is None
        await far.aclose()
        far_plain.close()
        assert _threads() == threads
        assert _fds() == fds - 4  # the four sockets, and nothing the relay opened

    asyncio.run(main())


def test_a_key_update_the_peer_asks_for_is_answered_from_the_thread(
    creds: dict[str, Credentials], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """openssl s_client's `K` sends a KeyUpdate that asks for ours, while the relay is on its
    thread: its data after that comes under its new key, and ours goes out (OpenSSL sends it
    with our next record, as RFC 8446 allows) before the data, under our new key."""
    monkeypatch.setattr(_splice, "THREAD_AFTER", 0)
    cli = creds["client"]
    (tmp_path / "c.pem").write_bytes(cli.cert_pem())
    (tmp_path / "k.pem").write_bytes(cli.key_pem())
    (tmp_path / "k.pem").chmod(0o600)
    (tmp_path / "ca.pem").write_bytes(cli.ca_pem())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        proc = await asyncio.create_subprocess_exec(
            "openssl", "s_client", "-msg", "-connect", f"127.0.0.1:{listener.getsockname()[1]}",
            "-tls1_3", "-verify_return_error", "-cert", str(tmp_path / "c.pem"),
            "-key", str(tmp_path / "k.pem"), "-CAfile", str(tmp_path / "ca.pem"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        try:
            conn, _ = await loop.sock_accept(listener)
            near = await TLSConnection.handshake(
                conn, server_context(creds["server"]), server_side=True
            )
            near_plain, far_plain = tcp_pair()
            far_plain.setblocking(False)
            result = SpliceResult()
            task = asyncio.create_task(splice(near, near_plain, result=result))
            proc.stdin.write(b"before\n")
            await _recv_until(far_plain, b"before\n")
            assert result.relay is not None and result.relay.running
            out = b""

            async def printed(what: bytes) -> None:
                nonlocal out
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(20):  # a bound on a hang, not on speed
                        while what not in out:
                            chunk = await proc.stdout.read(4096)
                            assert chunk, out.decode(errors="replace")
                            out += chunk
                assert what in out, out.decode(errors="replace")[-2000:]

            # s_client takes a read from its stdin that starts with K as the command alone.
            proc.stdin.write(b"K\n")
            await printed(b">>> TLS 1.3, Handshake [length 0005], KeyUpdate")
            proc.stdin.write(b"after\n")  # under s_client's new key
            assert await _recv_until(far_plain, b"after\n") == b"after\n"
            await loop.sock_sendall(far_plain, b"answer\n")
            await printed(b"answer\n")
            # -msg: "<<<" is what s_client got.  Ours came before the data, as RFC 8446 4.6.3
            # wants, and the data under our new key.
            theirs = out.index(b"<<< TLS 1.3, Handshake [length 0005], KeyUpdate")
            assert theirs < out.index(b"answer\n")
            assert result.relay is not None and result.relay.running  # all on its thread
            proc.stdin.close()  # s_client says close_notify and goes: passed on as a FIN
            await proc.wait()
            with contextlib.suppress(ConnectionResetError):
                assert await loop.sock_recv(far_plain, 10) == b""
            far_plain.close()
            res = await task
            assert res.bytes_a_to_b == len(b"before\nafter\n")
            assert res.bytes_b_to_a == len(b"answer\n")
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            listener.close()

    asyncio.run(main())


@pytest.mark.parametrize("where", ["loop", "thread"])
def test_a_forged_record_is_refused_in_the_same_words_on_the_loop_and_the_thread(
    creds: dict[str, Credentials], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Raw bytes shaped as an application-data record, written straight onto the TCP
    connection by someone who does not hold the keys: the relay ends with the TLS error in
    words, and the plain peer sees the connection reset, wherever the record arrives."""
    if where == "loop":
        monkeypatch.setattr(_offloop, "_RELAY", None)
    else:
        monkeypatch.setattr(_splice, "THREAD_AFTER", 0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        near, far, near_plain, far_plain = await _rig(creds)
        result = SpliceResult()
        task = asyncio.create_task(splice(near, near_plain, result=result))
        await far.send(b"real\n")
        assert await _recv_until(far_plain, b"real\n") == b"real\n"
        assert (result.relay is not None and result.relay.running) == (where == "thread")
        far.sock.sendall(b"\x17\x03\x03\x00\x20" + bytes(range(32)))
        res = await task
        assert res.reason == (
            "tls error: TLS error with "
            f"{near.where}: decryption failed or bad record mac; the connection was dropped"
        )
        with contextlib.suppress(ConnectionResetError):
            assert await loop.sock_recv(far_plain, 10) == b""
        far_plain.close()
        far.sock.close()

    asyncio.run(main())


def test_a_relay_that_cannot_get_a_thread_stays_on_the_loop_and_loses_no_count(
    creds: dict[str, Credentials], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """pthread_create refused (a thread limit): the relay says so once and goes on on the loop.
    The refusal is a stand-in (the real C relay, whose start raises EAGAIN): exhausting this
    machine's threads as root, to make the real one fail, would take every process with it."""

    class NoThread:
        def __init__(self, real: object) -> None:
            self.real = real

        def start(self) -> None:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

        def __getattr__(self, name: str) -> object:
            return getattr(self.real, name)

    made = _offloop.relay_for
    monkeypatch.setattr(_offloop, "relay_for", lambda *a: NoThread(made(*a)))
    monkeypatch.setattr(_splice, "THREAD_AFTER", 0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        near, far, near_plain, far_plain = await _rig(creds)
        threads = _threads()
        result = SpliceResult()
        task = asyncio.create_task(splice(near, near_plain, result=result))
        for i in range(20):
            await far.send(b"%02d" % i)
            assert await _recv_until(far_plain, b"%02d" % i) == b"%02d" % i
        assert result.relay is None and _threads() == threads
        await loop.sock_sendall(far_plain, b"bye")
        assert await far.recv(3) == b"bye"
        far_plain.shutdown(socket.SHUT_WR)
        assert await far.recv() == b""
        await far.send_eof()
        res = await task
        assert (res.bytes_a_to_b, res.bytes_b_to_a, res.reason) == (40, 3, "eof")
        await far.aclose()
        far_plain.close()

    with caplog.at_level(logging.WARNING, "paraconnect.tunnel"):
        asyncio.run(main())
    said = [r.getMessage() for r in caplog.records if "no thread" in r.getMessage()]
    assert said == [
        "relay: no thread ([Errno 11] Resource temporarily unavailable); relaying on the event loop"
    ]
