"""Renewal, the agent's side: a fresh key made here and certified by the hub over the agent's
mutual-TLS control channel, before the certificate in force reaches two thirds of its life.

The key never leaves this host (as at enrolment); the hub certifies it only for the identity
the control channel proved.  The new key and certificate replace the old ones in the agent's
directory of PEM files, each file written atomically (key 0600), and `Side` takes them for new
connections; connections already open keep the credentials they were made with.  Until a
renewal succeeds (the hub unreachable, or refusing) the certificate in force stays in use and
the agent asks again with backoff, on every control channel it gets.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .._fs import write_atomic
from ..errors import CredentialError, TrustError
from ..pki import CLOCK_SKEW, Credentials, Identity, spki_der

__all__ = ["RENEW_AT", "Renewal", "due", "fresh_request", "install"]

log = logging.getLogger("paraconnect.tunnel")

RENEW_AT = 2 / 3  # of a certificate's life: renewed before that, never at its last minute
RETRY_FIRST = 2.0  # seconds before asking a hub that refused or did not answer again
RETRY_MAX = 300.0


def due(cert: x509.Certificate) -> float:
    """When (epoch seconds) `cert` should be renewed.  Its not-before is backdated by the
    clock-skew allowance, which is no part of the life it was issued for."""
    end = cert.not_valid_after_utc.timestamp()
    start = min(cert.not_valid_before_utc.timestamp() + CLOCK_SKEW.total_seconds(), end)
    return start + (end - start) * RENEW_AT


@dataclass(frozen=True, slots=True)
class Request:
    """A key made here and the CSR that asks the hub to certify it."""

    key: ec.EllipticCurvePrivateKey
    csr_pem: str


def fresh_request(name: str) -> Request:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return Request(key, csr.public_bytes(serialization.Encoding.PEM).decode())


def _cert_path(directory: Path) -> Path:
    """The NAME.crt beside its NAME.key that the credentials were read from."""
    paths = [p for p in sorted(directory.glob("*.crt")) if p.name != "ca.crt"]
    with_keys = [p for p in paths if p.with_suffix(".key").exists()]
    if len(with_keys) != 1:
        raise CredentialError(f"{directory} holds no single NAME.crt with its NAME.key to renew")
    return with_keys[0]


def install(creds: Credentials, request: Request, cert_pem: str, where: str) -> x509.Certificate:
    """Check the certificate `where` sent for `request` and write it with its key over the
    credentials in force; returns it.  Nothing is written for a certificate that is not for
    our key, not signed by our session CA, or names another identity."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        raise TrustError(f"{where} sent a renewed certificate that is not PEM") from None
    try:
        cert.verify_directly_issued_by(creds.ca_cert)
    except Exception as exc:
        raise TrustError(f"{where} sent a renewed certificate our session CA did not sign") from exc
    if spki_der(cert.public_key()) != spki_der(request.key.public_key()):
        raise TrustError(f"{where} sent a renewed certificate for another key")
    ident, old = Identity.of(cert), creds.identity
    if ident is None or (ident.role, ident.name, ident.unique_id) != (
        old.role,
        old.name,
        old.unique_id,
    ):
        shown = ident.label if ident is not None else "no identity"
        raise TrustError(f"{where} sent a renewed certificate for {shown}, not {old.label}")
    if cert.not_valid_after_utc.timestamp() <= time.time():
        raise TrustError(f"{where} sent a renewed certificate that has expired; check both clocks")
    cert_path = _cert_path(Path(creds.source))
    pem = serialization.Encoding.PEM
    key_pem = request.key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Key first, then certificate, with no await between: the side's watcher sees both or
    # neither (a pair that does not match is refused by it anyway).
    write_atomic(cert_path.with_suffix(".key"), key_pem, mode=0o600)
    write_atomic(cert_path, cert.public_bytes(pem), mode=0o644)
    return cert


class Renewal:
    """When the agent asks next: due by the certificate in force, and after a failure with
    exponential backoff (never beyond what is left of the certificate's life)."""

    def __init__(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
        self.said_waiting = False  # that a due renewal waits for an unreachable hub

    def next_at(self, cert: x509.Certificate) -> float:
        return max(due(cert), self.retry_at)

    def failed(self, cert: x509.Certificate, why: str) -> None:
        self.failures += 1
        delay = min(RETRY_FIRST * 2 ** min(self.failures - 1, 16), RETRY_MAX)
        left = cert.not_valid_after_utc.timestamp() - time.time()
        # Retry sooner than the backoff says when the certificate would expire before it.
        delay = max(min(delay, left / 4), 0.5)
        self.retry_at = time.time() + delay
        log.warning(
            "certificate renewal failed (%s); the certificate in force (valid %d s more) stays "
            "in use; asking again in %.0f s",
            why, max(left, 0), delay,
        )  # fmt: skip

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
