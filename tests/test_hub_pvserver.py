"""ParaView's pvserver launched by the hub (local launcher, phoning home), and pvpython
rendering through the hub's local endpoint with the connect id the hub learnt from the agent."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from paraconnect.pki import Session

from .helpers_hub import running_hub
from .helpers_peers import require_programs
from .helpers_tunnel import free_port
from .test_tunnel_pvserver import PV_CLIENT, _check_sphere, _xvfb

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
]
require_programs("pvserver", "pvpython", "Xvfb")


def pvpython_render(port: int, out: Path) -> str:
    proc = subprocess.run(
        [*_xvfb(), "pvpython", PV_CLIENT, "connect", str(port), str(out)],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    return proc.stdout + proc.stderr


def test_pvserver_through_the_hub(home: Path, session: Session, tmp_path: Path) -> None:
    with running_hub(home) as (hub, _events):
        info = hub.call(hub.launch, "pvserver", "local", "lab", "reverse", {"xvfb": "always"})
        assert "NOT kept between clients" in info.note
        info = hub.call(hub.wait, info.id, "connected", 90.0)
        # In its own network namespace pvserver needs no --connect-id (public in ps).
        assert info.state == "connected" and info.connect_id is None, info
        out = tmp_path / "pv.png"
        output = pvpython_render(info.local_port, out)
        assert f"rendered {out}" in output, output[-3000:] + hub.call(hub.logs, info.id)
        _check_sphere(out)
        logs = hub.call(hub.logs, info.id, 400)
        assert "ParaView state is not kept between clients" in logs
        assert hub.call(hub.stop, info.id, 5.0).state == "stopped"


def _listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    inodes.add(fields[9])
    return inodes


def _pvserver_listeners() -> tuple[int, int]:
    """(pvserver --rc processes found, TCP sockets they listen on)."""
    found = listening = 0
    inodes = _listening_inodes()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not argv or not argv[0].endswith(b"pvserver") or b"--rc" not in argv:
                continue
            found += 1
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    listening += 1
        except OSError:
            continue
    return found, listening


def test_pvserver_pv_reverse_listens_nowhere(home: Path, session: Session, tmp_path: Path) -> None:
    opts = {"pv_reverse": True, "xvfb": "always"}
    with running_hub(home) as (hub, _events):
        info = hub.call(hub.launch, "pvserver", "local", "lab", "reverse", opts)
        assert "ReverseConnect" in info.note
        info = hub.call(hub.wait, info.id, "connected", 90.0)
        assert info.state == "connected" and info.connect_id is None, info
        port = free_port()
        out = tmp_path / "pv-reverse.png"
        client = subprocess.Popen(
            [*_xvfb(), "pvpython", PV_CLIENT, "accept", str(port), str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            hub.call(hub.dial_client, info.id, port)
            seen = (0, 0)
            while client.poll() is None and seen[0] == 0:
                seen = _pvserver_listeners()
                time.sleep(0.05)
            output, _ = client.communicate(timeout=120)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        assert f"rendered {out}" in output, output[-3000:] + hub.call(hub.logs, info.id, 300)
        _check_sphere(out)
        assert seen[0] >= 1 and seen[1] == 0, seen  # pvserver ran, listening on nothing
        assert "pvserver dialled in" in hub.call(hub.logs, info.id, 300)
