"""ParaView's own pvserver behind the agent and pvpython in front of the client, forward and
reverse, each rendering a sphere saved as a PNG that is checked here.

pvserver exits when its client leaves (FACTS.md), so the agent runs it with --restart always:
the next client gets a fresh pvserver (ParaView state is not kept across clients).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from .helpers_cli import Proc, procs_fixture  # noqa: F401 - the fixture `procs`
from .helpers_tunnel import Pki

PV_CLIENT = str(Path(__file__).with_name("paraview") / "pv_client.py")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not (shutil.which("pvserver") and shutil.which("pvpython") and shutil.which("Xvfb")),
        reason="needs Debian's paraview and xvfb",
    ),
]


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


def _pvpython(port: int, out: Path, connect_id: int, *logs: Proc) -> None:
    proc = subprocess.run(
        [*_xvfb(), "pvpython", f"--connect-id={connect_id}", PV_CLIENT, "connect",
         str(port), str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    tails = "".join(f"\n--- {p.log.name}:\n" + p.log.read_text()[-3000:] for p in logs)
    assert f"rendered {out}" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:] + tails


# The agent picks the connect id ({connect_id}) and tells it to its clients.
PVSERVER = [*_xvfb(), "pvserver", "--sp={port}", "--connect-id={connect_id}"]


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
    port, cid = int(str(event["local"]).rsplit(":", 1)[1]), int(event["connect_id"])  # type: ignore[call-overload]
    for i in range(2):  # the second client meets a fresh pvserver
        out = tmp_path / f"forward{i}.png"
        _pvpython(port, out, cid, agent, client)
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
    cid = int(server["connect_id"])  # type: ignore[call-overload]
    out = tmp_path / "reverse.png"
    _pvpython(port, out, cid, agent, listener)
    _check_sphere(out)
