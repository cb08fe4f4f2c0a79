"""Credentials: what one end of a connection holds, loaded from a session, a directory of
PEM files, or a PKCS#12 bundle, and checked before use (key matches, signed by the CA,
currently valid, not revoked)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .._fs import read_private, read_public
from ..errors import ConfigError, CredentialError, TrustError
from ._certs import (
    Identity,
    Role,
    load_crl,
    parse_pem_certificates,
    revoked_entry,
    session_level_of,
    signed_by,
)
from ._keys import (
    Passphrase,
    PrivateKey,
    check_key_matches,
    load_private_key,
    resolve_passphrase,
)
from ._store import SecurityLevel, Store

__all__ = [
    "Credentials",
    "check_key_matches",
    "check_validity",
    "human_duration",
    "load_credentials",
]


def human_duration(delta: dt.timedelta, *, spaced: bool = False) -> str:
    """``2d 3h``, ``4h 5m``, ``6m 7s`` (either sign); `spaced` writes ``2 d 3 h``, ``4 h 5 min``,
    ``6 min 7 s``, as the debugger's sentences do."""
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    d, h, m, s = (" d", " h", " min", " s") if spaced else ("d", "h", "m", "s")
    if days:
        return f"{days}{d} {hours}{h}"
    if hours:
        return f"{hours}{h} {minutes}{m}"
    return f"{minutes}{m} {seconds}{s}"


def check_validity(cert: x509.Certificate, what: str, now: dt.datetime | None = None) -> None:
    """Refuse a certificate outside its validity, explaining clock skew when that is likely."""
    now = now or dt.datetime.now(dt.UTC)
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < nb:
        raise CredentialError(
            f"{what} is not valid until {nb:%Y-%m-%d %H:%M:%S} UTC, "
            f"{human_duration(nb - now)} from now by this machine's clock "
            f"({now:%Y-%m-%d %H:%M:%S} UTC); this clock is probably "
            "behind the issuer's: check time synchronisation (timedatectl, chrony) on both"
        )
    if now >= na:
        raise CredentialError(
            f"{what} expired at {na:%Y-%m-%d %H:%M} UTC ({human_duration(now - na)} ago); "
            "issue a new one with 'paraconnect issue'"
        )


@dataclass(frozen=True, slots=True)
class Credentials:
    """One end's TLS material, verified to belong together."""

    ca_cert: x509.Certificate
    cert: x509.Certificate
    key: PrivateKey
    crl: x509.CertificateRevocationList | None
    identity: Identity
    source: str
    level: SecurityLevel = SecurityLevel.MUTUAL
    # Where the revocation list lives (it may appear later): a running side re-reads it.
    crl_path: Path | None = None

    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def crl_pem(self) -> bytes | None:
        return None if self.crl is None else self.crl.public_bytes(serialization.Encoding.PEM)

    def check(self, now: dt.datetime | None = None) -> None:
        """Everything that can be checked without a peer; raises with the fix."""
        check_validity(self.cert, f"certificate {self.identity.name!r} from {self.source}", now)
        check_validity(self.ca_cert, f"session certificate from {self.source}", now)
        if self.crl is not None:
            entry = revoked_entry(self.crl, self.cert.serial_number)
            if entry is not None:
                raise TrustError(
                    f"certificate {self.identity.name!r} from {self.source} was revoked at "
                    f"{entry.revocation_date_utc:%Y-%m-%d %H:%M} UTC; ask for a new one"
                )


def _verify_chain(ca: x509.Certificate, cert: x509.Certificate, source: object) -> Identity:
    ident = Identity.of(cert)
    ca_ident = Identity.of(ca)
    if ident is None:
        raise CredentialError(f"{source}: the certificate is not a paraconnect certificate")
    if not signed_by(cert, ca):
        beside = f" (session {ca_ident.name!r})" if ca_ident else ""
        raise TrustError(
            f"{source}: the certificate (session {ident.session_id[:8]}…) was not issued by the "
            f"session CA beside it{beside}; it belongs to another session: use that session's "
            "ca.crt, or issue a certificate from this one"
        )
    return ident


def _from_dir(directory: Path, name: str | None, passphrase: bytes | None) -> Credentials:
    ca_path = directory / "ca.crt"
    ca = parse_pem_certificates(read_public(ca_path, "session certificate"), ca_path)[0]
    if name is None:
        candidates = sorted(p for p in directory.glob("*.crt") if p.name != "ca.crt")
        with_keys = [p for p in candidates if p.with_suffix(".key").exists()]
        if len(with_keys) != 1:
            found = ", ".join(p.name for p in with_keys) or "none"
            raise ConfigError(
                f"{directory} must hold exactly one NAME.crt with its NAME.key besides ca.crt "
                f"(found: {found}); name the one to use"
            )
        cert_path = with_keys[0]
    else:
        cert_path = directory / f"{name}.crt"
    key_path = cert_path.with_suffix(".key")
    cert = parse_pem_certificates(read_public(cert_path, "certificate"), cert_path)[0]
    key = load_private_key(read_private(key_path), key_path, passphrase)
    check_key_matches(key, cert, key_path)
    ident = _verify_chain(ca, cert, cert_path)
    crl_path = directory / "crl.pem"
    crl = load_crl(crl_path, ca)
    return Credentials(ca, cert, key, crl, ident, str(directory), _level_of(ca), crl_path=crl_path)


def _level_of(ca: x509.Certificate) -> SecurityLevel:
    return SecurityLevel.parse(session_level_of(ca) or SecurityLevel.MUTUAL)


def load_credentials(
    spec: str | Path,
    *,
    role: Role | str | None = None,
    store: Store | None = None,
    passphrase: Passphrase | None = None,
    unique_id: str | None = None,
) -> Credentials:
    """Load `--creds`: a PKCS#12 bundle, a directory of PEM files, or a session name.

    For a session, the newest valid certificate with a kept key that can act as `role` is used
    (a `node` certificate can act as either).
    """
    path = Path(spec)
    secret = resolve_passphrase(passphrase)
    if path.is_file():
        from ._bundle import read_bundle

        bundle = read_bundle(path, secret)
        return Credentials(
            bundle.ca_cert, bundle.cert, bundle.key, None, bundle.identity, str(path),
            _level_of(bundle.ca_cert),
        )  # fmt: skip
    if path.is_dir():
        return _from_dir(path, None, secret)
    if path.suffix in (".p12", ".pfx") or "/" in str(spec):
        raise CredentialError(f"credentials {spec} do not exist; check the path")
    return session_credentials(str(spec), role=role, store=store, unique_id=unique_id)


def session_credentials(
    name: str,
    *,
    role: Role | str | None = None,
    store: Store | None = None,
    unique_id: str | None = None,
) -> Credentials:
    """The credentials a session `name` holds for `role`, by name only: a caller that has a
    session name (the hub) must never have it read as a file or folder of the working
    directory."""
    store = store or Store()
    session = store.open_session(name)
    wanted = Role.parse(role) if role else Role.NODE
    if unique_id is not None:
        rec = session.credentials_record(wanted, unique_id)
    else:
        # This node's own certificate first: a newer one issued for another node (to be copied
        # there) must not shadow it, or level mutual would refuse us as a copied certificate.
        rec = session.credentials_record(
            wanted, store.unique_id().value
        ) or session.credentials_record(wanted, None)
    if rec is None:
        raise CredentialError(
            f"session {session.name!r} holds no valid {wanted.value} certificate with its key; "
            f"issue one with 'paraconnect issue {wanted.value} NAME --session {session.name}'"
        )
    cert_path = session.issued_dir / f"{rec.serial}.crt"
    key_path = session.issued_dir / f"{rec.serial}.key"
    cert = parse_pem_certificates(read_public(cert_path, "certificate"), cert_path)[0]
    key = load_private_key(read_private(key_path), key_path, None)
    check_key_matches(key, cert, key_path)
    ident = _verify_chain(session.ca_cert, cert, cert_path)
    return Credentials(
        session.ca_cert,
        cert,
        key,
        session.crl(),
        ident,
        f"session {session.name!r}",
        session.level,
        crl_path=session.crl_path,
    )
