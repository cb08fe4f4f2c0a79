"""What TLS proved about a peer, as a typed value (never ssl_object lookups scattered about),
and the security-level checks made on it after the handshake."""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass

from cryptography import x509

from ..errors import TrustError
from ..pki import Identity, Role, SecurityLevel, fingerprint

__all__ = [
    "ANONYMOUS",
    "PeerIdentity",
    "accepted_roles",
    "binding_refusal",
    "check_peer",
    "peer_identity",
    "role_refusal",
]


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    identity: Identity | None  # None only at level `none`
    serial: int | None
    sha256: str | None
    common_name: str | None
    not_after: dt.datetime | None
    tls_version: str | None
    cipher: str | None

    @property
    def label(self) -> str:
        return self.identity.label if self.identity is not None else "anonymous (no TLS)"

    def as_dict(self) -> dict[str, object]:
        ident = self.identity
        return {
            "session_id": ident.session_id if ident else None,
            "role": ident.role.value if ident else None,
            "name": ident.name if ident else None,
            "unique_id": ident.unique_id if ident else None,
            "serial": format(self.serial, "x") if self.serial is not None else None,
            "sha256": self.sha256,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
        }


ANONYMOUS = PeerIdentity(None, None, None, None, None, None, None)


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> PeerIdentity:
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise TrustError("the peer sent no certificate")
    cert = x509.load_der_x509_certificate(der)
    cn_attrs = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    cipher = ssl_object.cipher()
    return PeerIdentity(
        identity=Identity.of(cert),
        serial=cert.serial_number,
        sha256=fingerprint(cert),
        common_name=str(cn_attrs[0].value) if cn_attrs else None,
        not_after=cert.not_valid_after_utc,
        tls_version=ssl_object.version(),
        cipher=cipher[0] if cipher else None,
    )


_ACCEPTS: dict[Role, tuple[Role, ...]] = {
    # What may stand on the other end, by our own role.
    Role.SERVER: (Role.CLIENT, Role.NODE),
    Role.CLIENT: (Role.SERVER, Role.NODE),
    Role.NODE: (Role.SERVER, Role.CLIENT, Role.NODE),
}


def accepted_roles(our_role: Role) -> tuple[Role, ...]:
    """The roles a peer may hold to talk to us acting as `our_role` (at every level with TLS)."""
    return _ACCEPTS[our_role]


def role_refusal(ident: Identity, our_role: Role) -> str | None:
    """Why a peer of this identity may not talk to `our_role`, or None when it may."""
    if ident.role in _ACCEPTS[our_role]:
        return None
    return (
        f"the peer presented a {ident.role.value} certificate ({ident.name!r}), which cannot "
        f"talk to a {our_role.value}; it needs a "
        f"{' or '.join(r.value for r in _ACCEPTS[our_role])} certificate"
    )


def binding_refusal(
    ident: Identity, common_name: str | None, claimed_unique_id: str | None = None
) -> str | None:
    """Level mutual: why this certificate is not bound to the node it runs on, or None."""
    if not ident.unique_id or common_name != ident.unique_id:
        return (
            f"the peer's certificate {ident.name!r} is not bound to a node (level mutual needs "
            "a certificate issued with the node's unique ID)"
        )
    if claimed_unique_id is not None and claimed_unique_id != ident.unique_id:
        return (
            f"the peer says it runs on node {claimed_unique_id!r}, but its certificate "
            f"{ident.name!r} was issued for node {ident.unique_id!r}: a copied certificate"
        )
    return None


def check_peer(
    peer: PeerIdentity,
    *,
    level: SecurityLevel,
    session_id: str,
    our_role: Role,
    claimed_unique_id: str | None = None,
) -> None:
    """Apply the security level to a peer TLS has already verified against the session CA.

    Session and role are checked at every level with TLS; the levels differ only in node
    binding (mutual), so a friend's client certificate never passes for a server at encrypt.
    The debugger (paraconnect.debug) explains its verdicts with the same rule functions."""
    if level is SecurityLevel.NONE:
        return
    ident = peer.identity
    if ident is None:
        raise TrustError("the peer's certificate carries no paraconnect identity")
    if ident.session_id != session_id:
        raise TrustError(
            f"the peer's certificate belongs to session {ident.session_id[:8]}…, "
            f"not ours ({session_id[:8]}…)"
        )
    why = role_refusal(ident, our_role)
    if why is None and level is SecurityLevel.MUTUAL:
        why = binding_refusal(ident, peer.common_name, claimed_unique_id)
    if why is not None:
        raise TrustError(why)
