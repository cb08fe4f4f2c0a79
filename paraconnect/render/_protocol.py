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
``hello``  ``{"op": "hello", "v": 1, "scene": NAME}``: must be the first message (a client
           ends it with CRLF CRLF, JSON whitespace, so that an HTTP server on the port answers
           at once).  ``scene`` (optional, 8 to 64 of ``A-Za-z0-9_-``) shares one scene among
           every connection that names it (a notebook's kernel and the browser showing its
           view): what one changes, the others' streams show.  Without it the connection's
           scene is its own.
``load``   ``{"op": "load", "dataset": "wavelet"|"sphere"|"cone", ...options}`` or
           ``{"op": "load", "path": "/data/x.vtu"}`` (under the server's data root; the reader
           by extension or content, or ``"reader"`` by name: ``"ioss"``, ``"exodus"``...);
           options: ``triangles`` (sphere), ``resolution`` (cone), ``extent`` (wavelet
           half-size), ``representation`` (``"surface"``, ``"wireframe"``, ``"points"``,
           ``"outline"``, ``"contour"``).  The reply has ``"dataset"`` and ``"state"``.
``resize`` ``{"op": "resize", "w": 1280, "h": 720}`` (1..8192 each).
``camera`` ``{"op": "camera", "azimuth": deg, "elevation": deg, "zoom": factor,
           "reset": bool, "preset": "+x"|"-x"|"+y"|"-y"|"+z"|"-z", "pan": [dx, dy],
           "interactive": bool}``: all optional; reset first, then preset (look along that
           axis), azimuth, elevation, zoom, pan (moves the picture right and up by dx, dy view
           heights, as a drag).  ``interactive`` true: this connection's stream sends frames at
           its ``drag_quality`` until a camera request says false, which also brings one frame
           at full quality (the still after a drag).
``files``  ``{"op": "files", "path": "sub/dir"}``: one directory of the data root (the
           working directory without ``--root``): ``"files": {"path", "entries": [{"name",
           "path", "kind": "file"|"dir", "size", "reader"}], "truncated"}``.
``state``  ``{"op": "state"}``: ``"state"``, the whole view as JSON (below).
``color``  ``{"op": "color", "array": name|null, "association": "point"|"cell",
           "component": int|"magnitude", "colormap": name, "range": [lo, hi]|"auto"}``:
           colour by an array (null: one solid colour); all but ``array`` optional.
``display`` ``{"op": "display", "representation": "surface"|"surface with edges"|
           "wireframe"|"points"|"volume"|"outline", "scalar_bar": bool, "axes": bool,
           "outline": bool, "colormap": name, "range": [lo, hi]|"auto"}``: all optional.
``filter`` ``{"op": "filter", "action": "slice"|"clip"|"contour"|"threshold"|"clear",
           "origin": [x, y, z], "normal": [x, y, z], "invert": bool, "array": name,
           "values": [iso, ...], "range": [lo, hi]}``: adds the filter, or replaces the one
           of its type (one of each, chained in the order added); ``clear`` removes all.
``time``   ``{"op": "time", "index": n}``: show time step n (``state["times"]``).
``blocks`` ``{"op": "blocks", "select": [i, ...]}``: show these blocks of a multiblock file.
``render`` ``{"op": "render", "format": "jpeg"|"png", "quality": 1..100, "optimize": bool}``:
           one frame back; ``optimize`` makes JPEG Huffman tables optimal (about a third
           smaller, about twice the encode time: for slow links).
``stream`` ``{"op": "stream", "fps": 30, "spin": 0.0, "format", "quality", "optimize",
           "window": 0, "drag_quality": q, "drag_scale": s|"auto"}``: frames are pushed whenever the
           scene changed (or every frame while ``spin`` degrees of azimuth per frame is not 0),
           at most ``fps`` per second (0: as fast as possible).  ``window`` N > 0: at most N
           frames not yet acknowledged (``ack``) are in flight; changes meanwhile fold into the
           next frame, so a slow viewer never gets a backlog.  ``drag_quality``: JPEG quality
           while the camera is interactive (default: ``quality``); ``drag_scale`` (0.1..1,
           default 1): frames rendered at that fraction of each side meanwhile (the viewer
           stretches them; the still after the drag is full size); ``"auto"``: half of each
           side for views larger than 640x480.
``ack``    ``{"op": "ack", "n": frame_number}``: the viewer has shown frame n (no reply).
``stop``   stops the stream; its reply comes after the last stream frame.
``bye``    the server replies and closes.
=========  =================================================================================

Server → client:

- ``{"op": "hello", "v": 1, "server": ..., "window": ..., "gl_vendor": ..., "gl_renderer": ...,
  "formats": [...], "datasets": [...], "max_size": 8192}`` answers ``hello``;
- ``{"op": "ok", "id": ..., ...}`` answers ``load`` (with ``"dataset"`` facts), ``resize``,
  ``camera``, ``stream``, ``stop``, ``bye``; the replies of ``load``, ``camera``, ``color``,
  ``display``, ``filter``, ``time``, ``blocks`` and ``state`` carry ``"state"``: ``{"version"
  (bumped on every change), "dataset", "arrays": [{"name", "association", "components",
  "range", "component_ranges"}], "color", "colormap", "colormaps", "range", "range_mode",
  "representation", "representations", "scalar_bar", "axes", "outline", "filters", "times",
  "time", "blocks": [{"index", "name", "kind", "selected"}], "camera", "size"}``;
- ``{"op": "frame", "id": ..., "stream": bool, "n": frame_number, "w": ..., "h": ...,
  "format": "jpeg"|"png", "render_ms": ..., "encode_ms": ..., "t": server_epoch_seconds,
  "input": id}`` with the encoded image as payload; a stream frame's ``input`` is the id of
  this connection's last scene request (camera, colour...) that the frame shows, when there is
  one, so a viewer can skip frames older than its last input;
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
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ProtocolError
from ._fields import (
    BadRequest,
    RequestId,
    choice,
    flag,
    integer,
    is_int,
    number,
    pair,
    request,
)
from ._scene_requests import (
    FILTER_ACTIONS,
    SCENE_FIELDS,
    SCENE_PARSERS,
    Blocks,
    Color,
    Display,
    Files,
    Filter,
    State,
    Time,
)

__all__ = [
    "DATASETS",
    "FILTER_ACTIONS",
    "FORMATS",
    "MAX_HEADER",
    "MAX_PAYLOAD",
    "MAX_SIZE",
    "PREFIX",
    "REPRESENTATIONS",
    "SCENE_NAME",
    "VERSION",
    "Ack",
    "BadRequest",
    "Blocks",
    "Bye",
    "Camera",
    "Color",
    "Display",
    "Files",
    "Filter",
    "FrameDecoder",
    "Hello",
    "Load",
    "Message",
    "Render",
    "Request",
    "RequestId",
    "Resize",
    "State",
    "Stop",
    "Stream",
    "Time",
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
SCENE_NAME = re.compile(r"[A-Za-z0-9_-]{8,64}")

Format = Literal["jpeg", "png"]


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
        raw = self.next_raw()
        if raw is None:
            return None
        hlen = PREFIX.unpack_from(raw)[0]
        return Message(
            _decode_header(raw[PREFIX.size : PREFIX.size + hlen]), raw[PREFIX.size + hlen :]
        )

    def next_raw(self) -> bytes | None:
        """The next complete frame as it came (prefix, header, payload), checked against the
        limits but not decoded: for relays that pass frames on unchanged."""
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
        frame = bytes(self._buf[:end])
        del self._buf[:end]
        return frame

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


@request
class Hello:
    v: int
    id: RequestId = None
    scene: str | None = None  # a shared scene's name


@request
class Load:
    dataset: str | None
    path: str | None
    options: Mapping[str, Any]
    representation: str = "auto"
    id: RequestId = None
    reader: str | None = None


@request
class Resize:
    w: int
    h: int
    id: RequestId = None


@request
class Camera:
    azimuth: float = 0.0
    elevation: float = 0.0
    zoom: float = 1.0
    reset: bool = False
    id: RequestId = None
    preset: str | None = None
    pan: tuple[float, float] | None = None
    interactive: bool | None = None  # None: leaves the connection's drag state as it is


@request
class Render:
    format: Format = "jpeg"
    quality: int = 85
    optimize: bool = False
    id: RequestId = None


@request
class Stream:
    fps: float = 30.0
    spin: float = 0.0
    format: Format = "jpeg"
    quality: int = 85
    optimize: bool = False
    id: RequestId = None
    window: int = 0  # frames in flight without an ack; 0: no limit
    drag_quality: int | None = None
    drag_scale: float | None = 1.0  # None ("auto"): the scene's rule for its size


@request
class Ack:
    n: int
    id: RequestId = None


@request
class Stop:
    id: RequestId = None


@request
class Bye:
    id: RequestId = None


Request = (
    Hello | Load | Resize | Camera | Render | Stream | Ack | Stop | Bye
    | Files | State | Color | Display | Filter | Time | Blocks
)  # fmt: skip
# The requests about what the scene shows: one place in the server carries them out.
SCENE_OPS = (Load, Camera, Files, State, Color, Display, Filter, Time, Blocks)
CAMERA_PRESETS = ("+x", "-x", "+y", "-y", "+z", "-z")

_FIELDS: dict[str, frozenset[str]] = {
    "hello": frozenset({"v", "client", "scene"}),
    "load": frozenset(
        {"dataset", "path", "triangles", "resolution", "extent", "representation", "reader"}
    ),
    "resize": frozenset({"w", "h"}),
    "camera": frozenset({"azimuth", "elevation", "zoom", "reset", "preset", "pan", "interactive"}),
    **SCENE_FIELDS,
    "render": frozenset({"format", "quality", "optimize"}),
    "stream": frozenset(
        {"fps", "spin", "format", "quality", "optimize", "window", "drag_quality", "drag_scale"}
    ),
    "ack": frozenset({"n"}),
    "stop": frozenset(),
    "bye": frozenset(),
}


def parse_request(header: Mapping[str, Any]) -> Request:
    """Validate one client header into a Request.  Raises BadRequest (non-fatal)."""
    rid = header.get("id")
    if not (rid is None or isinstance(rid, str) or (isinstance(rid, int) and is_int(rid))):
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


def _format(header: Mapping[str, Any]) -> Format:
    fmt = header.get("format", "jpeg")
    if fmt == "jpeg":
        return "jpeg"
    if fmt == "png":
        return "png"
    raise BadRequest(f"unknown image format {str(fmt)[:20]!r}; use 'jpeg' or 'png'", kind="config")


def _hello(header: Mapping[str, Any], rid: RequestId) -> Hello:
    v = header.get("v")
    if not is_int(v):
        raise BadRequest("'hello' needs an integer protocol version 'v'")
    scene = header.get("scene")
    if scene is not None and not (isinstance(scene, str) and SCENE_NAME.fullmatch(scene)):
        raise BadRequest("'scene' must be 8 to 64 letters, digits, '_' or '-'", kind="config")
    return Hello(v=v, id=rid, scene=scene)


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
        options["triangles"] = integer(header, "triangles", 0, 8, 50_000_000)
    if "resolution" in header:
        options["resolution"] = integer(header, "resolution", 0, 3, 100_000)
    if "extent" in header:
        options["extent"] = integer(header, "extent", 0, 1, 256)
    reader = header.get("reader")
    if reader is not None and (not isinstance(reader, str) or len(reader) > 40):
        raise BadRequest("'reader' must be a reader's name", kind="config")
    return Load(
        dataset=dataset, path=path, options=options, representation=rep, id=rid, reader=reader
    )


def _resize(header: Mapping[str, Any], rid: RequestId) -> Resize:
    w, h = header.get("w"), header.get("h")
    if not (is_int(w) and is_int(h) and 1 <= w <= MAX_SIZE and 1 <= h <= MAX_SIZE):
        raise BadRequest(
            f"bad size {str(w)[:12]}x{str(h)[:12]}: 'w' and 'h' must be whole numbers "
            f"from 1 to {MAX_SIZE}",
            kind="config",
        )
    return Resize(w=int(w), h=int(h), id=rid)


def _camera(header: Mapping[str, Any], rid: RequestId) -> Camera:
    reset = flag(header, "reset")
    return Camera(
        azimuth=number(header, "azimuth", 0.0, -1e6, 1e6),
        elevation=number(header, "elevation", 0.0, -1e6, 1e6),
        zoom=number(header, "zoom", 1.0, 1e-3, 1e3),
        reset=reset,
        id=rid,
        preset=choice(header, "preset", CAMERA_PRESETS),
        pan=pair(header, "pan", -1e3, 1e3),
        interactive=flag(header, "interactive") if "interactive" in header else None,
    )


def _render(header: Mapping[str, Any], rid: RequestId) -> Render:
    return Render(
        format=_format(header),
        quality=integer(header, "quality", 85, 1, 100),
        optimize=flag(header, "optimize"),
        id=rid,
    )


def _stream(header: Mapping[str, Any], rid: RequestId) -> Stream:
    return Stream(
        fps=number(header, "fps", 30.0, 0.0, 1000.0),
        spin=number(header, "spin", 0.0, -360.0, 360.0),
        format=_format(header),
        quality=integer(header, "quality", 85, 1, 100),
        optimize=flag(header, "optimize"),
        id=rid,
        window=integer(header, "window", 0, 0, 64),
        drag_quality=(
            integer(header, "drag_quality", 85, 1, 100) if "drag_quality" in header else None
        ),
        drag_scale=(
            None
            if header.get("drag_scale") == "auto"
            else number(header, "drag_scale", 1.0, 0.1, 1.0)
        ),
    )


_PARSERS: dict[str, Callable[[Mapping[str, Any], RequestId], Request]] = {
    "hello": _hello,
    "load": _load,
    "resize": _resize,
    "camera": _camera,
    "render": _render,
    "stream": _stream,
    "ack": lambda header, rid: Ack(n=integer(header, "n", 0, 0, 2**53), id=rid),
    "stop": lambda header, rid: Stop(id=rid),
    "bye": lambda header, rid: Bye(id=rid),
    **SCENE_PARSERS,
}
