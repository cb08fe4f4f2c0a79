"""A `paraconnect hub` subprocess for the robustness and fuzz tests: its control socket, its
enrolment port (read from its log, so no option of the hub is needed) and a check that it still
serves a good client."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from paraconnect.hub import HubClient

from .conftest import PARACONNECT

_ENROLL_RE = re.compile(r"enrolment endpoint on ([0-9.]+):(\d+)")


@dataclass
class HubProc:
    proc: subprocess.Popen[str]
    home: Path
    control: Path
    enroll: tuple[str, int]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def serves(self) -> bool:
        """A good client gets an answer (and the process is still the one we started)."""
        with HubClient(self.home, timeout=30) as hub:
            hub.request("servers")
        return self.alive()


def _wait_for(path: Path, pattern: re.Pattern[str], deadline: float) -> re.Match[str]:
    while time.monotonic() < deadline:
        found = pattern.search(path.read_text(errors="replace"))
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{pattern.pattern!r} never appeared in {path}")


@contextmanager
def running_hub(home: Path, *sessions: str) -> Iterator[HubProc]:
    env = {**os.environ, "PARACONNECT_HOME": str(home)}
    log = home.parent / "hub.log"
    args = [PARACONNECT, "hub", "--json"]
    for name in sessions:
        args += ["--session", name]
    with log.open("w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready", ready
        found = _wait_for(log, _ENROLL_RE, time.monotonic() + 30)
        yield HubProc(proc, home, Path(ready["control"]), (found[1], int(found[2])), log)
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def read_until_closed(sock: socket.socket | ssl.SSLSocket, limit: int = 1 << 20) -> bytes:
    """What the far end sends until it closes (a reset counts as closed)."""
    out = b""
    try:
        while len(out) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except (ConnectionResetError, ssl.SSLError, ssl.SSLEOFError):
        pass
    return out


def enrol_tls(address: tuple[str, int]) -> ssl.SSLSocket:
    """A TLS connection to the enrolment endpoint, as an agent opens one (no certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(address, timeout=30)
    return ctx.wrap_socket(raw, server_hostname="enroll.paraconnect")


def recv_frame(sock: ssl.SSLSocket) -> dict[str, object]:
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        assert chunk, "the far end closed before a whole frame"
        head += chunk
    (size,) = struct.unpack(">I", head)
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        assert chunk, "the far end closed in the middle of a frame"
        body += chunk
    obj = json.loads(body)
    assert isinstance(obj, dict)
    return obj
