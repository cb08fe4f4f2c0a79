"""The debugger explains the rule the tunnel enforces, never a copy of it: for every pair of
roles and for node binding, `paraconnect debug`'s verdict on a real certificate is the verdict
of ``tls.check_peer`` (what the agent and the listeners apply after the handshake)."""

from __future__ import annotations

import itertools

import pytest
from cryptography import x509

from paraconnect.debug import Report, Status
from paraconnect.debug._chain import check_peer_cert
from paraconnect.errors import TrustError
from paraconnect.pki import Identity, Role, SecurityLevel, Session, fingerprint
from paraconnect.tls import PeerIdentity, check_peer


def _peer(cert: x509.Certificate) -> PeerIdentity:
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return PeerIdentity(
        Identity.of(cert),
        cert.serial_number,
        fingerprint(cert),
        str(cn[0].value) if cn else None,
        cert.not_valid_after_utc,
        "TLSv1.3",
        None,
    )


def _enforced(cert: x509.Certificate, level: SecurityLevel, our_role: Role) -> str | None:
    ident = Identity.of(cert)
    assert ident is not None
    try:
        check_peer(_peer(cert), level=level, session_id=ident.session_id, our_role=our_role)
    except TrustError as exc:
        return str(exc)
    return None


def _explained(cert: x509.Certificate, level: SecurityLevel, our_role: Role, step: str) -> Status:
    report = Report("client", "test")
    check_peer_cert(report, cert, None, level=level, our_role=our_role)
    return report.step(step).status


@pytest.mark.parametrize(
    ("ours", "theirs"),
    list(itertools.product([Role.SERVER, Role.CLIENT, Role.NODE], ["server", "client", "node"])),
)
def test_the_role_verdict_is_the_enforced_one(session: Session, ours: Role, theirs: str) -> None:
    cert = session.issue(theirs, f"peer-{theirs}", unique_id="node-a").cert
    refusal = _enforced(cert, SecurityLevel.ENCRYPT, ours)
    status = _explained(cert, SecurityLevel.ENCRYPT, ours, "peer-role")
    assert status is (Status.PASS if refusal is None else Status.FAIL), refusal
    if refusal is not None:
        report = Report("client", "test")
        check_peer_cert(report, cert, None, level=SecurityLevel.ENCRYPT, our_role=ours)
        assert report.step("peer-role").details["enforced"] == refusal


@pytest.mark.parametrize("bound", [True, False])
def test_the_node_binding_verdict_is_the_enforced_one(session: Session, bound: bool) -> None:
    cert = session.issue("server", "agent", unique_id="node-a" if bound else None).cert
    refusal = _enforced(cert, SecurityLevel.MUTUAL, Role.CLIENT)
    assert (refusal is None) is bound
    status = _explained(cert, SecurityLevel.MUTUAL, Role.CLIENT, "peer-unique-id")
    assert status is (Status.PASS if bound else Status.FAIL)
    # At level encrypt neither refuses on binding.
    assert _enforced(cert, SecurityLevel.ENCRYPT, Role.CLIENT) is None
    assert _explained(cert, SecurityLevel.ENCRYPT, Role.CLIENT, "peer-unique-id") is Status.SKIP
