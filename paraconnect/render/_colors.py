"""Colour maps by name, built into VTK lookup tables, and the rule that picks one by default.

The perceptual maps (viridis, plasma, inferno, magma, cividis, turbo) are matplotlib's, sampled
at 17 evenly spaced points and interpolated linearly in RGB (a 256-entry table from them differs
from matplotlib's by under 1/100 per channel).  "Cool to Warm" is Moreland's diverging map, as
ParaView's default, interpolated in VTK's diverging colour space.
"""

from __future__ import annotations

from vtkmodules.vtkRenderingCore import vtkColorTransferFunction

__all__ = ["COLORMAPS", "DIVERGING", "SEQUENTIAL", "default_colormap", "lookup_table"]

SEQUENTIAL = "viridis"
DIVERGING = "Cool to Warm"

_SAMPLED: dict[str, tuple[tuple[float, float, float], ...]] = {
    "viridis": (
        (0.2670, 0.0049, 0.3294),
        (0.2823, 0.0950, 0.4173),
        (0.2788, 0.1755, 0.4834),
        (0.2590, 0.2515, 0.5247),
        (0.2297, 0.3224, 0.5457),
        (0.1994, 0.3876, 0.5546),
        (0.1727, 0.4488, 0.5579),
        (0.1490, 0.5081, 0.5573),
        (0.1276, 0.5669, 0.5506),
        (0.1201, 0.6222, 0.5349),
        (0.1539, 0.6802, 0.5042),
        (0.2394, 0.7356, 0.4557),
        (0.3607, 0.7860, 0.3878),
        (0.5063, 0.8288, 0.3004),
        (0.6681, 0.8620, 0.1963),
        (0.8353, 0.8860, 0.1026),
        (0.9932, 0.9062, 0.1439),
    ),
    "plasma": (
        (0.0504, 0.0298, 0.5280),
        (0.1934, 0.0184, 0.5903),
        (0.2999, 0.0096, 0.6316),
        (0.3994, 0.0009, 0.6561),
        (0.4949, 0.0120, 0.6579),
        (0.5844, 0.0686, 0.6328),
        (0.6651, 0.1386, 0.5856),
        (0.7360, 0.2094, 0.5279),
        (0.7982, 0.2802, 0.4695),
        (0.8501, 0.3470, 0.4172),
        (0.8990, 0.4204, 0.3630),
        (0.9403, 0.4976, 0.3092),
        (0.9718, 0.5804, 0.2549),
        (0.9907, 0.6696, 0.2016),
        (0.9935, 0.7655, 0.1569),
        (0.9763, 0.8680, 0.1434),
        (0.9400, 0.9752, 0.1313),
    ),
    "inferno": (
        (0.0015, 0.0005, 0.0139),
        (0.0423, 0.0281, 0.1411),
        (0.1293, 0.0473, 0.2908),
        (0.2383, 0.0366, 0.3964),
        (0.3415, 0.0623, 0.4294),
        (0.4412, 0.0993, 0.4316),
        (0.5409, 0.1347, 0.4151),
        (0.6401, 0.1714, 0.3811),
        (0.7357, 0.2159, 0.3302),
        (0.8173, 0.2710, 0.2704),
        (0.8903, 0.3480, 0.1983),
        (0.9443, 0.4428, 0.1204),
        (0.9771, 0.5508, 0.0391),
        (0.9879, 0.6677, 0.0583),
        (0.9761, 0.7900, 0.1960),
        (0.9487, 0.9105, 0.3953),
        (0.9884, 0.9984, 0.6449),
    ),
    "magma": (
        (0.0015, 0.0005, 0.0139),
        (0.0396, 0.0311, 0.1335),
        (0.1131, 0.0655, 0.2768),
        (0.2117, 0.0620, 0.4186),
        (0.3167, 0.0717, 0.4854),
        (0.4147, 0.1104, 0.5047),
        (0.5128, 0.1482, 0.5076),
        (0.6136, 0.1818, 0.4985),
        (0.7164, 0.2150, 0.4753),
        (0.8109, 0.2529, 0.4393),
        (0.8996, 0.3146, 0.3910),
        (0.9585, 0.4113, 0.3600),
        (0.9857, 0.5281, 0.3794),
        (0.9958, 0.6463, 0.4414),
        (0.9970, 0.7624, 0.5288),
        (0.9928, 0.8772, 0.6331),
        (0.9871, 0.9914, 0.7495),
    ),
    "cividis": (
        (0.0000, 0.1351, 0.3048),
        (0.0000, 0.1788, 0.4148),
        (0.1034, 0.2204, 0.4358),
        (0.1951, 0.2644, 0.4259),
        (0.2637, 0.3078, 0.4228),
        (0.3242, 0.3513, 0.4263),
        (0.3808, 0.3952, 0.4357),
        (0.4352, 0.4398, 0.4511),
        (0.4887, 0.4853, 0.4710),
        (0.5441, 0.5289, 0.4719),
        (0.6052, 0.5768, 0.4644),
        (0.6680, 0.6262, 0.4493),
        (0.7324, 0.6774, 0.4257),
        (0.7985, 0.7306, 0.3926),
        (0.8664, 0.7860, 0.3466),
        (0.9367, 0.8438, 0.2809),
        (0.9957, 0.9093, 0.2178),
    ),
    "turbo": (
        (0.1900, 0.0718, 0.2322),
        (0.2511, 0.2524, 0.6337),
        (0.2763, 0.4212, 0.8912),
        (0.2586, 0.5796, 0.9988),
        (0.1584, 0.7355, 0.9231),
        (0.0927, 0.8655, 0.7623),
        (0.1966, 0.9490, 0.5947),
        (0.4278, 0.9942, 0.3857),
        (0.6436, 0.9900, 0.2336),
        (0.7952, 0.9303, 0.2039),
        (0.9267, 0.8203, 0.2257),
        (0.9916, 0.6841, 0.2071),
        (0.9859, 0.5048, 0.1337),
        (0.9262, 0.3247, 0.0584),
        (0.8240, 0.1918, 0.0197),
        (0.6754, 0.0898, 0.0045),
        (0.4796, 0.0158, 0.0106),
    ),
}

_OTHER: dict[str, tuple[tuple[float, float, float], ...]] = {
    "grayscale": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "jet": (
        (0.0, 0.0, 0.5),
        (0.0, 0.0, 1.0),
        (0.0, 0.5, 1.0),
        (0.0, 1.0, 1.0),
        (0.5, 1.0, 0.5),
        (1.0, 1.0, 0.0),
        (1.0, 0.5, 0.0),
        (1.0, 0.0, 0.0),
        (0.5, 0.0, 0.0),
    ),
    DIVERGING: ((0.230, 0.299, 0.754), (0.706, 0.016, 0.150)),
}

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
