"""Clock skew (faketime) on either side of a reverse connection across hosts: each refusal
says that the clocks disagree, and by how much where the side can know it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fixtures_netns import Hosts, NsProc

pytest_plugins = ["tests.fixtures_netns"]
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        not Path(LIBFAKETIME).exists(), reason="faketime (libfaketime) is not installed"
    ),
]

ECHO = [sys.executable, "tests/helpers_echo.py", "--port", "{port}"]


def _clock(offset: str | None) -> dict[str, str] | None:
    from tests.fixtures_netns import faketime

    return faketime(offset) if offset else None


def _listen(hosts: Hosts, offset: str | None = None) -> NsProc:
    return hosts.start(
        "laptop", "listen", f"{hosts.addr('laptop')}:0", "--creds", "lab",
        "--local", "127.0.0.1:0", "--json", env=_clock(offset),
    )  # fmt: skip


def _serve(hosts: Hosts, creds: str, home: str, offset: str | None = None) -> NsProc:
    return hosts.start(
        "cluster", "serve", "--creds", creds, "--phone-home", home,
        "--interval", "0.2", "--json", "--", *ECHO, env=_clock(offset),
    )  # fmt: skip


def test_agent_clock_behind(hosts: Hosts) -> None:
    pki = hosts.pki()
    listen = _listen(hosts)
    address = str(listen.ready()["listen"])
    agent = _serve(hosts, str(pki.cluster_creds), address, "-2h")
    assert agent.wait() == 1
    text = agent.text()
    assert "certificate 'srv'" in text and "is not valid until" in text, text
    assert "1h 5" in text  # how far ahead the issuer was: 2 h less the 5 min of back-dating
    assert "this clock is probably behind the issuer's" in text
    assert "time synchronisation" in text


def test_laptop_clock_behind(hosts: Hosts) -> None:
    hosts.pki()
    listen = _listen(hosts, "-3d")
    assert listen.wait() == 1
    text = listen.text()
    assert "certificate 'alice'" in text and "is not valid until" in text, text
    assert "2d 23h from now" in text and "probably behind" in text


def test_agent_clock_ahead_is_refused_by_the_laptop_naming_the_clocks(hosts: Hosts) -> None:
    """The agent's certificate was issued by a clock an hour ahead (and the agent runs on that
    clock, so its own check passes): the laptop refuses it as not valid yet and says to check
    both clocks; the agent keeps trying, told that its certificate was not acceptable."""
    hosts.pki()
    creds = hosts.home("cluster") / "creds-ahead"
    out = hosts.cli(
        "laptop", "issue", "server", "srv", "--session", "lab",
        "--unique-id", hosts.unique_id("cluster"), "--out", str(creds), env=_clock("+1h"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    listen = _listen(hosts)
    address = str(listen.ready()["listen"])
    agent = _serve(hosts, str(creds), address, "+1h")
    agent.ready()
    listen.wait_log(r"peer certificate is not valid yet \(check both clocks\)")
    agent.wait_log(r"refused this server: .*refused our certificate")
    assert agent.popen.poll() is None  # it keeps phoning (backing off) until clocks agree


def test_small_skew_within_the_back_dating_still_connects(hosts: Hosts) -> None:
    pki = hosts.pki()
    listen = _listen(hosts)
    ready = listen.ready()
    agent = _serve(hosts, str(pki.cluster_creds), str(ready["listen"]), "-3m")
    agent.ready()
    listen.wait_event("server")
    local = str(ready["local"]).rsplit(":", 1)[1]
    assert hosts.client("laptop", "sha", "127.0.0.1", local, "--size", "500000")["ok"]
