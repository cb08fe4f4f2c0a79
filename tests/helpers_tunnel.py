"""Shared pieces of the tunnel tests: a session with node-bound certificates, the echo program's
command line, a plain client that talks to a local endpoint, and a connected TCP pair."""

from __future__ import annotations

import hashlib
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio

from paraconnect.pki import Credentials, SecurityLevel, Session, Store, load_credentials, share
from paraconnect.tunnel import Endpoint

ECHO = str(Path(__file__).with_name("helpers_echo.py"))
PASS = b"friend passphrase"


def tcp_pair(rcvbuf: int = 0) -> tuple[socket.socket, socket.socket]:
    """(dialer, accepted) over 127.0.0.1; `rcvbuf` shrinks the accepted end's receive buffer (set
    before the connection exists: shrinking it afterwards stalls loopback TCP for seconds)."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        if rcvbuf:
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        a = socket.create_connection(srv.getsockname())
        b, _ = srv.accept()
    return a, b


def echo_command(placeholder: str = "{port}") -> list[str]:
    option = {"{port}": "--port", "{unix}": "--unix", "{fd}": "--fd"}[placeholder]
    return [sys.executable, ECHO, option, placeholder]


@dataclass
class Pki:
    store: Store
    session: Session
    uid: str
    server: Credentials
    client: Credentials

    def friend(self, name: str, home: Path, unique_id: str) -> Credentials:
        """A newly issued client certificate for a friend on another machine, as a bundle."""
        out = home / f"{name}.p12"
        share(self.session, name, out, PASS, unique_id=unique_id)
        return load_credentials(out, passphrase=PASS)


def make_pki(home: Path, name: str = "lab", level: SecurityLevel = SecurityLevel.MUTUAL) -> Pki:
    store = Store(home)
    uid = store.unique_id().value
    session = store.create_session(name, level=level)
    session.issue("server", "srv", unique_id=uid)
    session.issue("client", "alice", unique_id=uid)
    return Pki(
        store,
        session,
        uid,
        load_credentials(name, role="server", store=store),
        load_credentials(name, role="client", store=store),
    )


async def ask(ep: Endpoint, command: str, payload: bytes = b"") -> bytes:
    """One plain connection to a local endpoint: a command line, the payload, half-close, and
    everything the far end answers until it closes."""
    async with await anyio.connect_tcp(ep.host, ep.port) as stream:
        await stream.send(command.encode() + b"\n" + payload)
        await stream.send_eof()
        out = bytearray()
        while True:
            try:
                out += await stream.receive(1 << 16)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return bytes(out)


async def sha_check(ep: Endpoint, size: int, seed: int = 0) -> None:
    """Send `size` pseudo-random bytes through the tunnel; the program's sha256 must match."""
    data = hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)
    answer = await ask(ep, "sha256", data)
    assert answer == f"{hashlib.sha256(data).hexdigest()} {size}\n".encode(), answer[:200]


async def pid_of(ep: Endpoint) -> int:
    answer = await ask(ep, "pid")
    assert answer.strip().isdigit(), answer
    return int(answer)


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
