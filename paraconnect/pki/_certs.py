"""X.509 for one session: the self-signed session CA, the leaves it signs, and its CRL.

Identity lives in a SAN URI, ``paraconnect://<session-id>/<role>/<name>[?node=<unique-id>]``.
A certificate bound to a node also carries the node's unique ID as its subject CN (FLoM's
convention), so a copied certificate fails on any other machine at level ``mutual``.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .._fs import read_public
from ..errors import CredentialError, TrustError
from ..vocab import ParsedEnum
from ._keys import KeyType, PrivateKey, PublicKey, key_type_of
from ._names import check_name, check_unique_id
from ._signer import Signer, as_signer

__all__ = [
    "CLOCK_SKEW",
    "CertInfo",
    "Identity",
    "RevokedEntry",
    "Role",
    "build_ca",
    "build_crl",
    "build_leaf",
    "cert_info",
    "check_name",
    "check_unique_id",
    "fingerprint",
    "load_crl",
    "parse_pem_certificates",
    "parse_pem_crl",
    "pem",
    "revocation_reason",
    "revoked_entry",
    "session_level_of",
    "signed_by",
]

URI_SCHEME = "paraconnect"
# notBefore is backdated by this much so a peer whose clock is a little behind still accepts.
CLOCK_SKEW = dt.timedelta(minutes=5)
_PEM_CERT_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----\r?\n?", re.DOTALL
)


class Role(ParsedEnum, what="role"):
    SESSION = "session"  # the session CA itself
    SERVER = "server"
    CLIENT = "client"
    NODE = "node"  # a machine's own identity: may act as server or client

    @classmethod
    def _offered(cls) -> list[str]:
        return ["server", "client", "node"]  # the session's own role is no one's to take


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a certificate speaks for, as written in its SAN URI."""

    session_id: str
    role: Role
    name: str
    unique_id: str | None = None

    @property
    def label(self) -> str:
        """How logs, accounting and messages name it: ``server 'pv' on node-7``."""
        node = f" on {self.unique_id}" if self.unique_id else ""
        return f"{self.role.value} {self.name!r}{node}"

    def uri(self) -> str:
        base = f"{URI_SCHEME}://{self.session_id}/{self.role.value}/{self.name}"
        if self.unique_id:
            return f"{base}?{urllib.parse.urlencode({'node': self.unique_id})}"
        return base

    @classmethod
    def from_uri(cls, uri: str) -> Identity | None:
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme != URI_SCHEME:
            return None
        segments = parts.path.strip("/").split("/")
        if len(segments) != 2:
            return None
        try:
            role = Role(segments[0])
        except ValueError:
            return None
        node = urllib.parse.parse_qs(parts.query).get("node", [None])[0]
        return cls(parts.netloc, role, segments[1], node)

    @classmethod
    def of(cls, cert: x509.Certificate) -> Identity | None:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return None
        for uri in san.value.get_values_for_type(x509.UniformResourceIdentifier):
            ident = cls.from_uri(uri)
            if ident is not None:
                return ident
        return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_usage(*, ca: bool, key_encipherment: bool = False) -> x509.KeyUsage:
    """Signing always; certificates and CRLs for the CA only; key encipherment for an RSA leaf
    (of our key types, the only one that can encipher)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def build_ca(
    key: PrivateKey | Signer,
    session_id: str,
    name: str,
    days: int,
    now: dt.datetime | None = None,
    level: str | None = None,
) -> x509.Certificate:
    now = now or _now()
    signer = as_signer(key)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "paraconnect session"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(signer.public_key())
    ident = Identity(session_id, Role.SESSION, name)
    # The session's security level travels in its certificate, the one thing every party of
    # the session holds, so a friend's imported bundle knows the level without being told.
    uri = ident.uri() + (f"?{urllib.parse.urlencode({'level': level})}" if level else "")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(signer.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
            critical=False,
        )
    )
    return signer.sign_certificate(builder)


def session_level_of(ca_cert: x509.Certificate) -> str | None:
    """The security level written into a session certificate, if any."""
    try:
        san = ca_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    for uri in san.value.get_values_for_type(x509.UniformResourceIdentifier):
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme == URI_SCHEME:
            found = urllib.parse.parse_qs(parts.query).get("level")
            if found:
                return found[0]
    return None


def build_leaf(
    ca_key: PrivateKey | Signer,
    ca_cert: x509.Certificate,
    public_key: PublicKey,
    identity: Identity,
    days: float,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    now = now or _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cn = identity.unique_id or identity.name
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "paraconnect"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.role.value),
        ]
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    rsa = key_type_of(public_key) is KeyType.RSA_3072
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False, key_encipherment=rsa), critical=True)
        # Both purposes: a reverse connection makes the server the TLS client.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri())]),
            critical=False,
        )
    )
    return as_signer(ca_key).sign_certificate(builder)


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    serial: int
    when: dt.datetime
    reason: x509.ReasonFlags


def revocation_reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags:
    """Why a CRL entry was revoked (`unspecified` when the entry does not say)."""
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return x509.ReasonFlags.unspecified


def revoked_entry(
    crl: x509.CertificateRevocationList, serial: int
) -> x509.RevokedCertificate | None:
    """The entry of `crl` revoking the certificate with this serial, or None (the one lookup
    the tunnel refuses on and the debugger explains)."""
    return crl.get_revoked_certificate_by_serial_number(serial)


def build_crl(
    ca_key: PrivateKey | Signer,
    ca_cert: x509.Certificate,
    revoked: list[RevokedEntry],
    number: int,
    now: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    now = now or _now()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - CLOCK_SKEW)
        # Valid as long as the CA: a CRL must never expire under a running session.
        .next_update(ca_cert.not_valid_after_utc)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.when)
            .add_extension(x509.CRLReason(entry.reason), critical=False)
            .build()
        )
    return as_signer(ca_key).sign_crl(builder)


def parse_pem_certificates(data: bytes, source: object) -> list[x509.Certificate]:
    """Strictly parse one or more PEM certificates: anything else in the file is an error."""
    blocks = list(_PEM_CERT_RE.finditer(data))
    if not blocks:
        hint = "it is truncated" if b"-----BEGIN CERTIFICATE-----" in data else "it holds none"
        raise CredentialError(
            f"{source} is not a PEM certificate ({hint}); export the certificate again"
        )
    rest = _PEM_CERT_RE.sub(b"", data).strip()
    if rest:
        raise CredentialError(
            f"{source} has unexpected data besides its PEM certificate(s) "
            f"({len(rest)} bytes); remove it or export the certificate again"
        )
    certs = []
    for block in blocks:
        try:
            certs.append(x509.load_pem_x509_certificate(block.group(0)))
        except ValueError:
            raise CredentialError(
                f"{source} holds a corrupt PEM certificate; export the certificate again"
            ) from None
    return certs


def parse_pem_crl(data: bytes, source: object) -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(data)
    except ValueError:
        raise CredentialError(
            f"{source} is not a valid PEM certificate revocation list; "
            "copy it again from the session ('paraconnect session show')"
        ) from None


def load_crl(path: Path, ca: x509.Certificate) -> x509.CertificateRevocationList | None:
    """The CRL at `path` if there is one, refused unless the session CA `ca` signed it."""
    if not path.exists():
        return None
    crl = parse_pem_crl(read_public(path, "revocation list"), path)
    if not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise TrustError(
            f"{path} is not signed by the session CA; restore the session's own crl.pem"
        )
    return crl


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What a user wants to know of a certificate, for `inspect` and for error messages."""

    subject: str
    issuer: str
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str
    key_type: str
    is_ca: bool
    identity: Identity | None

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    def as_dict(self) -> dict[str, object]:
        ident = self.identity
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial_hex,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "sha256": self.sha256,
            "key_type": self.key_type,
            "is_ca": self.is_ca,
            "session_id": ident.session_id if ident else None,
            "role": ident.role.value if ident else None,
            "name": ident.name if ident else None,
            "unique_id": ident.unique_id if ident else None,
        }


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether `ca` issued `cert` (issuer name and signature)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def cert_info(cert: x509.Certificate) -> CertInfo:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = bc.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        key_type = key_type_of(cert.public_key()).value
    except CredentialError:
        key_type = type(cert.public_key()).__name__
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=fingerprint(cert),
        key_type=key_type,
        is_ca=is_ca,
        identity=Identity.of(cert),
    )


def pem(cert: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
