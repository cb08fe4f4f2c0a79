"""The hub end to end with the built-in renderer: launched by the local launcher, phoning home
(reverse), a real frame fetched through the hub's local endpoint; every state change an event;
a restarted hub re-adopts what phones home again and reports what does not."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from paraconnect.errors import ConfigError
from paraconnect.pki import Session
from paraconnect.servers import LocalLauncher

from .helpers_hub import check_frame, running_hub

pytest.importorskip("vtk")
pytestmark = pytest.mark.timeout(90)


def test_builtin_reverse_local_frame_events_stop(
    home: Path, session: Session, tmp_path: Path
) -> None:
    remote = LocalLauncher(tmp_path / "remote")  # the "remote host": outside the hub's home
    with running_hub(home) as (hub, events):
        info = hub.call(hub.launch, "builtin", remote, "lab")
        assert info.state == "submitted" and info.local and info.local.startswith("127.0.0.1:")
        info = hub.call(hub.wait, info.id)
        assert info.state == "connected", info
        check_frame(info.local_port)
        logs = hub.call(hub.logs, info.id)
        assert "paraconnect-render listening on" in logs and '"event": "ready"' in logs
        assert f"enrolled {info.id}" in logs
        stopped = hub.call(hub.stop, info.id, 5.0)
        assert stopped.state == "stopped" and stopped.local is None
        assert events.states(info.id) == [
            "submitted",
            "starting",
            "waiting",
            "connected",
            "stopped",
        ]
        assert all(e.reason for e in events.seen)
    # Enrolled: the agent made its key on its own side (0600 in a 0700 directory); the hub's
    # data directory holds no key of the agent's.
    [creds] = (tmp_path / "remote").glob("*/creds")
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    assert stat.S_IMODE((creds / f"{info.id}.key").stat().st_mode) == 0o600
    agent_cert = x509.load_pem_x509_certificate((creds / f"{info.id}.crt").read_bytes())
    agent_pub = agent_cert.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    keys = list(home.rglob("*.key"))
    assert keys  # the session's and the hub's own
    for path in keys:
        pub = load_pem_private_key(path.read_bytes(), None).public_key()
        assert pub.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) != agent_pub
    db = home / "servers.sqlite3"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = con.execute("SELECT state, job FROM servers WHERE id = ?", (info.id,)).fetchone()
    assert row[0] == "stopped" and '"launcher": "local"' in row[1]


def test_registry_survives_a_hub_restart(home: Path, session: Session) -> None:
    with running_hub(home) as (hub, _events):
        back = hub.call(hub.launch, "builtin", "local", "lab")
        lost = hub.call(hub.launch, "builtin", "local", "lab")
        for sid in (back.id, lost.id):
            assert hub.call(hub.wait, sid).state == "connected"
        rec = hub.registry.get(lost.id)
        assert rec is not None and rec.job is not None
        lost_pid = rec.job["options"]["pid"]
        os.killpg(lost_pid, signal.SIGSTOP)  # alive, but it will never phone home again
        hub.stop_thread()  # the hub goes away; its servers keep running
        with running_hub(home, readopt_grace=3.0) as (hub2, events2):
            info = hub2.call(hub2.wait, back.id)
            assert info.state == "connected" and info.local
            check_frame(info.local_port)
            gone = hub2.call(hub2.wait, lost.id, "failed")
            assert gone.state == "failed"
            assert gone.reason == "never phoned home after hub restart"
            assert events2.states(back.id) == ["idle", "connected"]
            assert events2.states(lost.id) == ["idle", "failed"]


def test_unknown_server_and_kind_are_config_errors(home: Path, session: Session) -> None:
    with running_hub(home) as (hub, _events):
        with pytest.raises(ConfigError, match="no server 'nope'"):
            hub.call(hub.stop, "nope")
        with pytest.raises(ConfigError, match="unknown server kind 'vnc'"):
            hub.call(hub.launch, "vnc", "local", "lab")


def test_builtin_forward_the_hub_dials_the_agent(home: Path, session: Session) -> None:
    with running_hub(home) as (hub, events):
        info = hub.call(hub.launch, "builtin", "local", "lab", "forward")
        assert info.local is None  # known once the hub has dialled the agent
        info = hub.call(hub.wait, info.id)
        assert info.state == "connected" and info.local, info
        # What the hub dialled and what the agent proved, as for a server that phones home.
        assert info.peer is not None and info.peer.startswith(f"server '{info.id}' on ")
        assert info.where is not None and info.where.startswith("127.0.0.1:")
        assert info.attempts == 1
        check_frame(info.local_port)
        assert events.states(info.id) == ["submitted", "starting", "waiting", "connected"]


def test_forward_server_is_dialled_again_after_a_hub_restart(home: Path, session: Session) -> None:
    with running_hub(home) as (hub, _events):
        info = hub.call(hub.launch, "builtin", "local", "lab", "forward")
        assert hub.call(hub.wait, info.id).state == "connected"
        hub.stop_thread()
        with running_hub(home, readopt_grace=30.0) as (hub2, events2):
            again = hub2.call(hub2.wait, info.id)
            assert again.state == "connected" and again.local, again
            check_frame(again.local_port)
            assert events2.states(info.id) == ["idle", "connected"]
