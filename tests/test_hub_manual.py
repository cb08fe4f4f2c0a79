"""Agents started by hand (launcher "manual"): what the hub tells the person running the line,
and what it knows about an agent that enrolled but cannot phone home."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from paraconnect.errors import TrustError
from paraconnect.hub import Hub
from paraconnect.pki import Session
from paraconnect.servers import REPORT_FILE, enroll

from .helpers_hub import running_hub
from .test_hub_ops import op
from .test_supervisor_policy import ECHO

pytestmark = pytest.mark.timeout(90)


def _poll_state(hub: Hub, server_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info: dict[str, Any] = op(hub, "server", id=server_id)
        if info["state"] == state or time.monotonic() > deadline:
            return info
        time.sleep(0.1)


def test_enrolled_but_cannot_phone_home_is_its_own_state(home: Path, session: Session) -> None:
    """The line runs where the enrolment port is reachable but the phone-home port is not (a
    firewall that lets one through): the server is `unreachable` with the agent's own error,
    not "waiting for it to be started by hand"."""
    with running_hub(home) as (hub, events):
        got = op(hub, "agent_command", kind="command", session=session.name, command=ECHO)
        sid, argv = got["server"]["id"], shlex.split(got["command"])
        # Bound, never listening: a port that answers every dial with a refusal.
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        blocked = f"127.0.0.1:{closed.getsockname()[1]}"
        argv[argv.index("--phone-home") + 1] = blocked
        env_var, _, token = argv.pop(0).partition("=")
        workdir = home / "far-host"
        workdir.mkdir()
        env = {**os.environ, env_var: token,
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
        agent = subprocess.Popen(
            argv, cwd=workdir, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            info = _poll_state(hub, sid, "unreachable")
            assert info["state"] == "unreachable", info
            assert info["reason"].startswith(
                f"enrolled, cannot reach the hub at {blocked}: connection refused"
            ), info["reason"]
            states = [e.get("state") for e in events.all if e.get("server_id") == sid]
            assert "starting" in states, states  # enrolment was seen before the report
            report = workdir / "creds" / REPORT_FILE
            assert report.stat().st_mode & 0o777 == 0o600
            # The report token (spent now) never enrols anything, not even its own server.
            with pytest.raises(TrustError):
                anyio.run(
                    lambda: enroll(
                        hub.enroll_address(session.name), session.ca_fingerprint,
                        report.read_text().strip(), sid, home / "stolen",
                    )
                )  # fmt: skip
        finally:
            os.killpg(agent.pid, 15)
            agent.wait(timeout=30)
            closed.close()


def test_manual_line_warns_about_this_machines_addresses(home: Path, session: Session) -> None:
    """A hub listening on loopback, and a kind whose program is this machine's Python: the line
    cannot work on a remote host as it stands, and the hub says which parts and what to do."""
    with running_hub(home) as (hub, _events):
        got = op(hub, "agent_command", kind="builtin", session=session.name)
        warnings = got["warnings"]
        assert any("127.0.0.1" in w and "--listen" in w for w in warnings), warnings
        assert sys.executable in got["command"]
        assert any(sys.executable in w and "python" in w for w in warnings), warnings
        # Each warning is one line.
        assert all("\n" not in w for w in warnings)
        # The CLI prints them above the line, as comments a shell would ignore.
        assert all(re.match(r"^[^\n]+$", w) for w in warnings)
