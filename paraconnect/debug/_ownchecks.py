"""The checks on our own certificate once its pieces are loaded: validity against this clock,
revocation and the revocation list itself, the node binding at level mutual, and whether a
peer holding a given CA would trust us."""

from __future__ import annotations

import datetime as dt
import os
import urllib.parse
from pathlib import Path

from cryptography import x509

from .._fs import read_all
from ..errors import ParaconnectError
from ..pki import (
    Identity,
    SecurityLevel,
    Store,
    crl_number,
    fingerprint,
    parse_pem_certificates,
    revocation_reason,
    revoked_entry,
)
from ._chain import validity
from ._report import NODE_BINDING_LIMIT, Report

__all__ = [
    "crl_steps",
    "level_of",
    "peer_ca_step",
    "read_raw",
    "unique_id_step",
    "validity_step",
    "why",
]


def read_raw(path: Path) -> bytes:
    """A file's bytes, refusing symlinks but not judging permissions (that is a step)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return read_all(fd)
    finally:
        os.close(fd)


def why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def level_of(ca: x509.Certificate) -> SecurityLevel:
    """The level written in the session certificate's URI (``...?level=encrypt``)."""
    try:
        san = ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return SecurityLevel.MUTUAL
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        found = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query).get("level")
        if uri.startswith("paraconnect://") and found:
            return SecurityLevel.parse(found[0])
    return SecurityLevel.MUTUAL


def validity_step(report: Report, what: str, cert: x509.Certificate, now: dt.datetime) -> None:
    validity(
        report,
        "validity" if what == "certificate" else "ca-validity",
        f"the {what}",
        (cert.not_valid_before_utc, cert.not_valid_after_utc, now),
        early="this clock is behind the issuer's, or it was issued with a future date",
        early_fix="check time synchronisation (timedatectl, chronyc tracking) here and on the "
        "issuing machine, then issue a new one if the clocks agree",
        expired_fix="issue a new one with 'paraconnect issue' (a new session if the CA expired)",
        soon_fix="issue a new one before then",
    )


def crl_steps(
    report: Report,
    cert: x509.Certificate,
    ident: Identity,
    source: str,
    beside: x509.CertificateRevocationList | None,
    beside_path: Path | None,
    crl: x509.CertificateRevocationList | None,
    store: Store,
    now: dt.datetime,
) -> None:
    if crl is not None:
        entry = revoked_entry(crl, cert.serial_number)
        if entry is not None:
            why = str(revocation_reason(entry).value)
            report.fail(
                "revoked",
                f"this certificate ({ident.name!r}, serial {cert.serial_number:x}) was REVOKED "
                f"at {entry.revocation_date_utc:%Y-%m-%d %H:%M} UTC, reason {why}",
                "ask the session owner for a new certificate; a revoked one never comes back",
                revoked_at=entry.revocation_date_utc.isoformat(),
                revocation_reason=why,
            )
        else:
            report.ok("revoked", "not revoked in the session's revocation list")
    session = None
    try:
        session = store.find_session_by_id(ident.session_id)
    except ParaconnectError:
        session = None
    own = None
    if session is not None:
        try:
            own = session.crl()
        except ParaconnectError:
            own = None
    if beside is None and beside_path is None and session is None:
        report.warn(
            "crl",
            f"{source} carries no revocation list: this side cannot refuse revoked peers",
            "copy the session's crl.pem beside the credentials "
            "(or use them from a directory that has one)",
        )
        return
    if crl is None:
        report.ok("crl", "no revocation list: this session has revoked nothing yet")
        return
    if crl.next_update_utc is not None and crl.next_update_utc < now:
        report.warn(
            "crl",
            f"the revocation list is out of date (next update was due "
            f"{crl.next_update_utc:%Y-%m-%d %H:%M} UTC)",
            "copy a fresh crl.pem from the session",
        )
        return
    if own is not None and beside is not None and crl_number(own) > crl_number(beside):
        report.warn(
            "crl",
            f"the revocation list beside the credentials (number {crl_number(beside)}) is older "
            f"than the session's (number {crl_number(own)}): it misses recent revocations",
            f"copy {session.crl_path if session else 'the session crl.pem'} to {beside_path}",
        )
        return
    report.ok(
        "crl",
        f"revocation list present and current (number {crl_number(crl)}, {len(list(crl))} revoked)",
    )


def unique_id_step(
    report: Report,
    cert: x509.Certificate,
    ident: Identity,
    level: SecurityLevel,
    unique_id: str | None,
    store: Store,
) -> None:
    if level is not SecurityLevel.MUTUAL:
        report.skip("unique-id", f"level {level.value}: certificates need not be bound to a node")
        return
    try:
        here = unique_id or store.unique_id().value
    except ParaconnectError as exc:
        report.fail("unique-id", f"this node's unique ID cannot be read: {exc}")
        return
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    cn_text = str(cn[0].value) if cn else None
    if not ident.unique_id or cn_text != ident.unique_id:
        report.fail(
            "unique-id",
            f"the certificate {ident.name!r} is not bound to a node (CN {cn_text!r}); level "
            "mutual needs a certificate issued with this node's unique ID",
            f"issue one with 'paraconnect issue ROLE NAME --unique-id {here}'",
        )
    elif ident.unique_id != here:
        report.fail(
            "unique-id",
            f"the certificate {ident.name!r} was issued for node {ident.unique_id!r} (its CN), "
            f"but this node is {here!r}: a COPIED certificate, refused at level mutual "
            f"({NODE_BINDING_LIMIT})",
            f"issue one on this machine: 'paraconnect issue ROLE NAME --unique-id {here}' "
            "(or, if this really is that node, set PARACONNECT_UNIQUE_ID accordingly)",
            certificate_unique_id=ident.unique_id,
            node_unique_id=here,
        )
    else:
        report.ok(
            "unique-id", f"bound to this node ({here!r}: CN = unique ID); {NODE_BINDING_LIMIT}"
        )


def peer_ca_step(report: Report, ours: x509.Certificate, path: Path) -> None:
    try:
        theirs = parse_pem_certificates(read_raw(path), path)[0]
    except (OSError, ParaconnectError) as exc:
        report.fail("peer-ca", f"cannot read --peer-ca {path}: {why(exc)}", "check the path")
        return
    if fingerprint(theirs) == fingerprint(ours):
        report.ok(
            "peer-ca", f"the peer's CA {path} is our session CA (SHA256 {fingerprint(ours)[:23]}…)"
        )
        return
    ti, oi = Identity.of(theirs), Identity.of(ours)
    report.fail(
        "peer-ca",
        f"the peer's CA {path} (session {ti.session_id[:8] if ti else '?'}…, SHA256 "
        f"{fingerprint(theirs)}) is not ours (session {oi.session_id[:8] if oi else '?'}…, "
        f"SHA256 {fingerprint(ours)}): the two ends would refuse each other",
        "use credentials of one session on both ends",
        peer_ca_sha256=fingerprint(theirs),
        our_ca_sha256=fingerprint(ours),
    )
