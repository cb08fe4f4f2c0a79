"""A ParaView version mismatch explained before ParaView's own handshake fails: the agent
reports its pvserver's version (``pvserver --version`` at start, in its info message), and
the hub's server info, ``paraconnect connect`` and ``paraconnect debug client`` compare it with
this machine's ``pvpython --version`` and say in one line which versions and what to do.  The
other version is a wrapper script around Debian's pvserver that answers ``--version`` as 5.10."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

import paraconnect as pc
from paraconnect.errors import ConfigError
from paraconnect.pki import Session

from .helpers_cli import Proc, procs_fixture  # noqa: F401 - the fixture `procs`
from .helpers_hub import running_hub
from .helpers_peers import require_programs
from .helpers_tunnel import Pki
from .test_tunnel_pvserver import _xvfb

pytest_plugins = ["tests.helpers_api"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
]
require_programs("pvserver", "pvpython", "Xvfb")


def _local_version() -> str:
    out = subprocess.run(["pvpython", "--version"], capture_output=True, text=True, timeout=60)
    return out.stdout.split()[-1]


@pytest.fixture
def old_pvserver(tmp_path: Path) -> str:
    """pvserver that says it is 5.10.1 (or 5.9.1 should this machine's ParaView be 5.10)."""
    other = "5.9.1" if _local_version().startswith("5.10.") else "5.10.1"
    script = tmp_path / "pvserver"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "paraview version {other}"; exit 0; fi\n'
        'exec pvserver "$@"\n'
    )
    script.chmod(0o755)
    return str(script)


def test_the_hub_explains_a_mismatch(home: Path, session: Session, old_pvserver: str) -> None:
    client, other = _local_version(), _version_of(old_pvserver)
    with running_hub(home) as (hub, events):
        info = hub.call(hub.launch, "pvserver", "local", "lab", "reverse",
                        {"xvfb": "always", "pvserver": old_pvserver})  # fmt: skip
        info = hub.call(hub.wait, info.id, "connected", 90.0)
        assert info.state == "connected" and info.program_version == other, info
        deadline = time.monotonic() + 60  # the hub asks pvpython once, off its loop
        while info.version_check is None and time.monotonic() < deadline:
            time.sleep(0.1)
            info = hub.call(hub.server, info.id)
        check = info.version_check
        assert check is not None and "\n" not in check, info
        assert f"is {other}" in check and f"pvpython is {client}" in check, check
        assert "same major.minor" in check and "pvserver=PATH" in check, check
        assert info.as_dict()["version_check"] == check  # what REST and the panel get
        # Announced too, so that a panel that drew the card before the check reads it again.
        deadline = time.monotonic() + 30
        while not (said := [e for e in list(events.all) if e["event"] == "version_check"]):
            assert time.monotonic() < deadline, "no version_check event"
            time.sleep(0.1)
        assert [(e["server_id"], e["version"], e["version_check"]) for e in said] == [
            (info.id, other, check)
        ]
        assert hub.call(hub.stop, info.id, 5.0).state == "stopped"


def _version_of(pvserver: str) -> str:
    out = subprocess.run([pvserver, "--version"], capture_output=True, text=True, timeout=60)
    return out.stdout.split()[-1]


def test_connect_and_debug_explain_it_and_a_match_is_quiet(
    pki: Pki, procs: object, cli: object, old_pvserver: str
) -> None:
    other, client = _version_of(old_pvserver), _local_version()
    for pvserver, expect_mismatch in ((old_pvserver, True), ("pvserver", False)):
        agent: Proc = procs(  # type: ignore[operator]
            "serve", "--creds", "lab", "--listen", "127.0.0.1:0", "--json",
            "--restart", "always", "--ready-timeout", "60",
            "--version-command", f"{pvserver} --version",
            "--", *_xvfb(), pvserver, "--sp={port}", "--no-mpi",
        )  # fmt: skip
        [addr] = agent.ready(90)["listen"]  # type: ignore[misc]
        conn: Proc = procs(  # type: ignore[operator]
            "connect", addr, "--creds", "lab", "--local", "127.0.0.1:0", "--json"
        )
        event = conn.ready(60)
        debug = cli("debug", "client", str(addr), "--creds", "lab", "--json")  # type: ignore[operator]
        steps = {s["step"]: s for s in json.loads(debug.stdout)["steps"]}
        step = steps["paraview version"]
        if expect_mismatch:
            check = str(event["version_check"])
            assert event["version"] == other and f"pvpython is {client}" in check, event
            assert f"is {other}" in check and "same major.minor" in check, check
            assert step["status"] == "WARN" and f"is {other}" in step["reason"], step
            assert "ParaView needs the same major.minor" in step["fix"], step
            assert "ParaView version mismatch" in conn.log.read_text()
        else:
            assert event["version"] == client and event["version_check"] is None, event
            assert step["status"] == "PASS", step
        conn.stop()
        agent.stop()


def test_srv_paraview_refuses_a_mismatch_in_one_line(
    session: Session, api_hub: object, old_pvserver: str
) -> None:
    srv = pc.connect_reverse(
        kind="pvserver",
        session=session.name,
        options={"xvfb": "always", "pvserver": old_pvserver},
    )
    srv.wait_connected(timeout=90, quiet=True)
    with pytest.raises(ConfigError, match=r"ParaView version mismatch: .* same major\.minor"):
        srv.paraview()
    srv.stop(grace=5)
