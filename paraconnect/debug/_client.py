"""`paraconnect debug client`: dial an agent step by step and say where and why it fails."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from ..errors import NetworkError, ParaconnectError, ProtocolError, TrustError
from ..pki import Credentials, Passphrase, Role, SecurityLevel, Store
from ..tls import ANONYMOUS, client_context, peer_identity
from ..tunnel import (
    ByteStream,
    Hello,
    PlainConnection,
    Purpose,
    Side,
    TLSConnection,
    exchange_hello,
    local_paraview,
    paraview_mismatch,
    read_message,
)
from ._chain import check_peer_of
from ._creds import begin
from ._explain import alert_words, explain
from ._net import Address, connect_tcp
from ._probe import TLSProbe, classify, http_probe, http_server_header, paraview_probe, tls_probe
from ._report import Report

__all__ = ["diagnose_client", "identify_silent_peer", "probe_context", "ssl_reason"]


def probe_context(creds: Credentials | None) -> ssl.SSLContext:
    """Our certificate, as the real client sends it, but no verdict on the peer's during the
    handshake (we want to see the peer's certificate even when it is wrong, and judge it
    ourselves) and TLS 1.2 allowed (to say so when a peer offers only that)."""
    if creds is not None:
        ctx = client_context(creds)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_hello_on(
    probe: TLSProbe, sock: socket.socket, ours: Credentials, lvl: SecurityLevel, here: str
) -> tuple[TLSConnection, Hello]:
    """The probe's finished handshake as a stream, and the control hello a paraconnect client
    of `ours` sends on it (what `connect` and the hub's listeners speak)."""
    assert probe.sslobj is not None and probe.bio_in is not None and probe.bio_out is not None  # noqa: S101
    loop = asyncio.get_running_loop()
    conn = TLSConnection(sock, probe.sslobj, probe.bio_in, probe.bio_out, loop)
    conn.peer = peer_identity(probe.sslobj)
    hello = Hello(
        ours.identity.session_id,
        Role.CLIENT,
        "",
        Purpose.CONTROL,
        unique_id=here if lvl is SecurityLevel.MUTUAL else None,
    )
    return conn, hello


def ssl_reason(exc: BaseException) -> str | None:
    """The OpenSSL reason (e.g. SSLV3_ALERT_CERTIFICATE_REVOKED) behind an error, if any."""
    cur: BaseException | None = exc
    for _ in range(10):
        if cur is None:
            return None
        if isinstance(cur, ssl.SSLError) and getattr(cur, "reason", None):
            return str(cur.reason)
        cur = cur.__cause__ or cur.__context__
    return None


async def _dial(addr: Address, timeout: float) -> socket.socket | None:  # noqa: ASYNC109
    sock = socket.socket(addr.family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, addr.sockaddr)
    except (OSError, TimeoutError):
        sock.close()
        return None
    return sock


async def identify_silent_peer(addr: Address, host: str, timeout: float) -> tuple[str, str]:  # noqa: ASYNC109
    """A peer that did not answer TLS: try ParaView's handshake, then HTTP, each on a
    connection of its own.  Returns (kind, description)."""
    sock = await _dial(addr, timeout)
    if sock is not None:
        reply = await paraview_probe(sock, timeout)
        if reply and reply.startswith(b"<<<<"):
            return "paraview", (
                "a ParaView server (pvserver): it answered ParaView's own clear-text handshake "
                "(vtkSocketCommunicator endian tag '<<<<')"
            )
        if reply:
            return classify(reply)
    sock = await _dial(addr, timeout)
    if sock is not None:
        reply = await http_probe(sock, host, timeout)
        if reply:
            kind, what = classify(reply)
            server = http_server_header(reply)
            return kind, what + (f", Server: {server!r}" if server else "")
    return "silence", "silence"


async def _describe_non_tls(
    report: Report,
    probe: TLSProbe,
    addr: Address,
    host: str,
    timeout: float,  # noqa: ASYNC109
) -> None:
    """The `answer` and `tls` steps when the peer did not complete a TLS handshake."""
    if probe.outcome == "data":
        kind, what = classify(probe.raw)
        if kind == "http" and not probe.raw.startswith(b"HTTP/"):
            sock = await _dial(addr, timeout)
            reply = await http_probe(sock, host, timeout) if sock else None
            if reply and reply.startswith(b"HTTP/"):
                kind, what = classify(reply)
                server = http_server_header(reply)
                what += f", Server: {server!r}" if server else ""
    elif probe.outcome in ("closed", "reset"):
        kind, what = await identify_silent_peer(addr, host, timeout)
        if kind == "silence":
            kind = "closed"
            what = (
                "nothing: the peer "
                + ("reset" if probe.outcome == "reset" else "closed")
                + " the connection as soon as our TLS hello arrived, without a word"
            )
    else:  # silence
        kind, what = await identify_silent_peer(addr, host, timeout)
    fixes = {
        "ssh": "this port is an SSH server: dial the agent's --listen port instead (or carry "
        "the agent's port through 'ssh -L')",
        "http": "this port is a web server: dial the agent's --listen port instead",
        "paraview": "pvserver speaks clear text and no TLS: put the agent in front of it "
        "('paraconnect serve --listen HOST:PORT -- pvserver --sp={port}') and dial the "
        "agent's port",
        "paraconnect-plain": "the agent runs at level none (clear text): use --level none "
        "(loopback only) or restart the agent at level mutual",
        "silence": "check what listens on that port on the agent's machine ('ss -ltnp "
        "sport = :PORT'): dial the agent's --listen port",
        "closed": "check what listens on that port on the agent's machine ('ss -ltnp "
        "sport = :PORT') and its log",
    }
    if kind == "silence":
        report.fail(
            "answer",
            f"silence: {addr.label} accepted the TCP connection but answered neither our TLS "
            f"hello, ParaView's handshake nor an HTTP request within {timeout:g} s each; the "
            "program there waits for its own kind of client to speak first (a plain TCP "
            "server?)",
            fixes["silence"],
            kind=kind,
        )
        report.fail(
            "tls",
            f"the TLS handshake timed out after {timeout:g} s: no ServerHello",
            "dial a paraconnect agent",
        )
        return
    report.fail(
        "answer",
        f"not TLS: what answers on {addr.label} looks like {what}",
        fixes.get(kind, fixes["closed"]),
        kind=kind,
        first_bytes=probe.raw[:64].hex(),
    )
    report.fail("tls", "no TLS handshake: the peer does not speak TLS", "dial a paraconnect agent")


# A handshake failure that OpenSSL names: the reasons, then the step, what it means and the fix.
KnownFailure = tuple[frozenset[str], str, str, str]
VERSION_REASONS = frozenset(
    {"UNSUPPORTED_PROTOCOL", "WRONG_SSL_VERSION", "TLSV1_ALERT_PROTOCOL_VERSION"}
)
_DIALLED: tuple[KnownFailure, ...] = (
    (
        VERSION_REASONS,
        "tls",
        "the peer accepts neither TLS 1.3 nor TLS 1.2 (an old TLS server?); paraconnect speaks "
        "TLS 1.3 only",
        "dial a paraconnect agent",
    ),
    (
        frozenset({"SSLV3_ALERT_HANDSHAKE_FAILURE", "NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE"}),
        "tls",
        "no TLS version and cipher in common with the peer (handshake failure alert)",
        "dial a paraconnect agent (TLS 1.3, AES-GCM/ChaCha20)",
    ),
)


def handshake_failed(
    report: Report,
    error: BaseException | None,
    known: tuple[KnownFailure, ...],
    refused: Callable[[tuple[str, str], str], None],
) -> None:
    """Explain a failed handshake (not a failed verification of the peer's certificate): a
    `known` reason in the side's own words, an alert saying the peer refused our certificate
    (`refused(words, reason)`), or OpenSSL's reason as it is."""
    reason = ssl_reason(error) if error else None
    for reasons, step, what, fix in known:
        if reason in reasons:
            report.fail(step, what, fix, alert=reason)
            return
    words = alert_words(reason or "")
    if words and reason:
        refused(words, reason)
        return
    detail = (reason or str(error)).lower().replace("_", " ")
    report.fail("tls", f"the TLS handshake failed: {detail}", "check the peer's log")


def _tls_error_step(report: Report, probe: TLSProbe) -> None:
    report.ok("answer", "a TLS server answers (it sent TLS records)", kind="tls")

    def refused(words: tuple[str, str], reason: str) -> None:
        report.ok("tls", "TLS handshake started; the peer refused our certificate in it")
        report.fail(
            "accepted", f"the peer refused our certificate: {words[0]}", words[1], alert=reason
        )

    handshake_failed(report, probe.error, _DIALLED, refused)


async def diagnose_client(
    address: str,
    creds: str | Path | Credentials,
    *,
    server_id: str | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 - a budget per step, applied inside
    passphrase: Passphrase | None = None,
    level: SecurityLevel | str | None = None,
    unique_id: str | None = None,
    store: Store | None = None,
) -> Report:
    """Dial `address` (HOST:PORT) as `paraconnect connect` would, and explain each step."""
    report = Report("client", address)
    start = await begin(
        report,
        address,
        creds,
        "debug client dials TCP addresses (HOST:PORT)",
        passphrase,
        store,
        unique_id,
        level,
    )
    if start is None:
        return report
    ep, store, ours, lvl, addresses = start
    found = await connect_tcp(report, addresses, timeout)
    if found is None:
        report.skip("answer", "not reached: no TCP connection")
        return report
    sock, addr = found
    if lvl is SecurityLevel.NONE:
        await _plain(report, sock, ours, server_id, timeout, store, unique_id)
        return report
    probe = await tls_probe(sock, probe_context(ours), server_side=False, timeout=timeout)
    if probe.outcome != "tls":
        sock.close()
        if probe.outcome == "tls-error":
            _tls_error_step(report, probe)
        else:
            await _describe_non_tls(report, probe, addr, ep.host, timeout)
        return report
    assert probe.sslobj is not None and probe.bio_in is not None and probe.bio_out is not None  # noqa: S101
    sslobj = probe.sslobj
    version, cipher = sslobj.version(), (sslobj.cipher() or ("?",))[0]
    report.ok("answer", "a TLS server answers (ServerHello)", kind="tls")
    if version != "TLSv1.3":
        report.fail(
            "tls",
            f"the peer offers only {version} ({cipher}); paraconnect needs TLS 1.3: it is not "
            "a paraconnect agent of this release (a web server, stunnel, an old agent?)",
            "dial the agent's --listen port; upgrade the peer to TLS 1.3",
            version=version,
            cipher=cipher,
        )
    else:
        report.ok("tls", f"TLS 1.3 agreed, cipher {cipher}", version=version, cipher=cipher)
    if not check_peer_of(report, sslobj, ours, level=lvl, store=store):
        report.fail("peer-ca", "the peer sent no certificate", "dial a paraconnect agent")
        sock.close()
        return report
    if ours is None:
        sock.close()
        report.skip("accepted", "not tried: our credentials cannot be used (see above)")
        return report
    if version != "TLSv1.3":
        sock.close()
        return report
    conn, hello = client_hello_on(probe, sock, ours, lvl, unique_id or store.unique_id().value)
    await _hello_steps(report, conn, hello, lvl, ours, server_id, timeout)
    if not report.passed:
        report.skip("real", "not tried: fix the failures above first")
        return report
    await _real(report, addr, ours, lvl, server_id, timeout, store, unique_id)
    return report


def _hello_failure(
    exc: BaseException, text: str, timeout: float
) -> tuple[str, str, str, str] | None:
    """Why the hello failed once TLS worked, as (what the "accepted" step says, the step that
    failed, why, the fix); None when the peer only closed the connection."""
    if isinstance(exc, TrustError):
        accepted = "the peer accepted our certificate in TLS"
        if "refused this side" in text:
            reason = text.split("refused this side: ", 1)[-1]
            why = f"the agent refused us in paraconnect's hello: {reason}"
            return accepted, "hello", why, explain(exc)
        step = "server-id" if "not '" in text and "is server" in text else "hello"
        return accepted, step, f"we refuse the peer: {text.split(': ', 1)[-1]}", explain(exc)
    not_refused = "the peer did not refuse our certificate"
    if isinstance(exc, NetworkError) and "did not complete the hello" in text:
        why = (
            f"TLS works, but the peer never answered paraconnect's hello within {timeout:g} s: "
            "it is a TLS server, not a paraconnect agent"
        )
        return not_refused, "hello", why, "dial the agent's --listen port"
    if isinstance(exc, ProtocolError) and "closed the connection" not in text:
        why = (
            f"TLS works, but the peer does not speak paraconnect's hello ({text}): it is "
            "another TLS service (HTTPS?), or a paraconnect of another release"
        )
        fix = "dial the agent's --listen port; run the same paraconnect release on both ends"
        return not_refused, "hello", why, fix
    return None


async def _hello_steps(
    report: Report,
    conn: ByteStream,
    hello: Hello,
    lvl: SecurityLevel,
    ours: Credentials,
    server_id: str | None,
    timeout: float,  # noqa: ASYNC109
) -> None:
    """`accepted` (did the peer take our certificate: under TLS 1.3 only the first read says)
    and `hello` (paraconnect's own round trip, with its checks on both sides)."""
    try:
        theirs = await exchange_hello(
            conn,
            hello,
            initiator=True,
            level=lvl,
            session_id=ours.identity.session_id,
            expect_server_id=server_id or None,
            timeout=timeout,
        )
    except (TrustError, ProtocolError, NetworkError) as exc:
        await conn.aclose()
        reason = ssl_reason(exc)
        words = alert_words(reason or "")
        if words:
            report.fail(
                "accepted",
                f"the peer refused our certificate after the handshake "
                f"(TLS alert {reason}): {words[0]}",
                words[1],
                alert=reason,
            )
            report.skip("hello", "not reached: the peer refused our certificate")
            return
        text = str(exc)
        verdict = _hello_failure(exc, text, timeout)
        if verdict is None:
            report.fail(
                "accepted",
                f"the peer closed the connection after the TLS handshake "
                f"without saying why ({text}); it may have refused our certificate, "
                "or it is not a paraconnect agent",
                "check the agent's log ('refused connection from ...')",
            )
        else:
            accepted, step, why, fix = verdict
            report.ok("accepted", accepted)
            report.fail(step, why, fix)
        return
    report.ok("accepted", "the peer accepted our certificate (first read after the handshake)")
    info: dict[str, object] = {}
    try:
        async with asyncio.timeout(timeout):
            msg = await read_message(conn)
        if msg and msg.get("type") == "info":
            info = {"server_id": msg.get("server_id"), "connect_id": msg.get("connect_id"),
                    "version": msg.get("version")}  # fmt: skip
    except (TimeoutError, ParaconnectError):
        pass
    finally:
        await conn.aclose()
    label = f"server {theirs.server_id!r}" if theirs.server_id else "the agent"
    node = f" on node {theirs.unique_id!r}" if theirs.unique_id else ""
    report.ok(
        "hello",
        f"{label}{node} answered paraconnect's hello (protocol v1, role "
        f"{theirs.role.value}) and both sides said yes",
        **info,
    )
    if isinstance(info.get("version"), str):
        client = await asyncio.to_thread(local_paraview)
        mismatch = paraview_mismatch(str(info["version"]), client, label)
        if mismatch:
            head, _, fix = mismatch.partition("; ParaView needs")
            report.warn("paraview version", head, "ParaView needs" + fix)
        else:
            report.ok("paraview version", f"pvserver {info['version']} and this pvpython agree")


async def _real(
    report: Report,
    addr: Address,
    creds: Credentials,
    lvl: SecurityLevel,
    server_id: str | None,
    timeout: float,  # noqa: ASYNC109
    store: Store,
    unique_id: str | None,
) -> None:
    """The confirmation: the tunnel's own code path, strict verification and all."""
    try:
        side = Side(
            creds,
            Role.CLIENT,
            level=lvl,
            unique_id=unique_id,
            store=store,
            handshake_timeout=timeout,
            hello_timeout=timeout,
        )
    except ParaconnectError as exc:
        report.fail("real", f"the tunnel refuses our credentials: {exc}", explain(exc))
        return
    sock = await _dial(addr, timeout)
    if sock is None:
        report.fail(
            "real",
            f"the second connection to {addr.label} failed",
            "the agent may accept one client only; try again",
        )
        return
    try:
        conn, _theirs = await side.establish(
            sock, server_side=False, purpose=Purpose.CONTROL, expect_server_id=server_id or None
        )
    except ParaconnectError as exc:
        report.fail("real", f"'paraconnect connect' would fail: {exc}", explain(exc))
        return
    await conn.aclose()
    report.ok(
        "real",
        f"a real connection as 'paraconnect connect' makes it (strict TLS 1.3, "
        f"the session CA alone, hello) succeeded with {conn.peer.label}",
    )


async def _plain(
    report: Report,
    sock: socket.socket,
    ours: Credentials | None,
    server_id: str | None,
    timeout: float,  # noqa: ASYNC109
    store: Store,
    unique_id: str | None,
) -> None:
    report.warn(
        "tls",
        "level none: CLEAR TEXT, no TLS and no authentication",
        "use level encrypt or mutual for anything but a local test",
    )
    if ours is None:
        sock.close()
        report.skip("hello", "not tried: our credentials cannot be used")
        return
    conn = PlainConnection(sock, ANONYMOUS)
    hello = Hello(ours.identity.session_id, Role.CLIENT, "", Purpose.CONTROL)
    try:
        theirs = await exchange_hello(
            conn,
            hello,
            initiator=True,
            level=SecurityLevel.NONE,
            session_id=ours.identity.session_id,
            expect_server_id=server_id or None,
            timeout=timeout,
        )
    except ParaconnectError as exc:
        report.fail("hello", f"the clear-text hello failed: {exc}", explain(exc))
        return
    finally:
        await conn.aclose()
    report.ok("hello", f"server {theirs.server_id!r} answered the clear-text hello")
