"""RemoteView: the built-in renderer's frames in a notebook, through the server's local endpoint.

An anywidget with its front end inline (``_esm``), so no build step: an ``<img>`` showing the
last frame (a data URL in the ``src`` trait), pointer drags and the wheel sent to the kernel as
custom messages, and a "save PNG" button that asks the kernel for a PNG and downloads it.  The
kernel side moves the camera (azimuth/elevation per pixel dragged, zoom per wheel step) and
renders a new frame through :class:`~paraconnect.render.RenderClient`.

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

__all__ = ["RemoteView"]

T = TypeVar("T")

DEGREES_PER_PIXEL = 0.5
ZOOM_PER_WHEEL = 1.1  # per 100 units of wheel delta (one notch in most browsers)

_ESM = r"""
// Two ways to the frames.  Live: a websocket of the Jupyter server to the render server
// (/paraconnect/api/servers/<id>/view), speaking the render protocol itself; the view turns
// even while the kernel is busy.  Otherwise (no server id, or no such route): through the
// kernel, one request in flight.
const enc = new TextEncoder(), dec = new TextDecoder();
function frameOf(header) {
  const h = enc.encode(JSON.stringify(header));
  const buf = new Uint8Array(8 + h.length);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, h.length); dv.setUint32(4, 0);
  buf.set(h, 8);
  return buf;
}
function parse(data) {
  const dv = new DataView(data);
  const hlen = dv.getUint32(0), plen = dv.getUint32(4);
  const header = JSON.parse(dec.decode(new Uint8Array(data, 8, hlen)));
  return [header, new Uint8Array(data, 8 + hlen, plen)];
}
function pageConfig() {
  const el = document.getElementById("jupyter-config-data");
  try { return el ? JSON.parse(el.textContent) : {}; } catch (e) { return {}; }
}
function viewURL(id) {
  const c = pageConfig();
  if (!c.baseUrl) return null;
  let base = c.wsUrl || "";
  if (!base) {
    const u = new URL(c.baseUrl, window.location.href);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    base = u.href;
  }
  if (!base.endsWith("/")) base += "/";
  let url = base + "paraconnect/api/servers/" + encodeURIComponent(id) + "/view";
  if (c.token) url += "?token=" + encodeURIComponent(c.token);
  return url;
}
function download(bytes, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "paraconnect-remoteview";
  const img = document.createElement("img");
  img.draggable = false;
  const bar = document.createElement("div");
  bar.className = "paraconnect-remoteview-bar";
  const save = document.createElement("button");
  save.textContent = "save PNG";
  const status = document.createElement("span");
  bar.append(save, status);
  root.append(img, bar);
  el.append(root);
  // What a test or benchmark reads: one entry a frame shown.
  const stats = { frames: [], live: false, inputs: [] };
  root.paraconnectStats = stats;
  const size = () => {
    img.style.width = model.get("width") + "px";
    img.style.height = model.get("height") + "px";
  };
  size();

  let ws = null, shownURL = null, saveId = 1000, pendingMove = null, retries = 0;
  function showFrame(h, bytes) {
    const url = URL.createObjectURL(new Blob([bytes], { type: "image/" + h.format }));
    img.onload = () => {
      if (shownURL) URL.revokeObjectURL(shownURL);
      shownURL = url;
      stats.frames.push({ n: h.n, t: performance.now(), bytes: bytes.length,
                          quality: h.quality, w: h.w, h: h.h });
      if (ws && ws.readyState === 1) ws.send(frameOf({ op: "ack", n: h.n }));
    };
    img.src = url;
    status.textContent = `frame ${h.n}: ${h.w}x${h.h} ${h.format} q${h.quality}, ` +
      `${Math.round(bytes.length / 1024)} KiB, render ${Math.round(h.render_ms)} ms (live)`;
  }
  function goLive() {
    const id = model.get("server_id"), scene = model.get("scene");
    const url = id && scene ? viewURL(id) : null;
    if (!url) return false;
    ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      ws.send(frameOf({ op: "hello", v: 1, scene }));
      ws.send(frameOf({ op: "stream", fps: 0, format: "jpeg", quality: 90,
                        drag_quality: 60, window: 2, id: 1 }));
      stats.live = true;
      retries = 0;
      model.send({ type: "live" });
    };
    ws.onmessage = (e) => {
      const [h, payload] = parse(e.data);
      if (h.op === "frame" && h.stream) showFrame(h, payload);
      else if (h.op === "frame") download(payload.slice(), "paraconnect-view.png");
      else if (h.op === "error") status.textContent = "error: " + h.message;
    };
    ws.onclose = () => {
      const was = stats.live;
      ws = null; stats.live = false;
      // Never live (the route refused): the kernel's path still works.
      if (!was) { model.send({ type: "not-live" }); showKernel(); return; }
      // Lost (the server restarted, or its job was resubmitted and phoned home again to the
      // same endpoint): try again a few times, then show why.
      status.textContent += " (the view's connection closed; reconnecting)";
      if (retries++ < 5) setTimeout(goLive, 1000 * retries);
    };
    return true;
  }
  const live = () => ws && ws.readyState === 1;
  function sendMove() {
    const m = pendingMove; pendingMove = null;
    if (!m || !live()) return;
    ws.send(frameOf({ op: "camera", ...m }));
  }
  function move(m) {
    stats.inputs.push(performance.now());
    if (!pendingMove) { pendingMove = { interactive: true }; requestAnimationFrame(sendMove); }
    for (const k of ["azimuth", "elevation"]) {
      if (m[k]) pendingMove[k] = (pendingMove[k] || 0) + m[k];
    }
    if (m.zoom) pendingMove.zoom = (pendingMove.zoom || 1) * m.zoom;
  }

  // The kernel's path: one request in flight, cleared only by a new picture.
  let pending = false, dx = 0, dy = 0, wheel = 0, last = null;
  function flush() {
    if (pending || live()) return;
    if (dx || dy) { model.send({ type: "drag", dx, dy }); dx = dy = 0; pending = true; }
    else if (wheel) { model.send({ type: "wheel", delta: wheel }); wheel = 0; pending = true; }
  }
  function showKernel() {
    size();
    if (live()) return;
    if (model.get("src")) img.src = model.get("src");
    status.textContent = model.get("status");
  }
  img.addEventListener("pointerdown", (e) => {
    last = [e.clientX, e.clientY];
    img.setPointerCapture(e.pointerId);
  });
  img.addEventListener("pointermove", (e) => {
    if (!last) return;
    const mx = e.clientX - last[0], my = e.clientY - last[1];
    last = [e.clientX, e.clientY];
    if (live()) { move({ azimuth: -mx * 0.5, elevation: my * 0.5 }); return; }
    dx += mx; dy += my;
    flush();
  });
  img.addEventListener("pointerup", () => {
    last = null;
    if (live()) { sendMove(); ws.send(frameOf({ op: "camera", interactive: false })); }
  });
  img.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (live()) { move({ zoom: Math.pow(1.1, -e.deltaY / 100) }); return; }
    wheel += e.deltaY;
    flush();
  }, { passive: false });
  save.addEventListener("click", () => {
    if (live()) ws.send(frameOf({ op: "render", format: "png", id: ++saveId }));
    else model.send({ type: "save" });
  });
  model.on("msg:custom", (msg, buffers) => {
    if (msg.type !== "png" || !buffers.length) return;
    download(buffers[0], msg.filename || "paraconnect.png");
  });
  model.on("change:src", () => { pending = false; showKernel(); flush(); });
  model.on("change:status", showKernel);
  model.on("change:width", size);
  model.on("change:height", size);
  if (!goLive()) showKernel();
  return () => { if (ws) ws.close(); if (shownURL) URL.revokeObjectURL(shownURL); };
}
export default { render };
"""

_CSS = """
.paraconnect-remoteview img { cursor: grab; touch-action: none; display: block; }
.paraconnect-remoteview-bar { display: flex; gap: 0.5em; align-items: center; margin-top: 4px; }
.paraconnect-remoteview-bar span { font-size: 85%; opacity: 0.8; }
"""


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
    view_state = traitlets.Dict(
        help="the render server's whole view state (arrays, colouring, filters, time, camera)"
    ).tag(sync=True)

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
        return str(self.view_state.get("representation", "surface"))

    @representation.setter
    def representation(self, value: str) -> None:
        """ "surface", "surface with edges", "wireframe", "points", "volume" or "outline"."""
        self._change("display", representation=value)

    def set_colormap(self, name: str, range: tuple[float, float] | None = None) -> dict[str, Any]:
        return self._change(
            "display", colormap=name, range=list(range) if range is not None else None
        )

    @property
    def scalar_bar(self) -> bool:
        return bool(self.view_state.get("scalar_bar"))

    @scalar_bar.setter
    def scalar_bar(self, on: bool) -> None:
        self._change("display", scalar_bar=bool(on))

    @property
    def axes(self) -> bool:
        return bool(self.view_state.get("axes"))

    @axes.setter
    def axes(self, on: bool) -> None:
        self._change("display", axes=bool(on))

    @property
    def outline(self) -> bool:
        return bool(self.view_state.get("outline"))

    @outline.setter
    def outline(self, on: bool) -> None:
        self._change("display", outline=bool(on))

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
        return int(self.view_state.get("time", 0))

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
