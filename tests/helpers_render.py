"""Files of the formats HPC codes write, made by VTK's own writers (or by hand where the wheel has
no writer: .pvd, EnSight Gold), and pixel checks for rendered frames."""

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
