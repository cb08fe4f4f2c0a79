"""Open what HPC codes write: real files of each format (written by VTK in the test, or by hand
where the wheel has no writer) loaded by a real render server confined to a data root, checked
by the reader it picked, the points it read and the pixels it drew.

CGNS is written by Debian's ParaView (pvpython's CGNSWriter), the wheel having no writer.
Fluent, which nothing here writes and whose sample files may not be shipped, is written by hand:
a CFF case and data pair (HDF5, with h5py) and a legacy ASCII case and data pair, the layout
each VTK reader reads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from paraconnect.errors import ConfigError
from paraconnect.render import RemoteRenderError, RenderClient

from .helpers_render import READER_OF, colours, foreground, pixels, write_in_subprocess
from .test_render_server import start_server


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_in_subprocess(folder)
    (folder / "runs").mkdir()
    (folder / "runs" / "junk.vtu").write_text('<VTKFile type="UnstructuredGrid"> garbage')
    (folder / "runs" / "broken.exo").write_bytes(b"CDF\x01" + os.urandom(200))
    outside = folder.parent / "outside.vtu"
    outside.write_bytes((folder / "grid.vtu").read_bytes())
    (folder / "escape.vtu").symlink_to(outside)
    # A collection inside the root that names a piece outside it.
    (folder / "escape.vtm").write_text(
        '<VTKFile type="vtkMultiBlockDataSet" version="1.0"><vtkMultiBlockDataSet>'
        '<DataSet index="0" file="../outside.vtu"/></vtkMultiBlockDataSet></VTKFile>'
    )
    # Fluent data files: one without its case beside it, one case whose data leads outside.
    (folder / "fluent").mkdir()
    shutil.copy(folder / "mixer.dat.h5", folder / "fluent" / "orphan.dat.h5")
    shutil.copy(folder / "mixer.cas.h5", folder / "fluent" / "leak.cas.h5")
    shutil.copy(folder / "mixer.dat.h5", folder.parent / "outside.dat.h5")
    (folder / "fluent" / "leak.dat.h5").symlink_to(folder.parent / "outside.dat.h5")
    # A legacy case that names no zones: the reader aborts its process on it.
    case = (folder / "duct.cas").read_text()
    (folder / "fluent" / "nozones.cas").write_text(re.sub(r"(?m)^\(39 .*\n", "", case))
    return folder


@pytest.fixture(scope="module")
def client(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RenderClient]:
    log = tmp_path_factory.mktemp("render") / "server.log"
    with (
        start_server(log, "--size", "240x180", "--root", str(root)) as port,
        RenderClient(port=port, timeout=60) as c,
    ):
        yield c


@pytest.mark.parametrize("name", sorted(READER_OF))
def test_each_format_is_read_and_drawn(client: RenderClient, root: Path, name: str) -> None:
    expected_points = json.loads((root / "points.json").read_text())[name]
    info = client.load(path=name)
    state = client.state()
    assert state["dataset"]["reader"] == READER_OF[name]
    assert info["points"] == expected_points, name
    # The file's fields are there to colour by (STL, PLY and OBJ meshes carry none).
    assert state["arrays"] or name.startswith("sphere"), f"{name}: no arrays read"
    img = pixels(client)
    fg = foreground(img)
    assert 0.03 < fg.mean() < 0.95, f"{name}: {fg.mean():.0%} of the picture is drawn"
    # Meshes with no arrays are one colour, shaded per facet (STL has no normals).
    assert colours(img) > (5 if name.startswith("sphere") else 20), f"{name}: one colour"


def test_multiblock_shown_whole_with_blocks_selectable(client: RenderClient) -> None:
    client.load(path="blocks.vtm")
    state = client.state()
    assert [(b["name"], b["selected"]) for b in state["blocks"]] == [
        ("ball", True),
        ("grid", True),
    ]
    whole = foreground(pixels(client)).mean()
    state = client.request("blocks", select=[0])["state"]
    assert [b["selected"] for b in state["blocks"]] == [True, False]
    assert state["dataset"]["points"] < 1331
    ball = foreground(pixels(client)).mean()
    assert ball < whole * 0.8, "hiding the larger block did not shrink the picture"
    with pytest.raises(ConfigError, match="pick blocks by index from 0 to 1"):
        client.request("blocks", select=[5])


def test_exodus_through_the_ioss_reader_by_name(client: RenderClient) -> None:
    client.load(path="grid.exo", reader="ioss")
    state = client.state()
    assert state["dataset"]["reader"] == "vtkIOSSReader"
    assert {a["name"] for a in state["arrays"]} >= {"RTData", "pressure", "velocity"}


def test_the_edge_on_volume_of_the_issue_shows_something(client: RenderClient) -> None:
    """Its automatic isosurface was a plane seen edge-on: a blank picture."""
    client.camera(reset=True)
    client.load(path="edge_on.vti")
    img = pixels(client)
    assert foreground(img).mean() > 0.2 and colours(img) > 20


def test_a_line_seen_end_on_is_turned_across(client: RenderClient) -> None:
    client.camera(reset=True)
    client.load(path="line.vtp")
    assert foreground(pixels(client)).sum() > 60, "the line is a dot"


def test_fluent_reads_its_cells_once_with_their_fields(client: RenderClient) -> None:
    """The legacy reader repeats the volume's cells in a block per face zone (the interior zone:
    all of them, with no fields): only the cell zone is shown.  CFF names its fields."""
    for path, array in [
        ("duct.cas", "PRESSURE"),
        ("duct.dat", "PRESSURE"),
        ("mixer.cas.h5", "pressure (SV_P)"),
        ("mixer.dat.h5", "pressure (SV_P)"),
    ]:
        client.load(path=path)
        state = client.state()
        assert state["dataset"]["cells"] == 64, path
        arrays = {(a["name"], a["association"]): a["range"] for a in state["arrays"]}
        assert arrays == {(array, "cell"): [-1.125, 1.125]}, path


def test_a_fluent_data_file_needs_its_case_inside_the_root(client: RenderClient) -> None:
    with pytest.raises(ConfigError, match=re.escape("its case file 'orphan.cas.h5'")) as info:
        client.load(path="fluent/orphan.dat.h5")
    assert "\n" not in str(info.value)
    leak = re.escape("'fluent/leak.cas.h5' goes with 'leak.dat.h5', which leads outside")
    with pytest.raises(ConfigError, match=leak):
        client.load(path="fluent/leak.cas.h5")


def test_a_fluent_case_that_would_abort_its_reader_is_refused(client: RenderClient) -> None:
    with pytest.raises(
        RemoteRenderError, match=re.escape("vtkFLUENTReader cannot read 'nozones.cas'")
    ):
        client.load(path="fluent/nozones.cas")
    client.load(path="duct.cas")  # the server is still up


def test_unreadable_files_get_one_line_naming_the_reader(client: RenderClient) -> None:
    for path, reader in [
        ("runs/junk.vtu", "vtkXMLUnstructuredGridReader"),
        ("runs/broken.exo", "vtkExodusIIReader"),
    ]:
        with pytest.raises(RemoteRenderError, match=f"from {path!r} by {reader}") as info:
            client.load(path=path)
        assert "\n" not in str(info.value)
    client.load("cone")  # the server is still up


def test_paths_outside_the_root_are_refused(client: RenderClient, root: Path) -> None:
    for escape in ("../outside.vtu", str(root.parent / "outside.vtu"), "escape.vtu"):
        with pytest.raises(ConfigError, match="outside the server's data root"):
            client.load(path=escape)
    refused = re.escape("'escape.vtm' names '../outside.vtu', which is outside")
    with pytest.raises(ConfigError, match=refused):
        client.load(path="escape.vtm")
    with pytest.raises(ConfigError, match="outside the server's data root"):
        client.files("..")


def test_files_lists_the_root_with_the_reader_of_each(client: RenderClient) -> None:
    listing = client.files()
    entries = {e["name"]: e for e in listing["entries"]}
    assert listing["path"] == ""
    assert entries["runs"]["kind"] == "dir"
    assert entries["grid.vtu"]["reader"] == "vtkXMLUnstructuredGridReader"
    assert entries["grid.vtu"]["size"] > 1000
    assert entries["netcdf_without_extension"]["reader"] == "vtkNetCDFCFReader"
    assert entries["cube.geo"]["reader"] is None
    assert "escape.vtu" not in entries, "a link leading outside the root was listed"
    sub = client.files("runs")
    assert sub["path"] == "runs"
    assert sorted(e["path"] for e in sub["entries"]) == ["runs/broken.exo", "runs/junk.vtu"]
