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

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from paraconnect.hub import HubClient
from paraconnect.pki import Store

from .conftest import PARACONNECT

_ENROLL_RE = re.compile(r"enrolment endpoint on ([0-9.]+):(\d+)")


@dataclass
class HubProc:
    proc: subprocess.Popen[str]
    home: Path
    control: Path
    enroll: tuple[str, int]
    log: Path
    # The TLS server name an agent gives to pin the first session's CA (the endpoint shows
    # nothing to a caller that names no session CA of the hub).
    sni: str = "enroll.paraconnect"

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
        sni = "enroll.paraconnect"
        if sessions:
            fp = Store(home).open_session(sessions[0]).ca_fingerprint.replace(":", "").lower()
            sni = f"{fp[:32]}.{fp[32:]}.enroll.paraconnect"
        yield HubProc(proc, home, Path(ready["control"]), (found[1], int(found[2])), log, sni)
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


def enrol_tls(address: tuple[str, int], sni: str = "enroll.paraconnect") -> ssl.SSLSocket:
    """A TLS connection to the enrolment endpoint, as an agent opens one (no certificate,
    the pinned CA named in the server name)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(address, timeout=30)
    return ctx.wrap_socket(raw, server_hostname=sni)


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


# -- what the fuzz tests throw -----------------------------------------------------------

# Against a running process: few examples, the same ones on every run, no per-example deadline
# (a handshake on a loaded machine takes what it takes).
AT_A_PROCESS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def nested_json(draw: st.DrawFn) -> bytes:
    """Arrays and objects nested far deeper than any message of ours (and than Python's
    recursion limit), possibly unclosed, possibly inside a valid-looking object."""
    depth = draw(st.integers(min_value=33, max_value=60_000))
    opener = draw(st.sampled_from([b"[", b'{"a":', b'[{"a":']))
    closer = {b"[": b"]", b'{"a":': b"}", b'[{"a":': b"}]"}[opener]
    body = opener * depth + b"1" + (closer * depth if draw(st.booleans()) else b"")
    if draw(st.booleans()):
        body = b'{"v":1,"op":"servers","type":"enroll","x":' + body + b"}"
    return body


@st.composite
def hostile_frames(draw: st.DrawFn, limit: int) -> bytes:
    """One thing a stranger might send where a length-prefixed JSON frame is expected."""
    kind = draw(st.sampled_from(["bytes", "truncated", "oversized", "nested", "garbage", "json"]))
    if kind == "bytes":
        return draw(st.binary(min_size=1, max_size=300))
    if kind == "oversized":
        size = draw(st.integers(min_value=limit + 1, max_value=2**32 - 1))
        return size.to_bytes(4, "big") + draw(st.binary(max_size=50))
    if kind == "nested":
        return frame(draw(nested_json()))
    if kind == "garbage":
        return frame(draw(st.binary(min_size=0, max_size=300)))
    obj = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
    if draw(st.booleans()):
        obj = {**obj, "v": 1}
    whole = frame(json.dumps(obj).encode())
    if kind == "truncated":
        return whole[: draw(st.integers(min_value=1, max_value=len(whole) - 1))]
    return whole  # well-formed, but not a message this side expects


def no_tracebacks(log: Path) -> None:
    """A bad peer costs a log line, never a traceback (an exception nobody expected)."""
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]
    assert "please report it" not in text, text[-4000:]
