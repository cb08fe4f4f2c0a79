"""SIGTERM to `serve` (in the cluster) or `listen` (on the laptop) while a sha256 transfer is
in flight: the open streams drain before the command exits, and the data arrives whole."""

from __future__ import annotations

import re
import signal
import sys
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fixtures_netns import Hosts, NsProc

pytest_plugins = ["tests.fixtures_netns"]
pytestmark = pytest.mark.timeout(90)

ECHO = [sys.executable, "tests/helpers_echo.py", "--port", "{port}"]


def _reacted(proc: NsProc) -> None:
    """Until the command has taken the signal in: it exited or said so (bounded)."""
    deadline = time.monotonic() + 5
    while proc.popen.poll() is None and time.monotonic() < deadline:
        if re.search(r"(?i)drain|terminat|stopping|signal", proc.text()):
            return
        time.sleep(0.05)


@pytest.mark.parametrize("who", ["serve", "listen"])
def test_sigterm_drains_open_streams(hosts: Hosts, who: str) -> None:
    pki = hosts.pki()
    listen = hosts.start(
        "laptop", "listen", f"{hosts.addr('laptop')}:0", "--creds", "lab",
        "--local", "127.0.0.1:0", "--json",
    )  # fmt: skip
    ready = listen.ready()
    agent = hosts.start(
        "cluster", "serve", "--creds", str(pki.cluster_creds), "--phone-home",
        str(ready["listen"]), "--interval", "0.2", "--json", "--", *ECHO,
    )  # fmt: skip
    agent.ready()
    listen.wait_event("server")
    local = str(ready["local"]).rsplit(":", 1)[1]
    client = hosts.client_proc("laptop", "sha", "127.0.0.1", local, "--size", "4000000",
                               "--streams", "3", "--gated")  # fmt: skip
    assert client.event()["event"] == "halfway"  # three streams open, each half sent ...
    agent.wait_log("relaying to the program", count=3)  # ... and each relayed to the program
    target = agent if who == "serve" else listen
    target.signal(signal.SIGTERM)
    _reacted(target)
    assert client.popen.stdin is not None
    client.popen.stdin.write("go\n")
    client.popen.stdin.flush()
    done = client.event(timeout=60)
    assert done["ok"], done
    assert target.wait(30) == 0
    assert "Traceback" not in target.text()
