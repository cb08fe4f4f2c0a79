"""One offscreen VTK scene: a render window, a dataset, a camera, and raw pixel readback.

Everything here touches OpenGL and must run on the server's one render thread.  Frames are read
back as raw RGBA into pooled buffers (zero-copy numpy views of vtkUnsignedCharArray) so that
encoding can happen on other threads while the next frame renders.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# vtkRenderingOpenGL2 registers the OpenGL implementations of the rendering classes.
import vtkmodules.vtkRenderingOpenGL2 as _gl
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonCore import vtkStringOutputWindow, vtkUnsignedCharArray
from vtkmodules.vtkCommonDataModel import vtkDataObject, vtkDataSet, vtkImageData, vtkPolyData
from vtkmodules.vtkCommonExecutionModel import vtkAlgorithm
from vtkmodules.vtkFiltersCore import vtkContourFilter, vtkElevationFilter
from vtkmodules.vtkFiltersGeometry import vtkDataSetSurfaceFilter
from vtkmodules.vtkFiltersModeling import vtkOutlineFilter
from vtkmodules.vtkFiltersSources import vtkConeSource, vtkSphereSource
from vtkmodules.vtkImagingCore import vtkRTAnalyticSource
from vtkmodules.vtkRenderingCore import (
    vtkActor,
    vtkPolyDataMapper,
    vtkRenderer,
    vtkRenderWindow,
)

from ..errors import ConfigError, ParaconnectError
from ._protocol import MAX_SIZE

__all__ = ["BACKENDS", "DatasetInfo", "RawFrame", "RenderFailed", "Scene", "capture_vtk_errors"]

BACKENDS = ("egl", "osmesa", "auto")
_BACKGROUND = (0.11, 0.12, 0.15)
_BUFFERS = 6


class RenderFailed(ParaconnectError):
    """The renderer could not do what was asked (a file VTK cannot read, a GL failure)."""


_errors_lock = threading.Lock()
_string_window: vtkStringOutputWindow | None = None
_seen = 0


def capture_vtk_errors() -> vtkStringOutputWindow:
    """Route VTK's error and warning text into a buffer instead of stderr (once per process)."""
    global _string_window
    with _errors_lock:
        if _string_window is None:
            _string_window = vtkStringOutputWindow()
            _string_window.SetInstance(_string_window)
        return _string_window


def _take_vtk_errors() -> str:
    """VTK's error text since the last call (the string window only grows; keep an offset)."""
    global _seen, _string_window
    window = capture_vtk_errors()
    everything = str(window.GetOutput() or "")
    text, _seen = everything[_seen:], len(everything)
    if _seen > 1 << 20:
        with _errors_lock:
            _string_window, _seen = None, 0
        capture_vtk_errors()
    # Each message is "ERROR: In file.cxx, line N" then "vtkClass (0x...): what happened".
    # The first one is the cause; the rest are the pipeline reporting that it failed.
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith(("ERROR:", "Warning:")) and lines[i + 1].strip():
            return re.sub(r" \(0x[0-9a-f]+\)", "", lines[i + 1].strip())[:300]
    return ""


@dataclass(frozen=True, slots=True)
class RawFrame:
    """RGBA pixels, bottom row first, in a pooled buffer that must be released after encoding."""

    pixels: npt.NDArray[np.uint8]
    width: int
    height: int
    render_ms: float
    t: float
    release: Any = field(repr=False)


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    name: str
    kind: str
    points: int
    cells: int
    triangles: int
    bounds: tuple[float, ...]
    arrays: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "points": self.points,
            "cells": self.cells,
            "triangles": self.triangles,
            "bounds": list(self.bounds),
            "arrays": list(self.arrays),
        }


_checked: set[str] = set()


def preflight(backend: str) -> None:
    """Fail with a clear message where VTK would crash: no EGL (or OSMesa) to render with."""
    if backend in _checked:
        return
    if backend == "egl":
        _check_egl()
    elif backend == "osmesa" and ctypes.util.find_library("OSMesa") is None:
        raise RenderFailed(
            "the osmesa backend needs libOSMesa; install it (Debian: apt-get install libosmesa6) "
            "or use --backend egl"
        )
    _checked.add(backend)


def _check_egl() -> None:
    try:
        egl = ctypes.CDLL("libEGL.so.1")
    except OSError as exc:
        raise RenderFailed(
            f"cannot load libEGL.so.1 ({exc}); install EGL and a driver for it (Debian: "
            "apt-get install libegl1 libgl1-mesa-dri; on a GPU host, the driver's EGL)"
        ) from None
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    query = egl.eglGetProcAddress(b"eglQueryDevicesEXT")
    if query:
        prototype = ctypes.CFUNCTYPE(
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_int),
        )
        count = ctypes.c_int(0)
        if prototype(query)(0, None, ctypes.byref(count)) and count.value > 0:
            return
    raise RenderFailed(
        "EGL found no device to render on: neither a GPU driver's EGL nor Mesa's is installed "
        "(Debian: apt-get install libegl1 libgl1-mesa-dri); check __EGL_VENDOR_LIBRARY_FILENAMES"
    )


def _make_window(backend: str, device: int | None, multisamples: int) -> vtkRenderWindow:
    preflight(backend)
    window: vtkRenderWindow
    if backend == "egl":
        window = _gl.vtkEGLRenderWindow()
        if device is not None:
            window.SetDeviceIndex(device)
    elif backend == "osmesa":
        window = _gl.vtkOSOpenGLRenderWindow()
    elif backend == "auto":
        window = vtkRenderWindow()
    else:
        raise ConfigError(f"unknown render backend {backend!r}; use one of {', '.join(BACKENDS)}")
    window.SetOffScreenRendering(1)
    # VTK's default is 8x MSAA; off, the GPU path is ~3x and Mesa's ~5x faster (measured).
    window.SetMultiSamples(multisamples)
    window.SetAlphaBitPlanes(0)
    return window


class Scene:
    """A render window with one renderer, one actor for the loaded dataset, and a camera."""

    def __init__(
        self,
        *,
        width: int = 640,
        height: int = 480,
        backend: str = "egl",
        device: int | None = None,
        multisamples: int = 0,
    ) -> None:
        capture_vtk_errors()
        self.window = _make_window(backend, device, multisamples)
        self.renderer = vtkRenderer()
        self.renderer.SetBackground(*_BACKGROUND)
        self.window.AddRenderer(self.renderer)
        self.window.SetSize(width, height)
        self.mapper = vtkPolyDataMapper()
        self.actor = vtkActor()
        self.actor.SetMapper(self.mapper)
        self.renderer.AddActor(self.actor)
        self.info: DatasetInfo | None = None
        self._pool: list[vtkUnsignedCharArray] = [vtkUnsignedCharArray() for _ in range(_BUFFERS)]
        self._pool_lock = threading.Lock()
        self._pool_free = threading.Condition(self._pool_lock)
        self.frames = 0
        self.window.Render()
        error = _take_vtk_errors()
        if not self.window.SupportsOpenGL():
            raise RenderFailed(
                f"the {self.window.GetClassName()} render window has no usable OpenGL "
                f"({error or 'no detail'}); install EGL and Mesa (libegl1 libgl1-mesa-dri) "
                "or try --backend osmesa"
            )

    # --- facts --------------------------------------------------------------------------

    def gl_facts(self) -> dict[str, str]:
        report = str(self.window.ReportCapabilities() or "")
        facts = {"window": str(self.window.GetClassName())}
        for line in report.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "OpenGL vendor string":
                facts["gl_vendor"] = value.strip()
            elif key.strip() == "OpenGL renderer string":
                facts["gl_renderer"] = value.strip()
            elif key.strip() == "OpenGL version string":
                facts["gl_version"] = value.strip()
        return facts

    @property
    def size(self) -> tuple[int, int]:
        w, h = self.window.GetSize()
        return int(w), int(h)

    # --- commands ------------------------------------------------------------------------

    def resize(self, width: int, height: int) -> None:
        if not (1 <= width <= MAX_SIZE and 1 <= height <= MAX_SIZE):
            raise ConfigError(f"bad size {width}x{height}: each side must be 1 to {MAX_SIZE}")
        self.window.SetSize(width, height)

    def load(
        self,
        *,
        dataset: str | None = None,
        path: str | None = None,
        options: Mapping[str, Any] | None = None,
        representation: str = "auto",
        root: Path | None = None,
    ) -> DatasetInfo:
        options = options or {}
        _take_vtk_errors()
        if dataset is not None:
            source, name = _demo_source(dataset, options), dataset
        elif path is not None:
            source, name = _reader(path, root), path
        else:
            raise ConfigError("load needs a dataset name or a path")
        source.Update()
        data = source.GetOutputDataObject(0)
        error = _take_vtk_errors()
        if not isinstance(data, vtkDataSet) or data.GetNumberOfPoints() == 0:
            detail = f": {error}" if error else ""
            raise RenderFailed(f"no data could be read from {name!r}{detail}")
        surface = _surface(source, data, representation)
        surface.Update()
        poly = surface.GetOutputDataObject(0)
        self.mapper.SetInputConnection(surface.GetOutputPort())
        self._colour(poly)
        prop = self.actor.GetProperty()
        if representation == "wireframe":
            prop.SetRepresentationToWireframe()
        elif representation == "points":
            prop.SetRepresentationToPoints()
            prop.SetPointSize(2)
        else:
            prop.SetRepresentationToSurface()
        prop.SetSpecular(0.3)
        prop.SetSpecularPower(30)
        self.renderer.ResetCamera()
        arrays = tuple(
            str(data.GetPointData().GetArrayName(i))
            for i in range(data.GetPointData().GetNumberOfArrays())
        )
        tris = poly.GetNumberOfPolys() if isinstance(poly, vtkPolyData) else 0
        self.info = DatasetInfo(
            name=name,
            kind=str(data.GetClassName()),
            points=int(data.GetNumberOfPoints()),
            cells=int(data.GetNumberOfCells()),
            triangles=int(tris),
            bounds=tuple(float(b) for b in data.GetBounds()),
            arrays=arrays,
        )
        return self.info

    def _colour(self, poly: vtkDataObject) -> None:
        scalars = poly.GetPointData().GetScalars() if isinstance(poly, vtkDataSet) else None
        if scalars is not None and scalars.GetNumberOfComponents() == 1:
            self.mapper.ScalarVisibilityOn()
            self.mapper.SetScalarModeToUsePointData()
            self.mapper.SetScalarRange(scalars.GetRange())
            lut = self.mapper.GetLookupTable()
            lut.SetHueRange(0.667, 0.0)
            lut.Build()
            self.actor.GetProperty().SetColor(1.0, 1.0, 1.0)
        else:
            self.mapper.ScalarVisibilityOff()
            self.actor.GetProperty().SetColor(0.9, 0.75, 0.45)

    def camera(
        self,
        *,
        azimuth: float = 0.0,
        elevation: float = 0.0,
        zoom: float = 1.0,
        reset: bool = False,
    ) -> None:
        cam = self.renderer.GetActiveCamera()
        if reset:
            cam.SetPosition(0.0, 0.0, 1.0)
            cam.SetFocalPoint(0.0, 0.0, 0.0)
            cam.SetViewUp(0.0, 1.0, 0.0)
            cam.SetViewAngle(30.0)
            self.renderer.ResetCamera()
        if azimuth:
            cam.Azimuth(azimuth)
        if elevation:
            # Past ±90° the view-up flips; clamp each step and re-orthogonalize as VTK's own
            # trackball interactor does.
            cam.Elevation(max(-89.0, min(89.0, elevation)))
            cam.OrthogonalizeViewUp()
        if zoom != 1.0 and math.isfinite(zoom) and zoom > 0:
            cam.Zoom(zoom)
        self.renderer.ResetCameraClippingRange()

    # --- frames --------------------------------------------------------------------------

    def render(self) -> RawFrame:
        """Render and read back RGBA into a free pooled buffer (waits if all are in use)."""
        with self._pool_free:
            while not self._pool:
                self._pool_free.wait()
            buf = self._pool.pop()
        t = time.time()
        start = time.perf_counter()
        self.window.Render()
        w, h = self.size
        self.window.GetRGBACharPixelData(0, 0, w - 1, h - 1, 0, buf, 0)
        render_ms = (time.perf_counter() - start) * 1000.0
        self.frames += 1
        pixels = vtk_to_numpy(buf).reshape(h, w, 4)  # type: ignore[no-untyped-call]

        def release() -> None:
            with self._pool_free:
                self._pool.append(buf)
                self._pool_free.notify()

        return RawFrame(pixels, w, h, render_ms, t, release)

    def close(self) -> None:
        self.mapper.RemoveAllInputConnections(0)
        self.window.RemoveRenderer(self.renderer)
        self.window.Finalize()


def _sphere_resolution(triangles: int) -> tuple[int, int]:
    # vtkSphereSource makes 2*theta*(phi-2) triangles; keep theta == phi.
    n = max(3, round(1 + math.sqrt(1 + triangles / 2)))
    return n, n


def _demo_source(name: str, options: Mapping[str, Any]) -> vtkAlgorithm:
    if name == "sphere":
        theta, phi = _sphere_resolution(int(options.get("triangles", 80_000)))
        sphere = vtkSphereSource()
        sphere.SetThetaResolution(theta)
        sphere.SetPhiResolution(phi)
        sphere.SetRadius(1.0)
        return sphere
    if name == "cone":
        cone = vtkConeSource()
        cone.SetResolution(int(options.get("resolution", 64)))
        cone.SetHeight(2.0)
        cone.SetRadius(0.8)
        return cone
    if name == "wavelet":
        half = int(options.get("extent", 20))
        wavelet = vtkRTAnalyticSource()
        wavelet.SetWholeExtent(-half, half, -half, half, -half, half)
        return wavelet
    raise ConfigError(f"unknown dataset {name!r}; the built-in ones are wavelet, sphere, cone")


_READERS = {
    ".vtk": ("vtkmodules.vtkIOLegacy", "vtkDataSetReader"),
    ".vtp": ("vtkmodules.vtkIOXML", "vtkXMLPolyDataReader"),
    ".vtu": ("vtkmodules.vtkIOXML", "vtkXMLUnstructuredGridReader"),
    ".vti": ("vtkmodules.vtkIOXML", "vtkXMLImageDataReader"),
    ".vts": ("vtkmodules.vtkIOXML", "vtkXMLStructuredGridReader"),
    ".vtr": ("vtkmodules.vtkIOXML", "vtkXMLRectilinearGridReader"),
    ".stl": ("vtkmodules.vtkIOGeometry", "vtkSTLReader"),
    ".ply": ("vtkmodules.vtkIOPLY", "vtkPLYReader"),
    ".obj": ("vtkmodules.vtkIOGeometry", "vtkOBJReader"),
}


def _reader(path: str, root: Path | None) -> vtkAlgorithm:
    import importlib

    candidate = Path(os.path.expanduser(path))
    if root is not None:
        candidate = (root / candidate).resolve()
        if not candidate.is_relative_to(root.resolve()):
            raise ConfigError(f"{path!r} is outside the server's data root {str(root)!r}")
    suffix = candidate.suffix.lower()
    if suffix not in _READERS:
        raise ConfigError(
            f"cannot read {path!r}: unknown file type {suffix or '(none)'!r}; "
            f"use one of {', '.join(_READERS)}"
        )
    if not candidate.is_file():
        raise ConfigError(f"no such file {path!r} on the render server's host; check the path")
    if not os.access(candidate, os.R_OK):
        raise ConfigError(f"cannot read {path!r} on the render server's host: permission denied")
    module, cls = _READERS[suffix]
    reader = getattr(importlib.import_module(module), cls)()
    reader.SetFileName(str(candidate))
    return reader  # type: ignore[no-any-return]


def _surface(source: vtkAlgorithm, data: vtkDataObject, representation: str) -> vtkAlgorithm:
    """A polygonal view of any dataset: outline, isosurface or the outer surface."""
    if representation == "outline":
        outline = vtkOutlineFilter()
        outline.SetInputConnection(source.GetOutputPort())
        return outline
    scalars = data.GetPointData().GetScalars() if isinstance(data, vtkDataSet) else None
    is_volume = isinstance(data, vtkImageData) and min(data.GetDimensions()) > 1
    if scalars is not None and (
        representation == "contour" or (representation == "auto" and is_volume)
    ):
        lo, hi = scalars.GetRange()
        contour = vtkContourFilter()
        contour.SetInputConnection(source.GetOutputPort())
        contour.SetValue(0, (lo + hi) / 2.0)
        contour.ComputeScalarsOn()
        # One isovalue colours the whole surface alike: colour it by height instead, so its
        # shape reads at a glance (blue at the bottom of the dataset, red at the top, as the
        # default camera looks at it: y up).
        ylo, yhi = data.GetBounds()[2:4] if isinstance(data, vtkDataSet) else (0.0, 1.0)
        elevation = vtkElevationFilter()
        elevation.SetInputConnection(contour.GetOutputPort())
        elevation.SetLowPoint(0.0, ylo, 0.0)
        elevation.SetHighPoint(0.0, yhi if yhi > ylo else ylo + 1.0, 0.0)
        return elevation
    surface = vtkDataSetSurfaceFilter()
    surface.SetInputConnection(source.GetOutputPort())
    return surface
