"""No input on the hub's enrolment endpoint or control socket stops `paraconnect hub` (issue 12,
items 3 and 4): each input here once killed the process; now it costs one connection and a log
line, and a good client is still served."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from paraconnect.pki import Session, Store

from .helpers_robust import (
    enrol_tls,
    frame,
    nested,
    read_until_closed,
    recv_frame,
    running_hub,
)

pytestmark = pytest.mark.timeout(90)


def test_a_bare_connect_to_enrolment_with_no_session_open(home: Path, store: Store) -> None:
    """No session is open for enrolment: the TLS context could not be made and ConfigError
    escaped the handler, ending the hub."""
    with running_hub(home) as hub:
        with socket.create_connection(hub.enroll, timeout=30) as sock:
            sock.sendall(b"hello?")
            assert read_until_closed(sock) == b""
        assert hub.serves()
        assert "no session open for enrolment" in hub.log.read_text()


def test_deeply_nested_json_after_the_ca_frame(home: Path, session: Session) -> None:
    """A 50 KB ``[[[[…`` enrolment message raised RecursionError in json.loads."""
    with running_hub(home, session.name) as hub:
        with enrol_tls(hub.enroll, hub.sni) as tls:
            assert recv_frame(tls)["type"] == "ca"
            tls.sendall(frame(nested(25_000)))
            reply = recv_frame(tls)
        assert reply["type"] == "error" and "nested" in str(reply["reason"])
        assert hub.serves()


def _control(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(path))
    return sock


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(struct.pack("!I", 100) + b'{"op": "ser', id="truncated-payload"),
        pytest.param(frame(nested(25_000)), id="deeply-nested"),
    ],
)
def test_control_socket_survives(home: Path, store: Store, data: bytes) -> None:
    with running_hub(home) as hub:
        with _control(hub.control) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            read_until_closed(sock)
        assert hub.serves()


def test_control_client_closing_before_the_reply(home: Path, store: Store) -> None:
    """The reply to a client that is gone raised BrokenResourceError out of the handler."""
    with running_hub(home) as hub:
        for _ in range(20):
            with _control(hub.control) as sock:
                sock.sendall(frame(b'{"op": "servers"}') * 50)
                # Unread replies at close make this a reset, as a killed client would.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert hub.serves()
