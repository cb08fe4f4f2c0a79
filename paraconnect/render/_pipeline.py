"""What the scene shows and how: blocks, filters, colouring, representation, decorations.

The data of the current time step sits in a trivial producer; the chosen blocks are merged into
one dataset; filters (slice, clip, contour, threshold) chain from it; a surface of the result
goes to the mapper, or the image itself to a volume mapper.  :meth:`Pipeline.state` is the
whole of it as JSON, with a counter bumped on every change, so every control can stay in sync.
Runs on the render thread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from vtkmodules.vtkCommonCore import vtkDataArray
from vtkmodules.vtkCommonDataModel import (
    vtkCompositeDataSet,
    vtkDataObject,
    vtkDataSet,
    vtkImageData,
)
from vtkmodules.vtkCommonExecutionModel import vtkAlgorithm, vtkTrivialProducer
from vtkmodules.vtkFiltersCore import (
    vtkAppendFilter,
)
from vtkmodules.vtkFiltersGeometry import vtkDataSetSurfaceFilter
from vtkmodules.vtkFiltersModeling import vtkOutlineFilter
from vtkmodules.vtkRenderingAnnotation import vtkAxesActor, vtkScalarBarActor
from vtkmodules.vtkRenderingCore import (
    vtkActor,
    vtkPolyDataMapper,
    vtkRenderer,
    vtkRenderWindow,
    vtkVolume,
    vtkVolumeProperty,
)
from vtkmodules.vtkRenderingVolumeOpenGL2 import vtkSmartVolumeMapper

from ..errors import ConfigError
from ._colors import COLORMAPS, canonical, default_colormap, lookup_table
from ._filters import make_filter
from ._readers import Source

__all__ = ["FILTERS", "REPRESENTATIONS", "Pipeline"]

REPRESENTATIONS = ("surface", "surface with edges", "wireframe", "points", "volume", "outline")
FILTERS = ("slice", "clip", "contour", "threshold")
_SOLID = (0.9, 0.75, 0.45)
_MAX_BLOCKS = 500
# Arrays VTK's readers add for bookkeeping: never the default colouring.
_BOOKKEEPING = {"vtkOriginalCellIds", "vtkOriginalPointIds", "ObjectId", "vtkGhostType"}


def _leaves(data: vtkDataObject) -> list[tuple[str, vtkDataSet]]:
    if not isinstance(data, vtkCompositeDataSet):
        return [("", data)] if isinstance(data, vtkDataSet) else []
    found: list[tuple[str, vtkDataSet]] = []
    it = data.NewIterator()
    it.InitTraversal()
    while not it.IsDoneWithTraversal():
        leaf = it.GetCurrentDataObject()
        name = ""
        if it.HasCurrentMetaData():
            name = str(it.GetCurrentMetaData().Get(vtkCompositeDataSet.NAME()) or "")
        if isinstance(leaf, vtkDataSet) and leaf.GetNumberOfPoints() > 0:
            found.append((name or f"block {len(found)}", leaf))
        it.GoToNextItem()
    return found


def _fill_missing(blocks: list[vtkDataSet]) -> list[vtkDataSet]:
    """Copies of the blocks where each has every array of any block (NaN where it had none):
    merging keeps only the arrays all inputs share, and blocks rarely share them all."""
    wanted: dict[tuple[str, str], vtkDataArray] = {}
    for block in blocks:
        for association, fields in (("point", block.GetPointData()), ("cell", block.GetCellData())):
            for i in range(fields.GetNumberOfArrays()):
                arr = fields.GetArray(i)
                if arr is not None and arr.GetName():
                    wanted.setdefault((association, str(arr.GetName())), arr)
    filled = []
    for block in blocks:
        copy = block.NewInstance()
        copy.ShallowCopy(block)
        for (association, name), like in wanted.items():
            point = association == "point"
            fields = copy.GetPointData() if point else copy.GetCellData()
            if fields.GetArray(name) is not None:
                continue
            n = copy.GetNumberOfPoints() if point else copy.GetNumberOfCells()
            missing = like.NewInstance()
            missing.SetName(name)
            missing.SetNumberOfComponents(like.GetNumberOfComponents())
            missing.SetNumberOfTuples(n)
            floating = like.IsA("vtkFloatArray") or like.IsA("vtkDoubleArray")
            missing.Fill(math.nan if floating else 0)
            fields.AddArray(missing)
        filled.append(copy)
    return filled


def _arrays(data: vtkDataSet) -> list[dict[str, Any]]:
    out = []
    for association, fields in (("point", data.GetPointData()), ("cell", data.GetCellData())):
        for i in range(fields.GetNumberOfArrays()):
            arr = fields.GetArray(i)
            if arr is None or not arr.GetName():
                continue
            k = int(arr.GetNumberOfComponents())
            entry: dict[str, Any] = {
                "name": str(arr.GetName()),
                "association": association,
                "components": k,
                "range": _range(arr, -1 if k > 1 else 0),
            }
            if k > 1:
                entry["component_ranges"] = [_range(arr, c) for c in range(k)]
            out.append(entry)
    return out


def _range(arr: vtkDataArray, component: int) -> list[float]:
    lo, hi = arr.GetRange(component)
    return [float(lo), float(hi)] if math.isfinite(lo) and math.isfinite(hi) else [0.0, 0.0]


def _vector(value: Sequence[float], what: str) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in value)
    if what == "normal" and x == y == z == 0:
        raise ConfigError("a plane's 'normal' must not be (0, 0, 0)")
    return x, y, z


class Pipeline:
    """The displayed data of one scene, from the source to the actors."""

    def __init__(self, renderer: vtkRenderer, window: vtkRenderWindow) -> None:
        self.renderer = renderer
        self.producer = vtkTrivialProducer()
        self.surface = vtkDataSetSurfaceFilter()
        self.mapper = vtkPolyDataMapper()  # connected once there is data
        self.actor = vtkActor()
        self.actor.SetMapper(self.mapper)
        renderer.AddActor(self.actor)
        self.outline = vtkOutlineFilter()
        self.outline.SetInputConnection(self.producer.GetOutputPort())
        outline_mapper = vtkPolyDataMapper()
        outline_mapper.SetInputConnection(self.outline.GetOutputPort())
        self.outline_actor = vtkActor()
        self.outline_actor.SetMapper(outline_mapper)
        self.outline_actor.GetProperty().SetColor(0.85, 0.85, 0.85)
        self.outline_actor.VisibilityOff()
        renderer.AddActor(self.outline_actor)
        self.volume_mapper = vtkSmartVolumeMapper()
        self.volume = vtkVolume()
        self.volume.SetMapper(self.volume_mapper)
        self.volume.VisibilityOff()
        renderer.AddVolume(self.volume)
        self.bar = vtkScalarBarActor()
        self.bar.SetPosition(0.86, 0.1)
        self.bar.SetWidth(0.1)
        self.bar.SetHeight(0.8)
        self.bar.SetNumberOfLabels(5)
        self.bar.SetLabelFormat("%.3g")
        self.bar.VisibilityOff()
        renderer.AddViewProp(self.bar)
        # Orientation axes: a second renderer in the corner, on a layer above, turned with the
        # main camera before each frame (no interactor here for vtkOrientationMarkerWidget).
        window.SetNumberOfLayers(2)
        self.axes_renderer = vtkRenderer()
        self.axes_renderer.SetLayer(1)
        self.axes_renderer.SetViewport(0.0, 0.0, 0.18, 0.24)
        self.axes_renderer.InteractiveOff()
        axes = vtkAxesActor()
        axes.SetShaftTypeToCylinder()
        axes.SetTotalLength(1.0, 1.0, 1.0)
        self.axes_renderer.AddActor(axes)
        self.axes_renderer.DrawOff()
        window.AddRenderer(self.axes_renderer)

        self.source: Source | None = None
        self.step = 0
        self.blocks: list[tuple[str, vtkDataSet]] = []
        self.selected: list[int] = []
        self.data: vtkDataSet | None = None
        self.filters: list[dict[str, Any]] = []
        self.color: dict[str, Any] | None = None
        self.colormap: str | None = None
        self.fixed_range: tuple[float, float] | None = None
        self.representation = "surface"
        self.scalar_bar = True
        self.axes = False
        self.show_outline = False
        self.version = 0

    # --- data --------------------------------------------------------------------------

    def set_source(self, source: Source, representation: str = "auto") -> None:
        data = source.read(0)
        blocks = _leaves(data)
        if not blocks:
            raise ConfigError(f"{source.name!r} holds no dataset with points")
        self.source, self.step = source, 0
        self.blocks, self.selected = blocks, list(range(len(blocks)))
        self.filters, self.fixed_range, self.colormap = [], None, None
        self.representation = "surface"
        self._merge()
        if representation == "contour":
            self.filters.append(self._contour_spec({}))
        elif representation not in ("auto", "contour"):
            self.representation = representation
        self.color = self._default_color()
        self.rebuild()

    def set_step(self, index: int) -> None:
        if self.source is None:
            raise ConfigError("load a dataset first")
        if not self.source.times:
            raise ConfigError(f"{self.source.name!r} has no time steps")
        blocks = _leaves(self.source.read(index))
        self.step = index
        names = [n for n, _ in self.blocks]
        self.blocks = blocks
        if [n for n, _ in blocks] != names:
            self.selected = list(range(len(blocks)))
        self._merge()
        self.rebuild()

    def select_blocks(self, indices: Sequence[int]) -> None:
        bad = [i for i in indices if not 0 <= i < len(self.blocks)]
        if bad or not indices:
            last = len(self.blocks) - 1
            raise ConfigError(f"pick blocks by index from 0 to {last}; got {list(indices)[:10]}")
        self.selected = sorted(set(indices))
        self._merge()
        self.rebuild()

    def _merge(self) -> None:
        chosen = [self.blocks[i][1] for i in self.selected]
        if len(chosen) == 1:
            self.data = chosen[0]
        else:
            append = vtkAppendFilter()
            for block in _fill_missing(chosen):
                append.AddInputData(block)
            append.Update()
            self.data = append.GetOutput()
        self.producer.SetOutput(self.data)
        if self.color is not None:
            names = {(a["name"], a["association"]) for a in _arrays(self.data)}
            if (self.color["array"], self.color["association"]) not in names:
                # The blocks or the time step shown lack the array: the default colouring.
                self.color = self._default_color()

    # --- colouring ---------------------------------------------------------------------

    def loaded(self) -> vtkDataSet:
        if self.data is None:
            raise ConfigError("load a dataset first")
        return self.data

    def _find(self, name: str, association: str | None) -> dict[str, Any]:
        arrays = _arrays(self.loaded())
        for entry in arrays:
            if entry["name"] == name and association in (None, entry["association"]):
                return entry
        names = ", ".join(sorted({a["name"] for a in arrays})) or "none"
        raise ConfigError(f"no array {name!r} on {self._name()!r}; its arrays: {names}")

    def _name(self) -> str:
        return self.source.name if self.source else "the scene"

    def _default_color(self) -> dict[str, Any] | None:
        data = self.loaded()
        scalars = data.GetPointData().GetScalars()
        candidates = [a for a in _arrays(data) if a["name"] not in _BOOKKEEPING]
        if scalars is not None and scalars.GetName():
            candidates.insert(0, self._find(str(scalars.GetName()), "point"))
        for entry in candidates:
            if entry["components"] == 1:
                return {"array": entry["name"], "association": entry["association"],
                        "component": None}  # fmt: skip
        return None

    def color_by(
        self,
        array: str | None,
        association: str | None = None,
        component: int | str | None = None,
        colormap: str | None = None,
        range_: tuple[float, float] | str | None = None,
    ) -> None:
        if array is None:
            self.color = None
        else:
            entry = self._find(array, association)
            k = entry["components"]
            if isinstance(component, int) and not 0 <= component < k:
                raise ConfigError(f"{array!r} has {k} component(s): pick 0 to {k - 1}")
            if component is None and k > 1:
                component = "magnitude"
            if k == 1:
                component = None
            self.color = {"array": array, "association": entry["association"],
                          "component": component}  # fmt: skip
            self.fixed_range = None
        self.set_look(colormap=colormap, range_=range_)

    def set_look(
        self, *, colormap: str | None = None, range_: tuple[float, float] | str | None = None
    ) -> None:
        if colormap is not None:
            try:
                self.colormap = canonical(colormap)
            except KeyError:
                raise ConfigError(
                    f"unknown colour map {colormap!r}; use one of {', '.join(COLORMAPS)}"
                ) from None
        if range_ == "auto":
            self.fixed_range = None
        elif range_ is not None:
            lo, hi = (float(v) for v in range_)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ConfigError(f"a colour range needs two finite numbers lo < hi; got {range_}")
            self.fixed_range = (lo, hi)
        self.rebuild()

    def data_range(self) -> tuple[float, float] | None:
        if self.color is None or self.data is None:
            return None
        entry = self._find(self.color["array"], self.color["association"])
        component = self.color["component"]
        if isinstance(component, int):
            lo, hi = entry["component_ranges"][component]
        else:
            lo, hi = entry["range"]
        return float(lo), float(hi)

    # --- filters -----------------------------------------------------------------------

    def add_filter(self, kind: str, spec: Mapping[str, Any]) -> None:
        if self.data is None:
            raise ConfigError("load a dataset first")
        if kind == "slice" or kind == "clip":
            bounds = self.data.GetBounds()
            centre = [(bounds[2 * i] + bounds[2 * i + 1]) / 2 for i in range(3)]
            made: dict[str, Any] = {
                "type": kind,
                "origin": list(_vector(spec.get("origin") or centre, "origin")),
                "normal": list(_vector(spec.get("normal") or (1.0, 0.0, 0.0), "normal")),
            }
            if kind == "clip":
                made["invert"] = bool(spec.get("invert", False))
        elif kind == "contour":
            made = self._contour_spec(spec)
        elif kind == "threshold":
            made = self._threshold_spec(spec)
        else:
            raise ConfigError(f"unknown filter {kind!r}; use one of {', '.join(FILTERS)}")
        # Calling slice() again moves the slice: one filter of each type, in the order added.
        for i, existing in enumerate(self.filters):
            if existing["type"] == kind:
                self.filters[i] = made
                break
        else:
            self.filters.append(made)
        self.rebuild()

    def clear_filters(self) -> None:
        self.filters = []
        self.rebuild()

    def _scalar_array(self, name: str | None) -> dict[str, Any]:
        if name is not None:
            return self._find(name, None)
        if self.color is not None:
            return self._find(self.color["array"], self.color["association"])
        default = self._default_color()
        if default is None:
            raise ConfigError(f"{self._name()!r} has no scalar array to contour or threshold")
        return self._find(default["array"], default["association"])

    def _contour_spec(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        entry = self._scalar_array(spec.get("array"))
        values = [float(v) for v in spec.get("values") or ()]
        if not values:
            # The median, not the mid-range: on skewed data the mid-range can miss almost
            # everything, while the median cuts through half the points.
            values = [self._median(entry)]
        return {"type": "contour", "array": entry["name"], "association": entry["association"],
                "values": values}  # fmt: skip

    def _median(self, entry: Mapping[str, Any]) -> float:
        from vtkmodules.util.numpy_support import vtk_to_numpy

        data = self.loaded()
        point = entry["association"] == "point"
        fields = data.GetPointData() if point else data.GetCellData()
        values = vtk_to_numpy(fields.GetArray(entry["name"]))  # type: ignore[no-untyped-call]
        if values.ndim > 1:
            values = (values.astype(float) ** 2).sum(axis=1) ** 0.5
        import numpy as np

        return float(np.median(values))

    def _threshold_spec(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        entry = self._scalar_array(spec.get("array"))
        lo, hi = spec.get("range") or entry["range"]
        if not float(lo) <= float(hi):
            raise ConfigError(f"a threshold range needs lo <= hi; got {lo}, {hi}")
        return {"type": "threshold", "array": entry["name"], "association": entry["association"],
                "range": [float(lo), float(hi)]}  # fmt: skip

    # --- display -----------------------------------------------------------------------

    def set_display(self, **changes: Any) -> None:
        rep = changes.get("representation")
        if rep is not None:
            if rep not in REPRESENTATIONS:
                raise ConfigError(
                    f"unknown representation {rep!r}; use one of {', '.join(REPRESENTATIONS)}"
                )
            if rep == "volume" and not isinstance(self.data, vtkImageData):
                kind = self.data.GetClassName() if self.data is not None else "nothing"
                raise ConfigError(
                    f"volume rendering needs image data (.vti, the wavelet); this is {kind}: "
                    "use surface, slice or contour"
                )
            if rep == "volume" and self.color is None:
                raise ConfigError("volume rendering needs an array to colour by; pick one first")
            self.representation = rep
        for key, attr in (("scalar_bar", "scalar_bar"), ("axes", "axes"),
                          ("outline", "show_outline")):  # fmt: skip
            if changes.get(key) is not None:
                setattr(self, attr, bool(changes[key]))
        self.set_look(colormap=changes.get("colormap"), range_=changes.get("range"))

    def rebuild(self) -> None:
        """Connect the chain for the current settings; bumps the state counter."""
        self.version += 1
        if self.data is None:
            return
        upstream: vtkAlgorithm = self.producer
        self._chain = [upstream]
        for spec in self.filters:
            upstream = make_filter(spec, upstream)
            self._chain.append(upstream)
        volume = self.representation == "volume" and not self.filters
        if self.representation == "outline":
            self.mapper.SetInputConnection(self.outline.GetOutputPort())
        else:
            self.surface.SetInputConnection(upstream.GetOutputPort())
            self.mapper.SetInputConnection(self.surface.GetOutputPort())
        prop = self.actor.GetProperty()
        prop.SetEdgeVisibility(self.representation == "surface with edges")
        prop.SetEdgeColor(0.1, 0.1, 0.1)
        if self.representation == "wireframe":
            prop.SetRepresentationToWireframe()
        elif self.representation == "points":
            prop.SetRepresentationToPoints()
            prop.SetPointSize(3)
        else:
            prop.SetRepresentationToSurface()
        prop.SetSpecular(0.3)
        prop.SetSpecularPower(30)
        self.actor.SetVisibility(not volume)
        self.volume.SetVisibility(volume)
        self.outline_actor.SetVisibility(self.show_outline and self.representation != "outline")
        self.axes_renderer.SetDraw(self.axes)
        self._apply_colors(volume)
        self.mapper.Update()

    def _apply_colors(self, volume: bool) -> None:
        drange = self.data_range()
        if self.color is None or drange is None:
            self.mapper.ScalarVisibilityOff()
            self.actor.GetProperty().SetColor(*_SOLID)
            self.bar.VisibilityOff()
            self.actor.SetVisibility(True)
            self.volume.SetVisibility(False)
            return
        lo, hi = self.fixed_range or drange
        name = self.colormap or default_colormap(*drange)
        lut = lookup_table(name, lo, hi)
        lut.SetNanColor(0.55, 0.55, 0.55)  # blocks without the array
        component = self.color["component"]
        if component == "magnitude":
            lut.SetVectorModeToMagnitude()
        elif isinstance(component, int):
            lut.SetVectorModeToComponent()
            lut.SetVectorComponent(component)
        self.mapper.SetLookupTable(lut)
        self.mapper.UseLookupTableScalarRangeOn()
        self.mapper.SetColorModeToMapScalars()
        self.mapper.ScalarVisibilityOn()
        if self.color["association"] == "point":
            self.mapper.SetScalarModeToUsePointFieldData()
        else:
            self.mapper.SetScalarModeToUseCellFieldData()
        self.mapper.SelectColorArray(self.color["array"])
        self.actor.GetProperty().SetColor(1.0, 1.0, 1.0)
        if volume:
            self._volume_look(lut, lo, hi)
        title = self.color["array"]
        if component == "magnitude":
            title += " magnitude"
        elif isinstance(component, int):
            title += f" [{component}]"
        self.bar.SetLookupTable(lut)
        self.bar.SetTitle(title)
        self.bar.SetVisibility(self.scalar_bar)

    def _volume_look(self, lut: Any, lo: float, hi: float) -> None:
        from vtkmodules.vtkCommonDataModel import vtkPiecewiseFunction

        if self.color is None:
            return
        self.volume_mapper.SetInputConnection(self.producer.GetOutputPort())
        self.volume_mapper.SetScalarModeToUsePointFieldData()
        self.volume_mapper.SelectScalarArray(self.color["array"])
        opacity = vtkPiecewiseFunction()
        opacity.AddPoint(lo, 0.0)
        opacity.AddPoint(hi, 0.6)
        prop = vtkVolumeProperty()
        prop.SetColor(lut)
        prop.SetScalarOpacity(opacity)
        prop.SetInterpolationTypeToLinear()
        self.volume.SetProperty(prop)

    def before_render(self) -> None:
        """Turn the orientation axes with the main camera."""
        if not self.axes:
            return
        cam = self.renderer.GetActiveCamera()
        axes_cam = self.axes_renderer.GetActiveCamera()
        fx, fy, fz = cam.GetFocalPoint()
        px, py, pz = cam.GetPosition()
        d = math.dist((fx, fy, fz), (px, py, pz)) or 1.0
        axes_cam.SetFocalPoint(0.0, 0.0, 0.0)
        axes_cam.SetPosition((px - fx) / d * 5, (py - fy) / d * 5, (pz - fz) / d * 5)
        axes_cam.SetViewUp(*cam.GetViewUp())
        self.axes_renderer.ResetCamera()

    def visible_bounds(self) -> tuple[float, ...] | None:
        if self.representation == "volume" or self.data is None:
            return None
        poly = self.mapper.GetInput()
        if poly is None or poly.GetNumberOfPoints() == 0:
            return None
        return tuple(float(b) for b in poly.GetBounds())

    # --- state -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        source = self.source
        drange = self.data_range()
        arrays = _arrays(self.data) if self.data is not None else []
        return {
            "version": self.version,
            "dataset": None
            if source is None or self.data is None
            else {
                "name": source.name,
                "reader": source.reader,
                "kind": str(self.data.GetClassName()),
                "points": int(self.data.GetNumberOfPoints()),
                "cells": int(self.data.GetNumberOfCells()),
                "bounds": [float(b) for b in self.data.GetBounds()],
            },
            "arrays": arrays,
            "color": dict(self.color) if self.color else None,
            "colormap": (self.colormap or default_colormap(*drange)) if drange else None,
            "colormaps": list(COLORMAPS),
            "range": list(self.fixed_range or drange) if drange else None,
            "range_mode": "fixed" if self.fixed_range else "auto",
            "representation": self.representation,
            "representations": [
                r for r in REPRESENTATIONS if r != "volume" or isinstance(self.data, vtkImageData)
            ],
            "scalar_bar": self.scalar_bar,
            "axes": self.axes,
            "outline": self.show_outline,
            "filters": [dict(f) for f in self.filters],
            "times": list(source.times) if source else [],
            "time": self.step,
            "blocks": [
                {
                    "index": i,
                    "name": name,
                    "kind": str(block.GetClassName()),
                    "selected": i in self.selected,
                }
                for i, (name, block) in enumerate(self.blocks[:_MAX_BLOCKS])
            ],
        }
