"""The filters a scientist chains onto a dataset (slice, clip, contour, threshold), built from
the JSON specs the pipeline state holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vtkmodules.vtkCommonDataModel import vtkDataObject, vtkPlane
from vtkmodules.vtkCommonExecutionModel import vtkAlgorithm
from vtkmodules.vtkFiltersCore import (
    vtkCellDataToPointData,
    vtkContourFilter,
    vtkCutter,
    vtkThreshold,
)
from vtkmodules.vtkFiltersGeneral import vtkClipDataSet

__all__ = ["make_filter"]


def make_filter(spec: Mapping[str, Any], upstream: vtkAlgorithm) -> vtkAlgorithm:
    """The VTK filter for one filter spec of the pipeline state, fed from ``upstream``."""
    kind = spec["type"]
    if kind in ("slice", "clip"):
        plane = vtkPlane()
        plane.SetOrigin(*spec["origin"])
        plane.SetNormal(*spec["normal"])
        cut: vtkAlgorithm
        if kind == "slice":
            cut = vtkCutter()
            cut.SetCutFunction(plane)
        else:
            cut = vtkClipDataSet()
            cut.SetClipFunction(plane)
            cut.SetInsideOut(bool(spec["invert"]))
        cut.SetInputConnection(upstream.GetOutputPort())
        return cut
    if kind == "contour":
        source = upstream
        if spec["association"] == "cell":
            to_points = vtkCellDataToPointData()
            to_points.SetInputConnection(upstream.GetOutputPort())
            source = to_points
        contour = vtkContourFilter()
        contour.SetInputConnection(source.GetOutputPort())
        contour.SetInputArrayToProcess(0, 0, 0, vtkDataObject.FIELD_ASSOCIATION_POINTS,
                                       spec["array"])  # fmt: skip
        for i, value in enumerate(spec["values"]):
            contour.SetValue(i, value)
        contour.ComputeScalarsOn()
        return contour
    threshold = vtkThreshold()
    threshold.SetInputConnection(upstream.GetOutputPort())
    where = (vtkDataObject.FIELD_ASSOCIATION_POINTS if spec["association"] == "point"
             else vtkDataObject.FIELD_ASSOCIATION_CELLS)  # fmt: skip
    threshold.SetInputArrayToProcess(0, 0, 0, where, spec["array"])
    threshold.SetLowerThreshold(spec["range"][0])
    threshold.SetUpperThreshold(spec["range"][1])
    threshold.SetThresholdFunction(vtkThreshold.THRESHOLD_BETWEEN)
    return threshold
