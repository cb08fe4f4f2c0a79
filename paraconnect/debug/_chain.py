"""The peer's certificate against what we expect: our session CA, a role that may talk to us,
a validity our clock agrees with, not revoked in our list, bound to a node at level mutual.

Role, node binding and revocation are judged by the code that enforces them (``paraconnect.tls``
and ``paraconnect.pki``, as the tunnel calls them); this module only puts the verdicts in plain
words, so that the explanation cannot drift from the rule."""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from ..errors import ParaconnectError
from ..pki import (
    CertInfo,
    Credentials,
    Identity,
    Role,
    SecurityLevel,
    Store,
    cert_info,
    crl_number,
    fingerprint,
    human_duration,
    revocation_reason,
    revoked_entry,
    signed_by,
)
from ..tls import accepted_roles, binding_refusal, role_refusal
from ._report import NODE_BINDING_LIMIT, Report

__all__ = ["check_peer_cert", "check_peer_of", "freshest_crl", "human", "key_id", "validity"]


def human(delta: dt.timedelta) -> str:
    return human_duration(delta, spaced=True)


def key_id(cert: x509.Certificate, issuer: bool) -> str | None:
    try:
        if issuer:
            aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            raw = aki.key_identifier
        else:
            raw = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None
    return raw.hex(":").upper() if raw else None


@dataclass(frozen=True)
class _Peer:
    """The peer's certificate and what every step says about it."""

    cert: x509.Certificate
    info: CertInfo
    ident: Identity | None

    @property
    def desc(self) -> str:
        if self.ident is None:
            return f"subject {self.info.subject!r}"
        return f"{self.ident.role.value} {self.ident.name!r}"

    @property
    def common(self) -> dict[str, Any]:
        return {"peer_sha256": self.info.sha256, "peer_subject": self.info.subject}

    @property
    def common_name(self) -> str | None:
        cn = self.cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        return str(cn[0].value) if cn else None


def check_peer_cert(
    report: Report,
    cert: x509.Certificate,
    creds: Credentials | None,
    *,
    level: SecurityLevel,
    our_role: Role = Role.CLIENT,
    store: Store | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Steps peer-ca, peer-role, peer-validity, peer-revoked, peer-unique-id."""
    peer = _Peer(cert, cert_info(cert), Identity.of(cert))
    _peer_ca(report, peer, creds, store)
    _peer_role(report, peer, our_role, level)
    _peer_validity(report, peer, now or dt.datetime.now(dt.UTC))
    _peer_revoked(report, peer, creds, store)
    _peer_unique_id(report, peer, level)


def check_peer_of(
    report: Report,
    sslobj: ssl.SSLObject,
    creds: Credentials | None,
    *,
    level: SecurityLevel,
    store: Store | None,
) -> bool:
    """:func:`check_peer_cert` on the certificate of a finished handshake, judged as the
    listener and connector judge it (acting as a client); False when the peer sent none."""
    der = sslobj.getpeercert(binary_form=True)
    if not der:
        return False
    cert = x509.load_der_x509_certificate(der)
    check_peer_cert(report, cert, creds, level=level, our_role=Role.CLIENT, store=store)
    return True


def _peer_ca(report: Report, peer: _Peer, creds: Credentials | None, store: Store | None) -> None:
    """Which CA signed it: ours, or (named, with its session when we hold it) another."""
    info, desc = peer.info, peer.desc
    if creds is None:
        report.skip(
            "peer-ca",
            f"the peer is {desc}, issued by {info.issuer!r}; our own "
            "credentials could not be loaded, so it cannot be compared",
            **peer.common,
        )
        return
    if signed_by(peer.cert, creds.ca_cert):
        report.ok(
            "peer-ca",
            f"the peer is {desc}, signed by our session CA {_ca_name(creds.ca_cert)} "
            f"(SHA256 {fingerprint(creds.ca_cert)[:23]}…)",
            expected_ca_sha256=fingerprint(creds.ca_cert),
            **peer.common,
        )
        return
    theirs = peer.ident.session_id if peer.ident else None
    issuer_key = key_id(peer.cert, issuer=True)
    ours = creds.identity.session_id
    known = (store or _store()).find_session_by_id(theirs) if theirs else None
    signer = f"{info.issuer!r}"
    if theirs:
        signer += f" (session {theirs[:8]}…"
        signer += f", CA SHA256 {known.ca_fingerprint}" if known else ""
        signer += f", CA key id {issuer_key}" if issuer_key and not known else ""
        signer += ")"
    where = f"; that is your session {known.name!r}" if known else ""
    report.fail(
        "peer-ca",
        f"the peer's certificate ({desc}) was issued by {signer}{where}, not by our session "
        f"CA {_ca_name(creds.ca_cert)} (session {ours[:8]}…, CA SHA256 "
        f"{fingerprint(creds.ca_cert)}): the two ends belong to different sessions",
        "use credentials of the same session on both ends: start the agent with a "
        "certificate of our session, or dial with credentials of the peer's session"
        + (f" (--creds {known.name})" if known else ""),
        expected_ca_sha256=fingerprint(creds.ca_cert),
        expected_session=ours,
        peer_session=theirs,
        peer_ca_key_id=issuer_key,
        peer_ca_sha256=known.ca_fingerprint if known else None,
        **peer.common,
    )


def _peer_role(report: Report, peer: _Peer, our_role: Role, level: SecurityLevel) -> None:
    """The tunnel's role rule (tls.role_refusal), at every level with TLS."""
    ident = peer.ident
    if ident is None:
        report.fail(
            "peer-role",
            "the peer's certificate carries no paraconnect identity (no paraconnect:// URI): "
            "it is not a paraconnect agent's certificate",
            "dial the agent's --listen address, not another TLS service",
        )
        return
    refusal = role_refusal(ident, our_role)
    if refusal is None:
        report.ok(
            "peer-role",
            f"the peer is a {ident.role.value}: it may talk to a {our_role.value} "
            f"at level {level.value}",
        )
        return
    wanted = " or ".join(r.value for r in accepted_roles(our_role))
    report.fail(
        "peer-role",
        f"the peer presents a {ident.role.value} certificate ({ident.name!r}) where a "
        f"{wanted} is expected: at level {level.value} a {ident.role.value} cannot talk "
        f"to a {our_role.value}",
        f"start the agent with a {wanted} certificate ('paraconnect issue server NAME "
        "--session S')",
        enforced=refusal,
    )


def _peer_validity(report: Report, peer: _Peer, now: dt.datetime) -> None:
    """Its validity against this machine's clock (TLS refuses outside it)."""
    validity(
        report,
        "peer-validity",
        "the peer's certificate",
        (peer.info.not_before, peer.info.not_after, now),
        early="one of the two clocks is wrong (or it was issued with a date in the future)",
        early_fix="check time synchronisation on both machines (timedatectl, chronyc "
        "tracking), then issue the peer a new certificate if the clocks agree",
        expired_fix="issue the agent a new certificate ('paraconnect issue server NAME "
        "--session S') and restart it; if the date looks wrong, check this machine's clock",
        soon_fix="issue the agent a new certificate soon",
    )


def validity(
    report: Report,
    step: str,
    subject: str,
    when: tuple[dt.datetime, dt.datetime, dt.datetime],
    *,
    early: str,
    early_fix: str,
    expired_fix: str,
    soon_fix: str,
) -> None:
    """One certificate's validity (`when`: not before, not after, now) against this machine's
    clock, as `step`: failed outside it, warned within a day of its end.  `subject` names it in
    the sentences; `early` says why it may not be valid yet."""
    nb, na, now = when
    clock = {"now": now.isoformat(), "not_before": nb.isoformat(), "not_after": na.isoformat()}
    if now < nb:
        report.fail(
            step,
            f"{subject} is not valid until {nb:%Y-%m-%d %H:%M:%S} UTC, {human(nb - now)} "
            f"ahead of this machine's clock ({now:%Y-%m-%d %H:%M:%S} UTC): {early}",
            early_fix,
            clock_difference_s=int((nb - now).total_seconds()),
            **clock,
        )
    elif now >= na:
        report.fail(
            step,
            f"{subject} expired at {na:%Y-%m-%d %H:%M:%S} UTC, {human(now - na)} ago by this "
            f"machine's clock ({now:%Y-%m-%d %H:%M:%S} UTC)",
            expired_fix,
            clock_difference_s=-int((now - na).total_seconds()),
            **clock,
        )
    elif na - now < dt.timedelta(hours=24):
        report.warn(
            step,
            f"{subject} expires in {human(na - now)} ({na:%Y-%m-%d %H:%M} UTC)",
            soon_fix,
            **clock,
        )
    else:
        report.ok(
            step,
            f"{subject} is valid until {na:%Y-%m-%d %H:%M} UTC ({human(na - now)} left)",
            **clock,
        )


def _peer_revoked(
    report: Report, peer: _Peer, creds: Credentials | None, store: Store | None
) -> None:
    """Revoked in our freshest list, by the lookup the tunnel refuses on (pki.revoked_entry)."""
    if creds is None:
        report.skip("peer-revoked", "no credentials, no revocation list to check against")
        return
    crl = freshest_crl(creds, store)
    if crl is None:
        report.ok(
            "peer-revoked",
            "our session has no revocation list (nothing revoked), or these credentials carry none",
        )
        return
    entry = revoked_entry(crl, peer.cert.serial_number)
    if entry is None:
        report.ok(
            "peer-revoked", f"not in our revocation list ({len(list(crl))} revoked certificate(s))"
        )
        return
    reason = str(revocation_reason(entry).value)
    report.fail(
        "peer-revoked",
        f"the peer's certificate {peer.desc} (serial {peer.info.serial_hex}) was REVOKED at "
        f"{entry.revocation_date_utc:%Y-%m-%d %H:%M} UTC, reason "
        f"{reason}, in our session's revocation list",
        "issue the agent a new certificate and restart it with that one",
        revoked_at=entry.revocation_date_utc.isoformat(),
        revocation_reason=reason,
    )


def _peer_unique_id(report: Report, peer: _Peer, level: SecurityLevel) -> None:
    """Level mutual's node binding, by the tunnel's rule (tls.binding_refusal)."""
    ident = peer.ident
    if level is not SecurityLevel.MUTUAL:
        report.skip(
            "peer-unique-id", f"level {level.value}: certificates need not be bound to a node"
        )
        return
    if ident is None:
        report.skip("peer-unique-id", "no paraconnect identity to check")
        return
    refusal = binding_refusal(ident, peer.common_name)
    if refusal is None:
        report.ok(
            "peer-unique-id",
            f"the peer's certificate is bound to node {ident.unique_id!r} (CN = unique ID); "
            f"{NODE_BINDING_LIMIT}",
        )
        return
    report.fail(
        "peer-unique-id",
        f"the peer's certificate {ident.name!r} is not bound to a node (CN "
        f"{peer.common_name!r}, unique ID {ident.unique_id!r}); level mutual needs a "
        "certificate issued with the node's unique ID",
        "issue the agent's certificate on its node with --unique-id $(paraconnect "
        "unique-id) there, or use level encrypt",
        enforced=refusal,
    )


def _ca_name(ca: x509.Certificate) -> str:
    ident = Identity.of(ca)
    return repr(ident.name) if ident else repr(ca.subject.rfc4514_string())


def _store() -> Store:
    return Store()


def freshest_crl(
    creds: Credentials | None, store: Store | None
) -> x509.CertificateRevocationList | None:
    """The freshest revocation list we hold for our session: the session's own if this store
    has it (it may be newer than a copy beside PEM files), else the one in the credentials."""
    if creds is None:
        return None
    crl = creds.crl
    # A broken store must not hide the credentials' own list.
    with contextlib.suppress(ParaconnectError, OSError, ValueError):
        session = (store or _store()).find_session_by_id(creds.identity.session_id)
        if session is not None:
            own = session.crl()
            if own is not None and (crl is None or crl_number(own) >= crl_number(crl)):
                crl = own
    return crl
