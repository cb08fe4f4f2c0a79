"""Each check a peer passes after TLS, alone (issue 12, item 9 and the mutation audit).

The checks overlap: the role table (`tls.check_peer`) and the hello's role-versus-certificate
check each hid the other's removal, and the hello's unique-ID demand hid nothing at all.  So
every test here is built so that exactly one check stands between the peer and success: first
against the lower layer with crafted identities and hellos, then end to end over real TLS with
crafted certificates that our session CA signed.  Roles hold at every level with TLS; the levels
differ only in node binding."""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from paraconnect.errors import CredentialError, TrustError
from paraconnect.pki import Credentials, Identity, Role, SecurityLevel
from paraconnect.pki._certs import build_leaf
from paraconnect.tls import PeerIdentity, check_peer
from paraconnect.tunnel import Agent, Hello, Home, Program, Purpose, ReverseListener, Side
from paraconnect.tunnel._hello import _check

from .helpers_tunnel import Pki, echo_command, make_pki, pid_of

pytestmark = pytest.mark.timeout(60)

SESSION = "5e55" * 8
UID = "node-1"


def _peer(
    role: Role, *, session: str = SESSION, uid: str | None = UID, cn: str | None = None
) -> PeerIdentity:
    return PeerIdentity(
        Identity(session, role, "peer", uid), 1, "00", cn if cn is not None else uid,
        None, "TLSv1.3", None,
    )  # fmt: skip


# -- the lower layer: check_peer alone ------------------------------------------------------


@pytest.mark.parametrize("level", [SecurityLevel.ENCRYPT, SecurityLevel.MUTUAL])
@pytest.mark.parametrize(
    ("ours", "theirs"), [(Role.CLIENT, Role.CLIENT), (Role.SERVER, Role.SERVER)]
)
def test_role_table_refuses_a_peer_of_our_own_role(
    level: SecurityLevel, ours: Role, theirs: Role
) -> None:
    with pytest.raises(
        TrustError, match=f"a {theirs.value} certificate .* cannot talk to a {ours.value}"
    ):
        check_peer(
            _peer(theirs), level=level, session_id=SESSION, our_role=ours, claimed_unique_id=UID
        )


@pytest.mark.parametrize("level", [SecurityLevel.ENCRYPT, SecurityLevel.MUTUAL])
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(Role.CLIENT, Role.SERVER), (Role.CLIENT, Role.NODE), (Role.SERVER, Role.CLIENT),
     (Role.SERVER, Role.NODE)],
)  # fmt: skip
def test_role_table_lets_the_other_roles_through(
    level: SecurityLevel, ours: Role, theirs: Role
) -> None:
    check_peer(_peer(theirs), level=level, session_id=SESSION, our_role=ours, claimed_unique_id=UID)


def test_level_none_checks_nothing() -> None:
    check_peer(_peer(Role.CLIENT, session="x"), level=SecurityLevel.NONE, session_id=SESSION,
               our_role=Role.CLIENT)  # fmt: skip


@pytest.mark.parametrize("level", [SecurityLevel.ENCRYPT, SecurityLevel.MUTUAL])
def test_check_peer_refuses_a_certificate_of_another_session(level: SecurityLevel) -> None:
    with pytest.raises(TrustError, match="belongs to session 00000000…, not ours"):
        check_peer(_peer(Role.SERVER, session="0" * 32), level=level, session_id=SESSION,
                   our_role=Role.CLIENT, claimed_unique_id=UID)  # fmt: skip


def test_check_peer_refuses_a_common_name_that_is_not_the_node() -> None:
    peer = _peer(Role.SERVER, cn="elsewhere")
    with pytest.raises(TrustError, match="not bound to a node"):
        check_peer(peer, level=SecurityLevel.MUTUAL, session_id=SESSION, our_role=Role.CLIENT,
                   claimed_unique_id=UID)  # fmt: skip
    # Node binding is what level encrypt leaves out.
    check_peer(peer, level=SecurityLevel.ENCRYPT, session_id=SESSION, our_role=Role.CLIENT)


def test_check_peer_refuses_a_claim_of_another_node() -> None:
    with pytest.raises(TrustError, match="issued for node 'node-1': a copied certificate"):
        check_peer(_peer(Role.SERVER), level=SecurityLevel.MUTUAL, session_id=SESSION,
                   our_role=Role.CLIENT, claimed_unique_id="node-2")  # fmt: skip


# -- the lower layer: the hello's own checks alone ------------------------------------------


def _hello_check(peer: PeerIdentity, hello: Hello, level: SecurityLevel, ours: Role) -> None:
    conn: Any = SimpleNamespace(peer=peer)
    _check(conn, hello, level=level, session_id=SESSION, our_role=ours)


@pytest.mark.parametrize("level", [SecurityLevel.ENCRYPT, SecurityLevel.MUTUAL])
def test_hello_refuses_a_role_its_certificate_does_not_have(level: SecurityLevel) -> None:
    # The role table lets a client certificate talk to a server: only the hello check stops
    # it acting as a server.
    hello = Hello(SESSION, Role.SERVER, "x", Purpose.CONTROL, UID)
    with pytest.raises(TrustError, match="acts as server with a client certificate"):
        _hello_check(_peer(Role.CLIENT), hello, level, Role.SERVER)
    # A node certificate acts in either role.
    _hello_check(_peer(Role.NODE), hello, level, Role.SERVER)


def test_hello_at_mutual_must_name_its_node() -> None:
    hello = Hello(SESSION, Role.CLIENT, "", Purpose.DATA, unique_id=None)
    with pytest.raises(TrustError, match="carries no unique ID"):
        _hello_check(_peer(Role.CLIENT), hello, SecurityLevel.MUTUAL, Role.SERVER)
    _hello_check(_peer(Role.CLIENT), hello, SecurityLevel.ENCRYPT, Role.SERVER)


@pytest.mark.parametrize("level", [SecurityLevel.ENCRYPT, SecurityLevel.MUTUAL])
def test_hello_naming_another_session_is_refused(level: SecurityLevel) -> None:
    hello = Hello("0" * 32, Role.CLIENT, "", Purpose.DATA, UID)
    with pytest.raises(TrustError, match="hello names session 00000000…, not ours"):
        _hello_check(_peer(Role.CLIENT), hello, level, Role.SERVER)


# -- end to end, over real TLS ---------------------------------------------------------------


class _Crafted(Side):
    """A peer that skips its own checks and says what the test makes it say, as a modified
    paraconnect would: `fake` fields replace those of its hello; `session` overrides the
    session it expects of the other end."""

    def __init__(self, *args: Any, fake: dict[str, Any] | None = None,
                 session: str | None = None, **kw: Any) -> None:  # fmt: skip
        self._fake = fake or {}
        self._session = session
        super().__init__(*args, **kw)

    def _check_own(self, creds: Credentials) -> None:
        pass

    @property
    def session_id(self) -> str:
        return self._session or self.creds.identity.session_id

    def hello(self, purpose: Purpose, channel: str | None = None) -> Hello:
        return dataclasses.replace(super().hello(purpose, channel), **self._fake)


async def _pair(acceptor: Side, dialler: Side, purpose: Purpose = Purpose.DATA) -> tuple[Any, Any]:
    """Both ends of one loopback connection; (acceptor's outcome, dialler's outcome)."""
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.setblocking(False)
    port = lsock.getsockname()[1]
    out: dict[str, Any] = {}

    async def accept() -> None:
        import asyncio

        sock, _ = await asyncio.get_running_loop().sock_accept(lsock)
        try:
            conn, hello = await acceptor.establish(sock, server_side=True)
            out["acceptor"] = hello
            await conn.aclose()
        except Exception as exc:
            out["acceptor"] = exc

    async def dial() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        try:
            conn, hello = await dialler.establish(sock, server_side=False, purpose=purpose)
            out["dialler"] = hello
            await conn.aclose()
        except Exception as exc:
            out["dialler"] = exc

    with lsock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(accept)
            tg.start_soon(dial)
    return out["acceptor"], out["dialler"]


def _creds_with(
    pki: Pki, role: Role, *, session: str | None = None, uid: str | None = None,
    cn: str | None = None,
) -> Credentials:  # fmt: skip
    """Credentials whose certificate our session CA really signed, saying what the test asks:
    another session in its identity, or a subject CN that is not its node."""
    uid = uid if uid is not None else pki.uid
    ident = Identity(session or pki.session.id, role, "mallory", uid)
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key = pki.session.load_ca_key()
    cert = build_leaf(ca_key, pki.session.ca_cert, key.public_key(), ident, 1)
    if cn is not None:
        builder = x509.CertificateBuilder(
            issuer_name=cert.issuer,
            subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
            public_key=key.public_key(),
            serial_number=x509.random_serial_number(),
            not_valid_before=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
            not_valid_after=cert.not_valid_after_utc,
            extensions=list(cert.extensions),
        )
        cert = builder.sign(ca_key, cert.signature_hash_algorithm)  # type: ignore[arg-type]
    return Credentials(pki.session.ca_cert, cert, key, None, ident, "crafted", pki.session.level)


def _refused_by_acceptor(acceptor: Any, dialler: Any, reason: str) -> None:
    """The acceptor refused, for `reason` (the refusal itself, not a log line: with the check
    gone the acceptor says yes); the dialler learnt that reason too (told, or, where it holds
    the same kind of certificate, found it itself)."""
    assert isinstance(acceptor, TrustError), acceptor
    assert str(acceptor).startswith("refused ") and reason in str(acceptor), acceptor
    assert isinstance(dialler, TrustError), dialler
    assert reason in str(dialler), dialler


@pytest.mark.anyio
async def test_role_table_alone_a_client_dialling_a_listener_as_a_client(pki: Pki) -> None:
    """A client certificate that says it is a client (so the hello check is satisfied) dials a
    listener, which is a client too: only the role table refuses."""
    listener = Side(pki.client, Role.CLIENT, accounting=False)
    friend = _Crafted(pki.client, Role.CLIENT, accounting=False)
    acc, dial = await _pair(listener, friend, Purpose.CONTROL)
    _refused_by_acceptor(acc, dial, "client certificate ('alice'), which cannot talk to a client")


@pytest.mark.anyio
async def test_hello_check_alone_a_server_certificate_acting_as_a_client(
    pki: Pki,
) -> None:
    """A server certificate that says it is a client dials a listener holding a node
    certificate: the role table lets a server talk to a client; only the hello's
    role-versus-certificate check refuses."""
    pki.session.issue("node", "laptop", unique_id=pki.uid)
    from paraconnect.pki import load_credentials

    node = load_credentials("lab", role="node", store=pki.store)
    listener = Side(node, Role.CLIENT, accounting=False)
    thief = _Crafted(pki.server, Role.CLIENT, accounting=False)
    acc, dial = await _pair(listener, thief)
    _refused_by_acceptor(acc, dial, "the peer acts as client with a server certificate ('srv')")


@pytest.mark.anyio
async def test_session_check_alone_a_certificate_naming_another_session(pki: Pki) -> None:
    """Our CA signed it, its hello names our session: only check_peer's session check sees
    that the certificate itself names another."""
    creds = _creds_with(pki, Role.CLIENT, session="0" * 32)
    agent = Side(pki.server, Role.SERVER, server_id="srv", accounting=False)
    mallory = _Crafted(creds, Role.CLIENT, session=pki.session.id, accounting=False,
                       fake={"session": pki.session.id})  # fmt: skip
    acc, dial = await _pair(agent, mallory)
    _refused_by_acceptor(acc, dial, "the peer's certificate belongs to session 00000000…")


@pytest.mark.anyio
async def test_cn_binding_alone_a_certificate_whose_cn_is_not_its_node(pki: Pki) -> None:
    """The identity names this node and so does the hello: only the CN check sees that the
    subject is another node's."""
    creds = _creds_with(pki, Role.CLIENT, cn="another-machine")
    agent = Side(pki.server, Role.SERVER, server_id="srv", accounting=False)
    mallory = _Crafted(creds, Role.CLIENT, accounting=False)
    acc, dial = await _pair(agent, mallory)
    _refused_by_acceptor(acc, dial, "'mallory' is not bound to a node")


@pytest.mark.anyio
async def test_a_copied_certificate_with_a_hello_that_names_no_node(pki: Pki, home: Path) -> None:
    """Bob's certificate, bound to his laptop, used here with a hello that leaves the unique
    ID out: without the hello's demand the copied-certificate check has nothing to compare."""
    bob = pki.friend("bob", home, unique_id="bob-laptop")
    agent = Side(pki.server, Role.SERVER, server_id="srv", accounting=False)
    thief = _Crafted(bob, Role.CLIENT, accounting=False, fake={"unique_id": None})
    acc, dial = await _pair(agent, thief)
    _refused_by_acceptor(acc, dial, "the peer's hello carries no unique ID")
    # The same thief naming the node honestly is refused as a copy.
    honest = _Crafted(bob, Role.CLIENT, accounting=False, fake={"unique_id": pki.uid})
    acc, dial = await _pair(agent, honest)
    _refused_by_acceptor(acc, dial, "a copied certificate")


# -- item 9: a friend's client certificate phoning home as a server, at level encrypt ---------


@pytest.mark.anyio
async def test_encrypt_a_client_certificate_phoning_home_as_a_server_is_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = make_pki(home, "enc", SecurityLevel.ENCRYPT)
    bob = pki.friend("bob", home, unique_id="bob-laptop")
    # An honest agent refuses to start with it; a modified one skips that check.
    with pytest.raises(CredentialError, match=r"client certificate .* cannot act as a server"):
        Agent(bob, program=Program(echo_command()), listen=["127.0.0.1:0"])
    refusals: list[dict[str, Any]] = []
    async with anyio.create_task_group() as tg:
        listener = ReverseListener(pki.client, "127.0.0.1:0", "127.0.0.1:0", agent_wait=10)
        listener.side.observers.append(
            lambda event, _exc: refusals.append(event) if event["event"] == "refused" else None
        )
        addr, local = await tg.start(listener.run)
        with monkeypatch.context() as patch:
            patch.setattr(Side, "_check_own", lambda self, creds: None)
            impostor = Agent(bob, program=Program(echo_command()), server_id="bob-srv",
                             phone_home=[Home(addr, interval=0.05)])  # fmt: skip
        await tg.start(impostor.run)
        with anyio.fail_after(20):
            while not refusals:  # noqa: ASYNC110 - the listener's own refusal event
                await anyio.sleep(0.02)
        reason = refusals[0]["reason"]
        assert "client 'bob'" in reason and "client certificate" in reason, refusals[0]
        assert "cannot talk to a client" in reason or "acts as server with a client" in reason
        assert listener.agents == []
        # The good server is still accepted, and carries the data.
        good = Agent(pki.server, program=Program(echo_command()), server_id="srv",
                     phone_home=[Home(addr, interval=0.05)])  # fmt: skip
        await tg.start(good.run)
        link = await listener.wait_for_agent(20)
        assert link.hello.server_id == "srv" and "server 'srv'" in link.peer_label
        assert await pid_of(local) > 0
        assert [a.hello.server_id for a in listener.agents] == ["srv"]
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_hello_session_check_alone_a_hello_naming_another_session(pki: Pki) -> None:
    """Our session's certificate, a hello that names another session: only the hello's own
    session check refuses."""
    agent = Side(pki.server, Role.SERVER, server_id="srv", accounting=False)
    confused = _Crafted(pki.client, Role.CLIENT, accounting=False, fake={"session": "0" * 32})
    acc, dial = await _pair(agent, confused)
    _refused_by_acceptor(acc, dial, "the peer's hello names session 00000000…, not ours")
