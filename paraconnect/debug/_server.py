"""`paraconnect debug server`: listen once (as `paraconnect listen` does for agents phoning
home) and explain what arrives."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

from .._wire import address_label
from ..errors import ParaconnectError
from ..pki import Credentials, Passphrase, SecurityLevel, Store
from ..tls import server_context
from ..tunnel import ByteStream, Purpose, exchange_hello, read_message
from ._chain import check_peer_of
from ._client import VERSION_REASONS, KnownFailure, client_hello_on, handshake_failed
from ._creds import begin
from ._explain import explain, verify_words
from ._net import address_class, bind_once
from ._probe import classify, tls_probe
from ._report import Report

__all__ = ["diagnose_server"]

# Handshake failures of a peer dialling in, in the accepting side's words.
_ACCEPTED: tuple[KnownFailure, ...] = (
    (
        VERSION_REASONS,
        "tls",
        "the peer does not offer TLS 1.3 (nor 1.2)",
        "only paraconnect agents should connect here",
    ),
    (
        frozenset({"PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"}),
        "peer-cert",
        "the peer sent no certificate",
        "the agent must phone home with credentials of this session",
    ),
)


async def diagnose_server(
    address: str,
    creds: str | Path | Credentials,
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 - a budget per step, applied inside
    passphrase: Passphrase | None = None,
    level: SecurityLevel | str | None = None,
    unique_id: str | None = None,
    store: Store | None = None,
    on_listening: object = None,
) -> Report:
    """Listen on `address`, take the first connection, and explain it.  `on_listening`, if
    callable, is called with the bound port once the socket listens (for tests and UIs)."""
    report = Report("server", address)
    start = await begin(
        report,
        address,
        creds,
        "debug server listens on TCP (HOST:PORT)",
        passphrase,
        store,
        unique_id,
        level,
        passive=True,
    )
    if start is None:
        return report
    ep, store, ours, lvl, addresses = start
    lsock = bind_once(report, addresses)
    if lsock is None:
        return report
    loop = asyncio.get_running_loop()
    try:
        if callable(on_listening):
            on_listening(lsock.getsockname()[1])
        try:
            async with asyncio.timeout(timeout):
                sock, peer = await loop.sock_accept(lsock)
        except TimeoutError:
            report.fail(
                "arrival",
                f"nobody connected within {timeout:g} s",
                f"is the agent phoning home to this address (--phone-home "
                f"{ep.host}:{lsock.getsockname()[1]})? can its machine reach this one (a "
                "firewall here may drop it)? run 'paraconnect debug client' from there",
            )
            return report
    finally:
        lsock.close()
    where = address_label(peer)
    report.ok(
        "arrival",
        f"a connection arrived from {where} ({address_class(str(peer[0]))} address)",
        peer=where,
    )
    try:
        await _what_arrives(report, sock, where, ours, lvl, timeout, store, unique_id)
    finally:
        sock.close()
    return report


async def _what_arrives(
    report: Report,
    sock: socket.socket,
    where: str,
    ours: Credentials | None,
    lvl: SecurityLevel,
    timeout: float,  # noqa: ASYNC109
    store: Store,
    unique_id: str | None,
) -> None:
    if ours is not None:
        ctx = server_context(ours)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe = await tls_probe(sock, ctx, server_side=True, timeout=timeout)
    if probe.outcome == "silence":
        report.fail(
            "answer",
            f"silence: {where} connected but sent nothing within {timeout:g} s; it waits for "
            "us to speak first (a plain TCP client or a port scanner?), where an agent would "
            "send a TLS ClientHello at once",
            "check what connects here; an agent phones home with 'paraconnect serve "
            "--phone-home HOST:PORT'",
            kind="silence",
        )
        return
    if probe.outcome in ("closed", "reset"):
        report.fail(
            "answer",
            f"{where} connected and closed again without sending anything",
            "check the connecting program's log",
            kind=probe.outcome,
        )
        return
    kind, what = classify(probe.raw)
    if kind != "tls":
        fix = {
            "paraview": "a ParaView client connects here in clear text: point it at the local "
            "endpoint of 'paraconnect listen' (--local), and let the agent phone home here",
            "http-request": "a web client connects here: this port is for agents phoning home",
        }.get(kind, "only paraconnect agents (TLS) should connect here")
        report.fail(
            "answer",
            f"not TLS: what arrived looks like {what}",
            fix,
            kind=kind,
            first_bytes=probe.raw[:64].hex(),
        )
        return
    report.ok("answer", "a TLS ClientHello arrived", kind="tls")
    if ours is None:
        report.skip("tls", "not tried: our credentials cannot be used (see above)")
        return
    if probe.outcome == "tls-error":
        _refused(report, probe.error)
        return
    assert probe.sslobj is not None and probe.bio_in is not None and probe.bio_out is not None  # noqa: S101
    sslobj = probe.sslobj
    version, cipher = sslobj.version(), (sslobj.cipher() or ("?",))[0]
    if version != "TLSv1.3":
        report.fail(
            "tls",
            f"the peer offers only {version}; paraconnect needs TLS 1.3",
            "upgrade the peer; only paraconnect agents should connect here",
        )
        return
    report.ok(
        "tls",
        f"TLS 1.3 agreed, cipher {cipher}; the peer's certificate verified "
        "against our session CA and revocation list",
        version=version,
        cipher=cipher,
    )
    check_peer_of(report, sslobj, ours, level=lvl, store=store)
    conn, hello = client_hello_on(probe, sock, ours, lvl, unique_id or store.unique_id().value)
    try:
        theirs = await exchange_hello(
            conn,
            hello,
            initiator=False,
            level=lvl,
            session_id=ours.identity.session_id,
            timeout=timeout,
        )
    except ParaconnectError as exc:
        text = str(exc)
        side = "the peer refused us" if "refused this side" in text else "we refuse the peer"
        report.fail("hello", f"paraconnect's hello failed ({side}): {text}", explain(exc))
        await conn.aclose()
        return
    label = f"server {theirs.server_id!r}" if theirs.server_id else "the peer"
    report.ok(
        "hello",
        f"{label} ({theirs.role.value}, purpose {theirs.purpose.value}) "
        "completed paraconnect's hello; both sides said yes",
        server_id=theirs.server_id,
    )
    try:
        await _leg(report, conn, theirs.purpose, timeout)
    finally:
        await conn.aclose()


async def _leg(report: Report, conn: ByteStream, purpose: Purpose, timeout: float) -> None:  # noqa: ASYNC109
    """An agent's control channel starts with its info, which says how the program's leg is
    kept private."""
    if purpose is not Purpose.CONTROL:
        return
    try:
        async with asyncio.timeout(timeout):
            msg = await read_message(conn)
    except (TimeoutError, ParaconnectError):
        msg = None
    leg = msg.get("leg") if msg and msg.get("type") == "info" else None
    if not isinstance(leg, str) or not leg:
        report.skip("leg", "the agent did not say how its program's leg is protected")
    elif leg.startswith("shared"):
        report.warn(
            "leg",
            f"the program's leg: {leg}",
            "drop --shared-leg unless the program needs the host's network; without it the "
            "program runs in a private network namespace",
            leg=leg,
        )
    else:
        report.ok("leg", f"the program's leg: {leg}", leg=leg)


def _refused(report: Report, error: BaseException | None) -> None:
    if isinstance(error, ssl.SSLCertVerificationError):
        what, fix = verify_words(error.verify_code)
        report.ok("tls", "TLS handshake reached the peer's certificate")
        report.fail(
            "peer-ca" if error.verify_code in (2, 18, 19, 20, 21, 7) else "peer-cert",
            f"we refuse the peer: its certificate {what}",
            fix,
            verify_code=error.verify_code,
        )
        return

    def refused(words: tuple[str, str], reason: str) -> None:
        report.fail(
            "accepted",
            f"the peer refused our certificate (TLS alert {reason}): {words[0]} (an agent "
            "phoning home checks our certificate before it sends its own)",
            words[1],
            alert=reason,
        )

    handshake_failed(report, error, _ACCEPTED, refused)
