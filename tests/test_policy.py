"""Live policy: ordered allow/deny rules per session, applied by running agents and clients at
the next handshake, and to open connections within a second (revocation too); a malformed
policy or a CRL of another CA keeps the previous one in force; the lock-out warning."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from paraconnect.errors import ConfigError, TrustError
from paraconnect.pki import (
    Policy,
    Rule,
    load_credentials,
    load_policy,
    policy_path,
    policy_warnings,
    save_policy,
    sign_policy,
    update_policy,
)
from paraconnect.tunnel import Agent, Connector, Endpoint, Program

from .helpers_tunnel import Pki, echo_command, make_pki, sha_check

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

BOB_NODE = "bob-laptop"


def _agent(pki: Pki, **kw: object) -> Agent:
    kw.setdefault("listen", ["127.0.0.1:0"])
    return Agent(pki.server, program=Program(echo_command()), **kw)  # type: ignore[arg-type]


def _deny(pki: Pki, **criteria: str) -> Policy:
    rule = Rule.make("deny", **criteria)
    return update_policy(pki.session, lambda p: replace(p, rules=(*p.rules, rule)))


async def _open_echo(local: Endpoint) -> anyio.abc.SocketStream:
    """A data connection through the tunnel that stays open (the echo program)."""
    stream = await anyio.connect_tcp(local.host, local.port)
    await stream.send(b"echo\nhello")
    got = b""
    with anyio.fail_after(10):
        while got != b"hello":
            got += await stream.receive()
    return stream


async def _closed_by_far_end(stream: anyio.abc.SocketStream) -> bool:
    """True once the far end has closed the connection (EOF or reset) without sending a byte
    more (the echo program answers only what we send); any byte fails the test."""
    try:
        data = await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
        return True
    raise AssertionError(f"the far end sent {data!r} instead of closing the connection")


def _cut(side: object) -> list[dict[str, object]]:
    """The connections `side` itself reports closing from now on, with why (its events)."""
    seen: list[dict[str, object]] = []

    def observe(event: dict[str, object], _exc: object) -> None:
        reason = event.get("reason")
        if event.get("state") == "closed" and str(reason).startswith("closed by this side"):
            seen.append(event)

    side.observers.append(observe)  # type: ignore[attr-defined]
    return seen


async def _told(cut: list[dict[str, object]], *kinds: str) -> None:
    """Wait until the side has told of a cut connection of each kind: it tells once the
    ledger's next commit holds the row (within its FLUSH_DELAY), not at the moment of the cut."""
    with anyio.fail_after(10):
        while not all(any(e["kind"] == k for e in cut) for k in kinds):  # noqa: ASYNC110
            await anyio.sleep(0.01)


# -- the policy itself -------------------------------------------------------------------


def test_first_matching_rule_decides_else_the_default() -> None:
    policy = Policy(
        (Rule.make("allow", name="alice"), Rule.make("deny", role="client")), default="allow"
    )
    assert policy.decide("client", "alice", 1, None)[0]
    allowed, why = policy.decide("client", "bob", 2, None)
    assert not allowed and "rule #2" in why
    assert policy.decide("server", "srv", 3, None) == (True, "the default (allow)")
    by_serial = Rule.make("deny", serial="0x0A:bc")
    assert by_serial.serial == "abc" and by_serial.matches("client", "x", 0xABC, None)
    assert Rule.make("deny", unique_id="n1").matches("node", "x", 5, "n1")
    assert not Rule.make("deny", unique_id="n1").matches("node", "x", 5, "n2")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"default": "maybe"}', "default must be"),
        (b'{"rules": [{"action": "kick", "name": "x"}]}', "rule #1"),
        (b'{"rules": [{"action": "deny", "colour": "red"}]}', "unknown key 'colour'"),
        (b'{"rules": [{"action": "deny", "serial": "xyz"}]}', "not hexadecimal"),
    ],
)
def test_a_malformed_policy_is_refused_naming_the_file(
    tmp_path: Path, text: bytes, why: str
) -> None:
    path = tmp_path / "policy.json"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match="malformed") as info:
        load_policy(path)
    assert str(path) in str(info.value) and why in str(info.value)


def test_warnings_unknown_identities_and_owner_lock_out(pki: Pki) -> None:
    ghost = Policy((Rule.make("deny", name="ghost"), Rule.make("deny", serial="abcdef99")))
    warnings = policy_warnings(pki.session, ghost)
    assert any("'ghost'" in w and "never issued" in w for w in warnings)
    assert any("abcdef99" in w for w in warnings)
    assert not any(w.startswith("LOCK-OUT") for w in warnings)
    lock = Policy(default="deny")
    assert any(w.startswith("LOCK-OUT") for w in policy_warnings(pki.session, lock))
    mine = Policy((Rule.make("allow", name="alice"),), default="deny")
    assert not any(w.startswith("LOCK-OUT") for w in policy_warnings(pki.session, mine))


def test_cli_policy_allow_deny_show_remove(pki: Pki, cli: object) -> None:
    run = cli  # type: ignore[assignment]
    r = run("policy", "deny", "--session", "lab", "--name", "ghost")  # type: ignore[operator]
    assert r.returncode == 0 and "never issued" in r.stderr, r
    r = run("policy", "allow", "--session", "lab", "--name", "alice", "--position", "1")  # type: ignore[operator]
    assert r.returncode == 0, r
    r = run("policy", "default", "deny", "--session", "lab", "--json")  # type: ignore[operator]
    assert r.returncode == 0 and "LOCK-OUT" not in r.stderr, r
    import json

    shown = json.loads(r.stdout)
    assert shown["default"] == "deny"
    assert shown["rules"] == [
        {"action": "allow", "name": "alice"},
        {"action": "deny", "name": "ghost"},
    ]
    r = run("policy", "remove", "--session", "lab", "--name", "alice")  # type: ignore[operator]
    assert r.returncode == 0 and "LOCK-OUT" in r.stderr, r  # deny by default, alice gone
    r = run("policy", "show", "--session", "lab")  # type: ignore[operator]
    assert "1. deny name 'ghost'" in r.stdout and "default: deny" in r.stdout, r
    policy_path(pki.session).write_text("{broken")
    r = run("policy", "show", "--session", "lab")  # type: ignore[operator]
    assert r.returncode == 1 and "policy.json is malformed" in r.stderr, r
    r = run("policy", "remove", "--session", "lab", "--all")  # type: ignore[operator]
    assert r.returncode == 0 and not policy_path(pki.session).exists(), r


# -- live --------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["name", "serial", "unique_id", "role"])
async def test_deny_applies_to_the_next_handshake_without_restart(
    pki: Pki, home: Path, by: str
) -> None:
    bob = pki.friend("bob", home, unique_id=BOB_NODE)
    criteria = {
        "name": {"name": "bob"},
        "serial": {"serial": pki.session.find("bob")[0].serial},
        "unique_id": {"unique_id": BOB_NODE},
        "role": {"role": "client", "unique_id": BOB_NODE},
    }[by]
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(_agent(pki).run)
        with anyio.CancelScope() as before:
            async with anyio.create_task_group() as inner:
                local = await inner.start(
                    Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run
                )
                await sha_check(local, 1000)
                before.cancel()
        _deny(pki, **criteria)
        with anyio.fail_after(20), pytest.raises(TrustError, match="denied by the policy"):
            await Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run()
        alice = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        await sha_check(alice, 1000)  # the others go on
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("how", ["revoke", "deny"])
async def test_an_open_connection_of_a_refused_friend_is_closed(
    pki: Pki, home: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "paraconnect")
    bob = pki.friend("bob", home, unique_id=BOB_NODE)
    async with anyio.create_task_group() as tg:
        agent = _agent(pki)
        cut = _cut(agent.side)
        [addr] = await tg.start(agent.run)
        local = await tg.start(Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run)
        alice_local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        stream = await _open_echo(local)
        alice_stream = await _open_echo(alice_local)
        if how == "revoke":
            pki.session.revoke("bob")
        else:
            _deny(pki, name="bob")
        with anyio.fail_after(10):  # a bound that stops the test, not a timing assertion
            closed = await _closed_by_far_end(stream)
        assert closed
        await stream.aclose()
        # Alice's connection was not touched.
        await alice_stream.send(b"still here")
        got = b""
        with anyio.fail_after(10):
            while got != b"still here":
                got += await alice_stream.receive()
        await alice_stream.aclose()
        tg.cancel_scope.cancel()
    word = "revoked" if how == "revoke" else "denied by the policy"
    # The agent's own account of what it cut: bob's connections, for that reason, alone.
    assert cut and all(str(e["peer"]).startswith("client 'bob'") for e in cut), cut
    assert all(word in str(e["reason"]) for e in cut), cut
    assert {e["kind"] for e in cut} >= {"data"}, cut
    closing = [r.getMessage() for r in caplog.records if "closing the" in r.getMessage()]
    assert any("'bob'" in m and word in m for m in closing), closing
    assert not any("'alice'" in m for m in closing)


async def test_a_malformed_policy_keeps_the_previous_one_in_force(
    pki: Pki, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bob = pki.friend("bob", home, unique_id=BOB_NODE)
    _deny(pki, name="bob")
    async with anyio.create_task_group() as tg:
        agent = _agent(pki)
        [addr] = await tg.start(agent.run)
        path = policy_path(pki.session)
        path.write_text('{"rules": [{"action": "allow"')  # broken while the agent runs
        with anyio.fail_after(20), pytest.raises(TrustError, match="denied by the policy"):
            await Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run()
        assert any(
            "malformed" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records
        )
        save_policy(path, Policy())  # fixed: everyone allowed again, at once
        local = await tg.start(Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run)
        await sha_check(local, 1000)
        tg.cancel_scope.cancel()


async def test_a_crl_of_another_ca_is_refused_and_the_old_one_stays(
    pki: Pki, home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bob = pki.friend("bob", home, unique_id=BOB_NODE)
    before_bob = pki.session.crl_path.read_text()
    pki.session.revoke("bob")
    other = make_pki(tmp_path / "elsewhere", "other")
    foreign = other.session.crl_path.read_text()
    async with anyio.create_task_group() as tg:
        agent = _agent(pki)
        [addr] = await tg.start(agent.run)
        # Over the wire (what a control channel would carry): refused, logged.
        assert agent.side.accept_crl(foreign, "a test peer") is False
        assert any("not signed by the session CA" in r.getMessage() for r in caplog.records)
        # Signed by the right CA but older: a replay that would un-revoke bob, refused.
        assert agent.side.accept_crl(before_bob, "a replaying peer") is False
        # On disk, while running: refused, logged, the previous list stays.
        pki.session.crl_path.write_text(foreign)
        with anyio.fail_after(20), pytest.raises(TrustError, match="revoked"):
            await Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run()
        assert any("keeping the previous revocation list" in r.getMessage() for r in caplog.records)
        tg.cancel_scope.cancel()


async def test_revocation_reaches_a_remote_agent_over_the_control_channel(
    pki: Pki, home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent holds a directory of PEM files (as on a remote host): only the owner's
    Connector, holding the session, can tell it of a revocation."""
    caplog.set_level(logging.INFO, "paraconnect")
    remote = tmp_path / "remote-creds"
    pki.session.issue("server", "far", unique_id=pki.uid, out=remote)
    far = load_credentials(remote)
    old_crl = (remote / "crl.pem").read_bytes()
    bob = pki.friend("bob", home, unique_id=BOB_NODE)
    async with anyio.create_task_group() as tg:
        agent = Agent(far, program=Program(echo_command()), listen=["127.0.0.1:0"])
        cut = _cut(agent.side)
        [addr] = await tg.start(agent.run)
        await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)  # the owner
        bob_local = await tg.start(Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run)
        stream = await _open_echo(bob_local)
        pki.session.revoke("bob")
        with anyio.fail_after(10):
            closed = await _closed_by_far_end(stream)
        assert closed
        await stream.aclose()
        await _told(cut, "data")
        assert any(
            e["kind"] == "data" and str(e["peer"]).startswith("client 'bob'")
            and "revoked" in str(e["reason"]) for e in cut
        ), cut  # fmt: skip
        new_crl = (remote / "crl.pem").read_bytes()
        assert new_crl != old_crl and new_crl == pki.session.crl_path.read_bytes()
        assert (remote / "crl.pem").stat().st_mode & 0o777 == 0o644
        with anyio.fail_after(20), pytest.raises(TrustError, match="revoked"):
            await Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run()
        tg.cancel_scope.cancel()
    assert any("revocation list 2 from" in r.getMessage() for r in caplog.records)


async def test_a_long_revocation_list_reaches_the_agent_in_several_frames(
    pki: Pki, home: Path, tmp_path: Path
) -> None:
    import datetime as dt

    from cryptography import x509

    from paraconnect._fs import write_atomic
    from paraconnect.pki._certs import RevokedEntry, build_crl, pem

    remote = tmp_path / "remote-creds"
    pki.session.issue("server", "far", unique_id=pki.uid, out=remote)
    bob = pki.friend("bob", home, unique_id=BOB_NODE)
    now = dt.datetime.now(dt.UTC)
    entries = [RevokedEntry(0x5EED0000 + i, now, x509.ReasonFlags.superseded) for i in range(1200)]
    entries.append(RevokedEntry(int(pki.session.find("bob")[0].serial, 16), now,
                                x509.ReasonFlags.key_compromise))  # fmt: skip
    big = pem(build_crl(pki.session.load_ca_key(), pki.session.ca_cert, entries, 7))
    assert len(big) > 2 * 16 * 1024  # more than one control frame can carry
    async with anyio.create_task_group() as tg:
        agent = Agent(load_credentials(remote), program=Program(echo_command()),
                      listen=["127.0.0.1:0"])  # fmt: skip
        [addr] = await tg.start(agent.run)
        await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        write_atomic(pki.session.crl_path, big, mode=0o644)  # as 'revoke' would
        with anyio.fail_after(10):
            while (remote / "crl.pem").read_bytes() != big:  # noqa: ASYNC110 - a file
                await anyio.sleep(0.05)
        with anyio.fail_after(20), pytest.raises(TrustError, match="revoked"):
            await Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run()
        tg.cancel_scope.cancel()


async def test_reverse_a_revoked_server_loses_its_open_connections_at_the_listener(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    from paraconnect.tunnel import Home, ReverseListener

    caplog.set_level(logging.INFO, "paraconnect")
    async with anyio.create_task_group() as tg:
        listener = ReverseListener(pki.client, "127.0.0.1:0", "127.0.0.1:0", agent_wait=5)
        cut = _cut(listener.side)
        addr, local = await tg.start(listener.run)
        agent = _agent(pki, listen=[], phone_home=[Home(addr, interval=0.05)])
        await tg.start(agent.run)
        stream = await _open_echo(local)
        pki.session.revoke("srv")
        with anyio.fail_after(10):
            closed = await _closed_by_far_end(stream)
        assert closed
        await stream.aclose()
        with anyio.fail_after(10):
            while listener.agents:  # noqa: ASYNC110 - the control channel goes too
                await anyio.sleep(0.02)
        await _told(cut, "control", "data")
        assert {e["kind"] for e in cut} == {"control", "data"}, cut
        assert all(
            str(e["peer"]).startswith("server 'srv'") and "revoked" in str(e["reason"]) for e in cut
        ), cut
        tg.cancel_scope.cancel()
    closing = [r.getMessage() for r in caplog.records if "closing the" in r.getMessage()]
    assert any("control connection with server 'srv'" in m and "revoked" in m for m in closing)
    assert any("data connection with server 'srv'" in m for m in closing)


async def test_the_owners_policy_reaches_an_agent_holding_its_own_credentials(
    pki: Pki, home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent on a remote node has only its PEM files, not the session's policy.json: the
    owner's side pushes its policy, signed with the session key, over the control channel; a
    deny made at the owner then cuts a friend who dials the agent directly.  A policy signed by
    another CA, or an older one (a replay), is refused."""
    out = tmp_path / "node7"
    pki.session.issue("server", "node7", unique_id=pki.uid, out=out)
    bob = pki.friend("bob", home, unique_id=BOB_NODE)
    async with anyio.create_task_group() as tg:
        agent = Agent(load_credentials(out), program=Program(echo_command()),
                      listen=["127.0.0.1:0"])  # fmt: skip
        cut = _cut(agent.side)
        [addr] = await tg.start(agent.run)
        await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)  # the owner
        stream = await _open_echo(
            await tg.start(Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run)
        )
        _deny(pki, name="bob")  # at the owner only
        with anyio.fail_after(10):  # a bound that stops the test, not a timing assertion
            assert await _closed_by_far_end(stream)
        await stream.aclose()
        await _told(cut, "data")
        assert ("data", f"client 'bob' on {BOB_NODE}") in [(e["kind"], e["peer"]) for e in cut]
        assert all(
            e["peer"] == f"client 'bob' on {BOB_NODE}"
            and "denied by the policy" in str(e["reason"])
            for e in cut
        ), cut
        kept = load_policy(out / "policy.json")  # beside the agent's credentials
        assert [r.describe() for r in kept.rules] == ["deny name 'bob'"]
        with anyio.fail_after(20), pytest.raises(TrustError, match="denied by the policy"):
            await Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run()

        other = make_pki(tmp_path / "elsewhere", "other")
        forged = sign_policy(Policy(), other.session.load_ca_key(), 1 << 62)
        assert agent.side.accept_policy(forged, "a forger") is False
        assert any("not signed by the session CA" in r.getMessage() for r in caplog.records)
        older = sign_policy(Policy(), pki.session.load_ca_key(), 1)
        assert agent.side.accept_policy(older, "a replaying peer") is False
        assert agent.side.policy.policy.rules == kept.rules
        tg.cancel_scope.cancel()
