"""`paraconnect inspect FILE`: what a certificate, CRL, key or bundle is, in plain words."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509

from ._fs import read_private, read_public
from .errors import CredentialError, ParaconnectError
from .pki import (
    Store,
    cert_info,
    check_validity,
    key_type_of,
    load_private_key,
    parse_pem_certificates,
    parse_pem_crl,
    read_bundle,
    revocation_reason,
    signed_by,
)

__all__ = ["describe_file"]


def _validity(cert: x509.Certificate, now: dt.datetime) -> str:
    try:
        check_validity(cert, "certificate", now)
    except CredentialError as exc:
        return str(exc)
    left = cert.not_valid_after_utc - now
    return f"valid ({left.days}d {left.seconds // 3600}h left)"


def _describe_cert(
    cert: x509.Certificate, store: Store, session_name: str | None, now: dt.datetime
) -> dict[str, Any]:
    info = cert_info(cert)
    out: dict[str, Any] = info.as_dict()
    out["validity"] = _validity(cert, now)
    ident = info.identity
    session = store.find_session_by_id(ident.session_id) if ident else None
    if session is not None:
        out["session"] = session.name
        if not info.is_ca:
            entry = session.revocation_of(cert.serial_number)
            if entry is not None:
                why = revocation_reason(entry).name
                out["revoked"] = f"yes, at {entry.revocation_date_utc:%Y-%m-%d %H:%M} UTC ({why})"
            elif session.crl_path.exists():
                out["revoked"] = "no"
    if session_name is not None:
        target = store.open_session(session_name)
        if signed_by(cert, target.ca_cert):
            out["session_check"] = f"issued by session {target.name!r}"
        else:
            other = f" (its session ID is {ident.session_id})" if ident else ""
            out["session_check"] = (
                f"NOT issued by session {target.name!r}: it belongs to another session{other}"
            )
    return out


def describe_file(
    path: Path, *, store: Store, session_name: str | None = None, passphrase: bytes | None = None
) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    result: dict[str, Any] = {"file": str(path)}
    head = read_public(path, "file")
    if b"PRIVATE KEY-----" in head:
        # Read again through the private-file checks: an unsafe key is reported as such.
        data = read_private(path)
        result["kind"] = "private key (never printed)"
        result["encrypted"] = b"ENCRYPTED" in data
        if not result["encrypted"] or passphrase:
            key = load_private_key(data, path, passphrase)
            result["key_type"] = key_type_of(key).value
        return result
    if b"-----BEGIN X509 CRL-----" in head:
        crl = parse_pem_crl(head, path)
        result["kind"] = "certificate revocation list"
        result["issuer"] = crl.issuer.rfc4514_string()
        result["next_update"] = str(crl.next_update_utc)
        result["revoked_serials"] = [format(r.serial_number, "x") for r in crl]
        return result
    if b"-----BEGIN" in head:
        certs = parse_pem_certificates(head, path)
        result["kind"] = f"{len(certs)} PEM certificate{'s' if len(certs) > 1 else ''}"
    else:
        try:
            bundle = read_bundle(path, passphrase)
        except ParaconnectError as exc:
            raise CredentialError(
                f"{path} is not a PEM certificate, CRL or key, nor a readable PKCS#12 bundle "
                f"({exc})"
            ) from None
        certs = [bundle.cert, bundle.ca_cert]
        result["kind"] = "PKCS#12 bundle (certificate, key, session certificate)"
    result["certificates"] = [_describe_cert(c, store, session_name, now) for c in certs]
    return result
