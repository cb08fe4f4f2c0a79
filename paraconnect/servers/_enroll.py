"""Enrolment: an agent gets its server certificate without its key ever leaving its host.

The launched agent is given only the session CA certificate's SHA-256 fingerprint, the hub's
enrolment address and a one-time token bound to its server id (in a file or its environment,
never on a command line).  It makes its own key, connects over TLS 1.3 (no client
certificate: this endpoint takes nothing but one enrolment request), checks that the hub's
certificate is signed by a CA with the pinned fingerprint, and sends a CSR with the token.  The
hub answers with the certificate (+ CA + CRL); the agent writes a PEM directory (0700, key
0600, every file atomic) that ``paraconnect serve --creds DIR`` reads.

Tokens: 32 random bytes, single use, expire (default 10 minutes), bound to one server id,
stored only as their SHA-256 in the registry.

The agent names the CA it pins in the TLS server name (``<fp[:32]>.<fp[32:]>.enroll.paraconnect``)
so that a hub with several sessions presents that session's certificate.  A caller that names no
session CA of this hub gets no certificate at all (the handshake ends with ``unrecognized_name``).
The certificate shown is a leaf of the session CA made for enrolment alone (``client/hub:enroll``,
a name ``paraconnect issue`` cannot give, no node binding, its key only in the hub's memory): an
anonymous caller never learns the hub's node ID, and the agent pins that role and name
(``--hub-identity``), so another member of the session cannot pose as the hub and collect a token.
The session CA certificate itself (which names the session ID) is what the agent pins, so a
caller who already knows the CA's fingerprint sees it.

Wire (after the TLS handshake; 4-byte big-endian length + JSON, 64 KiB at most):
hub → agent ``{"type": "ca", "ca": PEM}``; agent → hub ``{"type": "enroll", "version": 1,
"server_id", "token", "csr", "unique_id"}``; hub → agent ``{"type": "certificate", "cert",
"ca", "crl", "report"}`` or ``{"type": "error", "reason"}``.  ``report`` is a second one-time
token: an agent that cannot dial the phone-home address after enrolling sends
``{"type": "report", "version": 1, "server_id", "token", "address", "reason"}`` on a new
connection (same pinning), so the hub can say why it never phoned home; answer ``{"type": "ok"}``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSAttribute, TLSStream
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from .._accept import serve_listener
from .._fs import ensure_private_dir, write_atomic
from .._wire import address_label
from ..errors import ConfigError, ParaconnectError, ProtocolError, TrustError
from ..pki import (
    Credentials,
    Identity,
    PublicKey,
    Role,
    Session,
    Store,
    build_leaf,
    check_name,
    check_unique_id,
    fingerprint,
)
from ..tunnel import parse_endpoint
from ._enroll_dial import _ask_hub, _norm_fp, _recv, _send
from ._lifetime import DEFAULT_CERT_LIFETIME, FORWARD_CERT_LIFETIME, cert_lifetime_days
from ._registry import ServerRegistry

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "HUB_IDENTITY",
    "REPORT_FILE",
    "EnrollServer",
    "enroll",
    "issue_token",
    "report_unreachable",
    "retire",
    "revoke_enrolled",
]

log = logging.getLogger("paraconnect.servers")

DEFAULT_TOKEN_TTL = 600.0
# Who the enrolment endpoint is: ':' is not allowed in names 'paraconnect issue' gives, so no
# member of the session can hold a certificate with this identity.
HUB_IDENTITY = "client/hub:enroll"
# What a report token is bound to, instead of a server id: it can never enrol a server.
REPORT = "report:"
REPORT_FILE = "report.token"  # in the enrolled credentials directory, 0600
_ENROLL_LEAF_DAYS = 1.0
_KEY_TYPES = (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)
_CURVES = (ec.SECP256R1, ec.SECP384R1)
HANDSHAKE_TIMEOUT = 10.0


def _peer(stream: anyio.abc.SocketStream) -> str:
    try:
        addr = stream.extra(anyio.abc.SocketAttribute.remote_address)  # noqa: S610
    except (OSError, anyio.TypedAttributeLookupError):
        return "an unknown address"
    return address_label(addr, unix=str(addr))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(
    registry: ServerRegistry, server_id: str, session: str, ttl: float = DEFAULT_TOKEN_TTL
) -> str:
    """A fresh one-time token for `server_id`; only its hash is stored."""
    token = secrets.token_urlsafe(32)
    registry.add_token(_digest(token), server_id, session, time.time() + ttl)
    return token


def parse_hub_identity(text: str) -> tuple[Role, str]:
    """``ROLE/NAME`` as given with --hub-identity."""
    role, sep, name = text.partition("/")
    try:
        parsed: Role | None = Role(role)
    except ValueError:
        parsed = None
    if not sep or not name or parsed is None or parsed is Role.SESSION:
        raise ConfigError(
            f"--hub-identity {text!r}: give the hub's ROLE/NAME as the hub's enrolment line does "
            f"(e.g. {HUB_IDENTITY})"
        )
    return parsed, name


def _tls_server_context(session: Session) -> tuple[ssl.SSLContext, float]:
    """A context showing a fresh enrolment leaf of `session` (key in memory only), and when
    that leaf expires."""
    role, name = parse_hub_identity(HUB_IDENTITY)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = build_leaf(
        session.signer(), session.ca_cert, key.public_key(),
        Identity(session.id, role, name), _ENROLL_LEAF_DAYS,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_NONE  # the agent has no certificate yet: that is the point
    with tempfile.TemporaryDirectory(prefix="paraconnect-enroll-") as tmp:
        key_path = Path(tmp) / "key.pem"
        cert_path = Path(tmp) / "cert.pem"
        pkcs8 = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(key_path, pkcs8, mode=0o600)
        write_atomic(cert_path, leaf.public_bytes(serialization.Encoding.PEM), mode=0o600)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx, leaf.not_valid_after_utc.timestamp()


def _printable(value: str, what: str) -> None:
    # A trailing newline must not slip past a name pattern that ends in '$'.
    if not value.isprintable():
        raise ConfigError(f"invalid {what} {value!r}: no control characters")


def _check_csr(csr_pem: str, server_id: str) -> PublicKey:
    """The CSR's public key as the hub will certify it, or the reason it will not."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise ProtocolError(f"the CSR of {server_id} is not a PEM certificate request") from None
    try:
        valid = csr.is_signature_valid
        public = csr.public_key()
    except Exception:  # any key cryptography cannot use is a bad request
        raise ProtocolError(f"the CSR of {server_id} holds a key paraconnect cannot use") from None
    if not valid:
        raise TrustError(f"the CSR of {server_id} is not signed by its own key")
    if not isinstance(public, _KEY_TYPES):
        raise ProtocolError(f"the CSR of {server_id} holds a key type paraconnect does not use")
    if isinstance(public, ec.EllipticCurvePublicKey) and not isinstance(public.curve, _CURVES):
        raise ProtocolError(f"the CSR of {server_id} uses curve {public.curve.name}; use P-256")
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < 2048:
        raise ProtocolError(f"the CSR of {server_id} has a {public.key_size}-bit RSA key")
    return public


def retire(store: Store, registry: ServerRegistry, server_id: str) -> None:
    """A server that ended (stopped or failed) leaves its key in its job's directory: revoke
    its certificate (``cessationOfOperation``); the CRL reaches agents as any revocation does."""
    rec = registry.get(server_id)
    try:
        if rec is not None:
            revoke_enrolled(store.open_session(rec.session), server_id, "cessationOfOperation")
    except ParaconnectError as exc:
        log.warning("hub: %s has ended, but its certificate stays valid: %s", server_id, exc)


def revoke_enrolled(session: Session, server_id: str, reason: str) -> list[str]:
    """Revoke every unrevoked certificate the hub certified for `server_id`; their serials."""
    serials = [
        r.serial
        for r in session.records()
        if r.name == server_id and r.role == Role.SERVER.value and not r.revoked
    ]
    for serial in serials:
        session.revoke(serial, reason=reason)
        log.info("hub: revoked %s's certificate %s (%s)", server_id, serial, reason)
    return serials


class EnrollServer:
    """The hub's enrolment endpoint: TLS 1.3 with an enrolment leaf of the session the caller
    names (nothing for a caller that names none), no client certificate, one enrolment request
    per connection and nothing else.  `sessions` maps a session name to the session and the
    hub's credentials in it; only the session is used here (its CA key signs the leaf)."""

    def __init__(
        self,
        registry: ServerRegistry,
        sessions: dict[str, tuple[Session, Credentials]],
        listen: tuple[str, int] = ("127.0.0.1", 0),
        *,
        days: float = DEFAULT_CERT_LIFETIME / 86400,
        on_enrolled: Any = None,
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.listen = listen
        self.days = days
        self.on_enrolled = on_enrolled
        # (server_id, address, reason) from an agent that enrolled but cannot phone home.
        self.on_report: Callable[[str, str, str], None] | None = None
        self.address: tuple[str, int] | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._expires: dict[str, float] = {}

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        listener = await anyio.create_tcp_listener(
            local_host=self.listen[0], local_port=self.listen[1]
        )
        async with listener:
            sock = listener.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610
            host, port = sock.getsockname()[:2]
            self.address = (host, port)
            log.info("hub: enrolment endpoint on %s:%d", host, port)
            task_status.started(self.address)
            # At most MAX_IN_HAND callers at once: a flood waits in the backlog, not in our fds.
            await serve_listener(listener, self._handle, "hub: enrolment endpoint")

    def context(self, session: str) -> ssl.SSLContext:
        ctx = self._contexts.get(session)
        if ctx is None or self._expires.get(session, 0.0) < time.time() + 3600:
            # The enrolment leaf lives a day: a hub that runs for weeks makes a fresh one.
            ctx, self._expires[session] = _tls_server_context(self.sessions[session][0])
            self._contexts[session] = ctx
        return ctx

    def _base_context(self) -> ssl.SSLContext:
        # No certificate of its own: a caller that does not name one of our session CAs in the
        # TLS server name is refused before it sees anything (no session ID, no node ID).
        base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        base.minimum_version = ssl.TLSVersion.TLSv1_3
        base.verify_mode = ssl.CERT_NONE

        def pick(sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
            wanted = (server_name or "").replace(".", "")[:64]
            for name, (sess, _creds) in list(self.sessions.items()):
                if _norm_fp(sess.ca_fingerprint) != wanted:
                    continue
                try:
                    sslobj.context = self.context(name)
                except Exception as exc:  # raised here, it would be lost
                    log.warning("hub: cannot serve enrolment for session %r: %s", name, exc)
                    return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
                return None
            log.warning("hub: enrolment caller named no session of this hub; refused")
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

        base.sni_callback = pick
        return base

    async def _handle(self, tcp: anyio.abc.SocketStream) -> None:
        """One connection.  The endpoint faces the network without client certificates:
        whatever a caller sends costs its connection and a log line, never the hub."""
        where = f"the enrolment caller at {_peer(tcp)}"
        try:
            if not self.sessions:
                # Nothing to enrol for: say so at once rather than wait out a handshake.
                raise ConfigError("the hub has no session open for enrolment")
            stream = await self._handshake(tcp)
            with anyio.fail_after(15):
                await self._exchange(stream, where)
        except ParaconnectError as exc:
            log.warning("hub: enrolment connection from %s failed: %s", _peer(tcp), exc)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            log.warning("hub: enrolment caller at %s closed the connection early", _peer(tcp))
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            # A timeout's message is empty: name the exception then.
            log.warning(
                "hub: enrolment connection from %s failed: %s", _peer(tcp),
                str(exc) or type(exc).__name__,
            )  # fmt: skip
        except Exception:
            log.exception(
                "hub: enrolment connection from %s failed (a bug: please report it)", _peer(tcp)
            )
        finally:
            await tcp.aclose()

    async def _handshake(self, tcp: anyio.abc.SocketStream) -> TLSStream:
        with anyio.fail_after(HANDSHAKE_TIMEOUT):
            # Every session has its own CA and hub certificate: the agent names the CA it pins
            # in the TLS server name (SNI), and the handshake picks that session's certificate
            # (else any: the agent then refuses the CA it is shown).
            return await TLSStream.wrap(
                tcp, server_side=True, ssl_context=self._base_context(),
                standard_compatible=False,
            )  # fmt: skip

    async def _exchange(self, stream: TLSStream, where: str) -> None:
        used = stream.extra(TLSAttribute.ssl_object).context  # noqa: S610
        name = next((n for n, c in self._contexts.items() if c is used), next(iter(self.sessions)))
        session = self.sessions[name][0]
        await _send(
            stream,
            {"type": "ca", "ca": session.ca_cert.public_bytes(serialization.Encoding.PEM).decode()},
        )
        try:
            req = await _recv(stream, where)
            if req.get("type") == "report":
                reply = self._report(session, req)
            else:
                reply = self._answer(session, req)
        except (TrustError, ProtocolError, ConfigError) as exc:
            log.warning("hub: enrolment refused: %s", exc)
            reply = {"type": "error", "reason": str(exc)}
        await _send(stream, reply)
        await stream.aclose()

    def _answer(self, session: Session, req: dict[str, Any]) -> dict[str, Any]:
        if req.get("type") != "enroll" or req.get("version") != 1:
            raise ProtocolError("only an enrolment request (version 1) is accepted here")
        server_id, token, csr_pem = req.get("server_id"), req.get("token"), req.get("csr")
        unique_id = req.get("unique_id")
        if not all(isinstance(v, str) and v for v in (server_id, token, csr_pem)):
            raise ProtocolError("an enrolment request needs server_id, token and csr")
        assert isinstance(server_id, str) and isinstance(token, str) and isinstance(csr_pem, str)  # noqa: S101
        # Everything the request says is checked before the token is spent: a request that
        # would not be certified leaves the token for the agent's good one.
        try:
            _printable(server_id, "server id")
            check_name(server_id, "server id")
            if unique_id is not None:
                if not isinstance(unique_id, str):
                    raise ConfigError("the unique ID must be a string")
                _printable(unique_id, "unique ID")
                check_unique_id(unique_id)
        except ConfigError as exc:
            raise ProtocolError(f"enrolment request: {exc}") from None
        public = _check_csr(csr_pem, server_id)
        digest = _digest(token)
        found = self.registry.token(digest)
        if found is None:
            raise TrustError(f"unknown enrolment token for server {server_id}")
        bound, tok_session, expires, used = found
        if used is not None:
            raise TrustError(f"the enrolment token for {bound} was already used; launch anew")
        if not hmac.compare_digest(bound, server_id):
            raise TrustError(f"the enrolment token is bound to another server, not {server_id}")
        if tok_session != session.name:
            raise TrustError(f"the enrolment token of {server_id} is for another session")
        if time.time() > expires:
            raise TrustError(f"the enrolment token of {server_id} expired; launch anew")
        rec = self.registry.get(server_id)
        if rec is None or rec.final or rec.session != session.name:
            raise TrustError(f"server {server_id} is not waiting for enrolment")
        earlier = [
            r.serial
            for r in session.records()
            if r.name == server_id and r.key_type == "enrolled" and not r.revoked
        ]
        try:
            # A forward agent does not renew (the hub dials it): a short life would end it.
            default = FORWARD_CERT_LIFETIME if rec.mode == "forward" else self.days * 86400
            days = cert_lifetime_days(rec.options, default)
            record, cert = session.certify(
                Role.SERVER, server_id, public, unique_id=unique_id, days=days
            )
        except ParaconnectError as exc:  # the hub's own trouble (its key, its disk)
            log.error("hub: cannot certify %s: %s", server_id, exc)
            raise TrustError(f"the hub cannot certify {server_id} now; its log says why") from None
        # Spent only now, on a request that was certified.
        spent = self.registry.use_token(digest, time.time())
        if spent is None or spent[3] is not None:  # another connection spent it just now
            session.revoke(record.serial, reason="superseded")
            raise TrustError(f"the enrolment token for {server_id} was already used; launch anew")
        self.registry.update(server_id, cert_sha256=fingerprint(cert))
        log.info("hub: enrolled %s (certificate %s…)", server_id, fingerprint(cert)[:17])
        # A restarted job enrolled anew: the certificate of the job before is revoked, so the
        # key left in that job's directory is worth nothing.
        for serial in earlier:
            session.revoke(serial, reason="superseded")
            log.info("hub: revoked %s's earlier certificate %s (superseded)", server_id, serial)
        crl = session.crl()
        report = issue_token(self.registry, REPORT + server_id, session.name, self.days * 86400)
        if self.on_enrolled is not None:
            self.on_enrolled(server_id)
        return {
            "type": "certificate",
            "cert": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "ca": session.ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
            "crl": crl.public_bytes(serialization.Encoding.PEM).decode() if crl else None,
            "report": report,
        }

    def _report(self, session: Session, req: dict[str, Any]) -> dict[str, Any]:
        """An enrolled agent that cannot dial the phone-home address says so, once, with the
        one-time report token it got with its certificate (bound to 'report:SERVER_ID', so it
        can never enrol anything)."""
        fields = [req.get(k) for k in ("server_id", "token", "address", "reason")]
        if req.get("version") != 1 or not all(isinstance(v, str) and v for v in fields):
            raise ProtocolError("a report (version 1) needs server_id, token, address and reason")
        server_id, token, address, reason = (str(v) for v in fields)
        for value, what in ((server_id, "server id"), (address, "address"), (reason, "reason")):
            _printable(value, what)
        found = self.registry.use_token(_digest(token), time.time())
        if found is None or found[3] is not None or time.time() > found[2]:
            raise TrustError(f"unknown, used or expired report token for server {server_id}")
        if not hmac.compare_digest(found[0], REPORT + server_id) or found[1] != session.name:
            raise TrustError(f"the report token is not {server_id}'s")
        log.warning("hub: %s enrolled but cannot reach %s: %s", server_id, address, reason[:200])
        if self.on_report is not None:
            self.on_report(server_id, address[:100], reason[:200])
        return {"type": "ok"}


async def enroll(
    hub: str, ca_sha256: str, token: str, server_id: str, creds_dir: Path,
    unique_id: str | None = None, timeout: float = 30.0,  # noqa: ASYNC109
    *, hub_identity: str = HUB_IDENTITY,
) -> Path:  # fmt: skip
    """The agent's side: make a key here, get it certified by the hub, write `creds_dir`.
    The hub must show a certificate of the CA with fingerprint `ca_sha256` naming
    `hub_identity` (ROLE/NAME); the token is sent to nobody else."""
    want_role, want_name = parse_hub_identity(hub_identity)
    try:
        hub_at = parse_endpoint(hub, "--enroll")
    except ConfigError:
        hub_at = None
    if hub_at is None or hub_at.path is not None:
        raise ConfigError(f"--enroll {hub!r}: give the hub's enrolment address as HOST:PORT")
    pinned = _norm_fp(ca_sha256)
    if len(pinned) != 64 or any(c not in "0123456789abcdef" for c in pinned):
        raise ConfigError("--ca-sha256: give the session CA's SHA-256 fingerprint (64 hex digits)")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_id)]))
        .sign(key, hashes.SHA256())
    )
    where = f"the hub at {hub}"
    request = {
        "type": "enroll", "version": 1, "server_id": server_id, "token": token,
        "csr": csr.public_bytes(serialization.Encoding.PEM).decode(), "unique_id": unique_id,
    }  # fmt: skip
    ca, reply = await _ask_hub(hub_at, pinned, want_role, want_name, where, request, timeout)
    if reply.get("type") == "error":
        raise TrustError(f"{where} refused enrolment: {reply.get('reason')}")
    try:
        cert = x509.load_pem_x509_certificate(str(reply.get("cert", "")).encode())
    except ValueError:
        raise ProtocolError(f"{where} sent no certificate") from None
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as exc:
        raise TrustError(f"{where} sent a certificate the pinned CA did not sign") from exc
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise TrustError(f"{where} sent a certificate for another key")
    ensure_private_dir(creds_dir)
    os.chmod(creds_dir, 0o700)
    pem = serialization.Encoding.PEM
    write_atomic(
        creds_dir / f"{server_id}.key",
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        mode=0o600,
    )
    write_atomic(creds_dir / f"{server_id}.crt", cert.public_bytes(pem), mode=0o644)
    write_atomic(creds_dir / "ca.crt", ca.public_bytes(pem), mode=0o644)
    if reply.get("crl"):
        write_atomic(creds_dir / "crl.pem", str(reply["crl"]).encode(), mode=0o644)
    if isinstance(reply.get("report"), str):
        write_atomic(creds_dir / REPORT_FILE, str(reply["report"]).encode(), mode=0o600)
    return creds_dir


async def report_unreachable(
    hub: str, ca_sha256: str, token: str, server_id: str, address: str, reason: str,
    *, hub_identity: str = HUB_IDENTITY, timeout: float = 15.0,  # noqa: ASYNC109
) -> None:  # fmt: skip
    """Tell the hub (at its enrolment address `hub`, which this agent did reach) that it
    cannot dial the phone-home `address`, and why; spends the report `token`."""
    want_role, want_name = parse_hub_identity(hub_identity)
    where = f"the hub at {hub}"
    request = {"type": "report", "version": 1, "server_id": server_id, "token": token,
               "address": address, "reason": reason}  # fmt: skip
    hub_at = parse_endpoint(hub, "--enroll")
    _ca, reply = await _ask_hub(
        hub_at, _norm_fp(ca_sha256), want_role, want_name, where, request, timeout
    )
    if reply.get("type") != "ok":
        raise TrustError(f"{where} refused the report: {reply.get('reason')}")
