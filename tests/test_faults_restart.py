"""The laptop's listener killed (kill -9) while an agent in `cluster` is connected: the agent
phones home again to the restarted listener, data flows again, and the laptop's accounting
shows both control connections, the first ended as lost (its writer died).  And the agent
killed (kill -9): its program must not outlive it.

(The same with the hub and Jupyter in place of `listen` belongs to the hub's tests.)"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fixtures_netns import Hosts

pytest_plugins = ["tests.fixtures_netns"]
pytestmark = pytest.mark.timeout(90)

ECHO = [sys.executable, "tests/helpers_echo.py", "--port", "{port}"]


def test_listener_killed_the_agent_phones_again_and_accounting_says_lost(hosts: Hosts) -> None:
    pki = hosts.pki()
    listen = hosts.start(
        "laptop", "listen", f"{hosts.addr('laptop')}:0", "--creds", "lab",
        "--local", "127.0.0.1:0", "--json",
    )  # fmt: skip
    ready = listen.ready()
    address = str(ready["listen"])
    agent = hosts.start(
        "cluster", "serve", "--creds", str(pki.cluster_creds), "--phone-home", address,
        "--interval", "0.2", "--json", "--", *ECHO,
    )  # fmt: skip
    agent.ready()
    first = listen.wait_event("server")
    local = str(ready["local"]).rsplit(":", 1)[1]
    pid = hosts.client("laptop", "ask", "127.0.0.1", local, "pid")["answer"]

    listen.signal(signal.SIGKILL)
    assert listen.wait() == -signal.SIGKILL
    again = hosts.start(
        "laptop", "listen", address, "--creds", "lab", "--local", "127.0.0.1:0", "--json"
    )
    local = str(again.ready()["local"]).rsplit(":", 1)[1]
    second = again.wait_event("server")
    assert second["server_id"] == first["server_id"] == "srv"
    assert second["address"] != first["address"]  # a new connection from the same agent
    assert hosts.client("laptop", "ask", "127.0.0.1", local, "pid")["answer"] == pid
    assert hosts.client("laptop", "sha", "127.0.0.1", local, "--size", "500000")["ok"]
    agent.wait_log(r"went away; phoning again")
    assert agent.popen.poll() is None

    out = hosts.cli("laptop", "accounting", "--json")
    assert out.returncode == 0, out.stderr
    control = [r for r in json.loads(out.stdout) if r["kind"] == "control"]
    assert [(r["remote_address"], r["outcome"]) for r in control] == [
        (first["address"], "lost"),
        (second["address"], "open"),
    ], control
    assert control[0]["reason"].startswith("lost: the writing process died")
    assert {r["remote_identity"] for r in control} == {"server 'srv' on cluster-node"}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_agent_killed_takes_its_program_with_it(hosts: Hosts) -> None:
    pki = hosts.pki()
    agent = hosts.start(
        "cluster", "serve", "--creds", str(pki.cluster_creds), "--listen", "127.0.0.1:0",
        "--json", "--", *ECHO,
    )  # fmt: skip
    agent.ready()
    children = subprocess.run(
        ["pgrep", "-P", str(agent.pid)], capture_output=True, text=True, timeout=30, check=False
    ).stdout.split()
    [program] = [int(pid) for pid in children]
    try:
        agent.signal(signal.SIGKILL)
        agent.wait()
        deadline = time.monotonic() + 3  # a parent-death signal is immediate
        while _alive(program) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(program), f"the program (pid {program}) outlived its agent"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(program, signal.SIGKILL)
