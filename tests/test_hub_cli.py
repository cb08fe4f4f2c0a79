"""``paraconnect hub`` as a real process, and ``paraconnect launch`` / ``servers`` against it
through its control socket."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from paraconnect.pki import Session

from .conftest import PARACONNECT
from .helpers_tunnel import free_port
from .test_supervisor_policy import echo

pytestmark = pytest.mark.timeout(90)
ECHO = [sys.executable, str(Path(__file__).with_name("helpers_echo.py")), "--port", "{port}"]


@pytest.fixture
def hub_proc(home: Path, session: Session) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PARACONNECT_HOME": str(home)}
    proc = subprocess.Popen(
        [PARACONNECT, "hub", "--json", "--session", "lab", "--status", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert '"event": "ready"' in line, line + proc.stderr.read() if proc.stderr else ""
    proc.status_url = json.loads(line)["status"]  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_launch_list_show_logs_stop(
    hub_proc: subprocess.Popen[str], cli: object, home: Path
) -> None:
    run = cli  # the conftest runner
    rdir = home / "run"
    assert stat.S_IMODE(rdir.stat().st_mode) == 0o700
    assert stat.S_IMODE((rdir / "hub.json").stat().st_mode) == 0o600
    r = run("launch", "command", "--session", "lab", "--wait", "--json", "--", *ECHO)  # type: ignore[operator]
    assert r.returncode == 0, r
    info = json.loads(r.stdout)
    assert info["state"] == "connected" and info["kind"] == "command"
    port = int(info["local"].rsplit(":", 1)[1])
    assert echo(port, b"via the cli") == b"via the cli"
    # The hub's status endpoint: the server by state, its control connection, the data bytes.
    with urllib.request.urlopen(hub_proc.status_url, timeout=10) as response:  # type: ignore[attr-defined]  # noqa: S310
        metrics = response.read().decode()
    assert 'paraconnect_servers{state="connected"} 1' in metrics, metrics
    assert 'paraconnect_connections_open{kind="control"} 1' in metrics, metrics
    assert 'paraconnect_connections_total{kind="data"} 1' in metrics, metrics
    r = run("servers", "list", "--json")  # type: ignore[operator]
    assert [s["id"] for s in json.loads(r.stdout)] == [info["id"]]
    r = run("servers", "list")  # type: ignore[operator]
    assert info["id"] in r.stdout and "connected" in r.stdout
    r = run("servers", "show", info["id"])  # type: ignore[operator]
    assert r.returncode == 0 and "connected" in r.stdout
    r = run("servers", "logs", info["id"], "--tail", "50")  # type: ignore[operator]
    assert '"event": "ready"' in r.stdout
    r = run("servers", "dial", info["id"], str(free_port()), "--timeout", "0.5")  # type: ignore[operator]
    assert r.returncode == 1 and "nothing listened on 127.0.0.1:" in r.stderr
    # resubmit: a new job (here a new local agent) phones home for the same id, onto the same
    # local endpoint, and the old one is stopped.
    r = run("servers", "resubmit", info["id"], "--json")  # type: ignore[operator]
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["state"] == "submitted"
    deadline = time.monotonic() + 60
    while True:
        shown = json.loads(run("servers", "show", info["id"], "--json").stdout)  # type: ignore[operator]
        if shown["state"] == "connected" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert shown["state"] == "connected" and shown["local"] == info["local"], shown
    assert shown["job_id"] != info["job_id"], (shown, info)
    assert echo(port, b"after resubmit") == b"after resubmit"
    r = run("servers", "stop", info["id"], "--json")  # type: ignore[operator]
    assert json.loads(r.stdout)["state"] == "stopped"
    r = run("servers", "resubmit", info["id"])  # type: ignore[operator]
    assert r.returncode == 1 and r.stderr == (
        f"paraconnect: error: server {info['id']} is stopped; launch a new one instead\n"
    ), r.stderr
    r = run("servers", "show", "nope")  # type: ignore[operator]
    assert r.returncode == 1 and r.stderr.startswith("paraconnect: error: no server 'nope'")


def test_no_hub_is_a_one_line_error(cli: object, home: Path) -> None:
    r = cli("servers", "list")  # type: ignore[operator]
    assert r.returncode == 1
    assert r.stderr.strip().endswith("start one with 'paraconnect hub' (or in Jupyter)")
