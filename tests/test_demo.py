"""The README's demo command: the quickstart notebook run headless (what `make demo` does), the
same steps as real `paraconnect` processes (--cli), and JupyterLab opened on the notebook."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from .conftest import PARACONNECT
from .helpers_tunnel import free_port

pytest.importorskip("vtk")


def check_picture(out: Path) -> None:
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (640, 480)
        rgb = img.convert("RGB")
        corner = rgb.getpixel((2, 2))
        centre = rgb.getpixel((320, 240))
        # A rendered object in the middle on a plain background, not an empty or noisy frame.
        assert centre != corner
        assert rgb.getpixel((637, 477)) == corner
        assert len(rgb.getcolors(maxcolors=1 << 20) or []) > 50


@pytest.mark.timeout(240)
def test_headless_demo_runs_the_quickstart_notebook(home: Path, tmp_path: Path) -> None:
    pytest.importorskip("nbclient")
    out = tmp_path / "picture.png"
    env = {**os.environ, "PARACONNECT_HOME": str(home)}
    res = subprocess.run(
        # The quickstart's own dataset: the wavelet, coloured and sliced as the lesson does.
        [PARACONNECT, "demo", "--headless", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=200, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"builtin-\w+: connected \(phoned home from 127\.0\.0\.1:\d+\)", res.stdout)
    assert "done: a session, a server that phoned home, and a picture" in res.stdout
    check_picture(out)
    # The demo used a data directory of its own, removed after: the user's is untouched.
    assert not home.exists() and "kept" not in res.stdout


def test_cli_demo_delivers_a_picture_through_the_tunnel(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "picture.png"
    res = cli("demo", "--cli", "--out", str(out), "--dataset", "sphere")
    assert res.returncode == 0, res
    assert "the server phoned home: server 'render-node'" in res.stdout
    assert "done: a session, a server that phoned home, and a picture" in res.stdout
    check_picture(out)
    assert "kept" not in res.stdout


def get_when_listening(url: str) -> bytes:
    """GET `url` once the server listens: Jupyter prints its URL before it binds the port."""
    host, port = url.split("/")[2].split(":")
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with urllib.request.urlopen(url, timeout=30) as reply:  # noqa: S310 - a loopback URL
        return bytes(reply.read())


@pytest.mark.timeout(120)
def test_demo_opens_jupyterlab_on_the_quickstart(home: Path, tmp_path: Path) -> None:
    pytest.importorskip("jupyterlab")
    # A port of its own: other Jupyter servers on this machine may hold the default one.
    env = {**os.environ, "PARACONNECT_HOME": str(home), "JUPYTER_PLATFORM_DIRS": "1",
           "JUPYTER_PORT": str(free_port())}  # fmt: skip
    proc = subprocess.Popen(
        [PARACONNECT, "demo", "--no-browser", "--dir", str(tmp_path / "d")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        url, seen = None, []
        for line in proc.stdout:
            seen.append(line)
            found = re.search(r"(http://127\.0\.0\.1:\d+/lab[^\s]*token=\w+)", line)
            if found:
                url = found.group(1)
            if url and "Use Control-C to stop this server" in line:
                break
        assert url, "JupyterLab printed no URL: " + "".join(seen)
        # The notebook the demo copied is what the server serves.
        base, _, token = url.partition("?token=")
        api = base.replace("/lab", "/api/contents/01-quickstart.ipynb").split("/lab/")[0]
        assert b'"name": "01-quickstart.ipynb"' in get_when_listening(f"{api}?token={token}")
        assert (tmp_path / "d" / "01-quickstart.ipynb").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
