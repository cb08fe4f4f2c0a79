"""Open what HPC codes write: VTK's readers picked by extension and by content, time steps, and
a listing of the data root.

A :class:`Source` reads one time step into memory (``read(index)``) so the scene's filters work
on a plain data object and a time change is one re-read.  Paths are resolved (symlinks too)
before the data-root check, so a link cannot lead outside it.  Runs on the render thread.
"""

from __future__ import annotations

import importlib
import os
import stat
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vtkmodules.vtkCommonCore import vtkLogger
from vtkmodules.vtkCommonDataModel import vtkDataObject, vtkMultiBlockDataSet
from vtkmodules.vtkCommonExecutionModel import vtkAlgorithm, vtkStreamingDemandDrivenPipeline

from ..errors import ConfigError, ParaconnectError
from ._vtkerrors import take_vtk_errors

__all__ = ["READERS", "Source", "list_files", "open_source", "resolve"]

MAX_LISTING = 2000


class ReadFailed(ParaconnectError):
    """A reader could not read a file (the message names the reader and what VTK said)."""


# reader name -> (VTK module, class).  Absent classes (a wheel built without a module) are
# reported by name when asked for.
READERS: dict[str, tuple[str, str]] = {
    "legacy": ("vtkmodules.vtkIOLegacy", "vtkGenericDataObjectReader"),
    "vtp": ("vtkmodules.vtkIOXML", "vtkXMLPolyDataReader"),
    "vtu": ("vtkmodules.vtkIOXML", "vtkXMLUnstructuredGridReader"),
    "vti": ("vtkmodules.vtkIOXML", "vtkXMLImageDataReader"),
    "vts": ("vtkmodules.vtkIOXML", "vtkXMLStructuredGridReader"),
    "vtr": ("vtkmodules.vtkIOXML", "vtkXMLRectilinearGridReader"),
    "pvtp": ("vtkmodules.vtkIOXML", "vtkXMLPPolyDataReader"),
    "pvtu": ("vtkmodules.vtkIOXML", "vtkXMLPUnstructuredGridReader"),
    "pvti": ("vtkmodules.vtkIOXML", "vtkXMLPImageDataReader"),
    "pvts": ("vtkmodules.vtkIOXML", "vtkXMLPStructuredGridReader"),
    "pvtr": ("vtkmodules.vtkIOXML", "vtkXMLPRectilinearGridReader"),
    "vtm": ("vtkmodules.vtkIOXML", "vtkXMLMultiBlockDataReader"),
    "vtpd": ("vtkmodules.vtkIOXML", "vtkXMLPartitionedDataSetReader"),
    "vtpc": ("vtkmodules.vtkIOXML", "vtkXMLPartitionedDataSetCollectionReader"),
    "pvd": ("", "PVD"),  # a collection of the above: read here, one file per time step
    "vtkhdf": ("vtkmodules.vtkIOHDF", "vtkHDFReader"),
    "exodus": ("vtkmodules.vtkIOExodus", "vtkExodusIIReader"),
    "ioss": ("vtkmodules.vtkIOIOSS", "vtkIOSSReader"),
    "cgns": ("vtkmodules.vtkIOCGNSReader", "vtkCGNSReader"),
    "xdmf": ("vtkmodules.vtkIOXdmf2", "vtkXdmfReader"),
    "netcdf": ("vtkmodules.vtkIONetCDF", "vtkNetCDFCFReader"),
    "ensight": ("vtkmodules.vtkIOEnSight", "vtkGenericEnSightReader"),
    "fluent-cff": ("vtkmodules.vtkIOFLUENTCFF", "vtkFLUENTCFFReader"),
    "fluent": ("vtkmodules.vtkIOGeometry", "vtkFLUENTReader"),
    "openfoam": ("vtkmodules.vtkIOGeometry", "vtkOpenFOAMReader"),
    "stl": ("vtkmodules.vtkIOGeometry", "vtkSTLReader"),
    "ply": ("vtkmodules.vtkIOPLY", "vtkPLYReader"),
    "obj": ("vtkmodules.vtkIOGeometry", "vtkOBJReader"),
}

_BY_SUFFIX = {
    ".vtk": "legacy",
    **{f".{k}": k for k in ("vtp", "vtu", "vti", "vts", "vtr", "pvtp", "pvtu", "pvti")},
    **{f".{k}": k for k in ("pvts", "pvtr", "vtm", "vtpd", "vtpc", "pvd", "vtkhdf")},
    ".vtmb": "vtm",
    ".e": "exodus",
    ".exo": "exodus",
    ".ex2": "exodus",
    ".exii": "exodus",
    ".g": "exodus",
    ".gen": "exodus",
    ".cgns": "cgns",
    ".xmf": "xdmf",
    ".xdmf": "xdmf",
    ".case": "ensight",
    ".encas": "ensight",
    ".cas": "fluent",
    ".msh": "fluent",
    ".foam": "openfoam",
    ".stl": "stl",
    ".ply": "ply",
    ".obj": "obj",
}
# These extensions say only "HDF5" or "netCDF": the content decides.
_SNIFF_SUFFIXES = {".h5", ".hdf", ".hdf5", ".nc", ".ncdf", ".nc4", ".cdf", ".dat", ""}
_XML_TYPES = {
    "PolyData": "vtp",
    "UnstructuredGrid": "vtu",
    "ImageData": "vti",
    "StructuredGrid": "vts",
    "RectilinearGrid": "vtr",
    "PPolyData": "pvtp",
    "PUnstructuredGrid": "pvtu",
    "PImageData": "pvti",
    "PStructuredGrid": "pvts",
    "PRectilinearGrid": "pvtr",
    "vtkMultiBlockDataSet": "vtm",
    "vtkPartitionedDataSet": "vtpd",
    "vtkPartitionedDataSetCollection": "vtpc",
    "Collection": "pvd",
}


def resolve(path: str, root: Path | None) -> Path:
    """The real path of ``path`` (relative to ``root`` if given), refused outside ``root``."""
    candidate = Path(os.path.expanduser(path))
    if root is None:
        return candidate.resolve()
    real_root = root.resolve()
    candidate = (real_root / candidate).resolve()
    if not candidate.is_relative_to(real_root):
        raise ConfigError(f"{path!r} is outside the server's data root {str(root)!r}")
    return candidate


def _reader_class(name: str) -> Any:
    module, cls = READERS[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        raise ConfigError(
            f"this render server's VTK has no {cls} ({module}); install a VTK build with it"
        ) from None


def _can_read(name: str, path: Path) -> bool:
    try:
        reader = _reader_class(name)()
    except ConfigError:
        return False
    check = getattr(reader, "CanReadFile", None)
    if check is None:
        return False
    # A reader that says no logs why on stderr (the CGNS one, for any other HDF5 file):
    # asking is not an error.
    level = vtkLogger.GetCurrentVerbosityCutoff()  # stderr is the only sink here
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_OFF)
    try:
        return bool(check(str(path)))
    finally:
        vtkLogger.SetStderrVerbosity(level)


def detect(path: Path) -> str | None:
    """The reader for a file: by extension, else (or for HDF5/netCDF ones) by content."""
    lower = path.name.lower()
    if lower.endswith(".cas.h5") or lower.endswith(".dat.h5"):
        return "fluent-cff"
    suffix = path.suffix.lower()
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    if suffix not in _SNIFF_SUFFIXES and not suffix[1:].isdigit():
        return None
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if head.startswith(b"# vtk DataFile"):
        return "legacy"
    if suffix == ".dat" and head.lstrip().startswith(b"(") and path.with_suffix(".cas").is_file():
        return "fluent"  # a legacy Fluent data file, read through its case file
    if head.startswith(b"\x89HDF\r\n\x1a\n") or head.startswith(b"CDF"):
        for name in ("vtkhdf", "exodus", "cgns", "netcdf"):
            if _can_read(name, path):
                return name
        return None
    text = head.lstrip()
    if text.startswith(b"<"):
        if b"<Xdmf" in head:
            return "xdmf"
        for kind, name in _XML_TYPES.items():
            if f'type="{kind}"'.encode() in head:
                return name
    if head.startswith(b"solid"):
        return "stl"
    if head.startswith(b"ply"):
        return "ply"
    return None


def _configure(name: str, reader: Any, path: Path) -> None:
    if name == "ensight":
        reader.SetCaseFileName(str(path))
    else:
        reader.SetFileName(str(path))
    if name == "fluent-cff":
        # "pressure (SV_P)" rather than Fluent's internal "SV_P", as ParaView shows them.
        reader.SetRenameArrays(True)
    if name == "exodus":
        reader.UpdateInformation()
        # Result variables are off by default: a scientist opens a file to see them.
        for kind in (reader.NODAL, reader.ELEM_BLOCK, reader.GLOBAL):
            reader.SetAllArrayStatus(kind, 1)
    enables = [
        e for e in ("EnableAllPointArrays", "EnableAllCellArrays", "EnableAllBases")
        if hasattr(reader, e)
    ]  # fmt: skip
    if enables:
        # The array lists are filled by the file's information pass: before it, "all" is none
        # (a CGNS file's flow solution came out with no arrays).
        reader.UpdateInformation()
        for enable in enables:
            getattr(reader, enable)()
    if name == "ioss":
        for selection in ("GetNodeBlockFieldSelection", "GetElementBlockFieldSelection"):
            getattr(reader, selection)().EnableAllArrays()
    if name == "fluent":
        _fluent_cell_zones_only(reader, path)


# Fluent's zone types that hold cells; the others are face zones (interior, wall, inlet...).
_FLUENT_CELL_ZONES = {"fluid", "solid"}


def _fluent_cell_zones_only(reader: Any, path: Path) -> None:
    """The legacy reader gives each face zone a block holding a copy of every cell that touches
    it: the interior zone repeats the whole volume, without its fields, drawn over it.  Show the
    cell zones only (a file of faces alone keeps its face zones)."""
    zones = reader.GetZoneSectionSelection()
    names = [zones.GetArrayName(i) for i in range(zones.GetNumberOfArrays())]
    if not names:
        # Its one default block has no place for zones other than 1: the reader throws a C++
        # exception that nothing catches and the render server would abort.
        raise ReadFailed(
            f"vtkFLUENTReader cannot read {path.name!r}: it names no zones (no (39 ...) or "
            "(45 ...) section), which makes this reader abort; export the case again from Fluent"
        )
    # Named "<zone name>:<zone type>" (the reader swaps the file's type and name).
    faces = [n for n in names if n.rpartition(":")[2] not in _FLUENT_CELL_ZONES]
    if len(faces) < len(names):
        for face_zone in faces:
            zones.DisableArray(face_zone)


# Fluent writes a case file (the mesh) and a data file (the fields) side by side; its readers
# open the case and find the data by name: x.cas.h5 -> x.dat.h5, x.cas -> x.dat.
_FLUENT_PAIRS = {"fluent-cff": ("cas.h5", "dat.h5"), "fluent": ("cas", "dat")}


def _fluent_case(path: str, name: str, real: Path, root: Path | None) -> Path:
    """The case file to give the reader for ``real`` (a case or a data file), both files checked
    against the root: the reader opens the data file beside the case by itself."""
    case_end, data_end = _FLUENT_PAIRS[name]
    if real.name.lower().endswith("." + data_end):
        case = real.with_name(real.name[: -len(data_end)] + case_end)
        if not case.is_file():
            raise ConfigError(
                f"{path!r} is a Fluent data file; its case file {case.name!r} (the mesh) must be "
                "beside it: copy it there or open the case file"
            )
        real = case
    data = real.with_name(real.name[: -len(case_end)] + data_end)
    for part in (real, data):
        if root is not None and os.path.lexists(part):
            try:
                resolve(str(part), root)
            except ConfigError:
                raise ConfigError(
                    f"{path!r} goes with {part.name!r}, which leads outside the server's data "
                    f"root {str(root)!r}"
                ) from None
    return real.resolve()


@dataclass
class Source:
    """Something that yields a data object per time step: a reader, a .pvd, a demo source."""

    name: str
    reader: str
    times: list[float]
    read_step: Callable[[int], vtkDataObject]

    def read(self, index: int) -> vtkDataObject:
        if self.times and not 0 <= index < len(self.times):
            raise ConfigError(
                f"time step {index} does not exist; {self.name!r} has steps 0 to "
                f"{len(self.times) - 1}"
            )
        return self.read_step(index)


def algorithm_source(name: str, algorithm: vtkAlgorithm, reader: str) -> Source:
    """A Source around any VTK algorithm; its TIME_STEPS (if any) become the time steps."""
    take_vtk_errors()
    algorithm.UpdateInformation()
    info = algorithm.GetOutputInformation(0)
    key = vtkStreamingDemandDrivenPipeline.TIME_STEPS()
    times = [float(t) for t in (info.Get(key) or ())] if info.Has(key) else []
    said_first = take_vtk_errors()

    def read_step(index: int) -> vtkDataObject:
        if times:
            algorithm.UpdateTimeStep(times[index])
        else:
            algorithm.Update()
        data = algorithm.GetOutputDataObject(0)
        said = take_vtk_errors() or said_first
        if data is None or _count_points(data) == 0:
            detail = f": {said}" if said else " (it said nothing)"
            raise ReadFailed(f"no data could be read from {name!r} by {reader}{detail}")
        copy = data.NewInstance()
        copy.ShallowCopy(data)
        return copy  # type: ignore[no-any-return]

    return Source(name=name, reader=reader, times=times, read_step=read_step)


def _count_points(data: vtkDataObject) -> int:
    if hasattr(data, "GetNumberOfPoints"):
        return int(data.GetNumberOfPoints())
    return 0


def open_source(path: str, root: Path | None, reader: str | None = None) -> Source:
    """A Source for a file on this host: checked against the root, its reader chosen."""
    real = resolve(path, root)
    if not real.exists():
        raise ConfigError(f"no such file {path!r} on the render server's host; check the path")
    if not os.access(real, os.R_OK):
        raise ConfigError(f"cannot read {path!r} on the render server's host: permission denied")
    if reader is not None and reader not in READERS:
        raise ConfigError(f"unknown reader {reader!r}; use one of {', '.join(READERS)}")
    name = reader or detect(real)
    if name is None:
        raise ConfigError(
            f"cannot read {path!r}: unknown file type {real.suffix or '(none)'!r} and its content "
            f"is no format these readers know: {', '.join(READERS)}"
        )
    if real.is_dir():
        raise ConfigError(f"{path!r} is a directory; give a file in it")
    if name == "pvd":
        return _pvd(path, real, root)
    if root is not None and name in _COLLECTIONS:
        _check_pieces(path, real, root)
    if name in _FLUENT_PAIRS:
        real = _fluent_case(path, name, real, root)
    cls = _reader_class(name)
    vtk_reader = cls()
    _configure(name, vtk_reader, real)
    return algorithm_source(path, vtk_reader, str(cls.__name__))


# XML files that name other files (pieces, blocks): those must be inside the root as well.
_COLLECTIONS = {"vtm", "vtpd", "vtpc", "pvtp", "pvtu", "pvti", "pvts", "pvtr"}


def _check_pieces(path: str, real: Path, root: Path) -> None:
    try:
        tree = ET.parse(real)  # noqa: S314 - a local file the user chose, tags only
    except (ET.ParseError, OSError):
        return  # the reader will say what is wrong with it
    for item in tree.iter():
        for key in ("file", "Source"):
            ref = item.get(key)
            if ref:
                try:
                    resolve(str((real.parent / ref).resolve()), root)
                except ConfigError:
                    raise ConfigError(
                        f"{path!r} names {ref!r}, which is outside the server's data root "
                        f"{str(root)!r}"
                    ) from None


def _pvd(path: str, real: Path, root: Path | None) -> Source:
    try:
        tree = ET.parse(real)  # noqa: S314 - a local file the user chose, tags only
    except (ET.ParseError, OSError) as exc:
        raise ReadFailed(f"PVD reader cannot parse {path!r}: {exc}") from None
    steps: dict[float, list[Path]] = {}
    for item in tree.iter("DataSet"):
        file = item.get("file")
        if not file:
            continue
        try:
            t = float(item.get("timestep", "0") or 0)
        except ValueError:
            bad = item.get("timestep")
            raise ReadFailed(f"PVD reader: {path!r} has a bad timestep {bad!r}") from None
        piece = (real.parent / file).resolve()
        # A piece of a collection inside the root must stay inside it too.
        if root is not None:
            resolve(str(piece), root)
        steps.setdefault(t, []).append(piece)
    if not steps:
        raise ReadFailed(f"PVD reader found no <DataSet file=...> entries in {path!r}")
    times = sorted(steps)
    cache: dict[Path, Source] = {}

    def read_step(index: int) -> vtkDataObject:
        parts = []
        for piece in steps[times[index]]:
            if piece not in cache:
                cache[piece] = open_source(str(piece), root)
            parts.append(cache[piece].read(0))
        if len(parts) == 1:
            return parts[0]
        block = vtkMultiBlockDataSet()
        for i, part in enumerate(parts):
            block.SetBlock(i, part)
        return block

    return Source(
        name=path, reader="PVD", times=times if len(times) > 1 else [], read_step=read_step
    )


def list_files(root: Path, rel: str = "") -> dict[str, Any]:
    """One directory of the data root: name, size, kind and reader of each entry."""
    folder = resolve(rel or ".", root)
    if not folder.is_dir():
        raise ConfigError(f"{rel!r} is not a directory under the server's data root")
    entries: list[dict[str, Any]] = []
    real_root = root.resolve()
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise ConfigError(f"cannot list {rel or '.'!r}: {exc.strerror}") from None
    for item in names[:MAX_LISTING]:
        full = folder / item
        try:
            real = full.resolve()
            st = real.stat()
        except OSError:
            continue
        if not real.is_relative_to(real_root):
            continue  # a link that leads outside the root is not shown
        is_dir = stat.S_ISDIR(st.st_mode)
        entries.append(
            {
                "name": item,
                "path": str(full.relative_to(real_root))
                if full.is_relative_to(real_root)
                else item,
                "kind": "dir" if is_dir else "file",
                "size": 0 if is_dir else int(st.st_size),
                "reader": None if is_dir else _reader_label(real),
            }
        )
    where = str(folder.relative_to(real_root))
    return {"path": "" if where == "." else where, "entries": entries,
            "truncated": len(names) > MAX_LISTING}  # fmt: skip


def _reader_label(path: Path) -> str | None:
    name = detect(path)
    if name is None:
        return None
    return READERS[name][1]
