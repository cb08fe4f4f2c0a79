"""RemoteView pointed at a port where paraconnect's renderer does not answer: real programs that
are not it (Python's HTTP server, Debian's pvserver) and a peer that echoes our hello back.  Each
fails in one line naming the port and what to do, at the hello, not at the view's timeout."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from paraconnect.errors import ParaconnectError
from paraconnect.render import RemoteView, RenderTimeout

pytestmark = pytest.mark.timeout(60)


def _wait_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 30) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if found := re.search(pattern, line):
            return found
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no line matching {pattern!r} from {proc.args!r}")


@pytest.fixture
def http_port(tmp_path: Path) -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    with proc:
        try:
            yield int(_wait_line(proc, r"port (\d+)").group(1))
        finally:
            proc.terminate()


@pytest.fixture
def pvserver_port(tmp_path: Path) -> Iterator[int]:
    proc = subprocess.Popen(
        ["pvserver", "--sp=0", "--no-mpi"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    with proc:
        try:
            yield int(_wait_line(proc, r"Accepting connection\(s\): \S+:(\d+)").group(1))
        finally:
            proc.kill()


@pytest.fixture
def echo_port() -> Iterator[int]:
    """Sends back whatever arrives: our own hello comes back as if it were the answer."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        # Unblocks accept() should the test not have connected.
        with (
            socket.create_connection(listener.getsockname()[:2])
            if thread.is_alive()
            else (socket.socket())
        ):
            pass
        thread.join(timeout=30)


@pytest.mark.parametrize("peer", ["http_port", "pvserver_port", "echo_port"])
def test_remote_view_on_another_program_fails_at_the_hello(
    peer: str, request: pytest.FixtureRequest
) -> None:
    port = request.getfixturevalue(peer)
    with pytest.raises(ParaconnectError) as caught:
        RemoteView(port=port, timeout=60)
    message = str(caught.value)
    # Found out from what the peer did, not from waiting out the view's 60 s.
    assert not isinstance(caught.value, RenderTimeout), message
    assert f"127.0.0.1:{port} is not paraconnect's render server" in message, message
    assert "srv.port" in message and "\n" not in message
