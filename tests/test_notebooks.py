"""The lesson notebooks of notebooks/, run headless as a user would run them (nbclient, a real
kernel); any failing cell fails the test, and what each run shows must be what the notebook is
committed with (``same_outputs``: volatile parts masked).  Each kernel embeds its own hub on the
test's data directory.  After changing a notebook, write its outputs again with
``python -m tests.helpers_notebooks NAME``."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from paraconnect import lessons
from paraconnect.hub import HubClient

from .helpers_hubproc import start_hub, stop_hub
from .helpers_notebooks import NOTEBOOKS, outputs, run_notebook, same_outputs

if TYPE_CHECKING:
    from tests.fixtures_slurm import SlurmCluster

pytest.importorskip("vtk")
pytest.importorskip("nbclient")
pytest_plugins = ["tests.fixtures_slurm"]


def _sources(name: str) -> str:
    import nbformat

    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    return "\n".join(c.source for c in book.cells if c.cell_type == "code")


@pytest.mark.timeout(240)
def test_01_quickstart(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "picture.png"
    book = run_notebook(
        "01-quickstart.ipynb", tmp_path, monkeypatch, PARACONNECT_NOTEBOOK_OUT=str(out)
    )
    text = outputs(book)
    assert "started one inside this process" in text  # no hub ran: the kernel embeds one
    assert ": connected (phoned home from 127.0.0.1:" in text
    assert "coloured by RTData with plasma" in text  # the lesson ends on a live, coloured view
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (640, 480)
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
    same_outputs("01-quickstart.ipynb", book)


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
        # The lesson leaves its server running (it ends on a live view); this hub's servers
        # outlive the hub, so the test stops them.
        with HubClient(home, timeout=30) as client:
            for info in client.request("servers"):
                if info["state"] not in ("stopped", "failed"):
                    client.request("stop", id=info["id"], grace=5)
        stop_hub(hub)
    text = outputs(book)
    assert "started one inside this process" not in text and "coloured by RTData" in text
    assert out.is_file()


@pytest.mark.timeout(240)
def test_02_share_with_a_friend(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = run_notebook("02-share-with-a-friend.ipynb", tmp_path, monkeypatch)
    text = outputs(book)
    assert "alice rendered 640x480 through her own tunnel" in text
    assert "alice is refused" in text and "['revoked']" in text
    # The passphrase is made in the kernel and told to alice there: never a literal in the
    # notebook, never a file beside the bundle (her folder held the bundle alone).
    assert not re.search(r"passphrase\s*=\s*[\"']", _sources("02-share-with-a-friend.ipynb"))
    assert not list(tmp_path.rglob("*passphrase*"))
    same_outputs("02-share-with-a-friend.ipynb", book)


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.skipif(
    not (shutil.which("pvserver") and shutil.which("pvpython") and shutil.which("Xvfb")),
    reason="needs Debian's paraview and xvfb",
)
def test_03_paraview_pvserver(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    book = run_notebook("03-paraview-pvserver.ipynb", tmp_path, monkeypatch, timeout=300)
    text = outputs(book)
    assert "not kept between clients" in text.lower() and "pvpython, then simple.Connect(" in text
    assert "between clients.\nConnect ParaView: pvpython" in text  # one sentence a line
    assert text.count("'stopped'") == 2
    # The pipeline built through srv.paraview(), and the client's error as a Python exception.
    assert "points on the server: 2210" in text
    assert "ParaView said: AttributeError" in text and "line 1: simple.Sphere(" in text
    # The picture the view saved: a coloured sphere on the server, not a blank frame.
    with Image.open(tmp_path / "reverse.png") as img:
        assert img.size == (480, 360)
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
    same_outputs("03-paraview-pvserver.ipynb", book)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_04_slurm(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slurm_cluster: SlurmCluster
) -> None:
    book = run_notebook(
        "04-slurm.ipynb",
        tmp_path,
        monkeypatch,
        PARACONNECT_SLURM_CONF=str(slurm_cluster.conf),
        PARACONNECT_SLURM_PARTITION=slurm_cluster.partition,
        PARACONNECT_SLURM_JOB_ROOT=str(tmp_path / "jobs"),
    )
    text = outputs(book)
    assert "Slurm job " in text and "'stopped'" in text
    assert f"runs on the compute node {slurm_cluster.node_name}\n" in text
    with Image.open(tmp_path / "slurm.png") as img:
        assert img.size == (480, 360)
    same_outputs("04-slurm.ipynb", book)


def test_the_lessons_say_the_line_that_fixes_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(lessons.Missing, match=r"sudo apt-get install paraview$"):
        lessons.check_paraview()
    with pytest.raises(lessons.Missing, match=r"sudo apt-get install slurm-client$"):
        lessons.check_slurm()
    # pvserver and pvpython, but no display and no Xvfb to make one.
    for tool in ("pvserver", "pvpython"):
        (empty / tool).symlink_to(shutil.which(tool, path="/usr/bin") or "/bin/true")
    with pytest.raises(lessons.Missing, match=r"sudo apt-get install xvfb$"):
        lessons.check_paraview()
    # sbatch here, but no cluster answers with this slurm.conf.
    (empty / "sbatch").symlink_to("/bin/true")
    (empty / "sinfo").symlink_to(shutil.which("sinfo", path="/usr/bin") or "/bin/false")
    (tmp_path / "slurm.conf").write_text("")  # sinfo refuses it at once
    monkeypatch.setenv("PARACONNECT_SLURM_CONF", str(tmp_path / "slurm.conf"))
    with pytest.raises(lessons.Missing, match=r"export PARACONNECT_SLURM_CONF=\S+$"):
        lessons.check_slurm()


def test_the_comparison_notices_a_changed_output() -> None:
    import nbformat

    name = "01-quickstart.ipynb"
    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    same_outputs(name, committed)
    cells = [c for c in committed.cells if c.cell_type == "code"]
    ready = cells[0].outputs[0]
    assert ready["text"].startswith("ready:")
    worded = copy.deepcopy(committed)
    next(c for c in worded.cells if c.cell_type == "code").outputs[0]["text"] = "ready: no\n"
    with pytest.raises(AssertionError, match="stream:stdout differs"):
        same_outputs(name, worded)
    pictureless = copy.deepcopy(committed)
    for cell in pictureless.cells:
        for out in cell.get("outputs", []):
            out.get("data", {}).pop("image/png", None)
    with pytest.raises(AssertionError):
        same_outputs(name, pictureless)
    # What changes from run to run does not count: ports, ids, fingerprints.
    moved = copy.deepcopy(committed)
    for cell in moved.cells:
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                out["text"] = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:1", out["text"])
    same_outputs(name, moved)
