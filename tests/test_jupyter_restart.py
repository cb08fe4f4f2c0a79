"""Jupyter stops and starts again: a launched server keeps running and phones home to the next
Jupyter's hub, which re-adopts it (same id, connected again); the hub stops cleanly on SIGTERM
and on SIGINT; a second Jupyter on the same data directory does not start a second hub."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from .helpers_jupyter import JUPYTER, start_jupyter


def _agent_pid(home: Path, server_id: str) -> int:
    with sqlite3.connect(home / "servers.sqlite3") as con:
        (job,) = con.execute("SELECT job FROM servers WHERE id = ?", (server_id,)).fetchone()
    pid: int = json.loads(job)["options"]["pid"]
    return pid


@pytest.mark.slow
def test_a_jupyter_restart_readopts_a_server_that_phones_home(tmp_path: Path) -> None:
    pytest.importorskip("vtk")
    home = tmp_path / "home"
    runtime = home / "run" / "hub.json"
    with start_jupyter(tmp_path, home=home, stop_servers=False) as first:
        info = first.ok("POST", "servers", {"kind": "builtin", "launcher": "local"})
        sid = info["id"]
        assert first.wait_state(sid, {"connected"})["state"] == "connected"
        assert first.stop(signal.SIGTERM) == 0
    assert not runtime.exists()  # the hub stopped with Jupyter and said so
    pid = _agent_pid(home, sid)
    os.kill(pid, 0)  # the agent outlived Jupyter

    with start_jupyter(tmp_path, home=home) as second:
        assert json.loads(runtime.read_text())["pid"] == second.process.pid
        again = second.wait_state(sid, {"connected"})
        assert again["state"] == "connected" and again["local"], again
        assert _agent_pid(home, sid) == pid  # the same agent, not a relaunch

        # Another Jupyter on the same data directory runs, but runs no second hub.
        with start_jupyter(tmp_path, home=home) as third:
            refused = third.api("GET", "hub")
            assert refused.status == 503, refused.body
            assert "already runs" in refused.json()["error"]
        assert second.ok("GET", "hub")["pid"] == second.process.pid

        assert second.ok("DELETE", f"servers/{sid}?grace=5")["state"] == "stopped"
        # Without a terminal, SIGINT stops Jupyter as SIGTERM does, hub included.
        assert second.stop(signal.SIGINT) == 0
    assert not runtime.exists()


def test_jupyter_server_stop_stops_the_hub(tmp_path: Path) -> None:
    with start_jupyter(tmp_path) as server:
        server.ok("POST", "sessions", {"name": "lab"})
        server.ok("POST", "sessions/lab/open")
        runtime = server.home / "run" / "hub.json"
        assert runtime.exists()
        port = server.base_url.rstrip("/").rsplit(":", 1)[1]
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(server.dirs["runtime"])}
        subprocess.run(
            [JUPYTER, "server", "stop", port], env=env, capture_output=True, timeout=60, check=True
        )
        assert server.process.wait(60) == 0
        assert not runtime.exists()
        assert not (server.home / "run" / "hub.sock").exists()
