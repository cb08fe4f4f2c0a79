"""ParaView's own pvserver behind the agent and pvpython in front of the client, forward and
reverse, each rendering a sphere saved as a PNG that is checked here.

pvserver exits when its client leaves (FACTS.md), so the agent runs it with --restart always:
the next client gets a fresh pvserver (ParaView state is not kept across clients).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from paraconnect.servers._kinds import build_kind

from .helpers_cli import PARACONNECT, Proc, procs_fixture  # noqa: F401 - the fixture `procs`
from .helpers_leg import (
    NO_USERNS,
    host_addresses,
    host_netns,
    other_connects,
    other_connects_unix,
    other_user_fixture,  # noqa: F401 - the fixture `other_user`
    others_view_of_cmdlines,
    program_listeners,
    program_unix_listeners,
)
from .helpers_peers import require_programs
from .helpers_tunnel import Pki

PV_CLIENT = str(Path(__file__).with_name("paraview") / "pv_client.py")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
]
require_programs("pvserver", "pvpython", "Xvfb")


def _png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (what ParaView writes) into rows of pixels."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, channels, rows


def _check_sphere(path: Path) -> None:
    width, channels, rows = _png_pixels(path)
    assert (width, len(rows)) == (320, 240)

    def brightness(x: int, y: int) -> int:
        px = rows[y][x * channels : x * channels + 3]
        return sum(px)

    # A lit sphere in the middle, the same dark background in every corner.
    corners = {brightness(x, y) for x in (5, 314) for y in (5, 234)}
    assert len(corners) == 1
    assert brightness(160, 120) > corners.pop() + 150


def _xvfb() -> list[str]:
    """Each X client gets its own Xvfb, on a display Xvfb itself picks (no races): the wrapper
    the pvserver kind uses, with --always since the test machine may have a DISPLAY."""
    return [sys.executable, "-m", "paraconnect.servers._xvfb", "--always", "--"]


def _pvpython(port: int, out: Path, connect_id: int | None, *logs: Proc) -> None:
    cid = [f"--connect-id={connect_id}"] if connect_id is not None else []
    proc = subprocess.run(
        [*_xvfb(), "pvpython", *cid, PV_CLIENT, "connect", str(port), str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    tails = "".join(f"\n--- {p.log.name}:\n" + p.log.read_text()[-3000:] for p in logs)
    assert f"rendered {out}" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:] + tails


# The README's line: pvserver runs in a network namespace of its own, so no --connect-id (which
# every local user would read in ps) is needed to keep strangers out.
PVSERVER = [*_xvfb(), "pvserver", "--sp={port}", "--no-mpi"]


def test_pvserver_forward_twice(pki: Pki, procs: object, tmp_path: Path) -> None:
    agent: Proc = procs(  # type: ignore[operator]
        "serve", "--creds", "lab", "--listen", "127.0.0.1:0", "--json", "--restart", "always",
        "--ready-timeout", "60", "--", *PVSERVER,
    )  # fmt: skip
    [addr] = agent.ready(90)["listen"]  # type: ignore[misc]
    client: Proc = procs(  # type: ignore[operator]
        "connect", addr, "--creds", "lab", "--local", "127.0.0.1:0", "--json"
    )
    event = client.ready()
    port = int(str(event["local"]).rsplit(":", 1)[1])
    assert event["connect_id"] is None
    for i in range(2):  # the second client meets a fresh pvserver
        out = tmp_path / f"forward{i}.png"
        _pvpython(port, out, None, agent, client)
        _check_sphere(out)
    assert agent.popen.poll() is None


def test_pvserver_reverse(pki: Pki, procs: object, tmp_path: Path) -> None:
    listener: Proc = procs(  # type: ignore[operator]
        "listen", "127.0.0.1:0", "--creds", "lab", "--local", "127.0.0.1:0", "--json",
        "--agent-wait", "90",
    )  # fmt: skip
    event = listener.ready()
    agent: Proc = procs(  # type: ignore[operator]
        "serve", "--creds", "lab", "--phone-home", str(event["listen"]), "--interval", "0.2",
        "--json", "--restart", "always", "--ready-timeout", "60", "--", *PVSERVER,
    )  # fmt: skip
    port = int(str(event["local"]).rsplit(":", 1)[1])
    server = listener.next_event(90)
    assert server["event"] == "server" and server["server_id"] == "srv"
    assert server["connect_id"] is None
    out = tmp_path / "reverse.png"
    _pvpython(port, out, None, agent, listener)
    _check_sphere(out)


def test_another_user_cannot_reach_pvserver_nor_read_a_secret(
    pki: Pki, procs: object, tmp_path: Path, other_user: str
) -> None:
    """Debian's pvserver binds 0.0.0.0 (no bind option): with the pvserver kind's own command
    line, another local user reaches none of its ports, on loopback or the host's address, and
    reads no connect id in any command line; the session's pvpython renders through the tunnel."""
    program = build_kind("pvserver", {"xvfb": "always"}).program
    agent: Proc = procs(  # type: ignore[operator]
        "serve", "--creds", "lab", "--listen", "127.0.0.1:0", "--json", "--restart", "always",
        "--ready-timeout", "60", "--", *program,
    )  # fmt: skip
    ready = agent.ready(90)
    found = program_listeners(agent.popen.pid)
    assert any("pvserver" in Path(f"/proc/{pid}/cmdline").read_text() for pid, _p, _n in found)
    targets = [(addr, port) for _pid, port, _ns in found for addr in host_addresses()]
    seen = other_connects(other_user, targets)
    assert all(v.startswith("refused: ") for v in seen.values()), seen
    assert all(netns != host_netns() for _pid, _port, netns in found), found
    # Its X server (Xvfb, which holds the pictures) is as private: no socket path in
    # /tmp/.X11-unix, an abstract socket of the namespace only.
    xsockets = program_unix_listeners(agent.popen.pid, "Xvfb")
    assert xsockets and all(name.startswith("@") for name in xsockets), xsockets
    seen = other_connects_unix(other_user, xsockets)
    assert all(v.startswith("refused: ") for v in seen.values()), seen
    lines = others_view_of_cmdlines(other_user, agent.popen.pid)
    assert any("pvserver" in line for line in lines)  # the other user does see it run
    assert not [line for line in lines if "connect-id" in line or "connect_id" in line]
    client: Proc = procs(  # type: ignore[operator]
        "connect",
        ready["listen"][0],
        "--creds",
        "lab",
        "--local",
        "127.0.0.1:0",
        "--json",  # type: ignore[index]
    )
    port = int(str(client.ready()["local"]).rsplit(":", 1)[1])
    out = tmp_path / "private.png"
    _pvpython(port, out, None, agent, client)
    _check_sphere(out)


def test_pvserver_falls_back_to_the_reverse_bridge_without_user_namespaces(
    pki: Pki, home: Path, tmp_path: Path, procs: object
) -> None:
    """Where no user namespace can be made, the pvserver kind's line runs pvserver --rc behind
    the reverse bridge (it listens nowhere), said in one log line; a client's connection makes
    a real pvserver dial the bridge."""
    program = build_kind("pvserver", {"xvfb": "always"}).program
    log = tmp_path / "agent.log"
    with open(log, "w") as err:
        agent = subprocess.Popen(
            [*NO_USERNS, *PARACONNECT, "serve", "--creds", "lab", "--listen", "127.0.0.1:0",
             "--json", "--restart", "always", "--ready-timeout", "60", "--", *program],
            stdout=subprocess.PIPE, stderr=err, text=True,
            env={**os.environ, "PARACONNECT_HOME": str(home)},
        )  # fmt: skip
    try:
        assert agent.stdout is not None
        ready = json.loads(agent.stdout.readline() or "{}")
        assert ready.get("event") == "ready", log.read_text()
        assert ready["leg"] == (
            "unix socket in a 0700 directory; pvserver dials back over loopback to a bridge "
            "that takes this user's connection only (no network namespace here)"
        )
        text = log.read_text()
        assert text.count("pvserver falls back to the reverse bridge") == 1, text
        assert "user namespaces are not available here" in text
        client: Proc = procs(  # type: ignore[operator]
            "connect", ready["listen"][0], "--creds", "lab", "--local", "127.0.0.1:0", "--json"
        )
        local = str(client.ready()["local"])
        host, _, port = local.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=30):
            deadline = time.monotonic() + 90
            while "pvserver dialled in; relaying" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                assert agent.poll() is None, log.read_text()[-3000:]
                time.sleep(0.1)
    finally:
        agent.terminate()
        agent.communicate(timeout=30)
