"""The agent's side of a request to the hub's enrolment endpoint (see _enroll.py): TLS 1.3 with
no CA to verify against yet, so the hub's CA is checked against the pinned fingerprint and its
certificate against the pinned role and name before anything of ours is sent."""

from __future__ import annotations

import hmac
import ssl
import time
from typing import Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSAttribute, TLSStream
from cryptography import x509

from .. import _wire
from ..errors import NetworkError, ProtocolError, TrustError
from ..pki import Identity, Role, fingerprint
from ..tunnel import Endpoint

MAX_MESSAGE = 64 * 1024


def _norm_fp(text: str) -> str:
    return text.replace(":", "").strip().lower()


async def _send(stream: anyio.abc.ByteStream, obj: dict[str, Any]) -> None:
    await stream.send(_wire.encode(obj, limit=MAX_MESSAGE, what="an enrolment message"))


async def _recv(stream: anyio.abc.ByteStream, where: str) -> dict[str, Any]:
    try:
        obj = await _wire.read_anyio(
            stream, limit=MAX_MESSAGE, what="an enrolment message", eof_ok=True
        )
    except ProtocolError as exc:
        raise ProtocolError(f"{where}: {exc}") from exc
    if obj is None:
        raise NetworkError(f"{where} closed the enrolment connection")
    return obj


def _check_hub(
    where: str, pinned: str, first: dict[str, Any], leaf_der: bytes | None, role: Role,
    name: str,
) -> x509.Certificate:  # fmt: skip
    """The session CA the hub sent, once it is the pinned one and the hub's own certificate is
    a leaf of it naming the pinned role and name."""
    try:
        ca = x509.load_pem_x509_certificate(str(first.get("ca", "")).encode())
    except ValueError:
        raise ProtocolError(f"{where} sent no session CA certificate") from None
    got = _norm_fp(fingerprint(ca))
    if not hmac.compare_digest(got, pinned):
        raise TrustError(
            f"{where} presents session CA {got[:16]}…, not the pinned {pinned[:16]}…;"
            " check --ca-sha256 (or the address: another hub answers there)"
        )
    if leaf_der is None:
        raise TrustError(f"{where} presented no certificate")
    leaf = x509.load_der_x509_certificate(leaf_der)
    try:
        leaf.verify_directly_issued_by(ca)
    except Exception as exc:
        raise TrustError(f"{where}'s certificate is not signed by the pinned CA") from exc
    now = time.time()
    if not leaf.not_valid_before_utc.timestamp() <= now <= leaf.not_valid_after_utc.timestamp():
        raise TrustError(f"{where}'s certificate is not valid now; check both clocks")
    ident, session = Identity.of(leaf), Identity.of(ca)
    if ident is None or session is None or ident.session_id != session.session_id:
        raise TrustError(f"{where}'s certificate names no identity of the pinned session")
    if ident.role is not role or ident.name != name:
        raise TrustError(
            f"{where} is {ident.role.value} {ident.name!r} of the session, not the hub "
            f"({role.value}/{name}); the token was not sent: check the enrolment address"
        )
    return ca


async def _ask_hub(
    hub_at: Endpoint, pinned: str, want_role: Role, want_name: str, where: str,
    request: dict[str, Any], timeout: float,  # noqa: ASYNC109
) -> tuple[x509.Certificate, dict[str, Any]]:  # fmt: skip
    """One request to the enrolment endpoint, sent only once the hub showed the pinned CA and
    identity; the CA and the hub's reply."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # No CA yet to verify against: the chain is checked below against the pinned fingerprint.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with anyio.fail_after(timeout):
            tcp = await anyio.connect_tcp(hub_at.host, hub_at.port)
            # The pinned CA, as the TLS server name: the hub picks that session's certificate.
            sni = f"{pinned[:32]}.{pinned[32:]}.enroll.paraconnect"
            try:
                stream = await TLSStream.wrap(
                    tcp, server_side=False, hostname=sni, ssl_context=ctx,
                    standard_compatible=False,
                )  # fmt: skip
            except BaseException as exc:
                await tcp.aclose()
                if not isinstance(exc, anyio.EndOfStream | anyio.BrokenResourceError):
                    raise
                # A hub ends the handshake when no session of its own has the CA named.
                raise TrustError(
                    f"{where} ended the TLS handshake: it serves no session whose CA is the "
                    f"pinned {pinned[:16]}… (not the pinned CA, another program, or a hub that "
                    "cannot sign for that session now: see its log); check --ca-sha256 and the "
                    "address"
                ) from None
            async with stream:
                leaf_der = stream.extra(  # noqa: S610 - anyio's typed attribute
                    TLSAttribute.peer_certificate_binary
                )
                first = await _recv(stream, where)
                ca = _check_hub(where, pinned, first, leaf_der, want_role, want_name)
                # Only now, with the hub's CA and identity checked, does the token leave here.
                await _send(stream, request)
                return ca, await _recv(stream, where)
    except TimeoutError:
        what = "enrolment" if request.get("type") == "enroll" else "its report"
        raise NetworkError(f"{where} did not complete {what} within {timeout:g} s") from None
    except OSError as exc:
        raise NetworkError(f"cannot reach {where}: {exc.strerror or exc}") from None
    except ssl.SSLError as exc:
        raise TrustError(f"TLS with {where} failed: {exc.reason or exc}") from None
