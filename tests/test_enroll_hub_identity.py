"""Issue 12 items 11 and 12: the enrolling agent pins the hub's role and name, not only the CA,
so another member of the session who runs an endpoint of its own never receives the token; and
the real endpoint tells an anonymous caller neither the hub's node ID nor the session ID
(checked with Debian's openssl, a peer nobody here wrote)."""

from __future__ import annotations

import base64
import json
import re
import ssl
import struct
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSStream
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from paraconnect.pki import Issued, Role, Session, Store
from paraconnect.servers._enroll import issue_token
from paraconnect.servers._registry import ServerRegistry

from .conftest import PARACONNECT

pytestmark = pytest.mark.timeout(60)

_LEN = struct.Struct("!I")
HUB_IDENTITY = "client/hub:enroll"  # what the hub's enrolment line pins


class FakeEndpoint:
    """An enrolment endpoint run by another member of the session with its own leaf of the
    session CA: it shows the right CA and records every byte the agent sends it."""

    def __init__(self, session: Session, issued: Issued, tmp: Path) -> None:
        self.ca_pem = session.ca_cert.public_bytes(serialization.Encoding.PEM).decode()
        cert, key = tmp / "leaf.crt", tmp / "leaf.key"
        cert.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(
            issued.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key.chmod(0o600)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.received = b""
        self.done = anyio.Event()

    async def handle(self, tcp: anyio.abc.SocketStream) -> None:
        async with tcp:
            stream = await TLSStream.wrap(tcp, server_side=True, ssl_context=self.ctx)
            frame = json.dumps({"type": "ca", "ca": self.ca_pem}).encode()
            await stream.send(_LEN.pack(len(frame)) + frame)
            try:
                while True:  # until the agent hangs up: no fixed wait
                    self.received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
            self.done.set()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("role", "name", "node_bound"),
    [
        (Role.CLIENT, "alice", False),  # a friend
        (Role.SERVER, "srv-b", False),  # another server of the session
        (Role.CLIENT, "hub", True),  # the hub's own tunnel certificate, not its enrolment one
    ],
)
async def test_agent_refuses_another_leaf_of_the_ca_and_keeps_its_token(
    role: Role, name: str, node_bound: bool, store: Store, session: Session,
    registry: ServerRegistry, tmp_path: Path,
) -> None:  # fmt: skip
    issued = session.issue(role, name, unique_id=store.unique_id().value if node_bound else None)
    fake = FakeEndpoint(session, issued, tmp_path)
    token = issue_token(registry, "srv-a", "lab")
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, fake.handle)
        argv = [PARACONNECT, "serve", "--enroll", f"127.0.0.1:{port}",
                "--ca-sha256", session.ca_fingerprint, "--token-file", str(token_file),
                "--server-id", "srv-a", "--creds-dir", str(tmp_path / "c"),
                "--phone-home", "127.0.0.1:9", "--", "true", "{port}"]  # fmt: skip
        result = await anyio.run_process(argv, check=False)
        with anyio.fail_after(10):
            await fake.done.wait()
        tg.cancel_scope.cancel()
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("paraconnect: error: the hub at")
    assert f"is {role.value} {name!r} of the session, not the hub ({HUB_IDENTITY})" in err
    assert "the token was not sent" in err
    # The impostor got nothing at all after its CA frame: no request, no token.
    assert fake.received == b""
    assert token not in err
    assert not (tmp_path / "c").exists()


async def _s_client(port: int, *extra: str, send: bytes = b"") -> str:
    with anyio.fail_after(30):
        proc = await anyio.run_process(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-showcerts",
             "-ign_eof", *extra],
            input=send, check=False,
        )  # fmt: skip
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def _everything_in(text: str) -> bytes:
    """The bytes a caller could read out of s_client's transcript: the text itself, and every
    certificate in it (the TLS chain and the 'ca' frame) decoded to DER."""
    out = text.encode()
    for block in re.findall(
        r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.DOTALL
    ):
        out += base64.b64decode("".join(block.replace("\\n", "\n").split()))
    return out


@pytest.mark.anyio
async def test_anonymous_caller_learns_neither_node_id_nor_session_id(
    hub_addr: str, store: Store, session: Session
) -> None:
    port = int(hub_addr.rpartition(":")[2])
    node_id, session_id = store.unique_id().value, session.id
    # No server name, or one naming no session of this hub: no certificate, no frame.
    for extra in (["-noservername"], ["-servername", "a" * 32 + "." + "b" * 32 + ".enroll.x"]):
        text = await _s_client(port, *extra)
        assert "Cipher is (NONE)" in text or "no peer certificate available" in text, text
        assert "BEGIN CERTIFICATE" not in text
        seen = _everything_in(text)
        assert node_id.encode() not in seen and session_id.encode() not in seen
    # Naming the pinned CA, as an agent does, but with no token: the enrolment certificate
    # (no node binding), the session CA frame, and the error for a bad request.
    fp = session.ca_fingerprint.replace(":", "").lower()
    request = json.dumps({"type": "enroll", "version": 1, "server_id": "srv-a",
                          "token": "guess", "csr": "x"}).encode()  # fmt: skip
    text = await _s_client(
        port, "-servername", f"{fp[:32]}.{fp[32:]}.enroll.paraconnect",
        send=_LEN.pack(len(request)) + request,
    )  # fmt: skip
    # The CA frame, in whatever JSON spacing the hub's codec writes.
    assert "BEGIN CERTIFICATE" in text and re.search(r'"type":\s*"ca"', text), text
    assert "not a PEM certificate request" in text  # the hub's answer came back
    seen = _everything_in(text)
    assert node_id.encode() not in seen
    leaf = x509.load_pem_x509_certificate(
        re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.DOTALL)
        .group(0)  # type: ignore[union-attr]
        .encode()
    )
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "hub:enroll"
