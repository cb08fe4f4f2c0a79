"""Friend bundles: one encrypted PKCS#12 file (session CA + friend certificate + key).

Encrypted with PBES2 / AES-256-CBC, PBKDF2-HMAC-SHA256 and a SHA-256 MAC, which
``openssl pkcs12`` (3.x) and browsers read.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from .._fs import ensure_private_dir, read_private, write_atomic
from ..errors import ConfigError, CredentialError, TrustError
from ._certs import Identity, Role, fingerprint, pem, session_level_of, signed_by
from ._keys import (
    Passphrase,
    PrivateKey,
    check_key_matches,
    dump_private_key,
    key_type_of,
    resolve_passphrase,
)
from ._records import FORMAT, utcnow
from ._store import DEFAULT_LEAF_DAYS, Issued, Record, SecurityLevel, Session, Store

__all__ = ["Bundle", "adopt", "import_bundle", "read_bundle", "share"]

KDF_ROUNDS = 200_000


def share(
    session: Session,
    friend: str,
    out: Path,
    bundle_passphrase: Passphrase,
    *,
    days: float = DEFAULT_LEAF_DAYS,
    unique_id: str | None = None,
    ca_passphrase: Passphrase | None = None,
) -> Issued:
    """Issue a client certificate for `friend` and write it, with its key, as an encrypted
    PKCS#12 file. The session keeps the record and the certificate, never the friend's key."""
    secret = resolve_passphrase(bundle_passphrase)
    if secret is None:
        raise CredentialError("a friend bundle needs a passphrase (--passphrase-file FILE)")
    # Check where the bundle goes before issuing: a certificate recorded for a friend who never
    # got the bundle would be a dangling credential.
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write {out}: directory {out.parent} does not exist")
    if out.is_dir():
        raise ConfigError(f"cannot write {out}: it is a directory; give a file name (NAME.p12)")
    issued = session.issue(
        Role.CLIENT,
        friend,
        unique_id=unique_id,
        days=days,
        for_friend=friend,
        keep_key=False,
        passphrase=ca_passphrase,
    )
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(secret)
    )
    data = pkcs12.serialize_key_and_certificates(
        f"{session.name}/{friend}".encode(), issued.key, issued.cert, [session.ca_cert], encryption
    )
    write_atomic(out, data, mode=0o600)
    return issued


@dataclass(frozen=True, slots=True)
class Bundle:
    ca_cert: x509.Certificate
    cert: x509.Certificate
    key: PrivateKey
    identity: Identity


def read_bundle(path: Path, passphrase: Passphrase | None) -> Bundle:
    data = read_private(path, "bundle")
    secret = resolve_passphrase(passphrase)
    try:
        parsed = pkcs12.load_pkcs12(data, secret)
    except ValueError:
        if secret is None:
            raise CredentialError(
                f"cannot open bundle {path}: it is encrypted (give --passphrase-file) "
                "or not a PKCS#12 file"
            ) from None
        raise CredentialError(
            f"cannot open bundle {path}: wrong passphrase, or not a PKCS#12 file"
        ) from None
    if parsed.key is None or parsed.cert is None:
        raise CredentialError(f"bundle {path} lacks a certificate or its key; ask for a new one")
    cert = parsed.cert.certificate
    cas = [c.certificate for c in parsed.additional_certs]
    ident = Identity.of(cert)
    if ident is None:
        raise CredentialError(f"bundle {path} is not a paraconnect bundle (no identity URI)")
    ca = next(
        (
            c
            for c in cas
            if (ci := Identity.of(c))
            and ci.role is Role.SESSION
            and ci.session_id == ident.session_id
        ),
        None,
    )
    if ca is None:
        raise CredentialError(
            f"bundle {path} does not contain the session certificate of its session; "
            "ask its owner to share it again"
        )
    if not signed_by(cert, ca):
        raise CredentialError(
            f"bundle {path}: the certificate is not signed by the bundled session CA; "
            "ask its owner to share it again"
        )
    if not isinstance(parsed.key, PrivateKey):
        raise CredentialError(f"bundle {path}: unsupported key algorithm")
    check_key_matches(parsed.key, cert, path)
    return Bundle(ca, cert, parsed.key, ident)


def import_bundle(
    store: Store, path: Path, passphrase: Passphrase | None, as_name: str | None = None
) -> tuple[Session, Record]:
    bundle = read_bundle(path, passphrase)
    name = (
        as_name
        or bundle.ca_cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    )
    return adopt(store, str(name), bundle.ca_cert, bundle.cert, bundle.key)


def adopt(
    store: Store,
    name: str,
    ca_cert: x509.Certificate,
    cert: x509.Certificate,
    key: PrivateKey,
    level: SecurityLevel | None = None,
) -> tuple[Session, Record]:
    """Install credentials issued by someone else's session (a friend's bundle)."""
    ca_ident = Identity.of(ca_cert)
    ident = Identity.of(cert)
    if ca_ident is None or ca_ident.role is not Role.SESSION or ident is None:
        raise TrustError("the bundle does not hold paraconnect session credentials")
    if ident.session_id != ca_ident.session_id:
        raise TrustError("the bundle's certificate belongs to another session than its CA")
    if level is None:
        level = SecurityLevel.parse(session_level_of(ca_cert) or SecurityLevel.MUTUAL)
    existing = store.find_session_by_id(ca_ident.session_id)
    if existing is not None:
        session = existing
    else:
        path = store._session_path(name)
        if path.exists():
            raise ConfigError(
                f"a different session named {name!r} already exists in {store.sessions_dir}; "
                "import under another name with --as NAME"
            )
        ensure_private_dir(store.home)
        ensure_private_dir(store.sessions_dir)
        staging = store.sessions_dir / f".importing-{name}-{secrets.token_hex(4)}"
        os.mkdir(staging, 0o700)
        try:
            meta = {
                "format": FORMAT,
                "id": ca_ident.session_id,
                "name": name,
                "level": level.value,
                "key_type": key_type_of(ca_cert.public_key()).value,
                "owner": False,
                "created": utcnow().isoformat(),
            }
            write_atomic(staging / "ca.crt", pem(ca_cert), mode=0o644)
            write_atomic(staging / "session.json", json.dumps(meta, indent=1).encode(), mode=0o644)
            os.rename(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        session = Session(path)
    serial = format(cert.serial_number, "x")
    record = Record(
        serial=serial,
        name=ident.name,
        role=ident.role.value,
        unique_id=ident.unique_id,
        key_type=key_type_of(key).value,
        not_before=cert.not_valid_before_utc.isoformat(),
        not_after=cert.not_valid_after_utc.isoformat(),
        issued_at=utcnow().isoformat(),
        for_friend=ident.name,
        sha256=fingerprint(cert),
        key_kept=True,
    )
    with session._lock():
        ensure_private_dir(session.issued_dir)
        if (session.issued_dir / f"{serial}.json").exists():
            raise ConfigError(
                f"this certificate (serial {serial}) is already imported in session "
                f"{session.name!r}"
            )
        write_atomic(session.issued_dir / f"{serial}.crt", pem(cert), mode=0o644)
        write_atomic(session.issued_dir / f"{serial}.key", dump_private_key(key), mode=0o600)
        write_atomic(
            session.issued_dir / f"{serial}.json",
            json.dumps(record.as_dict(), indent=1).encode(),
            mode=0o644,
        )
    return session, record
