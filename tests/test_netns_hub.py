"""The hub across a real network boundary: an agent started by hand in `cluster` (behind its
firewall, from the line that `paraconnect launch --launcher manual` prints) enrols and phones
home to the hub on `laptop` (`paraconnect hub`, or a Jupyter server running the extension); the
hub is killed (kill -9) while it is connected, and the next one re-adopts the same server, with
the accounting showing both control connections, the first ended as lost."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
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
JUPYTER = str(Path(sys.executable).with_name("jupyter"))
OP = (
    "import json, sys; from paraconnect.hub import HubClient; "
    "print(json.dumps(HubClient().request(sys.argv[1], **json.loads(sys.argv[2]))))"
)


def _hub(hosts: Hosts, kind: str, listen: str) -> tuple[NsProc, str]:
    """Start the hub on `laptop`; its process and the phone-home address of session lab."""
    if kind == "hub":
        hub = hosts.start("laptop", "hub", "--listen", listen, "--session", "lab", "--json")
        return hub, str(dict(hub.ready()["phone_home"])["lab"])  # type: ignore[call-overload]
    # Jupyter with the extension, on the laptop's loopback, its own runtime and config dirs.
    base = hosts.root / f"jupyter-{len(hosts.procs)}"
    dirs = {name: base / name for name in ("root", "runtime", "config", "data", "ipython")}
    for d in dirs.values():
        d.mkdir(parents=True)
    env = {"JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
           "JUPYTER_DATA_DIR": str(dirs["data"]), "IPYTHONDIR": str(dirs["ipython"])}  # fmt: skip
    hub = hosts.spawn("laptop", [
        JUPYTER, "server", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0",
        "--IdentityProvider.token=unused-here", "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={dirs['root']}", f"--Paraconnect.listen={listen}",
        "--Paraconnect.open_sessions=lab",
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ], env=env)  # fmt: skip
    # Ready when its hub has written the runtime file (the control socket serves then).
    info_path = hosts.home("laptop") / "run" / "hub.json"
    pause = threading.Event()  # never set: a sleep bounded by the test's timeout
    while not (info_path.exists() and json.loads(info_path.read_text())["pid"] == hub.pid):
        assert hub.popen.poll() is None, hub.text()[-3000:]
        pause.wait(0.1)
    return hub, str(_op(hosts, "session_open", session="lab")["phone_home"])


def _op(hosts: Hosts, op: str, **fields: Any) -> Any:
    """An operation of the laptop's hub, through its control socket, from inside `laptop`."""
    out = hosts.run("laptop", [sys.executable, "-c", OP, op, json.dumps(fields)], timeout=90)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _wait_connected(hosts: Hosts, server_id: str) -> dict[str, Any]:
    info: dict[str, Any] = _op(hosts, "wait", id=server_id, timeout=60)
    assert info["state"] == "connected", info
    return info


@pytest.mark.parametrize("kind", ["hub", "jupyter"])
def test_hub_killed_the_manual_agent_phones_again_and_is_readopted(hosts: Hosts, kind: str) -> None:
    for host in ("laptop", "cluster"):
        hosts.home(host).mkdir(mode=0o700, parents=True, exist_ok=True)
    assert hosts.cli("laptop", "session", "create", "lab").returncode == 0
    hub, phone_home = _hub(hosts, kind, f"{hosts.addr('laptop')}:0")
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
    hub2, again = _hub(hosts, kind, f"{hosts.addr('laptop')}:0")
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
