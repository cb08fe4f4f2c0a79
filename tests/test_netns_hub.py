"""The hub across a real network boundary: an agent started by hand in `cluster` (behind its
firewall, from the line that `paraconnect launch --launcher manual` prints) enrols and phones
home to `paraconnect hub` on `laptop`; the hub is killed (kill -9) while it is connected, and
the next hub re-adopts the same server, with the accounting showing both control connections,
the first ended as lost."""

from __future__ import annotations

import json
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.fixtures_netns import Hosts, NsProc

pytest_plugins = ["tests.fixtures_netns"]
pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
ECHO = [sys.executable, str(REPO / "tests" / "helpers_echo.py"), "--port", "{port}"]
PATH = f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin"
WAIT = (
    "import json, sys; from paraconnect.hub import HubClient; "
    "print(json.dumps(HubClient().request('wait', id=sys.argv[1], timeout=60)))"
)


def _hub(hosts: Hosts, listen: str) -> tuple[NsProc, str]:
    hub = hosts.start("laptop", "hub", "--listen", listen, "--session", "lab", "--json")
    ready = hub.ready()
    return hub, str(dict(ready["phone_home"])["lab"])  # type: ignore[call-overload]


def _wait_connected(hosts: Hosts, server_id: str) -> dict[str, Any]:
    out = hosts.run("laptop", [sys.executable, "-c", WAIT, server_id], timeout=90)
    assert out.returncode == 0, out.stderr
    info: dict[str, Any] = json.loads(out.stdout)
    assert info["state"] == "connected", info
    return info


def test_hub_killed_the_manual_agent_phones_again_and_is_readopted(hosts: Hosts) -> None:
    for host in ("laptop", "cluster"):
        hosts.home(host).mkdir(mode=0o700, parents=True, exist_ok=True)
    assert hosts.cli("laptop", "session", "create", "lab").returncode == 0
    hub, phone_home = _hub(hosts, f"{hosts.addr('laptop')}:0")
    assert phone_home.startswith(f"{hosts.addr('laptop')}:")

    out = hosts.cli(
        "laptop", "launch", "command", "--launcher", "manual", "--session", "lab", "--json",
        "--", *ECHO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    server_id = got["server"]["id"]
    # What a user pastes on the remote host; `env -C` stands in for cd and keeps one process.
    line = shlex.split(got["command"])
    assert line[0].startswith("PARACONNECT_ENROLL_TOKEN=") and line[1] == "paraconnect"
    agent = hosts.spawn("cluster", ["env", "-C", str(hosts.home("cluster")), *line],
                        env={"PATH": PATH})  # fmt: skip

    first = _wait_connected(hosts, server_id)
    assert first["launcher"] == "manual" and first["attempts"] == 1
    assert first["where"].startswith(hosts.addr("cluster"))
    port = first["local"].rsplit(":", 1)[1]
    pid = hosts.client("laptop", "ask", "127.0.0.1", port, "pid")["answer"]
    # The key was made in `cluster` and never left it.
    assert list((hosts.home("cluster") / "creds").glob("*.key"))

    hub.signal(signal.SIGKILL)
    assert hub.wait() == -signal.SIGKILL
    hub2, again = _hub(hosts, f"{hosts.addr('laptop')}:0")
    assert again == phone_home  # the registry keeps the session's phone-home port

    second = _wait_connected(hosts, server_id)
    assert second["where"] != first["where"]  # a new connection from the same agent
    port = second["local"].rsplit(":", 1)[1]
    assert hosts.client("laptop", "ask", "127.0.0.1", port, "pid")["answer"] == pid
    assert agent.popen.poll() is None

    out = hosts.cli("laptop", "accounting", "--json")
    assert out.returncode == 0, out.stderr
    control = [
        r for r in json.loads(out.stdout) if r["kind"] == "control" and r["side"] == "client"
    ]
    assert [(r["remote_address"], r["outcome"]) for r in control] == [
        (first["where"], "lost"),
        (second["where"], "open"),
    ], control
    assert control[0]["reason"].startswith("lost: the writing process died")
    hub2.stop()
