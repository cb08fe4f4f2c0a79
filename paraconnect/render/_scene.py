"""One offscreen VTK scene: a render window, a dataset, a camera, and raw pixel readback.

Everything here touches OpenGL and must run on the server's one render thread.  Frames are read
back as raw RGBA into pooled buffers (zero-copy numpy views of vtkUnsignedCharArray) so that
encoding can happen on other threads while the next frame renders.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
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
from vtkmodules.vtkCommonCore import vtkUnsignedCharArray
from vtkmodules.vtkCommonExecutionModel import vtkAlgorithm
from vtkmodules.vtkFiltersSources import vtkConeSource, vtkSphereSource
from vtkmodules.vtkImagingCore import vtkRTAnalyticSource
from vtkmodules.vtkRenderingCore import vtkRenderer, vtkRenderWindow

from .._wire import record
from ..errors import ConfigError, ParaconnectError
from ._pipeline import Pipeline
from ._protocol import MAX_SIZE
from ._readers import Source, algorithm_source, list_files, open_source
from ._vtkerrors import capture_vtk_errors, take_vtk_errors

__all__ = ["BACKENDS", "DatasetInfo", "RawFrame", "RenderFailed", "Scene", "capture_vtk_errors"]

# ±X means "look along +X", as ParaView's buttons: the camera sits on the -X side.
PRESETS = {
    "+x": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "-x": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "+y": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "-y": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "+z": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "-z": ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
}

BACKENDS = ("egl", "osmesa", "auto")
_BACKGROUND = (0.11, 0.12, 0.15)
_BUFFERS = 6


class RenderFailed(ParaconnectError):
    """The renderer could not do what was asked (a file VTK cannot read, a GL failure)."""


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
        return record(self)


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
        # The view's size; a drag's frames may be rendered smaller (render(scale=)).
        self._size = (width, height)
        self.pipeline = Pipeline(self.renderer, self.window)
        self.info: DatasetInfo | None = None
        self._pool: list[vtkUnsignedCharArray] = [vtkUnsignedCharArray() for _ in range(_BUFFERS)]
        self._pool_lock = threading.Lock()
        self._pool_free = threading.Condition(self._pool_lock)
        self.frames = 0
        self.window.Render()
        error = take_vtk_errors()
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
        return self._size

    # --- commands ------------------------------------------------------------------------

    def resize(self, width: int, height: int) -> None:
        if not (1 <= width <= MAX_SIZE and 1 <= height <= MAX_SIZE):
            raise ConfigError(f"bad size {width}x{height}: each side must be 1 to {MAX_SIZE}")
        self._size = (width, height)
        self.window.SetSize(width, height)

    def load(
        self,
        *,
        dataset: str | None = None,
        path: str | None = None,
        options: Mapping[str, Any] | None = None,
        representation: str = "auto",
        root: Path | None = None,
        reader: str | None = None,
    ) -> DatasetInfo:
        options = options or {}
        take_vtk_errors()
        source: Source
        if dataset is not None:
            source = algorithm_source(dataset, _demo_source(dataset, options), "built-in")
        elif path is not None:
            source = open_source(path, root, reader)
        else:
            raise ConfigError("load needs a dataset name or a path")
        self.pipeline.set_source(source, representation)
        self.renderer.ResetCamera()
        self.face_flat_data()
        data = self.pipeline.loaded()
        poly = self.pipeline.mapper.GetInput()
        arrays = tuple(
            str(data.GetPointData().GetArrayName(i))
            for i in range(data.GetPointData().GetNumberOfArrays())
        )
        self.info = DatasetInfo(
            name=source.name,
            kind=str(data.GetClassName()),
            points=int(data.GetNumberOfPoints()),
            cells=int(data.GetNumberOfCells()),
            triangles=int(poly.GetNumberOfPolys()) if poly is not None else 0,
            bounds=tuple(float(b) for b in data.GetBounds()),
            arrays=arrays,
        )
        return self.info

    def face_flat_data(self) -> None:
        """If what is drawn is flat (a 2-D image, a slice, a planar isosurface) and the camera
        sees it edge-on, or a line seen end-on, look at it across: the default view must show
        something."""
        bounds = self.pipeline.visible_bounds()
        if bounds is None:
            return
        spans = [bounds[2 * i + 1] - bounds[2 * i] for i in range(3)]
        diag = math.hypot(*spans) or 1.0
        flat = [i for i in range(3) if spans[i] <= 1e-6 * diag]
        direction = self.renderer.GetActiveCamera().GetDirectionOfProjection()
        looks = ("-x", "-y", "-z")
        if len(flat) == 1 and abs(direction[flat[0]]) < 0.3:
            self.camera(preset=looks[flat[0]])
        elif len(flat) == 2:
            # A line: seen end-on it is a dot; look across it instead.
            along = ({0, 1, 2} - set(flat)).pop()
            if abs(direction[along]) > 0.9:
                self.camera(preset=looks[flat[0]])

    def files(self, rel: str, root: Path | None) -> dict[str, Any]:
        # With no --root, the listing shows the server's working directory, and only it.
        return list_files(root if root is not None else Path.cwd(), rel)

    def state(self) -> dict[str, Any]:
        cam = self.renderer.GetActiveCamera()
        state = self.pipeline.state()
        state["camera"] = {
            "position": list(cam.GetPosition()),
            "focal_point": list(cam.GetFocalPoint()),
            "view_up": list(cam.GetViewUp()),
            "view_angle": float(cam.GetViewAngle()),
        }
        state["size"] = list(self.size)
        return state

    def camera(
        self,
        *,
        azimuth: float = 0.0,
        elevation: float = 0.0,
        zoom: float = 1.0,
        reset: bool = False,
        preset: str | None = None,
        pan: tuple[float, float] | None = None,
    ) -> None:
        cam = self.renderer.GetActiveCamera()
        if reset:
            cam.SetPosition(0.0, 0.0, 1.0)
            cam.SetFocalPoint(0.0, 0.0, 0.0)
            cam.SetViewUp(0.0, 1.0, 0.0)
            cam.SetViewAngle(30.0)
            self.renderer.ResetCamera()
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(
                    f"unknown camera preset {preset!r}; use one of {', '.join(PRESETS)}"
                )
            (dx, dy, dz), up = PRESETS[preset]
            cam.SetFocalPoint(0.0, 0.0, 0.0)
            cam.SetPosition(-dx, -dy, -dz)
            cam.SetViewUp(*up)
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
        if pan is not None:
            self._pan(*pan)
        self.renderer.ResetCameraClippingRange()

    def _pan(self, dx: float, dy: float) -> None:
        """Move the picture right and up by (dx, dy) view heights: the camera, focal point and
        all, moves the other way."""
        cam = self.renderer.GetActiveCamera()
        focal, position = cam.GetFocalPoint(), cam.GetPosition()
        height = 2.0 * math.dist(focal, position) * math.tan(math.radians(cam.GetViewAngle()) / 2)
        up = cam.GetViewUp()
        d = cam.GetDirectionOfProjection()
        right = (d[1] * up[2] - d[2] * up[1], d[2] * up[0] - d[0] * up[2],
                 d[0] * up[1] - d[1] * up[0])  # fmt: skip
        shift = [-(right[i] * dx + up[i] * dy) * height for i in range(3)]
        cam.SetFocalPoint(*(focal[i] + shift[i] for i in range(3)))
        cam.SetPosition(*(position[i] + shift[i] for i in range(3)))

    # --- frames --------------------------------------------------------------------------

    def drag_scale(self) -> float:
        """The automatic scale of a drag's frames: half of each side for views larger than
        640x480 (a quarter of the pixels to render, encode and decode), whole below."""
        w, h = self._size
        return 0.5 if w * h > 640 * 480 else 1.0

    def render(self, scale: float = 1.0) -> RawFrame:
        """Render and read back RGBA into a free pooled buffer (waits if all are in use).

        ``scale`` < 1: this frame at that fraction of each side (a drag's frames: the pixels
        llvmpipe fills, the encoder packs and the browser decodes fall with its square); the
        next frame at scale 1 is the view's full size again.
        """
        with self._pool_free:
            while not self._pool:
                self._pool_free.wait()
            buf = self._pool.pop()
        t = time.time()
        start = time.perf_counter()
        w, h = self._size
        if scale < 1.0:
            w, h = max(1, round(w * scale)), max(1, round(h * scale))
        if tuple(self.window.GetSize()) != (w, h):
            self.window.SetSize(w, h)
        self.pipeline.before_render()
        self.window.Render()
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
        self.pipeline.mapper.RemoveAllInputConnections(0)
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
