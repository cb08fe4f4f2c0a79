"""`paraconnect debug client` where the network itself is the problem, and against ParaView's
own pvserver: each inside a network namespace created here (only its loopback exists), with
nftables playing the firewall.  Nothing leaves the machine."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers_tunnel import make_pki

PARACONNECT = str(Path(sys.executable).with_name("paraconnect"))
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"),
        reason="needs root, iproute2 and nftables to make a network namespace",
    ),
]

RULES = """
table inet pcdebug {
    chain input {
        type filter hook input priority 0; policy accept;
        tcp dport 7001 drop
        tcp dport 7002 reject with tcp reset
        tcp dport 7003 reject with icmpx type host-unreachable
    }
}
"""


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"pcdebug-{os.getpid()}-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    # `ip netns exec` mounts /etc/netns/NAME/hosts over /etc/hosts: a name with two addresses.
    etc = Path("/etc/netns") / name
    had_parent = etc.parent.exists()
    try:
        etc.mkdir(parents=True)
        (etc / "hosts").write_text("127.0.0.1 localhost\n127.0.0.1 dual\n::1 dual\n")
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(
            ["ip", "netns", "exec", name, "nft", "-f", "-"], input=RULES, text=True, check=True
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
        shutil.rmtree(etc, ignore_errors=True)
        if not had_parent:
            with contextlib.suppress(OSError):
                etc.parent.rmdir()


def _debug(netns: str, home: Path, address: str, *more: str) -> tuple[int, dict[str, object]]:
    proc = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            PARACONNECT,
            "debug",
            "client",
            address,
            "--creds",
            "lab",
            "--json",
            *more,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PARACONNECT_HOME": str(home)},
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, dict(json.loads(proc.stdout))


def _step(report: dict[str, object], name: str) -> dict[str, object]:
    steps = report["steps"]
    assert isinstance(steps, list)
    found = [s for s in steps if s["step"] == name]
    assert found, [s["step"] for s in steps]
    return dict(found[0])


def test_firewall_that_drops_is_a_timeout(netns: str, home: Path) -> None:
    make_pki(home)
    rc, report = _debug(netns, home, "127.0.0.1:7001", "--timeout", "1")
    assert rc == 1
    tcp = _step(report, "tcp")
    assert tcp["status"] == "FAIL" and tcp["details"]["kind"] == "timeout"  # type: ignore[index]
    assert "timed out" in str(tcp["reason"]) and "firewall that drops" in str(tcp["reason"])
    assert "open the port in the firewall" in str(tcp["fix"])


def test_firewall_that_rejects_is_refused(netns: str, home: Path) -> None:
    make_pki(home)
    rc, report = _debug(netns, home, "127.0.0.1:7002")
    tcp = _step(report, "tcp")
    assert rc == 1 and tcp["details"]["kind"] == "refused"  # type: ignore[index]
    assert "or a firewall rejects with a reset" in str(tcp["reason"])


def test_every_address_of_a_name_is_tried_and_named(netns: str, home: Path) -> None:
    make_pki(home)
    rc, report = _debug(netns, home, "dual:7002")
    resolved = _step(report, "resolve")
    assert "dual resolves to" in str(resolved["reason"])
    assert {a["address"] for a in resolved["details"]["addresses"]} == {"127.0.0.1", "::1"}  # type: ignore[index]
    assert "loopback IPv4" in str(resolved["reason"]) and "loopback IPv6" in str(resolved["reason"])
    tcp = _step(report, "tcp")
    assert rc == 1 and "the other addresses failed too" in str(tcp["reason"])


def test_host_unreachable_and_no_route(netns: str, home: Path) -> None:
    make_pki(home)
    rc, report = _debug(netns, home, "127.0.0.1:7003")
    tcp = _step(report, "tcp")
    assert rc == 1 and tcp["details"]["kind"] == "unreachable"  # type: ignore[index]
    assert "host unreachable" in str(tcp["reason"])
    # Only loopback exists in the namespace: any other address has no route.
    rc, report = _debug(netns, home, "10.254.0.1:7000", "--timeout", "1")
    tcp = _step(report, "tcp")
    assert rc == 1 and tcp["details"]["kind"] == "unreachable"  # type: ignore[index]
    assert "network unreachable" in str(tcp["reason"]) and "no route" in str(tcp["reason"])
    assert "private address" in str(_step(report, "address")["reason"])


@pytest.mark.skipif(not shutil.which("pvserver"), reason="needs Debian's paraview")
def test_real_pvserver_is_named(netns: str, home: Path, tmp_path: Path) -> None:
    make_pki(home)
    log = tmp_path / "pvserver.log"
    # pvserver binds 0.0.0.0 (it has no bind option): inside the namespace that is loopback.
    with open(log, "w") as out:
        pv = subprocess.Popen(
            ["ip", "netns", "exec", netns, "pvserver", "--sp=7100", "--no-mpi"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(600):
            if "Accepting connection" in log.read_text() or pv.poll() is not None:
                break
            time.sleep(0.05)
        assert "Accepting connection" in log.read_text(), log.read_text()
        rc, report = _debug(netns, home, "127.0.0.1:7100")
    finally:
        pv.terminate()
        pv.wait(20)
    answer = _step(report, "answer")
    assert rc == 1 and answer["status"] == "FAIL"
    assert "ParaView server (pvserver)" in str(answer["reason"])
    assert answer["details"]["kind"] == "paraview"  # type: ignore[index]
    assert "paraconnect serve" in str(answer["fix"])


def test_a_name_that_does_not_resolve(netns: str, home: Path) -> None:
    make_pki(home)
    # Inside the namespace no DNS server is reachable: the lookup fails at once, locally.
    rc, report = _debug(netns, home, "no-such-agent.invalid:7000")
    resolved = _step(report, "resolve")
    assert rc == 1 and resolved["status"] == "FAIL"
    assert "does not resolve" in str(resolved["reason"]) and "DNS" in str(resolved["fix"])
