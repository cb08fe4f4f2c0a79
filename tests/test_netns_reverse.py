"""Across a real firewall: an agent in `cluster` (inbound connections refused) phones home to
`paraconnect listen` on `laptop`, and data and a rendered frame come through; connecting
forward to the cluster fails, and says why."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fixtures_netns import Hosts, NsProc, Pki

pytest_plugins = ["tests.fixtures_netns"]
pytestmark = pytest.mark.timeout(120)

ECHO = [sys.executable, "tests/helpers_echo.py", "--port", "{port}"]
RENDERER = [sys.executable, "-m", "paraconnect.render", "--port", "{port}", "--size", "320x240"]


def _listen(hosts: Hosts, host: str = "laptop", *extra: str) -> tuple[NsProc, str, int]:
    """`paraconnect listen` on `host`: the process, its TLS address, its local port."""
    proc = hosts.start(
        host, "listen", f"{hosts.addr(host)}:0", "--creds", "lab", "--local", "127.0.0.1:0",
        "--json", *extra,
    )  # fmt: skip
    event = proc.ready()
    return proc, str(event["listen"]), int(str(event["local"]).rsplit(":", 1)[1])


def _serve(
    hosts: Hosts, pki: Pki, mode: str, where: str, program: list[str]
) -> tuple[NsProc, dict[str, object]]:
    agent = hosts.start(
        "cluster", "serve", "--creds", str(pki.cluster_creds), mode, where,
        "--interval", "0.2", "--json", "--", *program,
    )  # fmt: skip
    return agent, agent.ready(timeout=60)


def test_reverse_through_the_firewall_carries_data(hosts: Hosts) -> None:
    pki = hosts.pki()
    listen, address, local = _listen(hosts)
    agent, _ = _serve(hosts, pki, "--phone-home", address, ECHO)
    server = listen.wait_event("server")
    assert server["server_id"] == "srv"
    assert "cluster-node" in str(server["peer"])
    assert str(server["address"]).startswith(hosts.addr("cluster") + ":")
    result = hosts.client("laptop", "sha", "127.0.0.1", str(local), "--size", "3000000",
                          "--streams", "4")  # fmt: skip
    assert result["ok"], result
    assert agent.popen.poll() is None


@pytest.mark.slow
def test_reverse_through_the_firewall_renders_a_frame(hosts: Hosts) -> None:
    pki = hosts.pki()
    listen, address, local = _listen(hosts)
    _serve(hosts, pki, "--phone-home", address, RENDERER)
    listen.wait_event("server")
    out = hosts.root / "frame.png"
    result = hosts.client("laptop", "render", "127.0.0.1", str(local), str(out))
    assert result["ok"] and (result["width"], result["height"]) == (320, 240), result
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def _port_of(event: dict[str, object]) -> str:
    """The port of a `serve --listen` ready event's one address."""
    listen = event["listen"]
    assert isinstance(listen, list) and len(listen) == 1, event
    return str(listen[0]).rsplit(":", 1)[1]


PROBE = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5).close()"


def forward_attempt(hosts: Hosts, firewall: str) -> subprocess.CompletedProcess[str]:
    """An agent listening on every address of the cluster (reachable from inside it: the
    firewall, not a missing listener, is what stops the laptop), then `connect` from the
    laptop."""
    pki = hosts.pki()
    hosts.net.firewall(firewall)
    _agent, event = _serve(hosts, pki, "--listen", "0.0.0.0:0", ECHO)
    port = _port_of(event)
    inside = hosts.run("cluster", [sys.executable, "-c", PROBE, hosts.addr("cluster"), port])
    assert inside.returncode == 0, inside.stderr
    return hosts.cli(
        "laptop", "connect", f"{hosts.addr('cluster')}:{port}", "--creds", "lab",
        "--local", "127.0.0.1:0", "--json",
    )  # fmt: skip


def test_forward_to_the_cluster_is_rejected(hosts: Hosts) -> None:
    attempt = forward_attempt(hosts, "reject")
    assert attempt.returncode == 1, attempt
    assert not attempt.stdout.strip()  # never ready: nothing listens locally
    assert f"cannot connect to {hosts.addr('cluster')}:" in attempt.stderr


def test_forward_rejection_says_refused(hosts: Hosts) -> None:
    attempt = forward_attempt(hosts, "reject")
    assert "refused" in attempt.stderr.lower() or "reset" in attempt.stderr.lower(), attempt


@pytest.mark.slow
def test_forward_to_a_dropping_firewall_times_out(hosts: Hosts) -> None:
    attempt = forward_attempt(hosts, "drop")
    assert attempt.returncode == 1, attempt
    assert "timed out" in attempt.stderr, attempt.stderr


@pytest.mark.parametrize(
    ("firewall", "says"),
    [
        ("reject", r"FAIL\s+tcp\s+connection refused by .*firewall rejects with a reset"),
        ("drop", r"FAIL\s+tcp\s+connecting to .* timed out: .*firewall that drops packets"),
        (None, r"PASS\s+tcp"),
    ],
    ids=["reject", "drop", "open"],
)
def test_debug_client_diagnoses_the_firewall(hosts: Hosts, firewall: str | None, says: str) -> None:
    pki = hosts.pki()
    hosts.net.firewall(firewall)
    _agent, event = _serve(hosts, pki, "--listen", "0.0.0.0:0", ECHO)
    port = _port_of(event)
    out = hosts.cli("laptop", "debug", "client", f"{hosts.addr('cluster')}:{port}",
                    "--creds", "lab", "--timeout", "2")  # fmt: skip
    assert re.search(says, out.stdout), out.stdout + out.stderr
    if firewall is None:
        assert out.returncode == 0, out.stdout
    else:
        assert out.returncode == 1
        assert re.search(r"SKIP\s+answer\s+not reached", out.stdout)
