"""A restart never lowers the newest signed policy or revocation list an agent applied (issue 12,
item 5).  Before, the counters started at 0 and were never kept: any policy the session key ever
signed, replayed by any member of the session after a restart, was taken again.

End to end with real agent processes (`paraconnect serve` holding a directory of PEM files, as on
a remote node): a session member opens a control channel and pushes what the test signed with
the session key, then a ping whose pong says the push was handled."""

from __future__ import annotations

import json
import logging
import socket
import stat
import sys
from pathlib import Path

import anyio
import pytest

from paraconnect.errors import CredentialError, TrustError
from paraconnect.pki import Policy, Role, Rule, crl_number, load_crl, load_policy, sign_policy
from paraconnect.tunnel import Connector, Purpose, Side
from paraconnect.tunnel._hello import read_frame, write_frame
from paraconnect.tunnel._trust import Trust

from .helpers_cli import Proc, procs_fixture  # noqa: F401 - the procs fixture
from .helpers_tunnel import ECHO, Pki, sha_check

pytestmark = pytest.mark.timeout(120)

BOB_NODE = "bob-laptop"
STATE_NAME = "trust-state.json"  # beside the credentials


def _serve(procs: object, creds: Path) -> tuple[Proc, str]:
    agent: Proc = procs(  # type: ignore[operator]
        "serve", "--creds", str(creds), "--listen", "127.0.0.1:0", "--json", "--",
        sys.executable, ECHO, "--port", "{port}",
    )  # fmt: skip
    [addr] = agent.ready()["listen"]  # type: ignore[misc]
    return agent, str(addr)


async def _push(pki: Pki, addr: str, *messages: dict[str, object]) -> None:
    """Alice (a member of the session, not its owner process) pushes `messages` on a control
    channel; the pong to the ping after them says the agent has handled them."""
    side = Side(pki.client, Role.CLIENT, accounting=False)
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    conn, _hello = await side.establish(sock, server_side=False, purpose=Purpose.CONTROL)
    try:
        with anyio.fail_after(20):
            info = await read_frame(conn)
            assert info.get("type") == "info", info
            for msg in messages:
                await write_frame(conn, msg)
            await write_frame(conn, {"type": "ping"})
            assert (await read_frame(conn)).get("type") == "pong"
    finally:
        await conn.aclose()


async def _bob_is_refused(bob: object, addr: str, match: str) -> None:
    with anyio.fail_after(20), pytest.raises(TrustError, match=match):
        await Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run()  # type: ignore[arg-type]


def _state(creds: Path) -> dict[str, object]:
    path = creds / STATE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return dict(json.loads(path.read_text()))


@pytest.mark.anyio
async def test_an_older_signed_policy_replayed_after_a_restart_is_refused(
    pki: Pki, home: Path, tmp_path: Path, procs: object
) -> None:
    node = tmp_path / "node"
    pki.session.issue("server", "remote", unique_id=pki.uid, out=node)
    bob = pki.friend("bob", home, unique_id=BOB_NODE)
    key = pki.session.load_ca_key()
    older = sign_policy(Policy(), key, 1000)  # once signed by the owner: it lets bob in
    newer = sign_policy(Policy((Rule.make("deny", name="bob"),)), key, 2000)

    agent, addr = _serve(procs, node)
    async with anyio.create_task_group() as tg:
        await sha_check(
            await tg.start(Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run), 1000
        )
        tg.cancel_scope.cancel()
    await _push(pki, addr, {"type": "policy", "signed": newer})
    await _bob_is_refused(bob, addr, "denied by the policy")
    assert _state(node) == {"session": pki.session.id, "policy": 2000, "crl": 0}
    assert agent.stop() == 0

    again, addr = _serve(procs, node)
    await _push(pki, addr, {"type": "policy", "signed": older})
    log = again.log.read_text()
    assert "policy 1000 from client 'alice'" in log, log
    assert "is older than policy 2000 applied here before; refused" in log, log
    await _bob_is_refused(bob, addr, "denied by the policy")
    assert [r.describe() for r in load_policy(node / "policy.json").rules] == ["deny name 'bob'"]
    assert _state(node)["policy"] == 2000
    # The newest one again is nothing new: taken silently, nothing changes.
    await _push(pki, addr, {"type": "policy", "signed": newer})
    assert "policy 2000 from" not in again.log.read_text()


def _crl_message(pem: str) -> dict[str, object]:
    return {"type": "crl", "pem": pem, "part": 0, "parts": 1}


@pytest.mark.anyio
async def test_an_older_revocation_list_after_a_restart_is_refused(
    pki: Pki, home: Path, tmp_path: Path, procs: object
) -> None:
    node = tmp_path / "node"
    pki.session.issue("server", "remote", unique_id=pki.uid, out=node)
    bob = pki.friend("bob", home, unique_id=BOB_NODE)
    first = (node / "crl.pem").read_text()  # the list as the credentials were issued
    pki.session.revoke("bob")
    newer = pki.session.crl_path.read_text()
    number = crl_number(load_crl(pki.session.crl_path, pki.session.ca_cert))  # type: ignore[arg-type]
    assert number > crl_number(load_crl(node / "crl.pem", pki.session.ca_cert))  # type: ignore[arg-type]

    agent, addr = _serve(procs, node)
    await _push(pki, addr, _crl_message(newer))
    await _bob_is_refused(bob, addr, "revoked")
    assert _state(node) == {"session": pki.session.id, "policy": 0, "crl": number}
    assert agent.stop() == 0

    # The directory put back as first issued (a restored backup, the files copied again): the
    # agent does not start on the older list, and says why in one line.
    (node / "crl.pem").write_text(first)
    stale: Proc = procs(  # type: ignore[operator]
        "serve", "--creds", str(node), "--listen", "127.0.0.1:0", "--json", "--",
        sys.executable, ECHO, "--port", "{port}",
    )  # fmt: skip
    assert stale.wait() != 0
    [error] = stale.errors()
    assert f"{node / 'crl.pem'} holds revocation list number" in error, error
    assert f"older than list {number} applied here before" in error, error

    # With the newest list back it starts; the older one replayed over the wire is refused.
    (node / "crl.pem").write_text(newer)
    again, addr = _serve(procs, node)
    await _push(pki, addr, _crl_message(first))
    log = again.log.read_text()
    assert f"than the newest applied here ({number}); refused" in log, log
    await _bob_is_refused(bob, addr, "revoked")
    assert (node / "crl.pem").read_text() == newer


@pytest.mark.anyio
async def test_a_bundle_keeps_the_numbers_beside_it(
    pki: Pki, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Credentials from a PKCS#12 bundle keep no list on disk: the numbers alone, beside the
    bundle, still refuse a replay after a restart."""
    caplog.set_level(logging.INFO, "paraconnect")
    bob = pki.friend("bob", home, unique_id=BOB_NODE)
    first = pki.session.crl_path.read_text()
    pki.session.revoke("alice")
    newer = pki.session.crl_path.read_text()
    key = pki.session.load_ca_key()
    assert Trust(bob).accept_crl(newer, "the owner") is True
    assert Trust(bob).accept_policy(sign_policy(Policy(), key, 7), "the owner") is True
    state = home / f"bob.p12.{STATE_NAME}"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    restarted = Trust(bob)
    assert restarted.creds.crl is None  # nothing on disk: the owner pushes it again
    assert restarted.accept_crl(first, "a replaying peer") is False
    assert restarted.accept_policy(sign_policy(Policy(), key, 6), "a replaying peer") is False
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any("from a replaying peer is older (number 1)" in m for m in refused), refused
    assert any("policy 6 from a replaying peer is older than policy 7" in m for m in refused)
    assert restarted.accept_crl(newer, "the owner") is True  # the newest is taken again


def test_the_state_file_only_rises_and_a_broken_one_fails_closed(tmp_path: Path) -> None:
    from paraconnect.tunnel._trust_state import TrustState

    path = tmp_path / STATE_NAME
    one = TrustState(path, "s1")
    one.raise_to(policy=5, crl=3)
    two = TrustState(path, "s1")  # another process on the same credentials
    two.raise_to(policy=9)
    one.raise_to(crl=4)  # merges with what the other wrote: policy 9 stays
    assert json.loads(path.read_text()) == {"session": "s1", "policy": 9, "crl": 4}
    one.raise_to(policy=1, crl=1)
    assert (TrustState(path, "s1").policy, TrustState(path, "s1").crl) == (9, 4)
    other = TrustState(path, "s2")  # credentials of another session put here since
    assert (other.policy, other.crl) == (0, 0)
    path.write_text('{"session": "s1", "policy": -1')
    with pytest.raises(CredentialError, match=f"trust state file {path} is malformed"):
        TrustState(path, "s1")
    path.chmod(0o644)
    with pytest.raises(CredentialError, match="readable by group/others"):
        TrustState(path, "s1")
