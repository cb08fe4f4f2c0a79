"""Colour maps by name, built into VTK lookup tables, and the rule that picks one by default.

The perceptual maps (viridis, plasma, inferno, magma, cividis, turbo) are matplotlib's, sampled
at 17 evenly spaced points and interpolated linearly in RGB (a 256-entry table from them differs
from matplotlib's by under 1/100 per channel).  "Cool to Warm" is Moreland's diverging map, as
ParaView's default, interpolated in VTK's diverging colour space.  The points are data, in
``colormaps.json`` beside this module.
"""

from __future__ import annotations

import json
from importlib import resources

from vtkmodules.vtkRenderingCore import vtkColorTransferFunction

__all__ = ["COLORMAPS", "DIVERGING", "SEQUENTIAL", "default_colormap", "lookup_table"]

SEQUENTIAL = "viridis"
DIVERGING = "Cool to Warm"

_Points = tuple[tuple[float, float, float], ...]


def _tables() -> tuple[dict[str, _Points], dict[str, _Points]]:
    """The maps' RGB points (colormaps.json): the sampled perceptual maps, and the others."""
    data = json.loads(resources.files(__package__).joinpath("colormaps.json").read_text())

    def points(maps: dict[str, list[list[float]]]) -> dict[str, _Points]:
        return {name: tuple((r, g, b) for r, g, b in rows) for name, rows in maps.items()}

    return points(data["sampled"]), points(data["other"])


_SAMPLED, _OTHER = _tables()

COLORMAPS = (*_SAMPLED, "grayscale", DIVERGING, "jet")
_BY_KEY = {name.lower().replace(" ", "").replace("_", ""): name for name in COLORMAPS}
_BY_KEY.update({"coolwarm": DIVERGING, "gray": "grayscale", "greyscale": "grayscale"})


def canonical(name: str) -> str:
    """The map's own name for any spelling ("cool_to_warm", "Viridis"); ConfigError-free:
    raises KeyError with the known names for the caller to word."""
    key = name.lower().replace(" ", "").replace("_", "").replace("-", "")
    return _BY_KEY[key]


def default_colormap(lo: float, hi: float) -> str:
    """Diverging for data that spans zero with both signs, sequential otherwise."""
    return DIVERGING if lo < 0.0 < hi else SEQUENTIAL


def lookup_table(name: str, lo: float, hi: float) -> vtkColorTransferFunction:
    """A transfer function from lo to hi (a zero-width range is widened so VTK can map it)."""
    name = canonical(name)
    if not hi > lo:
        pad = abs(lo) * 1e-6 or 1e-6
        lo, hi = lo - pad, hi + pad
    points = _SAMPLED.get(name) or _OTHER[name]
    ctf = vtkColorTransferFunction()
    if name == DIVERGING:
        ctf.SetColorSpaceToDiverging()
    else:
        ctf.SetColorSpaceToRGB()
    last = len(points) - 1
    for i, (r, g, b) in enumerate(points):
        ctf.AddRGBPoint(lo + (hi - lo) * i / last, r, g, b)
    ctf.Build()
    return ctf
