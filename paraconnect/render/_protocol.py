"""The frame protocol of paraconnect's built-in renderer, version 1.

Wire format
-----------
Every message, both ways, is one frame::

    u32 header_length | u32 payload_length | header (UTF-8 JSON object) | payload (bytes)

Lengths are big-endian.  The header is a JSON object with an ``"op"`` string.  Only the server
sends payloads (encoded images); a client frame's payload length must be 0.

Limits: a header is at most 64 KiB (``MAX_HEADER``); a server payload at most 512 MiB
(``MAX_PAYLOAD``).

Client → server (each may carry an ``"id"`` (int or string), echoed in the reply):

=========  =================================================================================
``hello``  ``{"op": "hello", "v": 1}``: must be the first message (a client ends it with CRLF CRLF,
           JSON whitespace, so that an HTTP server on the port answers at once).
``load``   ``{"op": "load", "dataset": "wavelet"|"sphere"|"cone", ...options}`` or
           ``{"op": "load", "path": "/data/x.vtu"}``; options: ``triangles`` (sphere),
           ``resolution`` (cone), ``extent`` (wavelet half-size), ``representation``
           (``"surface"``, ``"wireframe"``, ``"points"``, ``"outline"``, ``"contour"``).
``resize`` ``{"op": "resize", "w": 1280, "h": 720}`` (1..8192 each).
``camera`` ``{"op": "camera", "azimuth": deg, "elevation": deg, "zoom": factor,
           "reset": bool}``: all optional; reset first, then azimuth, elevation, zoom.
``render`` ``{"op": "render", "format": "jpeg"|"png", "quality": 1..100, "optimize": bool}``:
           one frame back; ``optimize`` makes JPEG Huffman tables optimal (about a third
           smaller, about twice the encode time: for slow links).
``stream`` ``{"op": "stream", "fps": 30, "spin": 0.0, "format", "quality", "optimize"}``: frames
           are pushed whenever the scene changed (or every frame while ``spin`` degrees of
           azimuth per frame is not 0), at most ``fps`` per second (0: as fast as possible).
``stop``   stops the stream; its reply comes after the last stream frame.
``bye``    the server replies and closes.
=========  =================================================================================

Server → client:

- ``{"op": "hello", "v": 1, "server": ..., "window": ..., "gl_vendor": ..., "gl_renderer": ...,
  "formats": [...], "datasets": [...], "max_size": 8192}`` answers ``hello``;
- ``{"op": "ok", "id": ..., ...}`` answers ``load`` (with ``"dataset"`` facts), ``resize``,
  ``camera``, ``stream``, ``stop``, ``bye``;
- ``{"op": "frame", "id": ..., "stream": bool, "n": frame_number, "w": ..., "h": ...,
  "format": "jpeg"|"png", "render_ms": ..., "encode_ms": ..., "t": server_epoch_seconds}``
  with the encoded image as payload;
- ``{"op": "error", "id": ..., "kind": "protocol"|"config"|"server", "fatal": bool,
  "message": "..."}``.

Errors and the connection
-------------------------
- Framing errors (a header over the limit, a client payload, bytes that end mid-frame) are fatal:
  the server sends a fatal error if it can and closes, because it cannot find the next frame.
- A bad first message, and a ``hello`` with a version the server does not speak, are fatal.
- Anything else (a header that is not a JSON object, an unknown op, a bad field, a missing file,
  an unknown dataset, a bad size) gets a non-fatal error reply and the connection stays open.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from ..errors import ProtocolError

__all__ = [
    "DATASETS",
    "FORMATS",
    "MAX_HEADER",
    "MAX_PAYLOAD",
    "MAX_SIZE",
    "PREFIX",
    "REPRESENTATIONS",
    "VERSION",
    "BadRequest",
    "Bye",
    "Camera",
    "FrameDecoder",
    "Hello",
    "Load",
    "Message",
    "Render",
    "Request",
    "Resize",
    "Stop",
    "Stream",
    "encode_message",
    "parse_request",
]

VERSION = 1
PREFIX = struct.Struct(">II")
MAX_HEADER = 64 * 1024
MAX_PAYLOAD = 512 * 1024 * 1024
MAX_SIZE = 8192
FORMATS = ("jpeg", "png")
DATASETS = ("wavelet", "sphere", "cone")
REPRESENTATIONS = ("auto", "surface", "wireframe", "points", "outline", "contour")

Format = Literal["jpeg", "png"]
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


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded frame: its JSON header and its payload."""

    header: dict[str, Any]
    payload: bytes = b""


# JSON whitespace a client may end its hello with: a line-based server that is not ours (HTTP,
# such as Jupyter) then reads a whole, bad request line and answers at once, where it would
# otherwise wait silently for the end of a line.
HELLO_TAIL = "\r\n\r\n"


def encode_message(header: Mapping[str, Any], payload: bytes = b"", *, tail: str = "") -> bytes:
    """Frame one message (`tail`: JSON whitespace after the header's object).  Raises
    ProtocolError if it is over the limits."""
    try:
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"a message header is not plain JSON: {exc}") from None
    if tail.strip():
        raise ProtocolError("a header's tail must be JSON whitespace")
    raw = (text + tail).encode()
    if len(raw) > MAX_HEADER:
        raise ProtocolError(f"a {len(raw)}-byte header is over the {MAX_HEADER}-byte limit")
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"a {len(payload)}-byte payload is over the {MAX_PAYLOAD}-byte limit")
    return PREFIX.pack(len(raw), len(payload)) + raw + payload


class FrameDecoder:
    """Sans-IO decoder: ``feed()`` bytes, take complete messages from ``next_message()``.

    ``max_payload`` is 0 on the server (clients send no payloads).  Framing errors raise
    ProtocolError and leave the decoder unusable: the stream has lost its place.
    """

    def __init__(self, *, max_payload: int = MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self._max_payload = max_payload
        self._broken = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    def head(self, n: int) -> bytes:
        """The first `n` bytes not yet decoded (to show what a peer that is not ours sent)."""
        return bytes(self._buf[:n])

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a returned message."""
        return len(self._buf)

    def need(self) -> int:
        """How many more bytes complete the next message (at least 1)."""
        if len(self._buf) < PREFIX.size:
            return PREFIX.size - len(self._buf)
        hlen, plen = PREFIX.unpack_from(self._buf)
        return max(1, int(PREFIX.size + hlen + plen) - len(self._buf))

    def next_message(self) -> Message | None:
        if self._broken:
            raise ProtocolError("the frame stream is broken; close the connection")
        if len(self._buf) < PREFIX.size:
            return None
        hlen, plen = PREFIX.unpack_from(self._buf)
        if hlen > MAX_HEADER:
            self._broken = True
            raise ProtocolError(
                f"the peer announced a {hlen}-byte header, over the {MAX_HEADER}-byte limit: "
                "it does not speak paraconnect's render protocol"
            )
        if plen > self._max_payload:
            self._broken = True
            if self._max_payload == 0:
                raise ProtocolError("a client sent a payload; requests are JSON headers only")
            raise ProtocolError(
                f"the peer announced a {plen}-byte payload, over the {self._max_payload}-byte limit"
            )
        end = PREFIX.size + hlen + plen
        if len(self._buf) < end:
            return None
        raw = bytes(self._buf[PREFIX.size : PREFIX.size + hlen])
        payload = bytes(self._buf[PREFIX.size + hlen : end])
        del self._buf[:end]
        return Message(_decode_header(raw), payload)

    def eof(self) -> None:
        """Call at end of stream: raises ProtocolError if it ended mid-frame."""
        if self._buf:
            self._broken = True
            raise ProtocolError(
                f"the connection closed in the middle of a frame ({len(self._buf)} bytes "
                f"of {len(self._buf) + self.need()} received)"
            )


def _decode_header(raw: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("a message header is not UTF-8 JSON") from None
    except RecursionError:
        raise BadRequest("a message header is nested too deeply") from None
    if not isinstance(obj, dict):
        raise BadRequest("a message header is JSON but not an object")
    return obj


# --- requests ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    v: int
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Load:
    dataset: str | None
    path: str | None
    options: Mapping[str, Any]
    representation: str = "auto"
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Resize:
    w: int
    h: int
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Camera:
    azimuth: float = 0.0
    elevation: float = 0.0
    zoom: float = 1.0
    reset: bool = False
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Render:
    format: Format = "jpeg"
    quality: int = 85
    optimize: bool = False
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Stream:
    fps: float = 30.0
    spin: float = 0.0
    format: Format = "jpeg"
    quality: int = 85
    optimize: bool = False
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Stop:
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Bye:
    id: RequestId = None


Request = Hello | Load | Resize | Camera | Render | Stream | Stop | Bye

_FIELDS: dict[str, frozenset[str]] = {
    "hello": frozenset({"v", "client"}),
    "load": frozenset({"dataset", "path", "triangles", "resolution", "extent", "representation"}),
    "resize": frozenset({"w", "h"}),
    "camera": frozenset({"azimuth", "elevation", "zoom", "reset"}),
    "render": frozenset({"format", "quality", "optimize"}),
    "stream": frozenset({"fps", "spin", "format", "quality", "optimize"}),
    "stop": frozenset(),
    "bye": frozenset(),
}


def parse_request(header: Mapping[str, Any]) -> Request:
    """Validate one client header into a Request.  Raises BadRequest (non-fatal)."""
    rid = header.get("id")
    if not (rid is None or isinstance(rid, str) or (isinstance(rid, int) and _is_int(rid))):
        raise BadRequest("'id' must be an integer or a string")
    if isinstance(rid, str) and len(rid) > 128:
        raise BadRequest("'id' is longer than 128 characters")
    op = header.get("op")
    if not isinstance(op, str):
        raise BadRequest("a request has no 'op' string", request_id=rid)
    if op not in _FIELDS:
        shown = op if len(op) <= 40 else op[:40] + "..."
        raise BadRequest(
            f"unknown op {shown!r}; this server knows {', '.join(sorted(_FIELDS))}",
            request_id=rid,
        )
    extra = set(header) - _FIELDS[op] - {"op", "id"}
    if extra:
        names = ", ".join(sorted(repr(k)[:40] for k in extra)[:5])
        raise BadRequest(f"op {op!r} does not take {names}", request_id=rid)
    try:
        return _PARSERS[op](header, rid)
    except BadRequest as exc:
        exc.request_id = rid
        raise


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(header: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = header.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{key!r} must be a finite number", kind="config")
    if not lo <= value <= hi:
        raise BadRequest(f"{key!r} is {value}; it must be from {lo:g} to {hi:g}", kind="config")
    return float(value)


def _integer(header: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = header.get(key, default)
    if not _is_int(value):
        raise BadRequest(f"{key!r} must be a whole number", kind="config")
    if not lo <= value <= hi:
        raise BadRequest(f"{key!r} is {value}; it must be from {lo} to {hi}", kind="config")
    return int(value)


def _format(header: Mapping[str, Any]) -> Format:
    fmt = header.get("format", "jpeg")
    if fmt == "jpeg":
        return "jpeg"
    if fmt == "png":
        return "png"
    raise BadRequest(f"unknown image format {str(fmt)[:20]!r}; use 'jpeg' or 'png'", kind="config")


def _hello(header: Mapping[str, Any], rid: RequestId) -> Hello:
    v = header.get("v")
    if not _is_int(v):
        raise BadRequest("'hello' needs an integer protocol version 'v'")
    return Hello(v=v, id=rid)


def _load(header: Mapping[str, Any], rid: RequestId) -> Load:
    dataset, path = header.get("dataset"), header.get("path")
    if (dataset is None) == (path is None):
        raise BadRequest("'load' needs exactly one of 'dataset' or 'path'", kind="config")
    if dataset is not None and not isinstance(dataset, str):
        raise BadRequest("'dataset' must be a string", kind="config")
    if isinstance(dataset, str) and dataset not in DATASETS:
        raise BadRequest(
            f"unknown dataset {dataset[:40]!r}; the built-in ones are {', '.join(DATASETS)}",
            kind="config",
        )
    if path is not None and (not isinstance(path, str) or not path or "\0" in path):
        raise BadRequest("'path' must be a non-empty string", kind="config")
    rep = header.get("representation", "auto")
    if rep not in REPRESENTATIONS:
        raise BadRequest(
            f"unknown representation {str(rep)[:20]!r}; use one of {', '.join(REPRESENTATIONS)}",
            kind="config",
        )
    options: dict[str, Any] = {}
    if "triangles" in header:
        options["triangles"] = _integer(header, "triangles", 0, 8, 50_000_000)
    if "resolution" in header:
        options["resolution"] = _integer(header, "resolution", 0, 3, 100_000)
    if "extent" in header:
        options["extent"] = _integer(header, "extent", 0, 1, 256)
    return Load(dataset=dataset, path=path, options=options, representation=rep, id=rid)


def _resize(header: Mapping[str, Any], rid: RequestId) -> Resize:
    w, h = header.get("w"), header.get("h")
    if not (_is_int(w) and _is_int(h) and 1 <= w <= MAX_SIZE and 1 <= h <= MAX_SIZE):
        raise BadRequest(
            f"bad size {str(w)[:12]}x{str(h)[:12]}: 'w' and 'h' must be whole numbers "
            f"from 1 to {MAX_SIZE}",
            kind="config",
        )
    return Resize(w=int(w), h=int(h), id=rid)


def _camera(header: Mapping[str, Any], rid: RequestId) -> Camera:
    reset = _flag(header, "reset")
    return Camera(
        azimuth=_number(header, "azimuth", 0.0, -1e6, 1e6),
        elevation=_number(header, "elevation", 0.0, -1e6, 1e6),
        zoom=_number(header, "zoom", 1.0, 1e-3, 1e3),
        reset=reset,
        id=rid,
    )


def _flag(header: Mapping[str, Any], key: str) -> bool:
    value = header.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{key!r} must be true or false", kind="config")
    return value


def _render(header: Mapping[str, Any], rid: RequestId) -> Render:
    return Render(
        format=_format(header),
        quality=_integer(header, "quality", 85, 1, 100),
        optimize=_flag(header, "optimize"),
        id=rid,
    )


def _stream(header: Mapping[str, Any], rid: RequestId) -> Stream:
    return Stream(
        fps=_number(header, "fps", 30.0, 0.0, 1000.0),
        spin=_number(header, "spin", 0.0, -360.0, 360.0),
        format=_format(header),
        quality=_integer(header, "quality", 85, 1, 100),
        optimize=_flag(header, "optimize"),
        id=rid,
    )


_PARSERS: dict[str, Callable[[Mapping[str, Any], RequestId], Request]] = {
    "hello": _hello,
    "load": _load,
    "resize": _resize,
    "camera": _camera,
    "render": _render,
    "stream": _stream,
    "stop": lambda header, rid: Stop(id=rid),
    "bye": lambda header, rid: Bye(id=rid),
}
