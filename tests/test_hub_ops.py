"""The hub's operation table (docs/hub-api.md) through a real hub and its control socket, and
the live events it publishes: to callbacks, and on the ZeroMQ PUB socket kernels subscribe to."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
import zmq

from paraconnect.errors import ConfigError, ProtocolError, TrustError
from paraconnect.hub import Hub, serve_control
from paraconnect.pki import Role, Session, Store, load_credentials
from paraconnect.tunnel import Endpoint
from paraconnect.tunnel._leg import connect_endpoint
from paraconnect.tunnel._secure import Side

from .helpers_hub import running_hub
from .test_supervisor_policy import ECHO, echo

pytestmark = pytest.mark.timeout(90)


def op(hub: Hub, operation: str, /, **fields: Any) -> Any:
    from paraconnect._hub._ops import call_in_thread

    return call_in_thread(hub, operation, fields)


def test_sessions_friends_and_revocation(home: Path, session: Session, tmp_path: Path) -> None:
    with running_hub(home) as (hub, events):
        created = op(hub, "session_create", name="cfd", level="encrypt", days=30)
        assert created["level"] == "encrypt" and created["phone_home"] is None
        names = [s["name"] for s in op(hub, "sessions")]
        assert names == ["cfd", "lab"]
        opened = op(hub, "session_open", session="cfd")
        assert opened["phone_home"].startswith("127.0.0.1:")

        issued = op(hub, "friend_issue", session="lab", name="alice", passphrase="pw-alice")
        serial = issued["certificate"]["serial"]
        assert issued["certificate"]["status"] == "valid"
        assert issued["filename"] == "lab-alice.p12"
        bundle = op(hub, "friend_bundle", session="lab", serial=serial)
        p12 = tmp_path / "alice.p12"
        p12.write_bytes(base64.b64decode(bundle["data_b64"]))
        # A peer nobody here wrote reads the bundle with the passphrase, and not without it.
        ok = subprocess.run(
            ["openssl", "pkcs12", "-in", p12, "-info", "-noout", "-passin", "pass:pw-alice"],
            capture_output=True,
            check=False,
        )
        assert ok.returncode == 0, ok.stderr
        bad = subprocess.run(
            ["openssl", "pkcs12", "-in", p12, "-info", "-noout", "-passin", "pass:wrong"],
            capture_output=True,
            check=False,
        )
        assert bad.returncode != 0
        assert [f["name"] for f in op(hub, "friends", session="lab")] == ["alice"]

        [revoked] = op(hub, "revoke", session="lab", target="alice", reason="key_compromise")
        assert revoked["status"] == "revoked" and revoked["serial"] == serial
        assert op(hub, "friends", session="lab")[0]["status"] == "revoked"
        with pytest.raises(ConfigError, match="keeps no friend bundle"):
            op(hub, "friend_bundle", session="lab", serial=serial)
        changes = [e["change"] for e in events.all if e["event"] == "credentials"]
        assert changes == ["session_created", "issued", "revoked"]

        with pytest.raises(ConfigError, match="needs the field 'passphrase'"):
            op(hub, "friend_issue", session="lab", name="bob")
        with pytest.raises(ProtocolError, match="unknown operation"):
            op(hub, "nope")


def test_servers_connections_accounting_and_zmq_events(home: Path, session: Session) -> None:
    with running_hub(home) as (hub, events):
        address = op(hub, "hub")["events"]
        assert address.startswith("ipc://")
        assert oct(Path(address[len("ipc://") :]).stat().st_mode & 0o777) == "0o600"
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVTIMEO, 30_000)  # a bound for the test, not a speed requirement
        sub.connect(address)
        try:
            # ZeroMQ's subscription reaches the publisher asynchronously: publish until seen.
            while True:
                op(hub, "session_open", session="lab")
                hub.call(_publish, hub, {"event": "probe"})
                if sub.poll(200):
                    break
            info = op(hub, "launch", kind="command", session="lab", command=ECHO)
            info = op(hub, "wait", id=info["id"])
            assert info["state"] == "connected" and info["attempts"] == 1
            assert info["peer"].startswith(f"server '{info['id']}' on ")
            assert info["streams"] == 0
            with socket.create_connection(("127.0.0.1", int(info["local"].rsplit(":")[1]))) as s:
                s.sendall(b"echo\nopen")
                assert s.recv(4) == b"open"  # the data connection is open at the hub
                assert op(hub, "server", id=info["id"])["streams"] == 1
            assert echo(int(info["local"].rsplit(":")[1]), b"hello") == b"hello"

            seen: list[dict[str, Any]] = []

            def closed_echo(e: dict[str, Any]) -> bool:  # the second data connection, closed
                return e["event"] == "connection" and e["state"] == "closed" and e["bytes_in"] == 5

            while not any(closed_echo(e) for e in seen):
                topic, body = sub.recv_multipart()
                event = json.loads(body)
                assert topic.decode() == event["event"]
                seen.append(event)
            kinds = [e["event"] for e in seen]
            assert "phone_home" in kinds and "server" in kinds
            closed = next(e for e in seen if closed_echo(e))
            assert closed["server_id"] == info["id"] and closed["kind"] == "data"
            assert closed["session"] == "lab" and closed["peer"] == info["peer"]
            assert closed["bytes_in"] == 5 and closed["bytes_out"] == len(b"echo\nhello")
        finally:
            sub.close()
            ctx.term()

        [listener] = op(hub, "listeners")
        assert listener["session"] == "lab" and listener["agents"] == [info["id"]]
        acct = op(hub, "accounting", session="lab", since="1h")
        # The agent (launched locally, the same data directory) accounts its side too.
        data = [r for r in acct["records"] if r["kind"] == "data" and r["side"] == "client"]
        assert data and data[-1]["bytes_in"] == 5
        assert isinstance(op(hub, "logs", id=info["id"], tail=5), str)
        assert op(hub, "stop", id=info["id"], grace=2)["state"] == "stopped"
        assert [e for e in events.all if e["event"] == "hung_up"]


async def _publish(hub: Hub, event: dict[str, Any]) -> None:
    hub.publish(event)


def test_a_refused_agent_is_an_event_with_the_debuggers_reason(
    home: Path, session: Session, tmp_path: Path
) -> None:
    """Someone with another session's certificate dials the hub's phone-home port: the hub
    refuses, keeps serving, and announces why in the debugger's words."""
    other_home = tmp_path / "other"
    other = Store(other_home).create_session("lab")
    other.issue(Role.SERVER, "intruder", unique_id=Store(other_home).unique_id().value)
    creds = load_credentials("lab", role=Role.SERVER, store=Store(other_home))
    with running_hub(home) as (hub, events):
        where = op(hub, "session_open", session="lab")["phone_home"]
        host, port = where.rsplit(":", 1)

        async def dial() -> None:
            side = Side(creds, Role.SERVER, store=Store(other_home), accounting=False)
            sock = await connect_endpoint(Endpoint(host, int(port)))
            with pytest.raises(TrustError):
                await side.establish(sock, server_side=False)

        anyio.run(dial)
        pause = threading.Event()  # never set: a sleep that the test's timeout bounds
        while not any(e["event"] == "refused" for e in events.all):
            pause.wait(0.05)
        refused = next(e for e in events.all if e["event"] == "refused")
        assert refused["session"] == "lab"
        assert refused["session_id"] == hub.store.open_session("lab").id
        assert "fix:" in refused["explain"]


def test_agent_command_started_by_hand_phones_home(home: Path, session: Session) -> None:
    """The panel's "copy agent command": the line, run in a shell as someone would on a remote
    host, enrols with its one-time token and phones home; the server turns connected."""
    with running_hub(home) as (hub, _events):
        got = op(hub, "agent_command", kind="command", session="lab", command=ECHO)
        line = got["command"]
        assert line.startswith("PARACONNECT_ENROLL_TOKEN=") and " serve " in line
        # The line pins the hub's identity, not only its CA: the agent sends its token to
        # nobody else (issue 12 item 11); running it below proves the real hub passes.
        assert " --hub-identity client/hub:enroll " in line
        sid = got["server"]["id"]
        assert got["server"]["launcher"] == "manual"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        workdir = home / "manual-agent"
        workdir.mkdir()
        agent = subprocess.Popen(  # noqa: S602 - the very shell line a user pastes
            line, shell=True, cwd=workdir, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            info = op(hub, "wait", id=sid, timeout=60)
            assert info["state"] == "connected"
            assert echo(int(info["local"].rsplit(":")[1]), b"by hand") == b"by hand"
            # The token was used: the same line cannot enrol a second agent.
            again = subprocess.run(  # noqa: S602
                line, shell=True, cwd=workdir, env=env, capture_output=True, timeout=60,
                check=False,
            )  # fmt: skip
            assert again.returncode != 0
        finally:
            os.killpg(agent.pid, 15)
            agent.wait(timeout=30)


def test_control_socket_speaks_the_same_operations(home: Path, session: Session) -> None:
    from paraconnect.hub import HubClient

    async def main() -> None:
        hub = Hub(home)
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            await tg.start(serve_control, hub)
            info = json.loads((home / "run" / "hub.json").read_text())
            assert info["events"].startswith("ipc://")

            def client() -> list[str]:
                with HubClient(home) as c:
                    c.request("session_create", name="viz")
                    return [s["name"] for s in c.request("sessions")]

            assert await anyio.to_thread.run_sync(client) == ["lab", "viz"]
            tg.cancel_scope.cancel()

    anyio.run(main)


def test_a_peer_without_a_certificate_is_explained_as_such(home: Path, session: Session) -> None:
    """openssl s_client (a peer nobody here wrote) with no certificate: the refusal's one line
    says so, not "a firewall" (an SSLError's errno is OpenSSL's, not the system's)."""
    with running_hub(home) as (hub, events):
        where = op(hub, "session_open", session="lab")["phone_home"]
        subprocess.run(
            ["openssl", "s_client", "-connect", where, "-tls1_3", "-quiet"],
            input=b"", capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        pause = threading.Event()  # never set: a sleep that the test's timeout bounds
        while not any(e["event"] == "refused" for e in events.all):
            pause.wait(0.05)
        refused = next(e for e in events.all if e["event"] == "refused")
        assert refused["explain"].startswith("the peer sent no certificate"), refused
        assert "firewall" not in refused["explain"]
