"""Issue 12 item 8: `paraconnect listen` hands its local endpoint only to the server(s) it was
told (``--server NAME``), or, told none, to the first server it took, for its whole life.  Two
server certificates of the session (``paraconnect issue server a`` / ``b``), real agents with
real programs behind them: b dials, is refused (a JSON event, a log line naming it, an accounting
record "refused"), and the owner's data still reaches a.  The hub, which knows which servers it
launched, refuses an agent it did not launch and says so in an event."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from paraconnect.pki import Session, Store
from paraconnect.tunnel import parse_endpoint
from paraconnect.tunnel._accounting import Accounting

from .helpers_cli import Proc, procs_fixture  # noqa: F401 - the fixture `procs`
from .helpers_hub import running_hub
from .helpers_tunnel import ECHO, Pki, pid_of, sha_check

pytestmark = pytest.mark.timeout(90)


def _server_creds(cli: object, pki: Pki, name: str, tmp_path: Path) -> Path:
    out = tmp_path / name
    r = cli("issue", "server", name, "--session", "lab", "--unique-id", pki.uid, "--out", str(out))  # type: ignore[operator]
    assert r.returncode == 0, r.stderr
    return out


def _agent(procs: object, creds: Path, address: str, interval: str) -> Proc:
    return procs(  # type: ignore[operator, no-any-return]
        "serve", "--creds", str(creds), "--json", "--phone-home", address,
        "--interval", interval, "--", sys.executable, ECHO, "--port", "{port}",
    )  # fmt: skip


async def _takeover_refused(
    pki: Pki, procs: object, cli: object, home: Path, tmp_path: Path, *listen_extra: str
) -> None:
    a = _server_creds(cli, pki, "a", tmp_path)
    b = _server_creds(cli, pki, "b", tmp_path)
    listener = procs(  # type: ignore[operator]
        "listen", "127.0.0.1:0", "--creds", "lab", "--local", "127.0.0.1:0", "--json",
        *listen_extra,
    )  # fmt: skip
    ready = listener.ready()
    address, local = str(ready["listen"]), parse_endpoint(str(ready["local"]))
    agent_a = _agent(procs, a, address, "0.05")
    assert agent_a.ready()["event"] == "ready"
    taken = listener.next_event()
    assert (taken["event"], taken["server_id"]) == ("server", "a"), taken
    pid_a = await pid_of(local)
    # b, another server certificate of the same session, phones home to the same listener.
    agent_b = _agent(procs, b, address, "0.5")
    assert agent_b.ready()["event"] == "ready"
    refused = listener.next_event()
    assert refused["event"] == "refused" and refused.get("server") == "b", refused
    assert "this listener takes only 'a'" in str(refused["reason"])
    # a keeps the endpoint: the owner's data still reaches a's program, not b's.
    assert await pid_of(local) == pid_a
    await sha_check(local, 300_000)
    assert await pid_of(local) == pid_a
    log = listener.log.read_text()
    assert "refused server 'b' at 127.0.0.1:" in log, log
    with Accounting.in_home(home) as acc:
        mine = [r for r in acc.records() if r.side == "client" and r.remote_name == "b"]
    assert mine and all(r.outcome == "refused" for r in mine), mine
    assert "this listener takes only 'a'" in mine[0].reason
    assert agent_a.popen.poll() is None and agent_b.popen.poll() is None


@pytest.mark.anyio
async def test_listen_server_a_refuses_b(
    pki: Pki, procs: object, cli: object, home: Path, tmp_path: Path
) -> None:
    await _takeover_refused(pki, procs, cli, home, tmp_path, "--server", "a")


@pytest.mark.anyio
async def test_listen_without_server_pins_the_first_one(
    pki: Pki, procs: object, cli: object, home: Path, tmp_path: Path
) -> None:
    """Told no server, listen takes the first and only it: a later one cannot take over."""
    await _takeover_refused(pki, procs, cli, home, tmp_path)


def test_hub_refuses_an_agent_it_did_not_launch(
    home: Path, store: Store, session: Session, procs: object, cli: object, tmp_path: Path
) -> None:
    """A server certificate of the session the hub never launched a server for phones home:
    refused, with a "refused" event naming it and why (not only a log line)."""
    out = tmp_path / "rogue"
    uid = store.unique_id().value
    r = cli("issue", "server", "rogue", "--session", session.name, "--unique-id", uid,  # type: ignore[operator]
            "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    with running_hub(home) as (hub, events):
        address = hub.call(hub.open_session, "lab")
        agent = _agent(procs, out, address, "0.5")
        assert agent.ready()["event"] == "ready"
        deadline = time.monotonic() + 30
        while not [e for e in list(events.all) if e["event"] == "refused"]:
            assert time.monotonic() < deadline, events.all
            time.sleep(0.05)
        [first, *_] = [e for e in list(events.all) if e["event"] == "refused"]
        assert first["server_id"] == "rogue" and first["session"] == "lab", first
        assert "was not launched by this hub" in str(first["reason"]), first
        assert not [e for e in events.all if e["event"] == "phone_home"]
