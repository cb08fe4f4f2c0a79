"""`paraconnect debug client`: each failure mode of the tunnel's tests, diagnosed (the step that
failed and why), against real peers on loopback: nothing listening, a silent listener, a web
server, sshd, agents of another session, revoked and wrong-role certificates, expired peers,
a TLS 1.2-only server, and a healthy agent (every step passes)."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import re
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from paraconnect.debug import Report, Status, diagnose_client, explain
from paraconnect.pki import Credentials, Role, SecurityLevel, load_credentials
from paraconnect.tls import server_context
from paraconnect.tunnel import Agent, Connector, Program
from paraconnect.tunnel._hello import Hello, Purpose, exchange_hello
from paraconnect.tunnel._tlsconn import TLSConnection

from .helpers_tunnel import PASS, Pki, echo_command, free_port, make_pki

if TYPE_CHECKING:
    from tests.fixtures_sshd import Sshd

pytest_plugins = ["tests.fixtures_sshd"]
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def _fails(report: Report) -> list[str]:
    return [s.name for s in report.steps if s.status is Status.FAIL]


# -- network -------------------------------------------------------------------------------


async def test_nothing_listening_is_refused(pki: Pki) -> None:
    port = free_port()
    report = await diagnose_client(f"127.0.0.1:{port}", "lab", timeout=5)
    assert _fails(report) == ["tcp"]
    step = report.step("tcp")
    assert step.details["kind"] == "refused"
    assert "refused" in step.reason and "nothing listens" in step.reason
    assert "is the agent running" in (step.fix or "")
    assert report.step("address").status is Status.WARN  # loopback: only this machine
    assert "only an agent on THIS machine" in report.step("address").reason


async def test_silent_listener(pki: Pki) -> None:
    with socket.socket() as lsock:  # listens, never accepts, never answers
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        port = lsock.getsockname()[1]
        report = await diagnose_client(f"127.0.0.1:{port}", "lab", timeout=0.3)
    assert report.step("tcp").status is Status.PASS
    answer = report.step("answer")
    assert answer.status is Status.FAIL and answer.reason.startswith("silence")
    assert "waits for its own kind of client" in answer.reason
    assert "timed out" in report.step("tls").reason


@pytest.fixture
def http_port() -> Iterator[int]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(10)


async def test_plain_http_server(pki: Pki, http_port: int) -> None:
    report = await diagnose_client(f"127.0.0.1:{http_port}", "lab", timeout=2)
    answer = report.step("answer")
    assert answer.status is Status.FAIL
    assert "not TLS" in answer.reason and "HTTP server" in answer.reason
    assert "HTTP/1." in answer.reason  # the status line, asked for when the page had none
    assert answer.details["kind"] == "http"
    assert "web server" in (answer.fix or "")


async def test_ssh_banner(pki: Pki, sshd: Sshd) -> None:
    report = await diagnose_client(f"{sshd.address}:{sshd.port}", "lab", timeout=3)
    answer = report.step("answer")
    assert answer.status is Status.FAIL
    assert "SSH server" in answer.reason and "SSH-2.0-" in answer.reason
    assert "ssh -L" in (answer.fix or "")


# -- trust -----------------------------------------------------------------------------------


async def test_agent_of_another_session_shows_both_fingerprints(
    pki: Pki, tmp_path: Path, home: Path
) -> None:
    other = make_pki(tmp_path / "elsewhere", "other")
    agent = Agent(
        other.server, program=Program(echo_command()), listen=["127.0.0.1:0"], unique_id=other.uid
    )
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(agent.run)
        report = await diagnose_client(str(addr), "lab", timeout=5)
        tg.cancel_scope.cancel()
    step = report.step("peer-ca")
    assert step.status is Status.FAIL
    assert "different sessions" in step.reason
    assert pki.session.ca_fingerprint in step.reason  # ours, expected
    assert step.details["peer_session"] == other.session.id
    assert step.details["peer_ca_key_id"]
    accepted = report.step("accepted")
    assert accepted.status is Status.FAIL
    assert "UNKNOWN_CA" in accepted.reason and "another session" in accepted.reason
    assert report.step("real").status is Status.SKIP


async def test_revoked_friend_is_told_why(pki: Pki, home: Path) -> None:
    bob = pki.friend("bob", home, unique_id="bob-laptop")
    pki.session.revoke("bob", reason="key_compromise")
    bundle = home / "bob.p12"
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent_obj(pki).run)
        report = await diagnose_client(
            str(addr), bundle, passphrase=PASS, unique_id="bob-laptop", timeout=5
        )
        tg.cancel_scope.cancel()
    assert bob.identity.name == "bob"
    own = report.step("revoked")  # from our session's CRL, before any network
    assert own.status is Status.FAIL and "keyCompromise" in own.reason
    accepted = report.step("accepted")
    assert accepted.status is Status.FAIL
    assert "CERTIFICATE_REVOKED" in accepted.reason and "was revoked" in accepted.reason
    assert "new certificate" in (accepted.fix or "")


def _agent_obj(pki: Pki, creds: Credentials | None = None) -> Agent:
    return Agent(creds or pki.server, program=Program(echo_command()), listen=["127.0.0.1:0"])


async def test_revoked_agent_certificate_in_our_list(pki: Pki, tmp_path: Path) -> None:
    node = tmp_path / "node"  # the agent's PEM files, copied before the revocation
    pki.session.issue("server", "remote", unique_id=pki.uid, out=node)
    agent = _agent_obj(pki, load_credentials(node))
    pki.session.revoke("remote", reason="superseded")
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(agent.run)
        report = await diagnose_client(str(addr), "lab", timeout=5)
        tg.cancel_scope.cancel()
    step = report.step("peer-revoked")
    assert step.status is Status.FAIL
    assert "REVOKED" in step.reason and "superseded" in step.reason
    assert step.details["revocation_reason"] == "superseded"


class _FakeAgent:
    """A TLS endpoint built from the tunnel's own pieces, with credentials the real agent would
    refuse to start with (a client certificate, an expired one), or at TLS 1.2 only."""

    def __init__(self, creds: Credentials, uid: str, tls12: bool = False) -> None:
        self.creds, self.uid, self.tls12 = creds, uid, tls12
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]

    async def serve(self) -> None:
        ctx = server_context(self.creds)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        if self.tls12:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(self.lsock)
            try:
                conn = await TLSConnection.handshake(sock, ctx, server_side=True, timeout=5)
            except Exception:  # noqa: S112 - a fake peer: the client side is under test
                continue
            try:
                hello = Hello(
                    self.creds.identity.session_id,
                    Role.SERVER,
                    "fake",
                    Purpose.CONTROL,
                    unique_id=self.uid,
                )
                await exchange_hello(
                    conn,
                    hello,
                    initiator=False,
                    level=self.creds.level,
                    session_id=self.creds.identity.session_id,
                    timeout=5,
                )
            except Exception:  # noqa: S112
                continue
            finally:
                await conn.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[object]:
    started: list[_FakeAgent] = []
    async with anyio.create_task_group() as tg:

        def start(creds: Credentials, uid: str, tls12: bool = False) -> _FakeAgent:
            agent = _FakeAgent(creds, uid, tls12)
            started.append(agent)
            tg.start_soon(agent.serve)
            return agent

        yield start
        tg.cancel_scope.cancel()
    for agent in started:
        agent.lsock.close()


async def test_client_certificate_where_a_server_is_expected(pki: Pki, fake: object) -> None:
    agent = fake(pki.client, pki.uid)  # type: ignore[operator]
    report = await diagnose_client(f"127.0.0.1:{agent.port}", "lab", timeout=5)
    role = report.step("peer-role")
    assert role.status is Status.FAIL
    assert "presents a client certificate ('alice') where a server or node is expected" in (
        role.reason
    )
    assert "cannot talk to a client" in role.reason
    hello = report.step("hello")
    assert hello.status is Status.FAIL and "we refuse the peer" in hello.reason


async def test_expired_agent_certificate(pki: Pki, fake: object, tmp_path: Path) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    out = tmp_path / "expired"
    pki.session.issue("server", "stale", unique_id=pki.uid, days=1, now=past, out=out)
    agent = fake(load_credentials(out), pki.uid)  # type: ignore[operator]
    report = await diagnose_client(f"127.0.0.1:{agent.port}", "lab", timeout=5)
    step = report.step("peer-validity")
    assert step.status is Status.FAIL
    assert "expired at" in step.reason and "ago by this machine's clock" in step.reason
    assert re.search(r"(1 d 23 h|2 d 0 h) ago", step.reason), step.reason
    assert report.step("peer-ca").status is Status.PASS


async def test_not_yet_valid_agent_certificate(pki: Pki, fake: object, tmp_path: Path) -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=5)
    out = tmp_path / "future"
    pki.session.issue("server", "early", unique_id=pki.uid, now=future, out=out)
    agent = fake(load_credentials(out), pki.uid)  # type: ignore[operator]
    report = await diagnose_client(f"127.0.0.1:{agent.port}", "lab", timeout=5)
    step = report.step("peer-validity")
    assert step.status is Status.FAIL
    assert "ahead of this machine's clock" in step.reason
    assert re.search(r"4 h 5\d min", step.reason), step.reason


async def test_tls12_only_peer(pki: Pki, fake: object) -> None:
    agent = fake(pki.server, pki.uid, tls12=True)  # type: ignore[operator]
    report = await diagnose_client(f"127.0.0.1:{agent.port}", "lab", timeout=5)
    step = report.step("tls")
    assert step.status is Status.FAIL
    assert "offers only TLSv1.2" in step.reason and "needs TLS 1.3" in step.reason


async def test_wrong_server_id(pki: Pki) -> None:
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent_obj(pki).run)
        report = await diagnose_client(str(addr), "lab", server_id="render-7", timeout=5)
        tg.cancel_scope.cancel()
    step = report.step("server-id")
    assert step.status is Status.FAIL and "not 'render-7'" in step.reason


# -- all good ----------------------------------------------------------------------------


async def test_healthy_agent_every_step_passes(pki: Pki) -> None:
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent_obj(pki).run)
        report = await diagnose_client(str(addr), "lab", server_id="srv", timeout=5)
        # the agent still serves real clients afterwards
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        assert local.port
        tg.cancel_scope.cancel()
    assert report.passed, report.render()
    statuses = {s.name: s.status for s in report.steps}
    assert statuses.pop("address") is Status.WARN  # loopback: only this machine
    assert set(statuses.values()) == {Status.PASS}, report.render()
    for name in (
        "tcp",
        "answer",
        "tls",
        "peer-ca",
        "peer-role",
        "peer-validity",
        "peer-revoked",
        "peer-unique-id",
        "accepted",
        "hello",
        "real",
    ):
        assert name in statuses
    assert "TLS 1.3" in report.step("tls").reason
    assert report.step("hello").details["server_id"] == "srv"


async def test_cli_healthy_and_copied_certificate(pki: Pki, cli: object) -> None:
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent_obj(pki).run)
        ok = await anyio.to_thread.run_sync(
            lambda: cli("debug", "client", str(addr), "--creds", "lab", "--json")  # type: ignore[operator]
        )
        copied = await anyio.to_thread.run_sync(
            lambda: cli(  # type: ignore[operator]
                "debug",
                "client",
                str(addr),
                "--creds",
                "lab",
                env={"PARACONNECT_UNIQUE_ID": "another-machine"},
            )
        )
        tg.cancel_scope.cancel()
    assert ok.returncode == 0, ok
    data = json.loads(ok.stdout)
    assert data["ok"] is True
    assert [s["step"] for s in data["steps"] if s["status"] == "FAIL"] == []
    assert copied.returncode == 1, copied
    assert "FAIL  unique-id" in copied.stdout and "COPIED certificate" in copied.stdout
    # The agent refuses the copy too, in the hello: the reason arrives here in words.
    assert "FAIL  hello" in copied.stdout and "copied certificate" in copied.stdout


async def test_cli_refused_in_words(cli: object, home: Path) -> None:
    make_pki(home)
    port = free_port()
    result = await anyio.to_thread.run_sync(
        lambda: cli("debug", "client", f"127.0.0.1:{port}", "--creds", "lab")  # type: ignore[operator]
    )
    assert result.returncode == 1
    assert "FAIL  tcp" in result.stdout and "nothing listens" in result.stdout
    assert "fix: is the agent running" in result.stdout


async def test_explain_gives_tunnel_refusals_a_reason(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(Exception) as info:
        await Connector(pki.client, f"127.0.0.1:{port}", "127.0.0.1:0").run()
    assert "nothing listens" in explain(info.value)
    other = make_pki(tmp_path / "elsewhere", "other")
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent_obj(pki).run)
        with pytest.raises(Exception) as refused:
            await Connector(other.client, addr, "127.0.0.1:0", unique_id=other.uid).run()
        tg.cancel_scope.cancel()
    assert "another session" in explain(refused.value)


# -- addresses and levels -------------------------------------------------------------------


async def test_ipv6_loopback_refused(pki: Pki) -> None:
    port = free_port("::1")
    report = await diagnose_client(f"[::1]:{port}", "lab", timeout=5)
    assert "loopback IPv6" in report.step("resolve").reason
    assert report.step("tcp").details["kind"] == "refused"
    assert f"[::1]:{port}" in report.step("tcp").reason


async def test_level_none_agent_speaks_clear_text(home: Path) -> None:
    plain = make_pki(home, "plain", SecurityLevel.NONE)
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent_obj(plain).run)
        report = await diagnose_client(str(addr), "plain", timeout=5)
        tg.cancel_scope.cancel()
    assert report.step("tls").status is Status.WARN
    assert "CLEAR TEXT" in report.step("tls").reason
    assert report.step("hello").status is Status.PASS
    assert report.passed, report.render()


async def test_level_mutual_client_against_a_level_none_agent(home: Path, pki: Pki) -> None:
    plain = make_pki(home, "plain", SecurityLevel.NONE)
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent_obj(plain).run)
        report = await diagnose_client(str(addr), "lab", timeout=2)
        tg.cancel_scope.cancel()
    answer = report.step("answer")
    assert answer.status is Status.FAIL


async def test_https_server_that_is_not_an_agent(pki: Pki, tmp_path: Path) -> None:
    """A TLS 1.3 web server with a certificate of no session: TLS passes, everything after
    says why it is not an agent."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "www.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = tmp_path / "www.pem"
    pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)

    def serve() -> None:
        conn, _ = lsock.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(100)
            tls.sendall(b"HTTP/1.1 400 Bad Request\\r\\nContent-Length: 0\\r\\n\\r\\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        report = await diagnose_client(f"127.0.0.1:{lsock.getsockname()[1]}", "lab", timeout=3)
    finally:
        thread.join(10)
        lsock.close()
    assert report.step("tls").status is Status.PASS
    assert "no paraconnect identity" in report.step("peer-role").reason
    assert report.step("peer-ca").status is Status.FAIL
    hello = report.step("hello")
    assert hello.status is Status.FAIL and "does not speak paraconnect's hello" in hello.reason
