"""RADIUS (issue 17) against a real FreeRADIUS on loopback: an Access-Request for every peer an
accepting side takes (after revocation and policy), the Reply-Message of a reject as the
reason the peer, the accounting, the debugger and the hub's events give; Accounting-Request
Start, Interim-Update and Stop with the bytes each way; and a stopped server: fail closed,
fail open, a recent answer standing in, and accounting queued in SQLite and sent later."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import anyio
import anyio.abc
import pytest

from paraconnect._hub._ops import call_in_thread
from paraconnect.errors import CredentialError, TrustError
from paraconnect.pki import Role, Rule, Session, Store, load_credentials, update_policy
from paraconnect.tunnel import (
    Accounting,
    Agent,
    Connector,
    ConnRecord,
    Endpoint,
    Program,
    Purpose,
    RadiusConfig,
)
from paraconnect.tunnel._leg import connect_endpoint
from paraconnect.tunnel._secure import Side

from .fixtures_radius import FreeRadius, freeradius_factory  # noqa: F401 - the fixture
from .helpers_hub import running_hub
from .helpers_tunnel import PASS, Pki, ask, echo_command
from .test_supervisor_policy import ECHO as ECHO_PORT
from .test_supervisor_policy import echo

pytestmark = [pytest.mark.timeout(90)]

REASON = "bob is not in the viz group"
# A stopped server is waited for this long per request (not 3 s), to keep the test short.
QUICK = {"timeout": 0.3, "tries": 2}


def _users(pki: Pki) -> str:
    # alice by the exact User-Name the session gives her; bob by paraconnect's vendor
    # attribute (the dictionary we ship, loaded by FreeRADIUS); anyone else: no.
    return (
        f"\"client 'alice' on {pki.uid}\" Auth-Type := Accept\n\n"
        'DEFAULT Paraconnect-Name == "bob", Auth-Type := Reject\n'
        f'\tReply-Message = "{REASON}"\n\n'
        "DEFAULT Auth-Type := Reject\n"
        '\tReply-Message = "unknown to RADIUS"\n'
    )


def _records(home: Path) -> list[ConnRecord]:
    with Accounting.in_home(home, auto_rotate=False) as acc:
        return acc.records()


async def _until(predicate: object, bound: float = 30) -> None:
    with anyio.fail_after(bound):
        while True:
            if predicate():  # type: ignore[operator]
                return
            await anyio.sleep(0.05)


def _agent(pki: Pki, radius: RadiusConfig) -> Agent:
    return Agent(
        pki.server, program=Program(echo_command("{unix}")), listen=["127.0.0.1:0"], radius=radius
    )


@pytest.mark.anyio
async def test_radius_admits_refuses_with_its_reason_and_accounts_the_bytes(
    pki: Pki,
    home: Path,
    freeradius_factory: type[FreeRadius],  # noqa: F811
) -> None:
    radius = freeradius_factory(_users(pki))
    config = RadiusConfig.load(radius.address, radius.secret_file, interim=1.0)
    bob = pki.friend("bob", home, unique_id="bob-laptop")
    eve = pki.friend("eve", home, unique_id="eve-laptop")
    update_policy(pki.session, lambda p: replace(p, rules=(Rule.make("deny", name="eve"),)))
    size = 1024 * 1024 + 3
    data = hashlib.shake_256(b"radius").digest(size)
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki, config).run)
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        answer = await ask(local, "sha256", data)
        assert answer == f"{hashlib.sha256(data).hexdigest()} {size}\n".encode()
        # bob's certificate is valid and no policy denies him: RADIUS alone says no, and he
        # reads why.
        with anyio.fail_after(20), pytest.raises(TrustError, match=REASON):
            await Connector(bob, addr, "127.0.0.1:0", unique_id="bob-laptop").run()
        # The local policy refuses first: eve is never asked about (RADIUS logs every answer).
        with anyio.fail_after(20), pytest.raises(TrustError, match="denied by the policy"):
            await Connector(eve, addr, "127.0.0.1:0", unique_id="eve-laptop").run()
        await _until(lambda: "Login incorrect: [client 'bob'" in radius.log.read_text())
        assert "'eve'" not in radius.log.read_text()  # asked after bob's, had it been asked

        alice = f"client 'alice' on {pki.uid}"
        match = {"User-Name": alice, "Paraconnect-Kind": "data"}
        start = await radius.wait_detail({**match, "Acct-Status-Type": "Start"})
        stop = await radius.wait_detail({**match, "Acct-Status-Type": "Stop"})
        # The control channel stays open past the interim interval: an Interim-Update.
        await radius.wait_detail({"User-Name": alice, "Acct-Status-Type": "Interim-Update"})
        tg.cancel_scope.cancel()

    # The bytes the test sent and received, as the agent counted them from alice.
    assert stop["Acct-Input-Octets"] == str(len(b"sha256\n") + size)
    assert stop["Acct-Output-Octets"] == str(len(answer))
    assert stop["Acct-Session-Id"] == start["Acct-Session-Id"]
    assert stop["Acct-Terminate-Cause"] == "User-Request"
    assert stop["Paraconnect-Close-Reason"] == "eof"
    assert int(stop["Acct-Session-Time"]) >= 0
    serial = format(pki.client.cert.serial_number, "x")
    assert start["Paraconnect-Serial"] == serial and start["Paraconnect-Role"] == "client"
    assert start["Paraconnect-Unique-Id"] == pki.uid
    assert start["Acct-Multi-Session-Id"] == pki.session.id
    assert start["NAS-Identifier"] == f"server 'srv' on {pki.uid}"
    # Only the admitted are accounted as connections: bob never had a Start.
    assert not [r for r in radius.detail() if "'bob'" in r.get("User-Name", "")]

    # The local accounting (what 'paraconnect accounting' and the debugger read) holds the
    # refusal with RADIUS's reason; alice's data row has the same bytes as RADIUS's Stop.
    records = _records(home)
    refused = [r for r in records if r.outcome == "refused" and r.remote_name == "bob"]
    assert refused and all(REASON in (r.reason or "") for r in refused)
    [data_in] = [r for r in records if r.side == "server" and r.kind == "data"]
    assert (data_in.bytes_in, data_in.bytes_out) == (len(b"sha256\n") + size, len(answer))


@pytest.mark.anyio
async def test_a_stopped_radius_server_fails_closed_open_or_on_a_recent_answer(
    pki: Pki,
    home: Path,
    freeradius_factory: type[FreeRadius],  # noqa: F811
) -> None:
    radius = freeradius_factory(_users(pki))
    closed = RadiusConfig.load(radius.address, radius.secret_file, cache=600, interim=1.0, **QUICK)
    opened = RadiusConfig.load(radius.address, radius.secret_file, fail="open", cache=0, **QUICK)
    no_cache = RadiusConfig.load(radius.address, radius.secret_file, cache=0, **QUICK)
    carol = pki.friend("carol", home, unique_id="carol-laptop")
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki, closed).run)
        [addr_open] = await tg.start(_agent(pki, opened).run)
        [addr_nocache] = await tg.start(_agent(pki, no_cache).run)
        # alice is admitted by both sides that fail closed while the server answers: its
        # Accept is remembered (for 600 s by one, for no time at all by the other).
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        assert await ask(local, "echo", b"hi") == b"hi"
        local_nocache = await tg.start(Connector(pki.client, addr_nocache, "127.0.0.1:0").run)
        assert await ask(local_nocache, "echo", b"hi") == b"hi"
        radius.stop()

        # Within the cache window, her answer stands in for the silent server...
        with anyio.fail_after(20):
            local2 = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        assert await ask(local2, "echo", b"hi") == b"hi"
        # ...but no one else's: carol was never asked, and this side fails closed.
        with anyio.fail_after(20), pytest.raises(TrustError, match=r"did not answer.*fail closed"):
            await Connector(carol, addr, "127.0.0.1:0", unique_id="carol-laptop").run()
        # Past the cache window (0 s there), alice too is refused by a side that fails closed...
        with anyio.fail_after(20), pytest.raises(TrustError, match="did not answer"):
            await Connector(pki.client, addr_nocache, "127.0.0.1:0").run()
        # ...and admitted, like carol, by the one that fails open.
        local3 = await tg.start(
            Connector(carol, addr_open, "127.0.0.1:0", unique_id="carol-laptop").run
        )
        assert await ask(local3, "echo", b"carol") == b"carol"

        # Accounting while the server is down waits in the accounting database...
        def queued() -> list[dict[str, str]]:
            db = sqlite3.connect(home / "accounting.sqlite3")
            try:
                rows = db.execute("SELECT attrs FROM radius_outbox").fetchall()
            except sqlite3.OperationalError:  # not made yet
                rows = []
            finally:
                db.close()
            return [json.loads(text) for (text,) in rows]

        def carol_stopped() -> bool:
            return any(
                "'carol'" in q["User-Name"] and q["Acct-Status-Type"] == "Stop"
                and q["Paraconnect-Kind"] == "data"
                for q in queued()
            )  # fmt: skip

        await _until(carol_stopped)
        [queued_stop] = [
            q for q in queued()
            if "'carol'" in q["User-Name"] and q["Acct-Status-Type"] == "Stop"
            and q["Paraconnect-Kind"] == "data"
        ]  # fmt: skip
        sid = queued_stop["Acct-Session-Id"]
        # ...and reaches the server once it is back (on the same port), Start before Stop.
        radius.start()
        stop = await radius.wait_detail({"Acct-Session-Id": sid, "Acct-Status-Type": "Stop"})
        statuses = [r["Acct-Status-Type"] for r in radius.detail() if r["Acct-Session-Id"] == sid]
        assert statuses == ["Start", "Stop"]
        assert stop["Acct-Input-Octets"] == str(len(b"echo\ncarol"))
        assert stop["Acct-Output-Octets"] == str(len(b"carol"))
        await _until(lambda: not [q for q in queued() if q["Acct-Session-Id"] == sid])
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_the_debugger_shows_a_radius_refusal_in_words(
    pki: Pki,
    home: Path,
    cli: object,
    freeradius_factory: type[FreeRadius],  # noqa: F811
) -> None:
    radius = freeradius_factory(_users(pki))
    pki.friend("bob", home, unique_id="bob-laptop")
    passphrase = home / "bob.pass"
    passphrase.write_bytes(PASS)
    config = RadiusConfig.load(radius.address, radius.secret_file)
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki, config).run)
        out = await anyio.to_thread.run_sync(
            lambda: cli(  # type: ignore[operator]
                "debug", "client", str(addr), "--creds", str(home / "bob.p12"),
                "--passphrase-file", str(passphrase),
                env={"PARACONNECT_UNIQUE_ID": "bob-laptop"},
            )
        )  # fmt: skip
        tg.cancel_scope.cancel()
    assert out.returncode == 1, out
    # The step that failed (the hello: TLS itself accepted bob), RADIUS's own words, and a
    # fix that names RADIUS rather than a firewall or a certificate.
    lines = [line.strip() for line in out.stdout.splitlines()]
    [hello] = [line for line in lines if line.startswith("FAIL  hello")]
    assert REASON in hello and "RADIUS" in hello
    assert "PASS  accepted        the peer accepted our certificate in TLS" in lines
    assert "ask the administrators of that RADIUS server" in out.stdout


def test_the_hub_admits_by_radius_and_announces_its_refusal_with_the_reply_message(
    home: Path,
    session: Session,
    freeradius_factory: type[FreeRadius],  # noqa: F811
) -> None:
    """The hub's phone-home listener asks RADIUS too: an agent it launched (by hand, from the
    panel's agent command) is admitted and relays; a rogue server certificate is refused, and
    the hub's "refused" event (what the panel shows) carries the Reply-Message."""
    store = Store(home)
    uid = store.unique_id().value
    session.issue(Role.SERVER, "rogue", unique_id=uid)
    creds = load_credentials("lab", role=Role.SERVER, store=store)
    radius = freeradius_factory(
        'DEFAULT Paraconnect-Role == "server", Paraconnect-Name == "rogue", Auth-Type := Reject\n'
        '\tReply-Message = "rogue is not a registered render node"\n\n'
        'DEFAULT Paraconnect-Role == "server", Auth-Type := Accept\n'
    )
    config = RadiusConfig.load(radius.address, radius.secret_file)
    with running_hub(home, radius=config) as (hub, events):
        where = hub.call(hub.open_session, "lab")
        host, port = str(where).rsplit(":", 1)

        async def dial() -> None:
            side = Side(creds, Role.SERVER, store=store, accounting=False)
            sock = await connect_endpoint(Endpoint(host, int(port)))
            with pytest.raises(TrustError, match="rogue is not a registered render node"):
                await side.establish(sock, server_side=False, purpose=Purpose.CONTROL)

        anyio.run(dial)
        pause = threading.Event()  # never set: a sleep that the test's timeout bounds
        while not any(e["event"] == "refused" for e in events.all):
            pause.wait(0.05)
        refused = next(e for e in events.all if e["event"] == "refused")

        got = call_in_thread(hub, "agent_command", {"kind": "command", "session": "lab",
                                                    "command": ECHO_PORT})  # fmt: skip
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        workdir = home / "manual-agent"
        workdir.mkdir()
        agent = subprocess.Popen(  # noqa: S602 - the very shell line a user pastes
            got["command"], shell=True, cwd=workdir, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            sid = got["server"]["id"]
            info = call_in_thread(hub, "wait", {"id": sid, "timeout": 60})
            assert info["state"] == "connected"
            assert echo(int(info["local"].rsplit(":")[1]), b"through") == b"through"
        finally:
            os.killpg(agent.pid, signal.SIGTERM)
            agent.wait(timeout=30)
    assert "rogue is not a registered render node" in refused["reason"]
    assert refused["peer"] == f"server 'rogue' on {uid}"
    assert "RADIUS" in refused["explain"] and "rogue is not a registered" in refused["explain"]
    # RADIUS heard of the admitted agent's connections at the hub, by their certificate.
    log = radius.log.read_text()
    assert f"Login OK: [server '{sid}'" in log, log[-2000:]


def test_a_radius_secret_others_can_read_is_refused_in_one_line(
    home: Path, session: Session, cli: object, tmp_path: Path
) -> None:
    secret = tmp_path / "radius.secret"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o644)
    radius = ["--radius", "127.0.0.1:1812", "--radius-secret-file", str(secret)]
    for command in (
        ["serve", *radius, "--creds", "lab", "--listen", "127.0.0.1:0", "--", "true"],
        ["listen", *radius, "127.0.0.1:0", "--creds", "lab", "--local", "127.0.0.1:0"],
        ["hub", *radius],
    ):
        out = cli(*command)  # type: ignore[operator]
        assert out.returncode != 0, (command, out)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and str(secret) in lines[0] and "chmod 600" in lines[0], lines
    with pytest.raises(CredentialError, match="mode 0644"):
        RadiusConfig.load("127.0.0.1:1812", secret)
    os.chmod(secret, 0o600)
    assert RadiusConfig.load("127.0.0.1:1812", secret).secret == b"s3cret"


def test_the_jupyter_settings_give_the_hub_its_radius(tmp_path: Path) -> None:
    from traitlets import TraitError
    from traitlets.config import Config

    from paraconnect.jupyter import Paraconnect

    secret = tmp_path / "radius.secret"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o640)
    config = Config()
    config.Paraconnect.radius = " radius.example:1812 "
    config.Paraconnect.radius_secret_file = str(secret)
    config.Paraconnect.radius_fail = "Open"
    config.Paraconnect.radius_cache = 5.0
    conf = Paraconnect(config=config)
    assert Paraconnect().radius_config() is None  # no RADIUS unless told
    with pytest.raises(CredentialError, match="chmod 600"):
        conf.radius_config()
    os.chmod(secret, 0o600)
    radius = conf.radius_config()
    assert radius is not None
    assert (radius.host, radius.port, radius.acct_port) == ("radius.example", 1812, 1813)
    assert (radius.fail, radius.cache, radius.secret) == ("open", 5.0, b"s3cret")
    with pytest.raises(TraitError, match="radius_fail"):
        Paraconnect(radius_fail="maybe")
    with pytest.raises(TraitError, match=r"Paraconnect\.radius"):
        Paraconnect(radius="no-port")


@pytest.mark.anyio
async def test_a_forged_accept_does_not_admit(pki: Pki, tmp_path: Path) -> None:
    """Something on the RADIUS port answers every request with an Access-Accept it cannot
    sign (it lacks the secret): no answer at all to the side, which fails closed."""
    secret = tmp_path / "radius.secret"
    secret.write_text("the real secret\n")
    os.chmod(secret, 0o600)
    forged = 0
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as udp:
        port = udp.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - not Django
        config = RadiusConfig.load(f"127.0.0.1:{port}", secret, timeout=0.3, tries=2)

        async def forge() -> None:
            nonlocal forged
            async for data, peer in udp:
                # Access-Accept for the same id, with a Response Authenticator made up.
                await udp.sendto(bytes([2, data[1], 0, 20]) + os.urandom(16), *peer)
                forged += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(forge)
            [addr] = await tg.start(_agent(pki, config).run)
            with anyio.fail_after(20), pytest.raises(TrustError, match="did not answer"):
                await Connector(pki.client, addr, "127.0.0.1:0").run()
            tg.cancel_scope.cancel()
    assert forged >= 2  # it did answer, every try: the answers were not taken


@pytest.mark.anyio
async def test_only_an_access_accept_admits_even_failing_open(pki: Pki, tmp_path: Path) -> None:
    """A server that holds the secret and answers with an Access-Challenge (a question for a
    person, whom a TLS peer does not have) has answered: refused, though the side fails open."""
    from pyrad.packet import AuthPacket

    from paraconnect.tunnel._radius_wire import dictionary

    secret = tmp_path / "radius.secret"
    secret.write_text("the real secret\n")
    os.chmod(secret, 0o600)
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as udp:
        port = udp.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - not Django
        config = RadiusConfig.load(f"127.0.0.1:{port}", secret, fail="open")

        async def challenge() -> None:
            async for data, peer in udp:
                request = AuthPacket(packet=data, secret=b"the real secret", dict=dictionary())
                reply = request.CreateReply()
                reply.code = 11  # Access-Challenge
                await udp.sendto(reply.ReplyPacket(), *peer)

        async with anyio.create_task_group() as tg:
            tg.start_soon(challenge)
            [addr] = await tg.start(_agent(pki, config).run)
            with anyio.fail_after(20), pytest.raises(TrustError, match="not Access-Accept"):
                await Connector(pki.client, addr, "127.0.0.1:0").run()
            tg.cancel_scope.cancel()
