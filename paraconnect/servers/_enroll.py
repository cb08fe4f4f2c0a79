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
so that a hub with several sessions presents that session's certificate.

Wire (after the TLS handshake; 4-byte big-endian length + JSON, 64 KiB at most):
hub → agent ``{"type": "ca", "ca": PEM}``; agent → hub ``{"type": "enroll", "version": 1,
"server_id", "token", "csr", "unique_id"}``; hub → agent ``{"type": "certificate", "cert",
"ca", "crl"}`` or ``{"type": "error", "reason"}``.
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
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSAttribute, TLSStream
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from .. import _wire
from .._accept import serve_listener
from .._fs import ensure_private_dir, write_atomic
from ..errors import ConfigError, NetworkError, ParaconnectError, ProtocolError, TrustError
from ..pki import Credentials, Role, Session, fingerprint
from ._registry import ServerRegistry

__all__ = ["DEFAULT_TOKEN_TTL", "EnrollServer", "enroll", "issue_token"]

log = logging.getLogger("paraconnect.servers")

DEFAULT_TOKEN_TTL = 600.0
MAX_MESSAGE = 64 * 1024
HANDSHAKE_TIMEOUT = 10.0


def _peer(stream: anyio.abc.SocketStream) -> str:
    try:
        addr = stream.extra(anyio.abc.SocketAttribute.remote_address)  # noqa: S610
    except (OSError, anyio.TypedAttributeLookupError):
        return "an unknown address"
    if not isinstance(addr, tuple):
        return str(addr)
    host, port = addr[:2]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _norm_fp(text: str) -> str:
    return text.replace(":", "").strip().lower()


def issue_token(
    registry: ServerRegistry, server_id: str, session: str, ttl: float = DEFAULT_TOKEN_TTL
) -> str:
    """A fresh one-time token for `server_id`; only its hash is stored."""
    token = secrets.token_urlsafe(32)
    registry.add_token(_digest(token), server_id, session, time.time() + ttl)
    return token


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


def _tls_server_context(creds: Credentials) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_NONE  # the agent has no certificate yet: that is the point
    with tempfile.TemporaryDirectory(prefix="paraconnect-enroll-") as tmp:
        key = Path(tmp) / "key.pem"
        cert = Path(tmp) / "cert.pem"
        write_atomic(key, creds.key_pem(), mode=0o600)
        write_atomic(cert, creds.cert_pem(), mode=0o600)
        ctx.load_cert_chain(cert, key)
    return ctx


def _sign(
    session: Session, csr: x509.CertificateSigningRequest, server_id: str, unique_id: str | None,
    days: float,
) -> x509.Certificate:  # fmt: skip
    """The server certificate for a CSR's public key, recorded in the session (no key kept) so
    that 'paraconnect revoke' finds it."""
    public = csr.public_key()
    if not isinstance(
        public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    ):
        raise ProtocolError("the CSR holds a key type paraconnect does not use")
    _record, cert = session.certify(Role.SERVER, server_id, public, unique_id=unique_id, days=days)
    return cert


class EnrollServer:
    """The hub's enrolment endpoint: TLS 1.3 with the hub's certificate, no client
    certificate, one enrolment request per connection and nothing else."""

    def __init__(
        self,
        registry: ServerRegistry,
        sessions: dict[str, tuple[Session, Credentials]],
        listen: tuple[str, int] = ("127.0.0.1", 0),
        *,
        days: float = 7.0,
        on_enrolled: Any = None,
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.listen = listen
        self.days = days
        self.on_enrolled = on_enrolled
        self.address: tuple[str, int] | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}

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
        if ctx is None:
            ctx = self._contexts[session] = _tls_server_context(self.sessions[session][1])
        return ctx

    def _base_context(self) -> ssl.SSLContext:
        if not self.sessions:
            raise ConfigError("the hub has no session open for enrolment")
        base = self.context(next(iter(self.sessions)))

        def pick(sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            wanted = (server_name or "").replace(".", "")[:64]
            for name, (sess, _creds) in self.sessions.items():
                if _norm_fp(sess.ca_fingerprint) == wanted:
                    sslobj.context = self.context(name)
                    return

        base.sni_callback = pick
        return base

    async def _handle(self, tcp: anyio.abc.SocketStream) -> None:
        """One connection.  The endpoint faces the network without client certificates:
        whatever a caller sends costs its connection and a log line, never the hub."""
        where = f"the enrolment caller at {_peer(tcp)}"
        try:
            stream = await self._handshake(tcp)
            with anyio.fail_after(15):
                await self._exchange(stream, where)
        except ParaconnectError as exc:
            log.warning("hub: enrolment connection from %s failed: %s", _peer(tcp), exc)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            log.warning("hub: enrolment caller at %s closed the connection early", _peer(tcp))
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            log.warning(
                "hub: enrolment connection from %s failed: %s", _peer(tcp), exc or repr(exc)
            )
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
        # A malformed request must not use up the token: the agent may retry with a good one.
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError:
            raise ProtocolError(
                f"the CSR of {server_id} is not a PEM certificate request"
            ) from None
        if not csr.is_signature_valid:
            raise TrustError(f"the CSR of {server_id} is not signed by its own key")
        found = self.registry.use_token(_digest(token), time.time())
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
        if rec is None or rec.final:
            raise TrustError(f"server {server_id} is not waiting for enrolment")
        earlier = [
            r.serial
            for r in session.records()
            if r.name == server_id and r.key_type == "enrolled" and not r.revoked
        ]
        cert = _sign(
            session, csr, server_id, unique_id if isinstance(unique_id, str) else None, self.days
        )
        self.registry.update(server_id, cert_sha256=fingerprint(cert))
        log.info("hub: enrolled %s (certificate %s…)", server_id, fingerprint(cert)[:17])
        # A restarted job enrolled anew: the certificate of the job before is revoked, so the
        # key left in that job's directory is worth nothing.
        for serial in earlier:
            session.revoke(serial, reason="superseded")
            log.info("hub: revoked %s's earlier certificate %s (superseded)", server_id, serial)
        crl = session.crl()
        return {
            "type": "certificate",
            "cert": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "ca": session.ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
            "crl": crl.public_bytes(serialization.Encoding.PEM).decode() if crl else None,
        }


async def enroll(
    hub: str, ca_sha256: str, token: str, server_id: str, creds_dir: Path,
    unique_id: str | None = None, timeout: float = 30.0,  # noqa: ASYNC109
) -> Path:  # fmt: skip
    """The agent's side: make a key here, get it certified by the hub, write `creds_dir`."""
    host, _, port_text = hub.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit():
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
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # No CA yet to verify against: the chain is checked below against the pinned fingerprint.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    where = f"the hub at {hub}"
    try:
        with anyio.fail_after(timeout):
            tcp = await anyio.connect_tcp(host, int(port_text))
            # The pinned CA, as the TLS server name: the hub picks that session's certificate.
            sni = f"{pinned[:32]}.{pinned[32:]}.enroll.paraconnect"
            stream = await TLSStream.wrap(
                tcp, server_side=False, hostname=sni, ssl_context=ctx, standard_compatible=False
            )
            async with stream:
                leaf_der = stream.extra(  # noqa: S610 - anyio's typed attribute
                    TLSAttribute.peer_certificate_binary
                )
                first = await _recv(stream, where)
                ca = x509.load_pem_x509_certificate(str(first.get("ca", "")).encode())
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
                except (ValueError, TypeError, Exception) as exc:
                    raise TrustError(
                        f"{where}'s certificate is not signed by the pinned CA"
                    ) from exc
                await _send(stream, {
                    "type": "enroll", "version": 1, "server_id": server_id, "token": token,
                    "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
                    "unique_id": unique_id,
                })  # fmt: skip
                reply = await _recv(stream, where)
    except TimeoutError:
        raise NetworkError(f"{where} did not complete enrolment within {timeout:g} s") from None
    except OSError as exc:
        raise NetworkError(f"cannot reach {where}: {exc.strerror or exc}") from None
    except ssl.SSLError as exc:
        raise TrustError(f"TLS with {where} failed: {exc.reason or exc}") from None
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
    return creds_dir
