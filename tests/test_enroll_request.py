"""Issue 12 item 7: the enrolment endpoint checks the whole request (server id, unique ID, CSR,
session) before it spends the token.  Each bad request goes to a real endpoint over real TLS;
it is refused, and the same token then still enrols the agent's good request; a good request
spends it, and a replay is refused."""

from __future__ import annotations

import json
import ssl
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.tls import TLSStream
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from paraconnect.errors import TrustError
from paraconnect.pki import Session, load_credentials
from paraconnect.servers._enroll import enroll, issue_token
from paraconnect.servers._registry import ServerRegistry

pytestmark = pytest.mark.timeout(60)

_LEN = struct.Struct("!I")


async def _frame(stream: TLSStream) -> dict[str, Any]:
    head = b""
    while len(head) < 4:
        head += await stream.receive(4 - len(head))
    (size,) = _LEN.unpack(head)
    body = b""
    while len(body) < size:
        body += await stream.receive(size - len(body))
    obj = json.loads(body)
    assert isinstance(obj, dict)
    return obj


async def raw_request(addr: str, ca_sha256: str, request: dict[str, Any]) -> dict[str, Any]:
    """What an agent of our own making gets for `request`: the hub's reply frame."""
    host, _, port = addr.rpartition(":")
    fp = ca_sha256.replace(":", "").lower()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tcp = await anyio.connect_tcp(host, int(port))
    stream = await TLSStream.wrap(
        tcp, hostname=f"{fp[:32]}.{fp[32:]}.enroll.paraconnect", ssl_context=ctx,
        standard_compatible=False,
    )  # fmt: skip
    async with stream:
        assert (await _frame(stream))["type"] == "ca"
        data = json.dumps(request).encode()
        await stream.send(_LEN.pack(len(data)) + data)
        return await _frame(stream)


def _csr(name: str = "srv-a", key: Any = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(Encoding.PEM).decode()


def _tampered_csr() -> str:
    """A well-formed CSR whose signature does not match its key."""
    der = bytearray(x509.load_pem_x509_csr(_csr().encode()).public_bytes(Encoding.DER))
    der[-3] ^= 0x01  # inside the signature value
    return x509.load_der_x509_csr(bytes(der)).public_bytes(Encoding.PEM).decode()


def _weak_rsa_csr() -> str:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
    return _csr(key=weak)


BAD: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "another waiting server's id": (lambda: {"server_id": "srv-b"}, "bound to another server"),
    "a server id nobody launched": (lambda: {"server_id": "srv-z"}, "bound to another server"),
    "a server id with a newline": (lambda: {"server_id": "srv-a\n"}, "invalid server id"),
    "a unique ID with a newline": (lambda: {"unique_id": "node-1\n"}, "invalid unique ID"),
    "a unique ID with a space": (lambda: {"unique_id": "node 1"}, "invalid unique ID"),
    "a unique ID that is a number": (lambda: {"unique_id": 7}, "unique ID must be a string"),
    "a CSR that is not PEM": (lambda: {"csr": "garbage"}, "not a PEM certificate request"),
    "a CSR not signed by its key": (lambda: {"csr": _tampered_csr()}, "not signed by its own"),
    "a CSR with a 1024-bit RSA key": (lambda: {"csr": _weak_rsa_csr()}, "1024-bit RSA key"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("what", list(BAD))
async def test_a_bad_request_is_refused_and_leaves_the_token(
    what: str, hub_addr: str, session: Session, registry: ServerRegistry, tmp_path: Path
) -> None:
    token = issue_token(registry, "srv-a", "lab")
    changes, why = BAD[what]
    good = {"type": "enroll", "version": 1, "server_id": "srv-a", "token": token,
            "csr": _csr(), "unique_id": None}  # fmt: skip
    reply = await raw_request(hub_addr, session.ca_fingerprint, {**good, **changes()})
    assert reply["type"] == "error" and why in reply["reason"], reply
    assert not [r for r in session.records() if r.role == "server"]  # nothing was certified
    # The agent's own good request still enrols with the very same token...
    out = tmp_path / "creds"
    await enroll(hub_addr, session.ca_fingerprint, token, "srv-a", out)
    assert load_credentials(out).identity.name == "srv-a"
    # ...which that spent: a replay is refused and certifies nothing more.
    with pytest.raises(TrustError, match="already used"):
        await enroll(hub_addr, session.ca_fingerprint, token, "srv-a", tmp_path / "again")
    assert len([r for r in session.records() if r.role == "server"]) == 1


@pytest.mark.anyio
async def test_a_token_for_a_stopped_server_is_refused_and_not_spent(
    hub_addr: str, session: Session, registry: ServerRegistry, tmp_path: Path
) -> None:
    """A request the hub would not certify (its server is no longer waiting) spends nothing:
    the token is still there, unused, in the registry."""
    from paraconnect.servers._enroll import _digest

    token = issue_token(registry, "srv-a", "lab")
    registry.update("srv-a", state="stopped", reason="stopped on request")
    with pytest.raises(TrustError, match="not waiting for enrolment"):
        await enroll(hub_addr, session.ca_fingerprint, token, "srv-a", tmp_path / "c")
    found = registry.token(_digest(token))
    assert found is not None and found[3] is None


@pytest.mark.anyio
async def test_a_request_the_hub_fails_to_certify_leaves_the_token(
    hub_addr: str, session: Session, registry: ServerRegistry, tmp_path: Path
) -> None:
    """The hub's own trouble (here: it cannot record the certificate) spends nothing either;
    the agent hears a short reason, the hub's log has the rest."""
    token = issue_token(registry, "srv-a", "lab")
    issued = session.issued_dir
    aside = issued.with_name("issued.aside")
    issued.rename(aside)
    issued.write_text("not a directory\n")
    try:
        with pytest.raises(TrustError, match="the hub cannot certify srv-a now; its log says"):
            await enroll(hub_addr, session.ca_fingerprint, token, "srv-a", tmp_path / "c")
    finally:
        issued.unlink()
        aside.rename(issued)
    await enroll(hub_addr, session.ca_fingerprint, token, "srv-a", tmp_path / "c")
    assert load_credentials(tmp_path / "c").identity.name == "srv-a"
