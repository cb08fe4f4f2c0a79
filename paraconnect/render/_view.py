"""RemoteView: the built-in renderer's view in a notebook, through the server's local endpoint.

An anywidget (front end in _view_front.py, no build step).  With the hub's server id, the
kernel's connection and the browser's own line (jupyter/_view.py) share one scene on the render
server: the browser streams frames and sends the mouse there directly, so a busy kernel never
freezes the view, while the kernel keeps full control of the same scene (``color_by``,
``slice``, ``time``, ``camera``, ``save_png``...).  Without one (``RemoteView(port=...)``
alone), frames travel through the kernel as before: a data URL in ``src``, drags and the wheel
as custom messages.

The view re-attaches: when its connection to the local endpoint is lost (the server's job was
resubmitted and a new one phoned home to the same endpoint), the next call connects again,
loads the same dataset and goes on; the new renderer's camera starts afresh.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anywidget
import traitlets

from ..errors import ConfigError, NetworkError
from ._blocking import RenderClient
from ._client import Frame
from ._view_front import CSS as _CSS
from ._view_front import ESM as _ESM

__all__ = ["RemoteView"]

T = TypeVar("T")

DEGREES_PER_PIXEL = 0.5
_WIDGET_OPS = frozenset({"color", "display", "filter", "time", "camera"})
ZOOM_PER_WHEEL = 1.1  # per 100 units of wheel delta (one notch in most browsers)


def _display_switch(name: str, what: str) -> property:
    """A display setting that is on or off: read from the view's state, set on the server."""

    def get(view: RemoteView) -> bool:
        return bool(view.state.get(name))

    def set_(view: RemoteView, on: bool) -> None:
        view._change("display", **{name: bool(on)})

    return property(get, set_, doc=f"Show {what}.")


class RemoteView(anywidget.AnyWidget):
    """``RemoteView(port=srv.port, dataset="wavelet")`` (or ``unix=PATH``: a ParaView client's
    frame socket); ``.rotate()``, ``.zoom()``,
    ``.save_png(path)``, ``.last_frame`` (the last :class:`~paraconnect.render.Frame`)."""

    _esm = traitlets.Unicode(_ESM).tag(sync=True)
    _css = traitlets.Unicode(_CSS).tag(sync=True)
    src = traitlets.Unicode("", help="the last frame as a data: URL").tag(sync=True)
    width = traitlets.Int(640, help="frame width in pixels").tag(sync=True)
    height = traitlets.Int(480, help="frame height in pixels").tag(sync=True)
    status = traitlets.Unicode("", help="what the last frame cost").tag(sync=True)
    server_id = traitlets.Unicode("", help="the hub's server: the browser's own line").tag(
        sync=True
    )
    scene = traitlets.Unicode("", help="the render server's scene this view shares").tag(sync=True)
    drag_scale = traitlets.Float(
        0.0,
        help="while dragging in the browser, frames at this fraction of each side "
        "(0: automatic, half for views larger than 640x480); the still after is full size",
    ).tag(sync=True)
    view_state = traitlets.Dict(
        help="the render server's whole view state (arrays, colouring, filters, time, camera)"
    ).tag(sync=True)

    @traitlets.validate("drag_scale")
    def _check_drag_scale(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if value != 0 and not 0.1 <= value <= 1:
            raise ConfigError(f"drag_scale {value!r}: use 0 (automatic) or 0.1 to 1")
        return value

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        unix: str | None = None,
        dataset: str | None = "wavelet",
        path: str | None = None,
        width: int = 640,
        height: int = 480,
        format: str = "jpeg",
        quality: int = 85,
        timeout: float = 60.0,
        server_id: str | None = None,
    ) -> None:
        if port is None and unix is None:
            raise ConfigError("RemoteView needs the server's local port (Server.port)")
        # With the hub's server id, the browser reaches the same scene on a line of its own
        # (jupyter/_view.py), so the view stays interactive while the kernel is busy.
        scene = secrets.token_urlsafe(18) if server_id else ""
        super().__init__(width=width, height=height, server_id=server_id or "", scene=scene)
        self.format, self.quality = format, quality
        self.live = False  # a browser shows this view over its own line: no frames through us
        self.last_frame: Frame | None = None
        self.last_png: bytes | None = None
        self.dataset: dict[str, Any] = {}
        self._where = (host, port, unix, timeout)
        # A file asked for replaces the default dataset.
        self._shown: tuple[str | None, str | None] = (None if path is not None else dataset, path)
        self._client = self._attach()
        try:
            self.refresh()
        except BaseException:
            self._client.close()
            raise
        self.on_msg(self._on_message)

    def _attach(self) -> RenderClient:
        """A client on the local endpoint, sized, showing the dataset this view shows."""
        host, port, unix, timeout = self._where
        client = RenderClient(host, port, unix=unix, timeout=timeout, scene=self.scene or None)
        client.open()
        try:
            client.resize(self.width, self.height)
            dataset, path = self._shown
            if dataset is not None or path is not None:
                self.dataset = client.load(dataset, path=path)
            if unix is None:  # a ParaView client's frames (unix=) have no view state to show
                self.view_state = client.state()
        except BaseException:
            client.close()
            raise
        return client

    def _call(self, fn: Callable[[RenderClient], T]) -> T:
        """`fn(client)`, once more on a fresh connection if this one was lost."""
        try:
            return fn(self._client)
        except NetworkError:
            self._client.close()
            self._client = self._attach()
            return fn(self._client)

    def refresh(self) -> Frame:
        """Render a frame now and show it."""
        frame = self._call(lambda c: c.render(self.format, self.quality))
        self.last_frame = frame
        if self.live:
            return frame  # the browser's stream shows the change by itself
        mime = "image/png" if frame.format == "png" else "image/jpeg"
        self.status = (
            f"frame {frame.number}: {frame.width}x{frame.height} {frame.format}, "
            f"{len(frame.data) // 1024} KiB, render {frame.render_ms:.0f} ms"
        )
        self.src = f"data:{mime};base64,{base64.b64encode(frame.data).decode()}"
        return frame

    def rotate(self, azimuth: float = 0.0, elevation: float = 0.0) -> Frame:
        """Turn the camera by these angles (degrees) and show the new frame."""
        self._call(lambda c: c.camera(azimuth=azimuth, elevation=elevation))
        return self.refresh()

    def zoom(self, factor: float) -> Frame:
        """Zoom in (factor > 1) or out and show the new frame."""
        self._call(lambda c: c.camera(zoom=factor))
        return self.refresh()

    def reset_camera(self) -> Frame:
        self._call(lambda c: c.camera(reset=True))
        return self.refresh()

    def load(self, dataset: str | None = None, *, path: str | None = None) -> dict[str, Any]:
        """Show another built-in dataset or a file on the server's host."""
        self.dataset = self._call(lambda c: c.load(dataset, path=path))
        self._shown = (dataset, path)
        self.view_state = self._call(lambda c: c.state())
        self.refresh()
        return self.dataset

    # --- what the view shows (each call refreshes the frame) ---------------------------

    def _change(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = self._client.request(op, **fields)
        self.view_state = dict(reply.get("state") or self.view_state)
        self.refresh()
        return self.view_state

    @property
    def state(self) -> dict[str, Any]:
        """The whole view as the render server holds it: arrays, colouring, filters, time
        steps, blocks, camera; ``state["version"]`` grows with every change."""
        self.view_state = self._client.state()
        return self.view_state

    def color_by(
        self,
        array: str | None,
        colormap: str | None = None,
        range: tuple[float, float] | None = None,
        component: int | str | None = None,
        association: str | None = None,
    ) -> dict[str, Any]:
        """Colour by a point or cell array (None: one solid colour); ``component`` an index or
        "magnitude"; ``range`` fixed (lo, hi) or None for the data's own."""
        return self._change(
            "color",
            array=array,
            colormap=colormap,
            range=list(range) if range is not None else "auto",
            component=component,
            association=association,
        )

    @property
    def representation(self) -> str:
        return str(self.state.get("representation", "surface"))  # fresh: the browser may change it

    @representation.setter
    def representation(self, value: str) -> None:
        """ "surface", "surface with edges", "wireframe", "points", "volume" or "outline"."""
        self._change("display", representation=value)

    def set_colormap(self, name: str, range: tuple[float, float] | None = None) -> dict[str, Any]:
        return self._change(
            "display", colormap=name, range=list(range) if range is not None else None
        )

    scalar_bar = _display_switch("scalar_bar", "the colour legend")
    axes = _display_switch("axes", "the orientation axes")
    outline = _display_switch("outline", "the data's bounding box")

    def slice(
        self,
        origin: tuple[float, float, float] | None = None,
        normal: tuple[float, float, float] = (1.0, 0.0, 0.0),
    ) -> dict[str, Any]:
        """Cut with a plane (origin: the data's centre by default); again moves the slice."""
        return self._change("filter", action="slice", origin=_list(origin), normal=_list(normal))

    def clip(
        self,
        origin: tuple[float, float, float] | None = None,
        normal: tuple[float, float, float] = (1.0, 0.0, 0.0),
        invert: bool = False,
    ) -> dict[str, Any]:
        """Keep one side of a plane (the side the normal points away from; ``invert``: the
        other)."""
        return self._change(
            "filter", action="clip", origin=_list(origin), normal=_list(normal), invert=invert
        )

    def contour(
        self, values: list[float] | None = None, array: str | None = None
    ) -> dict[str, Any]:
        """Isosurfaces of ``array`` (the coloured one by default) at ``values`` (the median by
        default)."""
        return self._change("filter", action="contour", values=_list(values), array=array)

    def threshold(self, array: str, lo: float, hi: float) -> dict[str, Any]:
        """Keep the cells whose ``array`` is from ``lo`` to ``hi``."""
        return self._change("filter", action="threshold", array=array, range=[lo, hi])

    def clear_filters(self) -> dict[str, Any]:
        return self._change("filter", action="clear")

    @property
    def times(self) -> list[float]:
        """The time values of the loaded data (empty if it has none)."""
        return list(self.view_state.get("times", []))

    @property
    def time(self) -> int:
        """The index of the time step shown; set it to show another."""
        return int(self.state.get("time", 0))

    @time.setter
    def time(self, index: int) -> None:
        self._change("time", index=int(index))

    @property
    def blocks(self) -> list[dict[str, Any]]:
        """The blocks of a multiblock dataset: index, name, kind, selected."""
        return list(self.view_state.get("blocks", []))

    def select_blocks(self, indices: list[int]) -> dict[str, Any]:
        return self._change("blocks", select=list(indices))

    def camera(
        self,
        preset: str | None = None,
        *,
        azimuth: float = 0.0,
        elevation: float = 0.0,
        zoom: float = 1.0,
        pan: tuple[float, float] | None = None,
        reset: bool = False,
    ) -> dict[str, Any]:
        """``preset`` "+x" ... "-z" looks along that axis; then turn (degrees), zoom (factor)
        and pan: move the picture right and up by (dx, dy) view heights, as a drag would."""
        return self._change(
            "camera",
            preset=preset,
            azimuth=azimuth,
            elevation=elevation,
            zoom=zoom,
            pan=_list(pan),
            reset=reset,
        )

    def files(self, path: str = "") -> dict[str, Any]:
        """One directory of the render server's data root (entries with the reader of each)."""
        return self._client.files(path)

    def save_png(self, path: str | os.PathLike[str]) -> Path:
        """Render the current view as PNG and write it to `path`."""
        frame = self._call(lambda c: c.save_png(path))
        self.last_png = frame.data
        return Path(path)

    def _on_message(self, _widget: Any, content: dict[str, Any], _buffers: list[bytes]) -> None:
        kind = content.get("type")
        if kind in ("live", "not-live"):
            self.live = kind == "live"
            if not self.live:
                self.refresh()
        elif kind == "drag":
            self.rotate(
                -float(content.get("dx", 0)) * DEGREES_PER_PIXEL,
                float(content.get("dy", 0)) * DEGREES_PER_PIXEL,
            )
        elif kind == "wheel":
            # Wheel down (positive delta) moves away, as in ParaView.
            self.zoom(ZOOM_PER_WHEEL ** (-float(content.get("delta", 0)) / 100))
        elif kind == "op" and content.get("op") in _WIDGET_OPS:
            # The widget's controls, when the browser has no line of its own: the server
            # checks the fields as for any client.
            fields = content.get("fields")
            self._change(str(content["op"]), **(fields if isinstance(fields, dict) else {}))
        elif kind == "save":
            frame = self._call(lambda c: c.render("png"))
            self.last_png = frame.data
            self.send({"type": "png", "filename": "paraconnect-view.png"}, [frame.data])

    def close(self) -> None:
        # Also called from __del__, possibly for an instance whose __init__ failed early.
        client = self.__dict__.pop("_client", None)
        if client is not None:
            client.close()
        super().close()


def _list(value: Any) -> list[float] | None:
    return None if value is None else [float(v) for v in value]
