"""Files of the formats HPC codes write, made by VTK's own writers (or by hand where the wheel has
no writer: .pvd, EnSight Gold, Fluent CFF with h5py, legacy Fluent), and pixel checks for
rendered frames."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from paraconnect.render import RenderClient

BACKGROUND = np.array([28, 31, 38])  # the scene's background, (0.11, 0.12, 0.15) * 255

# file name -> the reader class the server must pick for it
READER_OF = {
    "legacy.vtk": "vtkGenericDataObjectReader",
    "grid.vtu": "vtkXMLUnstructuredGridReader",
    "image.vti": "vtkXMLImageDataReader",
    "poly.vtp": "vtkXMLPolyDataReader",
    "parallel.pvtu": "vtkXMLPUnstructuredGridReader",
    "blocks.vtm": "vtkXMLMultiBlockDataReader",
    "series.pvd": "PVD",
    "grid.vtkhdf": "vtkHDFReader",
    "grid.exo": "vtkExodusIIReader",
    "image.nc": "vtkNetCDFCFReader",
    "grid.xmf": "vtkXdmfReader",
    "cube.case": "vtkGenericEnSightReader",
    "sphere.stl": "vtkSTLReader",
    "sphere.ply": "vtkPLYReader",
    "sphere.obj": "vtkOBJReader",
    "grid.cgns": "vtkCGNSReader",  # written by Debian's ParaView (the wheel has no writer)
    # Fluent, written by hand (no writer anywhere here); a data file opens through its case.
    "mixer.cas.h5": "vtkFLUENTCFFReader",
    "mixer.dat.h5": "vtkFLUENTCFFReader",
    "duct.cas": "vtkFLUENTReader",
    "duct.dat": "vtkFLUENTReader",
    # by content: an HDF5 file named .h5, a netCDF file with no extension
    "renamed.h5": "vtkHDFReader",
    "netcdf_without_extension": "vtkNetCDFCFReader",
}


def _wavelet(half: int = 5):  # type: ignore[no-untyped-def]
    """A wavelet image with 'RTData', 'pressure' (= x: both signs) and a 'velocity' vector."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkImagingCore import vtkRTAnalyticSource

    source = vtkRTAnalyticSource()
    source.SetWholeExtent(-half, half, -half, half, -half, half)
    source.Update()
    image = source.GetOutput()
    n = image.GetNumberOfPoints()
    xyz = np.array([image.GetPoint(i) for i in range(n)])
    pressure = numpy_to_vtk(xyz[:, 0].copy(), deep=1)
    pressure.SetName("pressure")
    image.GetPointData().AddArray(pressure)
    velocity = numpy_to_vtk(np.c_[xyz[:, 1], -xyz[:, 0], 0.2 * xyz[:, 2]].copy(), deep=1)
    velocity.SetName("velocity")
    image.GetPointData().AddArray(velocity)
    return image


def _to_grid(data):  # type: ignore[no-untyped-def]
    from vtkmodules.vtkFiltersCore import vtkAppendFilter

    append = vtkAppendFilter()
    append.AddInputData(data)
    append.Update()
    return append.GetOutput()


def _write(writer, data, path: Path) -> None:  # type: ignore[no-untyped-def]
    writer.SetInputData(data)
    writer.SetFileName(str(path))
    assert writer.Write() == 1, path


def _ensight(folder: Path) -> None:
    """EnSight Gold ASCII, written by hand (the wheel has no EnSight writer): one hexahedron."""
    xs, ys, zs = [0, 1, 1, 0, 0, 1, 1, 0], [0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1]
    geo = f"EnSight test\ngeometry\nnode id off\nelement id off\npart\n{1:10d}\ncube\n"
    geo += f"coordinates\n{8:10d}\n"
    for axis in (xs, ys, zs):
        geo += "".join(f"{v:12.5e}\n" for v in axis)
    geo += f"hexa8\n{1:10d}\n" + "".join(f"{i:10d}" for i in range(1, 9)) + "\n"
    (folder / "cube.geo").write_text(geo)
    values = "".join(f"{v * 10.0:12.5e}\n" for v in range(8))
    (folder / "cube.temperature").write_text(f"temperature\npart\n{1:10d}\ncoordinates\n{values}")
    (folder / "cube.case").write_text(
        "FORMAT\ntype: ensight gold\n\nGEOMETRY\nmodel: cube.geo\n\n"
        "VARIABLE\nscalar per node: temperature cube.temperature\n"
    )


def _hex_mesh(n: int = 4):  # type: ignore[no-untyped-def]
    """An n x n x n block of hexahedra as a finite-volume code stores it: nodes, and faces that
    name their nodes and the cells on either side (c0, c1; 0 for none), interior faces first.
    Each face's nodes turn so that the right-hand normal points into c0, as both Fluent readers
    expect.  A cell's 'pressure' is x + y/2 at its centre (both signs)."""
    m = n + 1
    grid = np.mgrid[0:m, 0:m, 0:m].reshape(3, -1).T[:, ::-1]  # x fastest
    nodes = grid * (2.0 / n) - 1.0
    nodes[:, 2] *= 0.6  # not a cube: a view along any axis is not a square

    def node(ijk: tuple[int, int, int]) -> int:
        return 1 + ijk[0] + m * (ijk[1] + m * ijk[2])

    def cell(ijk: tuple[int, int, int]) -> int:
        if not all(0 <= c < n for c in ijk):
            return 0
        return 1 + ijk[0] + n * (ijk[1] + n * ijk[2])

    interior, boundary = [], []
    for d in range(3):
        a, b = (d + 1) % 3, (d + 2) % 3
        for k in range(m):
            for i in range(n):
                for j in range(n):
                    corners = []
                    for di, dj in ((0, 0), (1, 0), (1, 1), (0, 1)):  # (a, b): normal along +d
                        ijk = [0, 0, 0]
                        ijk[d], ijk[a], ijk[b] = k, i + di, j + dj
                        corners.append(node((ijk[0], ijk[1], ijk[2])))
                    above, below = [0, 0, 0], [0, 0, 0]
                    above[d], above[a], above[b] = k, i, j
                    below[d], below[a], below[b] = k - 1, i, j
                    c_above, c_below = cell(tuple(above)), cell(tuple(below))  # type: ignore[arg-type]
                    if c_above and c_below:
                        interior.append((corners, c_above, c_below))
                    elif c_above:
                        boundary.append((corners, c_above, 0))
                    else:  # the far side: turned to point into its one cell
                        boundary.append((corners[::-1], c_below, 0))
    centres = np.array(
        [[(x + 0.5) * 2 / n - 1, (y + 0.5) * 2 / n - 1]
         for z in range(n) for y in range(n) for x in range(n)]
    )  # fmt: skip
    pressure = centres[:, 0] + 0.5 * centres[:, 1]
    return nodes, n**3, interior, boundary, pressure


def _fluent_cff(case: Path) -> None:
    """A Fluent CFF case (.cas.h5) and its data (.dat.h5), written by hand with h5py: the groups
    and attributes vtkFLUENTCFFReader reads (one node zone, one hexahedral cell zone, an interior
    and a wall face zone, the cells' pressure as field SV_P)."""
    import h5py

    nodes, ncells, interior, boundary, pressure = _hex_mesh()
    faces = interior + boundary
    u64, i32 = np.uint64, np.int32

    def zones(group, first, last, **columns) -> None:  # type: ignore[no-untyped-def]
        """A zoneTopology: each zone's id range (uint64) and its int32 columns."""
        topo = group.create_group("zoneTopology")
        topo.attrs["nZones"] = u64(len(first))
        topo.create_dataset("minId", data=np.array(first, dtype=u64))
        topo.create_dataset("maxId", data=np.array(last, dtype=u64))
        topo.create_dataset("dimension", data=np.full(len(first), 3, dtype=u64))
        for key, values in columns.items():
            topo.create_dataset(key, data=np.array(values, dtype=i32))

    def section(dataset, first: int, last: int) -> None:  # type: ignore[no-untyped-def]
        dataset.attrs["minId"] = u64(first)
        dataset.attrs["maxId"] = u64(last)

    with h5py.File(case, "w") as f:
        f.create_group("settings")
        mesh = f.create_group("meshes/1")
        mesh.attrs["dimension"] = i32(3)
        for what, count in (("node", len(nodes)), ("cell", ncells), ("face", len(faces))):
            mesh.attrs[f"{what}Offset"] = u64(0)
            mesh.attrs[f"{what}Count"] = u64(count)
        node_group = mesh.create_group("nodes")
        zones(node_group, [1], [len(nodes)], id=[1])
        section(node_group.create_dataset("coords/1", data=nodes), 1, len(nodes))
        cell_group = mesh.create_group("cells")
        zones(cell_group, [1], [ncells], id=[2], cellType=[4], childZoneId=[0])
        face_group = mesh.create_group("faces")
        n_in = len(interior)
        # An interior (type 2) and a wall (3) zone of quadrilaterals (4).
        zones(face_group, [1, n_in + 1], [n_in, len(faces)], id=[3, 4], zoneType=[2, 3],
              faceType=[4, 4], childZoneId=[0, 0], shadowZoneId=[0, 0], flags=[0, 0])  # fmt: skip
        # The reader reads this fixed-length string into a buffer one byte longer.
        face_group["zoneTopology"].create_dataset("name", data=np.bytes_(b"interior;walls"))
        by_nodes = face_group.create_group("nodes")
        by_nodes.attrs["nSections"] = u64(1)
        first = by_nodes.create_group("1")
        section(first, 1, len(faces))
        first.create_dataset("nnodes", data=np.full(len(faces), 4, dtype=np.int16))
        first.create_dataset("nodes", data=np.array([c for f_ in faces for c in f_[0]], np.uint32))
        for side in (1, 2):
            group = face_group.create_group(f"c{side - 1}")
            group.attrs["nSections"] = u64(1)
            cells = np.array([f_[side] for f_ in faces], dtype=np.uint32)
            section(group.create_dataset("1", data=cells), 1, len(faces))
    data = case.with_name(case.name[: -len("cas.h5")] + "dat.h5")
    with h5py.File(data, "w") as f:
        cells = f.create_group("results/1/phase-1/cells")
        # Read as a C string: the list must end in ';' and carry its NUL.
        cells.create_dataset("fields", data=np.array(b"SV_P;", dtype="S6"))
        field = cells.create_group("SV_P")
        field.attrs["nSections"] = u64(1)
        section(field.create_dataset("1", data=pressure), 1, ncells)


def _fluent_legacy(case: Path) -> None:
    """The same mesh as a legacy Fluent ASCII case (.cas) and data (.dat) file: S-expression
    sections for the dimension (2), nodes (10), cells (12), faces with their cells (13), zone
    names (39), and the cells' pressure (300, sub-section 1) in the data file."""
    nodes, ncells, interior, boundary, pressure = _hex_mesh()
    faces = interior + boundary
    n_in = len(interior)
    lines = ['(0 "paraconnect test: a block of hexahedra")', "(2 3)",
             f"(10 (0 1 {len(nodes):x} 0 3))", f"(12 (0 1 {ncells:x} 0))",
             f"(13 (0 1 {len(faces):x} 0))", f"(10 (1 1 {len(nodes):x} 1 3)("]  # fmt: skip
    lines += [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in nodes]
    lines += ["))", f"(12 (2 1 {ncells:x} 1 4))"]
    for zone, first, last, bc, chunk in (
        (3, 1, n_in, 2, interior), (4, n_in + 1, len(faces), 3, boundary)
    ):  # fmt: skip
        lines.append(f"(13 ({zone:x} {first:x} {last:x} {bc:x} 4)(")
        lines += [" ".join(f"{v:x}" for v in (*c, c0, c1)) for c, c0, c1 in chunk]
        lines.append("))")
    lines += ["(39 (2 fluid fluid 1)())", "(39 (3 interior default-interior 1)())",
              "(39 (4 wall walls 1)())"]  # fmt: skip
    case.write_text("\n".join(lines) + "\n")
    values = "\n".join(f"{p:.6f}" for p in pressure)
    case.with_suffix(".dat").write_text(
        f'(0 "paraconnect test: pressure")\n(300 (1 2 1 0 0 1 {ncells})\n(\n{values}\n))\n'
    )


def _series(folder: Path) -> None:
    """A .pvd around three .vtu steps whose 'wave' array has a different pattern each."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkIOXML import vtkXMLUnstructuredGridWriter

    rows = []
    for step in range(3):
        grid = _to_grid(_wavelet(4))
        n = grid.GetNumberOfPoints()
        xyz = np.array([grid.GetPoint(i) for i in range(n)])
        wave = numpy_to_vtk(np.sin(xyz[:, 0] * (step + 1) * 0.7) + 0.1 * xyz[:, 1], deep=1)
        wave.SetName("wave")
        grid.GetPointData().AddArray(wave)
        grid.GetPointData().SetActiveScalars("wave")
        _write(vtkXMLUnstructuredGridWriter(), grid, folder / f"series_{step}.vtu")
        rows.append(f'    <DataSet timestep="{step * 0.5}" part="0" file="series_{step}.vtu"/>')
    (folder / "series.pvd").write_text(
        '<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1">\n  <Collection>\n'
        + "\n".join(rows)
        + "\n  </Collection>\n</VTKFile>\n"
    )


def write_formats(folder: Path) -> dict[str, int]:
    """Every format of READER_OF in ``folder``; returns the points each file holds."""
    import shutil

    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkMultiBlockDataSet
    from vtkmodules.vtkFiltersGeometry import vtkDataSetSurfaceFilter
    from vtkmodules.vtkFiltersSources import vtkSphereSource
    from vtkmodules.vtkIOExodus import vtkExodusIIWriter
    from vtkmodules.vtkIOGeometry import vtkOBJWriter, vtkSTLWriter
    from vtkmodules.vtkIOHDF import vtkHDFWriter
    from vtkmodules.vtkIOLegacy import vtkDataSetWriter
    from vtkmodules.vtkIONetCDF import vtkNetCDFCFWriter
    from vtkmodules.vtkIOParallelXML import vtkXMLPUnstructuredGridWriter
    from vtkmodules.vtkIOPLY import vtkPLYWriter
    from vtkmodules.vtkIOXdmf2 import vtkXdmfWriter
    from vtkmodules.vtkIOXML import (
        vtkXMLImageDataWriter,
        vtkXMLMultiBlockDataWriter,
        vtkXMLPolyDataWriter,
        vtkXMLUnstructuredGridReader,
        vtkXMLUnstructuredGridWriter,
    )

    image = _wavelet()
    grid = _to_grid(image)
    surface = vtkDataSetSurfaceFilter()
    surface.SetInputData(grid)
    surface.Update()
    sphere = vtkSphereSource()
    sphere.SetThetaResolution(24)
    sphere.SetPhiResolution(24)
    sphere.Update()
    ball = sphere.GetOutput()
    points = {}
    for name, writer, data in [
        ("legacy.vtk", vtkDataSetWriter(), grid),
        ("grid.vtu", vtkXMLUnstructuredGridWriter(), grid),
        ("image.vti", vtkXMLImageDataWriter(), image),
        ("poly.vtp", vtkXMLPolyDataWriter(), surface.GetOutput()),
        ("grid.vtkhdf", vtkHDFWriter(), grid),
        ("image.nc", vtkNetCDFCFWriter(), image),
        ("grid.xmf", vtkXdmfWriter(), grid),
        ("sphere.stl", vtkSTLWriter(), ball),
        ("sphere.ply", vtkPLYWriter(), ball),
        ("sphere.obj", vtkOBJWriter(), ball),
    ]:
        _write(writer, data, folder / name)
        points[name] = int(data.GetNumberOfPoints())
    # The CF convention reads the 11³ values as cell-centred: a 12³ grid of points.
    points["image.nc"] = 12**3
    # The parallel writer asks its input for pieces: give it a pipeline that can split.
    from vtkmodules.vtkFiltersCore import vtkAppendFilter
    from vtkmodules.vtkImagingCore import vtkRTAnalyticSource

    wavelet = vtkRTAnalyticSource()
    wavelet.SetWholeExtent(-5, 5, -5, 5, -5, 5)
    pieces = vtkAppendFilter()
    pieces.SetInputConnection(wavelet.GetOutputPort())
    parallel = vtkXMLPUnstructuredGridWriter()
    parallel.SetInputConnection(pieces.GetOutputPort())
    parallel.SetFileName(str(folder / "parallel.pvtu"))
    parallel.SetNumberOfPieces(2)
    parallel.SetStartPiece(0)
    parallel.SetEndPiece(1)
    assert parallel.Write() == 1
    read = vtkXMLUnstructuredGridReader()
    points["parallel.pvtu"] = 0
    for piece in sorted((folder / "parallel").glob("*.vtu")) or sorted(
        folder.glob("parallel_*.vtu")
    ):
        read.SetFileName(str(piece))
        read.Update()
        points["parallel.pvtu"] += read.GetOutput().GetNumberOfPoints()
    assert points["parallel.pvtu"] > points["grid.vtu"], "the pieces were not written"
    exodus_grid = grid.NewInstance()
    exodus_grid.DeepCopy(grid)
    block_ids = numpy_to_vtk(np.ones(grid.GetNumberOfCells(), dtype=np.int32), deep=1)
    block_ids.SetName("ElementBlockIds")
    exodus_grid.GetCellData().AddArray(block_ids)
    _write(vtkExodusIIWriter(), exodus_grid, folder / "grid.exo")
    points["grid.exo"] = points["grid.vtu"]
    blocks = vtkMultiBlockDataSet()
    blocks.SetBlock(0, ball)
    blocks.GetMetaData(0).Set(vtkMultiBlockDataSet.NAME(), "ball")
    blocks.SetBlock(1, grid)
    blocks.GetMetaData(1).Set(vtkMultiBlockDataSet.NAME(), "grid")
    _write(vtkXMLMultiBlockDataWriter(), blocks, folder / "blocks.vtm")
    points["blocks.vtm"] = points["sphere.stl"] + points["grid.vtu"]
    _series(folder)
    points["series.pvd"] = 9 * 9 * 9
    _ensight(folder)
    points["cube.case"] = 8
    shutil.copy(folder / "grid.vtkhdf", folder / "renamed.h5")
    points["renamed.h5"] = points["grid.vtu"]
    shutil.copy(folder / "image.nc", folder / "netcdf_without_extension")
    points["netcdf_without_extension"] = points["image.nc"]
    _fluent_cff(folder / "mixer.cas.h5")
    _fluent_legacy(folder / "duct.cas")
    for name in ("mixer.cas.h5", "mixer.dat.h5", "duct.cas", "duct.dat"):
        points[name] = 5**3  # the 4 x 4 x 4 block's nodes, once (one cell zone)
    return points


def write_edge_on(path: Path) -> None:
    """The issue's blank .vti: a volume whose only array grows along x, so its automatic
    isosurface was the plane x = const, seen edge-on by a camera looking down -z."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkIOXML import vtkXMLImageDataWriter

    image = vtkImageData()
    image.SetDimensions(16, 16, 16)
    xs = np.tile(np.arange(16, dtype=float), 16 * 16)
    values = numpy_to_vtk(xs, deep=1)
    values.SetName("distance")
    image.GetPointData().SetScalars(values)
    _write(vtkXMLImageDataWriter(), image, path)


def write_in_subprocess(folder: Path) -> None:
    """write_formats and write_edge_on in a fresh interpreter: once something has imported
    the whole of VTK (``import vtk``, as other test modules do), vtkExodusIIWriter is
    overridden by the MPI one, which crashes without MPI."""
    script = (
        "import json, sys; from pathlib import Path; "
        "from tests.helpers_render import write_formats, write_edge_on, write_end_on_line; "
        "f = Path(sys.argv[1]); write_edge_on(f / 'edge_on.vti'); "
        "write_end_on_line(f / 'line.vtp'); "
        "(f / 'points.json').write_text(json.dumps(write_formats(f)))"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        check=True,
        cwd=Path(__file__).parent.parent,
        timeout=90,
    )
    write_cgns(folder / "grid.cgns")
    points = json.loads((folder / "points.json").read_text())
    points["grid.cgns"] = points["grid.vtu"]
    (folder / "points.json").write_text(json.dumps(points))


def write_cgns(out: Path) -> None:
    """The wavelet as a tetrahedral CFD mesh with its point field, in CGNS, by Debian's ParaView
    (its CGNSWriter): a file written by a program nobody here wrote, as a CFD code's would be.
    (CGNS has no voxels: the writer drops the cells of the .vtu the others are made from.)"""
    script = (
        "import sys; from paraview import simple; "
        "w = simple.Wavelet(WholeExtent=[-5, 5, -5, 5, -5, 5]); "
        "simple.SaveData(sys.argv[1], proxy=simple.Tetrahedralize(Input=w))"
    )
    subprocess.run(["pvpython", "-c", script, str(out)], check=True, timeout=90)
    assert out.stat().st_size > 0, f"pvpython wrote no {out}"


def write_end_on_line(path: Path) -> None:
    """A polyline along z: a camera looking down -z sees it end-on, as one dot."""
    from vtkmodules.vtkFiltersSources import vtkLineSource
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    line = vtkLineSource()
    line.SetPoint1(0.0, 0.0, 0.0)
    line.SetPoint2(0.0, 0.0, 5.0)
    line.SetResolution(10)
    line.Update()
    _write(vtkXMLPolyDataWriter(), line.GetOutput(), path)


def pixels(c: RenderClient) -> npt.NDArray[np.int16]:
    frame = c.render(format="png")
    return np.asarray(Image.open(io.BytesIO(frame.data)).convert("RGB"), dtype=np.int16)


def foreground(img: npt.NDArray[np.int16]) -> npt.NDArray[np.bool_]:
    return np.abs(img - BACKGROUND).max(axis=2) > 12  # type: ignore[no-any-return]


def colours(img: npt.NDArray[np.int16]) -> int:
    return len(np.unique(img.reshape(-1, 3), axis=0))


def changed(a: npt.NDArray[np.int16], b: npt.NDArray[np.int16]) -> float:
    """The share of pixels that differ clearly between two frames."""
    return float((np.abs(a - b).max(axis=2) > 30).mean())
