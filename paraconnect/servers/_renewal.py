"""Renewal, the hub's side: certify a fresh key for a server that asks over its mutual-TLS
control channel (its certificate in force proved who it is; no token is needed).

The new certificate is for the identity the channel proved, never for what the request says:
the same server id, the same node binding (unique ID).  It is refused for a server this hub
does not know, that has ended, or whose certificate in force is not the one recorded for it (a
superseded or revoked one), and for a certificate of the session that was revoked.

The enrolled certificates' lifetime: 24 h unless the launch option ``cert_lifetime`` (seconds)
says otherwise; renewal is what lets it be short (a stolen key dies by itself).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import ParaconnectError, TrustError
from ..pki import Identity, Role, Session
from ._enroll import _check_csr
from ._lifetime import cert_lifetime_days
from ._registry import ServerRegistry

__all__ = ["Renewed", "certify_renewal"]

log = logging.getLogger("paraconnect.servers")


@dataclass(frozen=True, slots=True)
class Renewed:
    cert: x509.Certificate
    old_serial: int | None
    crl_pem: str | None

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def certify_renewal(
    session: Session,
    registry: ServerRegistry,
    server_id: str,
    proven: Identity | None,
    proven_sha256: str | None,
    proven_serial: int | None,
    csr_pem: str,
) -> Renewed:
    """A new certificate for `server_id`'s fresh key, or TrustError/ProtocolError saying why
    not.  `proven*` are what its control channel's TLS proved."""
    if proven is None or proven_sha256 is None:
        raise TrustError(f"{server_id} proved no certificate (level none): nothing to renew")
    if proven.role is not Role.SERVER or proven.name != server_id:
        raise TrustError(f"{proven.label} may not renew the certificate of {server_id}")
    rec = registry.get(server_id)
    if rec is None or rec.final or rec.session != session.name:
        state = "unknown here" if rec is None else f"{rec.state} in session {rec.session}"
        raise TrustError(f"server {server_id} is {state}: its certificate is not renewed")
    if rec.cert_sha256 and rec.cert_sha256 != proven_sha256:
        raise TrustError(f"the certificate {server_id} holds is not the one in force for it")
    revoked = {int(r.serial, 16) for r in session.records() if r.revoked}
    if proven_serial is not None and proven_serial in revoked:
        raise TrustError(f"the certificate {server_id} holds was revoked")
    public = _check_csr(csr_pem, server_id)
    days = cert_lifetime_days(rec.options)
    try:
        _record, cert = session.certify(
            Role.SERVER, server_id, public, unique_id=proven.unique_id, days=days
        )
    except ParaconnectError as exc:  # the hub's own trouble (its key, its disk)
        log.error("hub: cannot renew the certificate of %s: %s", server_id, exc)
        raise TrustError(f"the hub cannot certify {server_id} now; its log says why") from None
    # The registry keeps the certificate in force until the hub sees the new one in use.
    crl = session.crl()
    return Renewed(
        cert, proven_serial, crl.public_bytes(serialization.Encoding.PEM).decode() if crl else None
    )
