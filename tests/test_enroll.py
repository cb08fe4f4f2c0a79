"""Enrolment: the agent makes its key on its own side and gets its certificate from the hub
with a one-time token; the token works once, expires, is bound to one server id, and is stored
only hashed; the agent refuses a hub whose CA is not the pinned one."""

from __future__ import annotations

import stat
from pathlib import Path

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from paraconnect.errors import ProtocolError, TrustError
from paraconnect.pki import Credentials, Role, Session, Store, load_credentials
from paraconnect.servers._enroll import EnrollServer, enroll, issue_token
from paraconnect.servers._registry import ServerRegistry

from .conftest import PARACONNECT

pytestmark = pytest.mark.timeout(60)


@pytest.mark.anyio
async def test_token_works_once_and_the_key_stays_here(
    hub_addr: str, session: Session, registry: ServerRegistry, store: Store, tmp_path: Path
) -> None:
    token = issue_token(registry, "srv-a", "lab")
    out = tmp_path / "remote" / "creds"
    uid = store.unique_id().value
    await enroll(hub_addr, session.ca_fingerprint, token, "srv-a", out, uid)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "srv-a.key").stat().st_mode) == 0o600
    creds = load_credentials(out)
    assert creds.identity.name == "srv-a" and creds.identity.role is Role.SERVER
    assert creds.identity.unique_id == uid and creds.identity.session_id == session.id
    rec = registry.get("srv-a")
    assert rec is not None and rec.cert_sha256 == session.records()[-1].sha256
    assert not session.records()[-1].key_kept  # recorded, revocable, no key at the hub
    # Only the token's hash is stored.
    assert token.encode() not in (registry.path).read_bytes()
    with pytest.raises(TrustError, match="already used"):
        await enroll(hub_addr, session.ca_fingerprint, token, "srv-a", tmp_path / "again", uid)
    assert not (tmp_path / "again").exists()


@pytest.mark.anyio
async def test_token_expires(
    hub_addr: str, session: Session, registry: ServerRegistry, tmp_path: Path
) -> None:
    token = issue_token(registry, "srv-a", "lab", ttl=-1)
    with pytest.raises(TrustError, match="expired"):
        await enroll(hub_addr, session.ca_fingerprint, token, "srv-a", tmp_path / "c")


@pytest.mark.anyio
async def test_token_is_bound_to_its_server(
    hub_addr: str, session: Session, registry: ServerRegistry, tmp_path: Path
) -> None:
    token = issue_token(registry, "srv-a", "lab")
    with pytest.raises(TrustError, match="bound to another server, not srv-b"):
        await enroll(hub_addr, session.ca_fingerprint, token, "srv-b", tmp_path / "c")
    with pytest.raises(TrustError, match="unknown enrolment token"):
        await enroll(hub_addr, session.ca_fingerprint, "made-up", "srv-a", tmp_path / "c")


@pytest.mark.anyio
async def test_agent_refuses_a_hub_with_another_ca(
    hub_addr: str, store: Store, session: Session, registry: ServerRegistry, tmp_path: Path
) -> None:
    other = store.create_session("elsewhere")
    token = issue_token(registry, "srv-a", "lab")
    with pytest.raises(TrustError, match="not the pinned"):
        await enroll(hub_addr, other.ca_fingerprint, token, "srv-a", tmp_path / "c")
    assert not (tmp_path / "c").exists()
    # The agent refused before sending its token: it still works with the right CA.
    await enroll(hub_addr, session.ca_fingerprint, token, "srv-a", tmp_path / "c")
    assert (tmp_path / "c" / "srv-a.key").exists()


@pytest.mark.anyio
async def test_serve_enroll_cli_reads_the_token_file_and_refuses_a_wrong_ca(
    hub_addr: str, store: Store, registry: ServerRegistry, tmp_path: Path
) -> None:
    other = store.create_session("elsewhere")
    token_file = tmp_path / "token"
    token_file.write_text(issue_token(registry, "srv-a", "lab") + "\n")
    argv = [PARACONNECT, "serve", "--enroll", hub_addr, "--ca-sha256", other.ca_fingerprint,
            "--token-file", str(token_file), "--server-id", "srv-a",
            "--creds-dir", str(tmp_path / "c"), "--phone-home", "127.0.0.1:9", "--",
            "true", "{port}"]  # fmt: skip
    result = await anyio.run_process(argv, check=False)
    err = result.stderr.decode()
    assert result.returncode == 1
    assert err.startswith("paraconnect: error: the hub at") and "not the pinned" in err
    assert len(err.strip().splitlines()) == 1
    assert token_file.read_text().strip() not in err  # the token is never echoed


def test_serve_without_creds_or_enroll_is_a_config_error(cli: object) -> None:
    r = cli("serve", "--listen", "127.0.0.1:0", "--", "true", "{port}")  # type: ignore[operator]
    assert r.returncode == 1 and "give --creds C, or --enroll HOST:PORT" in r.stderr


def test_a_malformed_csr_does_not_use_up_the_token(
    session: Session, registry: ServerRegistry, store: Store
) -> None:
    """The hub checks the request before it spends the token: a broken CSR (a bug, a torn
    write) gets a clear error, and the agent may still enrol with the same token."""
    server = EnrollServer(registry, {"lab": (session, load_credentials_for_hub(store, session))})
    token = issue_token(registry, "srv-a", "lab")
    req = {"type": "enroll", "version": 1, "server_id": "srv-a", "token": token}
    with pytest.raises(ProtocolError, match="not a PEM certificate request"):
        server._answer(session, {**req, "csr": "garbage"})
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "srv-a")]))
        .sign(key, hashes.SHA256())
    )
    reply = server._answer(session, {**req, "csr": csr.public_bytes(Encoding.PEM).decode()})
    cert = x509.load_pem_x509_certificate(reply["cert"].encode())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    [rec] = [r for r in session.records() if r.name == "srv-a"]
    assert rec.role == "server" and not rec.key_kept and rec.key_type == "enrolled"
    with pytest.raises(TrustError, match="already used"):
        server._answer(session, {**req, "csr": csr.public_bytes(Encoding.PEM).decode()})


def load_credentials_for_hub(store: Store, session: Session) -> Credentials:
    uid = store.unique_id().value
    session.issue(Role.CLIENT, "hub", unique_id=uid)
    return load_credentials("lab", role=Role.CLIENT, store=store, unique_id=uid)
