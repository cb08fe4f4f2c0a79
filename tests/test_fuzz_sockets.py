"""Property tests per listening socket (issue 12): random, truncated, oversized and deeply
nested frames thrown at a running process — the hub's enrolment endpoint and control socket,
an agent's forward listener and its status page, a `paraconnect listen` listener — and then a
good client must still be served, and the process must have logged no traceback: a bad peer
costs one connection and a log line.  One process per test, not per example."""

from __future__ import annotations

import json
import socket
import ssl
import sys
import urllib.request
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from paraconnect._hub._control import MAX_REQUEST
from paraconnect.hub import HubClient
from paraconnect.pki import Credentials, Session, Store
from paraconnect.servers._enroll_dial import MAX_MESSAGE
from paraconnect.tunnel import MAX_FRAME, parse_endpoint

from .helpers_cli import Proc, procs_fixture  # noqa: F401 - the fixture `procs`
from .helpers_robust import (
    AT_A_PROCESS,
    enrol_tls,
    frame,
    hostile_frames,
    nested,
    no_tracebacks,
    read_until_closed,
    recv_frame,
    running_hub,
)
from .helpers_tunnel import ECHO, Pki, ask

pytestmark = pytest.mark.timeout(120)


def _tls_context(creds: Credentials | None, tmp: Path) -> ssl.SSLContext:
    """A TLS 1.3 client that checks nothing (the fuzzer is the stranger) and shows `creds`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if creds is not None:
        cert, key = tmp / "fuzz.crt", tmp / "fuzz.key"
        cert.write_bytes(creds.cert_pem())
        key.touch(mode=0o600)
        key.write_bytes(creds.key_pem())
        ctx.load_cert_chain(cert, key)
    return ctx


def _throw(
    address: tuple[str, int],
    data: bytes,
    ctx: ssl.SSLContext | None = None,
    *,
    after_first_frame: bool = False,
    sni: str = "fuzz.paraconnect",
) -> None:
    """Connect, (TLS,) send `data`, half-close, and read until the far end closes."""
    raw = socket.create_connection(address, timeout=30)
    sock: socket.socket = raw
    try:
        if ctx is not None:
            sock = ctx.wrap_socket(raw, server_hostname=sni)
        if after_first_frame:
            recv_frame(sock)  # type: ignore[arg-type]
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        read_until_closed(sock)
    except (OSError, ssl.SSLError, AssertionError):
        pass  # the far end may refuse or close at any step: that is its right
    finally:
        sock.close()
        raw.close()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as page:  # noqa: S310 - our loopback page
        assert page.status == 200
        return bytes(page.read())


def _host_port(text: str) -> tuple[str, int]:
    ep = parse_endpoint(text.removeprefix("http://").split("/", 1)[0])
    return ep.host, ep.port


# -- the hub ------------------------------------------------------------------------------


def test_fuzz_hub_enrolment_endpoint(home: Path, session: Session) -> None:
    with running_hub(home, session.name) as hub:
        ctx = _tls_context(None, home.parent)

        @AT_A_PROCESS
        @given(hostile_frames(MAX_MESSAGE), st.booleans())
        @example(frame(nested(25_000)), True)
        @example(b"\x00\x00\x01", True)
        @example(b"", False)
        def throw(data: bytes, tls: bool) -> None:
            if tls:
                # Naming the session CA, as an agent does: past the handshake to the parser.
                _throw(hub.enroll, data, ctx, after_first_frame=True, sni=hub.sni)
            else:
                _throw(hub.enroll, data)

        throw()
        # A good caller still gets the CA and an answer (here: its token is unknown).
        with enrol_tls(hub.enroll, hub.sni) as good:
            assert recv_frame(good)["type"] == "ca"
            good.sendall(
                frame(
                    json.dumps({
                        "type": "enroll", "version": 1, "server_id": "s", "token": "t",
                        "csr": "-----BEGIN CERTIFICATE REQUEST-----",
                    }).encode()
                )
            )  # fmt: skip
            reply = recv_frame(good)
        assert reply["type"] == "error", reply
        assert hub.serves()
    no_tracebacks(hub.log)


def test_fuzz_hub_control_socket(home: Path, store: Store) -> None:
    with running_hub(home) as hub:

        @AT_A_PROCESS
        @given(hostile_frames(MAX_REQUEST))
        @example(frame(nested(25_000)))
        @example(frame(b'{"op": "servers"}')[:9])
        def throw(data: bytes) -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(30)
                sock.connect(str(hub.control))
                try:
                    sock.sendall(data)
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    return
                read_until_closed(sock)

        throw()
        assert hub.serves()
    no_tracebacks(hub.log)


# -- an agent and a listener ------------------------------------------------------------------


def _serve(procs: object, *extra: str) -> Proc:
    return procs(  # type: ignore[operator, no-any-return]
        "serve", "--creds", "lab", "--json", *extra, "--", sys.executable, ECHO, "--port", "{port}"
    )


@pytest.mark.anyio
async def test_fuzz_agent_forward_listener_and_status_page(
    pki: Pki, procs: object, tmp_path: Path
) -> None:
    agent = _serve(procs, "--listen", "127.0.0.1:0", "--status", "127.0.0.1:0")
    ready = agent.ready()
    [addr] = ready["listen"]  # type: ignore[misc]
    listen = _host_port(str(addr))
    status = _host_port(str(ready["status"]))
    # With a client certificate of the session the bytes reach the hello parser.
    ctx = _tls_context(pki.client, tmp_path)

    @AT_A_PROCESS
    @given(hostile_frames(MAX_FRAME), st.sampled_from(["tls", "plain", "status"]))
    @example(frame(nested(8000)), "tls")  # within the hello's 16 KiB
    @example(frame(b'{"v": 1, "role": "client"')[:9], "tls")
    @example(b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\n\r\n", "status")
    def throw(data: bytes, where: str) -> None:
        if where == "tls":
            _throw(listen, data, ctx)
        elif where == "plain":
            _throw(listen, data)
        else:
            _throw(status, data)

    throw()
    page = await anyio.to_thread.run_sync(_get, f"http://{status[0]}:{status[1]}/status")
    assert "handshakes" in json.loads(page)
    client = procs(  # type: ignore[operator]
        "connect", addr, "--creds", "lab", "--local", "127.0.0.1:0", "--json"
    )
    local = parse_endpoint(str(client.ready()["local"]))
    assert await ask(local, "echo", b"good client") == b"good client"
    assert agent.popen.poll() is None
    no_tracebacks(agent.log)


@pytest.mark.anyio
async def test_fuzz_listen_listener(pki: Pki, procs: object, tmp_path: Path) -> None:
    listener: Proc = procs(  # type: ignore[operator]
        "listen", "127.0.0.1:0", "--creds", "lab", "--local", "127.0.0.1:0", "--json"
    )
    event = listener.ready()
    where = _host_port(str(event["listen"]))
    ctx = _tls_context(pki.server, tmp_path)

    @AT_A_PROCESS
    @given(hostile_frames(MAX_FRAME), st.booleans())
    @example(frame(nested(8000)), True)  # within the hello's 16 KiB
    def throw(data: bytes, tls: bool) -> None:
        _throw(where, data, ctx if tls else None)

    throw()
    _serve(procs, "--phone-home", str(event["listen"]), "--interval", "0.05")
    local = parse_endpoint(str(event["local"]))
    assert await ask(local, "echo", b"good agent") == b"good agent"
    assert listener.popen.poll() is None
    no_tracebacks(listener.log)


def test_fuzz_hub_phone_home_listener(pki: Pki, home: Path, tmp_path: Path) -> None:
    """Agents phone home here: with a server certificate of the session the bytes reach the
    hello parser (8000 levels of nesting fit in a hello and raised RecursionError there)."""
    with running_hub(home, pki.session.name) as hub:
        with HubClient(home, timeout=30) as client:
            [listener] = client.request("listeners")
        where = _host_port(str(listener["phone_home"]))
        ctx = _tls_context(pki.server, tmp_path)

        @AT_A_PROCESS
        @given(hostile_frames(MAX_FRAME), st.booleans())
        @example(frame(nested(8000)), True)
        def throw(data: bytes, tls: bool) -> None:
            _throw(where, data, ctx if tls else None)

        throw()
        assert hub.serves()
    no_tracebacks(hub.log)
