"""The notebooks of notebooks/, run headless as a user would run them (nbclient, a real kernel);
any failing cell fails the test.  Each kernel embeds its own hub on the test's data directory."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from .helpers_hubproc import start_hub, stop_hub
from .helpers_notebooks import outputs, run_notebook

if TYPE_CHECKING:
    from tests.fixtures_slurm import SlurmCluster

pytest.importorskip("vtk")
pytest.importorskip("nbclient")
pytest_plugins = ["tests.fixtures_slurm"]


@pytest.mark.timeout(240)
def test_01_quickstart(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "picture.png"
    book = run_notebook(
        "01-quickstart.ipynb", tmp_path, monkeypatch, PARACONNECT_NOTEBOOK_OUT=str(out)
    )
    text = outputs(book)
    assert "started one inside this process" in text  # no hub ran: the kernel embeds one
    assert ": connected (phoned home from 127.0.0.1:" in text
    assert "'stopped'" in text
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (640, 480)
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


@pytest.mark.timeout(240)
def test_01_quickstart_finds_the_running_hub(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = start_hub(home)  # as the Jupyter extension runs one and exports PARACONNECT_HOME
    try:
        out = tmp_path / "picture.png"
        book = run_notebook(
            "01-quickstart.ipynb", tmp_path, monkeypatch, PARACONNECT_NOTEBOOK_OUT=str(out)
        )
    finally:
        stop_hub(hub)
    text = outputs(book)
    assert "started one inside this process" not in text and "'stopped'" in text
    assert out.is_file()


@pytest.mark.timeout(240)
def test_02_share_with_a_friend(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = outputs(run_notebook("02-share-with-a-friend.ipynb", tmp_path, monkeypatch))
    assert "alice rendered 640x480 through her own tunnel" in text
    assert "alice is refused" in text and "['revoked']" in text


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.skipif(
    not (shutil.which("pvserver") and shutil.which("pvpython") and shutil.which("Xvfb")),
    reason="needs Debian's paraview and xvfb",
)
def test_03_paraview_pvserver(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    text = outputs(run_notebook("03-paraview-pvserver.ipynb", tmp_path, monkeypatch, timeout=300))
    assert "not kept between clients" in text.lower() and "pvpython, then simple.Connect(" in text
    assert text.count("'stopped'") == 2
    # The pipeline built through srv.paraview(), and the client's error as a Python exception.
    assert "points on the server: 2210" in text
    assert "ParaView said: AttributeError" in text and "line 1: simple.Sphere(" in text


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_04_slurm(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slurm_cluster: SlurmCluster
) -> None:
    out = tmp_path / "slurm.png"
    text = outputs(
        run_notebook(
            "04-slurm.ipynb",
            tmp_path,
            monkeypatch,
            PARACONNECT_SLURM_CONF=str(slurm_cluster.conf),
            PARACONNECT_SLURM_PARTITION=slurm_cluster.partition,
            PARACONNECT_SLURM_JOB_ROOT=str(tmp_path / "jobs"),
            PARACONNECT_NOTEBOOK_OUT=str(out),
        )
    )
    assert "Slurm job " in text and "'stopped'" in text
    with Image.open(out) as img:
        assert img.size == (480, 360)
