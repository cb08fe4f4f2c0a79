"""Checks of request fields shared by the render protocol's parsers (``_protocol.py``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar, dataclass_transform

from ..errors import ProtocolError

__all__ = ["BadRequest", "RequestId", "request"]

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def request(cls: type[_T]) -> type[_T]:
    """A request of the protocol, as parsed: a frozen dataclass with slots (it never changes
    once read, and the server keeps many)."""
    return dataclass(frozen=True, slots=True)(cls)


RequestId = int | str | None


class BadRequest(ProtocolError):
    """A well-framed request that cannot be carried out; the connection stays open.

    ``kind`` says who is at fault: ``"protocol"`` (the request itself), ``"config"`` (a value:
    a size, a dataset name, a path) or ``"server"`` (the renderer failed).
    """

    def __init__(self, message: str, *, kind: str = "protocol", request_id: RequestId = None):
        super().__init__(message)
        self.kind = kind
        self.request_id = request_id


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def number(header: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = header.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{key!r} must be a finite number", kind="config")
    if not lo <= value <= hi:
        raise BadRequest(f"{key!r} is {value}; it must be from {lo:g} to {hi:g}", kind="config")
    return float(value)


def integer(header: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = header.get(key, default)
    if not is_int(value):
        raise BadRequest(f"{key!r} must be a whole number", kind="config")
    if not lo <= value <= hi:
        raise BadRequest(f"{key!r} is {value}; it must be from {lo} to {hi}", kind="config")
    return int(value)


def flag(header: Mapping[str, Any], key: str) -> bool:
    value = header.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{key!r} must be true or false", kind="config")
    return value


def choice(header: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str | None:
    value = header.get(key)
    if value is None:
        return None
    if value not in allowed:
        raise BadRequest(
            f"unknown {key} {str(value)[:20]!r}; use one of {', '.join(allowed)}", kind="config"
        )
    return str(value)


def string(header: Mapping[str, Any], key: str) -> str | None:
    value = header.get(key)
    if value is not None and (not isinstance(value, str) or not value or len(value) > 256):
        raise BadRequest(f"{key!r} must be a non-empty string", kind="config")
    return value


def numbers(header: Mapping[str, Any], key: str, n: int | None) -> tuple[float, ...] | None:
    value = header.get(key)
    if value is None:
        return None
    ok = isinstance(value, list) and (n is None or len(value) == n) and len(value) <= 64
    if ok:
        ok = all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    if not ok:
        size = f"{n} " if n else ""
        raise BadRequest(f"{key!r} must be a list of {size}finite numbers", kind="config")
    return tuple(float(v) for v in value)


def pair(header: Mapping[str, Any], key: str, lo: float, hi: float) -> tuple[float, float] | None:
    pair = numbers(header, key, 2)
    if pair is None:
        return None
    if not all(lo <= v <= hi for v in pair):
        raise BadRequest(f"{key!r} values must be from {lo:g} to {hi:g}", kind="config")
    return pair[0], pair[1]


def range_(header: Mapping[str, Any]) -> tuple[float, float] | str | None:
    if header.get("range") == "auto":
        return "auto"
    pair = numbers(header, "range", 2)
    if pair is not None and not pair[0] < pair[1]:
        raise BadRequest(f"'range' must be [lo, hi] with lo < hi; got {list(pair)}", kind="config")
    return None if pair is None else (pair[0], pair[1])


def bool_or_none(header: Mapping[str, Any], key: str) -> bool | None:
    return None if header.get(key) is None else flag(header, key)
