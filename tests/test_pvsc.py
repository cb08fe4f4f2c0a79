"""``paraconnect pvsc``: a ParaView server configuration whose entries go through paraconnect,
used by Debian's ParaView GUI under Xvfb: "new pvserver" starts one through the hub and the GUI
connects to it (the hub counts its stream), renders, and the server stops when the GUI leaves;
a running pvserver is listed at its local endpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from paraconnect.pki import Session

from .conftest import PARACONNECT
from .helpers_peers import require_programs
from .test_tunnel_pvserver import _check_sphere, _xvfb

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
]
require_programs("pvserver", "paraview", "Xvfb")
SHOT = str(Path(__file__).with_name("paraview") / "gui_shot.py")


@pytest.fixture
def hub_proc(home: Path, session: Session) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PARACONNECT_HOME": str(home)}
    proc = subprocess.Popen(
        [PARACONNECT, "hub", "--json", "--session", "lab"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert '"event": "ready"' in line, line
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def _servers(cli: object) -> list[dict[str, object]]:
    r = cli("servers", "list", "--json")  # type: ignore[operator]
    assert r.returncode == 0, r
    return list(json.loads(r.stdout))


def _entries(path: Path) -> dict[str, ET.Element]:
    return {e.attrib["name"]: e for e in ET.parse(path).getroot().iter("Server")}  # noqa: S314


def _gui_home(tmp: Path) -> Path:
    """ParaView's settings with its modal welcome dialog off: it would hold the command-line
    connection until someone closed it."""
    home = tmp / "gui-home"
    (home / ".config" / "ParaView").mkdir(parents=True)
    ini = home / ".config" / "ParaView" / "ParaView5.11.0.ini"
    ini.write_text("[General]\nGeneralSettings.ShowWelcomeDialog=0\n")
    return home


def test_a_running_pvserver_is_listed_at_its_local_endpoint(
    hub_proc: subprocess.Popen[str], cli: object, tmp_path: Path
) -> None:
    r = cli("launch", "pvserver", "--session", "lab", "--xvfb", "always", "--wait", "--json")  # type: ignore[operator]
    info = json.loads(r.stdout)
    try:
        assert info["state"] == "connected", r
        out = tmp_path / "lab.pvsc"
        r = cli("pvsc", "--session", "lab", "-o", str(out), "--", "--xvfb", "always")  # type: ignore[operator]
        assert r.returncode == 0 and "--servers-file" in r.stdout, r
        entries = _entries(out)
        running = entries[f"paraconnect lab: {info['id']} (running)"]
        assert running.attrib["resource"] == f"cs://{info['local']}"
        assert running.find("ManualStartup") is not None
        new = entries["paraconnect lab: new pvserver (local)"]
        command = new.find("CommandStartup/Command")
        assert command is not None and command.attrib["exec"] == PARACONNECT
        args = [a.attrib["value"] for a in command.iter("Argument")]
        assert args[:4] == ["launch", "pvserver", "--session", "lab"]
        assert args[-3:] == ["--wait", "--relay-port", "$PV_SERVER_PORT$"] and "--xvfb" in args
    finally:  # the hub leaves its servers running when it stops: stop this one here
        cli("servers", "stop", info["id"])  # type: ignore[operator]


def test_paraview_gui_connects_through_the_pvsc(
    hub_proc: subprocess.Popen[str], cli: object, home: Path, tmp_path: Path
) -> None:
    pvsc = tmp_path / "lab.pvsc"
    r = cli("pvsc", "--session", "lab", "-o", str(pvsc), "--", "--xvfb", "always")  # type: ignore[operator]
    assert r.returncode == 0, r
    shot = tmp_path / "gui.png"
    env = {**os.environ, "PARACONNECT_HOME": str(home), "HOME": str(_gui_home(tmp_path)),
           "PARACONNECT_SHOT": str(shot)}  # fmt: skip
    log = tmp_path / "gui.log"
    with open(log, "w") as out:
        gui = subprocess.Popen(
            [*_xvfb(), "paraview", "--servers-file", str(pvsc),
             "--server", "paraconnect lab: new pvserver (local)", "--script", SHOT],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        streams: list[object] = []
        while not (shot.exists() and streams) and time.monotonic() < deadline:
            assert gui.poll() is None, log.read_text()[-3000:]
            streams = [s["id"] for s in _servers(cli) if s["state"] == "connected"
                       and s["kind"] == "pvserver" and s["streams"] == 1]  # fmt: skip
            time.sleep(0.2)
        # The GUI's connection is a stream through the hub, and it rendered through it.
        assert shot.exists() and len(streams) == 1, (streams, log.read_text()[-3000:])
        _check_sphere(shot)
    finally:
        gui.terminate()
        gui.wait(timeout=30)
    # The GUI left: its relay stops the server it started (and then ends itself).
    deadline = time.monotonic() + 60
    state = None
    while state != "stopped" and time.monotonic() < deadline:
        state = next(s["state"] for s in _servers(cli) if s["id"] == streams[0])
        time.sleep(0.2)
    assert state == "stopped"
