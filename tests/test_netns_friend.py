"""Phone a friend across hosts: the laptop's client leaves telling the agent in `cluster` to
phone the `friend` host's listener; the friend, holding a bundle from `paraconnect share`
imported into its own home, gets the same server, data and a frame."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fixtures_netns import Hosts, NsProc

pytest_plugins = ["tests.fixtures_netns"]
pytestmark = pytest.mark.timeout(120)

ECHO = [sys.executable, "tests/helpers_echo.py", "--port", "{port}"]
RENDERER = [sys.executable, "-m", "paraconnect.render", "--port", "{port}", "--size", "320x240"]


def listen(hosts: Hosts, host: str, *extra: str) -> tuple[NsProc, str, str]:
    proc = hosts.start(
        host, "listen", f"{hosts.addr(host)}:0", "--creds", "lab", "--local", "127.0.0.1:0",
        "--json", *extra,
    )  # fmt: skip
    event = proc.ready()
    return proc, str(event["listen"]), str(event["local"]).rsplit(":", 1)[1]


@pytest.mark.parametrize("what", ["sha256", pytest.param("frame", marks=pytest.mark.slow)])
def test_laptop_leaves_and_the_agent_phones_the_friend(hosts: Hosts, what: str) -> None:
    pki = hosts.pki()
    hosts.friend_bundle("bob")
    friend, friend_address, friend_local = listen(hosts, "friend")
    laptop, address, local = listen(
        hosts, "laptop", "--on-exit-phone-home", friend_address, "--interval", "0.2"
    )
    agent = hosts.start(
        "cluster", "serve", "--creds", str(pki.cluster_creds), "--phone-home", address,
        "--interval", "0.2", "--json", "--", *(ECHO if what == "sha256" else RENDERER),
    )  # fmt: skip
    agent.ready(timeout=60)
    assert "cluster-node" in str(laptop.wait_event("server")["peer"])
    if what == "sha256":
        pid = hosts.client("laptop", "ask", "127.0.0.1", local, "pid")["answer"]
        assert hosts.client("laptop", "sha", "127.0.0.1", local, "--size", "1000000")["ok"]
    else:
        first = hosts.client("laptop", "render", "127.0.0.1", local, str(hosts.root / "a.png"))
        assert first["ok"], first

    assert laptop.stop() == 0  # SIGTERM: tells the agent to phone the friend, then exits
    friend_ip = hosts.addr("friend").replace(".", r"\.")
    assert f"asked server 'srv' on cluster-node to phone home to {friend_address}" in laptop.text()
    server = friend.wait_event("server", timeout=30)
    assert server["server_id"] == "srv"
    assert str(server["address"]).startswith(hosts.addr("cluster") + ":")
    if what == "sha256":
        assert hosts.client("friend", "ask", "127.0.0.1", friend_local, "pid")["answer"] == pid
        result = hosts.client("friend", "sha", "127.0.0.1", friend_local, "--size", "2000000",
                              "--streams", "2")  # fmt: skip
        assert result["ok"], result
    else:
        out = hosts.root / "friend.png"
        result = hosts.client("friend", "render", "127.0.0.1", friend_local, str(out))
        assert result["ok"] and result["width"] == 320, result
        assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert agent.popen.poll() is None  # the same agent throughout
    # The agent proved the friend's own identity (its bundle, bound to the friend's node).
    agent.wait_log(rf"phoned home to {friend_ip}:\d+: taken by client 'bob' on friend-node")
