"""A herd: 100 agents in `cluster` phone home to one `paraconnect listen` on `laptop` at the
same moment; all are taken, the listener stays usable, and after the listener restarts every
agent phones again (interval with jitter) and is taken again."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fixtures_netns import Hosts, NsProc

pytest_plugins = ["tests.fixtures_netns"]
pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]

AGENTS = 100
PROCESSES = 4  # agents run 25 to a process (the library's Agent objects in one event loop)


def _servers(listen: NsProc, count: int) -> set[str]:
    """Server events until `count` distinct agents phoned home (bounded by the event timeout)."""
    seen: set[str] = set()
    while len(seen) < count:
        event = listen.wait_event("server", timeout=60)
        seen.add(str(event["server_id"]))
    return seen


def test_a_hundred_agents_phone_home_at_once(hosts: Hosts) -> None:
    pki = hosts.pki()
    echo = hosts.spawn("cluster", [sys.executable, "tests/helpers_echo.py", "--port", "7000"])
    listen = hosts.start(
        "laptop", "listen", f"{hosts.addr('laptop')}:0", "--creds", "lab",
        "--local", "127.0.0.1:0", "--json", "-q",
    )  # fmt: skip
    ready = listen.ready()
    address, local = str(ready["listen"]), str(ready["local"]).rsplit(":", 1)[1]
    per = AGENTS // PROCESSES
    herd = []
    for i in range(PROCESSES):
        herd.append(hosts.client_proc(
            "cluster", "agents", "--creds", str(pki.cluster_creds), "--home", address,
            "--target", "127.0.0.1:7000", "--count", str(per), "--first", str(i * per),
            "--interval", "0.5",
        ))  # fmt: skip
    for proc in herd:
        assert proc.event(timeout=60)["event"] == "ready"
    assert _servers(listen, AGENTS) == {f"agent-{i}" for i in range(AGENTS)}
    assert hosts.client("laptop", "sha", "127.0.0.1", local, "--size", "200000")["ok"]
    assert echo.popen.poll() is None

    # The listener goes away and comes back on the same address: the herd phones again.
    assert listen.stop() == 0
    again = hosts.start(
        "laptop", "listen", address, "--creds", "lab", "--local", "127.0.0.1:0", "--json", "-q"
    )
    local = str(again.ready()["local"]).rsplit(":", 1)[1]
    assert _servers(again, AGENTS) == {f"agent-{i}" for i in range(AGENTS)}
    assert hosts.client("laptop", "sha", "127.0.0.1", local, "--size", "200000")["ok"]
    assert all(proc.popen.poll() is None for proc in herd)
    assert "Traceback" not in again.text()
