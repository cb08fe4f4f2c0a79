"""The render protocol's requests about what the scene shows (documented in ``_protocol.py``):
files, state, color, display, filter, time, blocks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._fields import (
    BadRequest,
    RequestId,
    bool_or_none,
    choice,
    flag,
    integer,
    is_int,
    numbers,
    range_,
    request,
    string,
)

__all__ = ["FILTER_ACTIONS", "SCENE_FIELDS", "SCENE_PARSERS"]

FILTER_ACTIONS = ("slice", "clip", "contour", "threshold", "clear")
SCENE_FIELDS: dict[str, frozenset[str]] = {
    "files": frozenset({"path"}),
    "state": frozenset(),
    "color": frozenset({"array", "association", "component", "colormap", "range"}),
    "display": frozenset({"representation", "scalar_bar", "axes", "outline", "colormap", "range"}),
    "filter": frozenset({"action", "origin", "normal", "invert", "array", "values", "range"}),
    "time": frozenset({"index"}),
    "blocks": frozenset({"select"}),
}


@request
class Files:
    path: str = ""
    id: RequestId = None


@request
class State:
    id: RequestId = None


@request
class Color:
    array: str | None
    association: str | None = None
    component: int | str | None = None
    colormap: str | None = None
    range: tuple[float, float] | str | None = None
    id: RequestId = None


@request
class Display:
    representation: str | None = None
    scalar_bar: bool | None = None
    axes: bool | None = None
    outline: bool | None = None
    colormap: str | None = None
    range: tuple[float, float] | str | None = None
    id: RequestId = None


@request
class Filter:
    action: str
    spec: Mapping[str, Any]
    id: RequestId = None


@request
class Time:
    index: int
    id: RequestId = None


@request
class Blocks:
    select: tuple[int, ...]
    id: RequestId = None


def _files(header: Mapping[str, Any], rid: RequestId) -> Files:
    path = header.get("path", "")
    if not isinstance(path, str) or "\0" in path or len(path) > 4096:
        raise BadRequest("'path' must be a string (a folder under the data root)", kind="config")
    return Files(path=path, id=rid)


def _color(header: Mapping[str, Any], rid: RequestId) -> Color:
    if "array" not in header:
        raise BadRequest("'color' needs 'array' (a name, or null for one solid colour)")
    component = header.get("component")
    if not (component is None or component == "magnitude" or is_int(component)):
        raise BadRequest("'component' must be a whole number or 'magnitude'", kind="config")
    return Color(
        array=string(header, "array"),
        association=choice(header, "association", ("point", "cell")),
        component=component,
        colormap=string(header, "colormap"),
        range=range_(header),
        id=rid,
    )


def _display(header: Mapping[str, Any], rid: RequestId) -> Display:
    return Display(
        representation=string(header, "representation"),
        scalar_bar=bool_or_none(header, "scalar_bar"),
        axes=bool_or_none(header, "axes"),
        outline=bool_or_none(header, "outline"),
        colormap=string(header, "colormap"),
        range=range_(header),
        id=rid,
    )


def _filter(header: Mapping[str, Any], rid: RequestId) -> Filter:
    action = choice(header, "action", FILTER_ACTIONS)
    if action is None:
        raise BadRequest(f"'filter' needs an 'action': one of {', '.join(FILTER_ACTIONS)}")
    spec: dict[str, Any] = {}
    for key in ("origin", "normal"):
        if (vector := numbers(header, key, 3)) is not None:
            spec[key] = vector
    if (values := numbers(header, "values", None)) is not None:
        spec["values"] = values
    if (pair := numbers(header, "range", 2)) is not None:
        spec["range"] = pair
    if (array := string(header, "array")) is not None:
        spec["array"] = array
    if "invert" in header:
        spec["invert"] = flag(header, "invert")
    return Filter(action=action, spec=spec, id=rid)


def _time(header: Mapping[str, Any], rid: RequestId) -> Time:
    return Time(index=integer(header, "index", 0, 0, 1_000_000), id=rid)


def _blocks(header: Mapping[str, Any], rid: RequestId) -> Blocks:
    select = header.get("select")
    if not (isinstance(select, list) and 0 < len(select) <= 100_000 and all(map(is_int, select))):
        raise BadRequest("'select' must be a non-empty list of block indices", kind="config")
    return Blocks(select=tuple(select), id=rid)


SCENE_PARSERS: dict[str, Callable[[Mapping[str, Any], RequestId], Any]] = {
    "files": _files,
    "state": lambda header, rid: State(id=rid),
    "color": _color,
    "display": _display,
    "filter": _filter,
    "time": _time,
    "blocks": _blocks,
}
