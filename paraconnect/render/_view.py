"""RemoteView: the built-in renderer's frames in a notebook, through the server's local endpoint.

An anywidget with its front end inline (``_esm``), so no build step: an ``<img>`` showing the
last frame (a data URL in the ``src`` trait), pointer drags and the wheel sent to the kernel as
custom messages, and a "save PNG" button that asks the kernel for a PNG and downloads it.  The
kernel side moves the camera (azimuth/elevation per pixel dragged, zoom per wheel step) and
renders a new frame through :class:`~paraconnect.render.RenderClient`.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ..errors import ConfigError
from ._client import Frame, RenderClient

__all__ = ["RemoteView"]

DEGREES_PER_PIXEL = 0.5
ZOOM_PER_WHEEL = 1.1  # per 100 units of wheel delta (one notch in most browsers)

_ESM = r"""
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

  // One request in flight: drags accumulate until the next frame arrives.
  let pending = false, dx = 0, dy = 0, wheel = 0, last = null;
  function flush() {
    if (pending) return;
    if (dx || dy) { model.send({ type: "drag", dx, dy }); dx = dy = 0; pending = true; }
    else if (wheel) { model.send({ type: "wheel", delta: wheel }); wheel = 0; pending = true; }
  }
  function show() {
    img.src = model.get("src");
    img.style.width = model.get("width") + "px";
    img.style.height = model.get("height") + "px";
    status.textContent = model.get("status");
    pending = false;
    flush();
  }
  img.addEventListener("pointerdown", (e) => {
    last = [e.clientX, e.clientY];
    img.setPointerCapture(e.pointerId);
  });
  img.addEventListener("pointermove", (e) => {
    if (!last) return;
    dx += e.clientX - last[0]; dy += e.clientY - last[1]; last = [e.clientX, e.clientY];
    flush();
  });
  img.addEventListener("pointerup", () => { last = null; });
  img.addEventListener("wheel", (e) => {
    e.preventDefault();
    wheel += e.deltaY;
    flush();
  }, { passive: false });
  save.addEventListener("click", () => model.send({ type: "save" }));
  model.on("msg:custom", (msg, buffers) => {
    if (msg.type !== "png" || !buffers.length) return;
    const blob = new Blob([buffers[0]], { type: "image/png" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = msg.filename || "paraconnect.png";
    a.click();
    URL.revokeObjectURL(a.href);
  });
  model.on("change:src", show);
  model.on("change:status", show);
  show();
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
    ) -> None:
        if port is None and unix is None:
            raise ConfigError("RemoteView needs the server's local port (Server.port)")
        super().__init__(width=width, height=height)
        self.format, self.quality = format, quality
        self.last_frame: Frame | None = None
        self.last_png: bytes | None = None
        self.dataset: dict[str, Any] = {}
        self._client = RenderClient(host, port, unix=unix, timeout=timeout)
        self._client.open()
        try:
            self._client.resize(width, height)
            if dataset is not None or path is not None:
                self.dataset = self._client.load(dataset, path=path)
            self.refresh()
        except BaseException:
            self._client.close()
            raise
        self.on_msg(self._on_message)

    def refresh(self) -> Frame:
        """Render a frame now and show it."""
        frame = self._client.render(self.format, self.quality)
        self.last_frame = frame
        mime = "image/png" if frame.format == "png" else "image/jpeg"
        self.status = (
            f"frame {frame.number}: {frame.width}x{frame.height} {frame.format}, "
            f"{len(frame.data) // 1024} KiB, render {frame.render_ms:.0f} ms"
        )
        self.src = f"data:{mime};base64,{base64.b64encode(frame.data).decode()}"
        return frame

    def rotate(self, azimuth: float = 0.0, elevation: float = 0.0) -> Frame:
        """Turn the camera by these angles (degrees) and show the new frame."""
        self._client.camera(azimuth=azimuth, elevation=elevation)
        return self.refresh()

    def zoom(self, factor: float) -> Frame:
        """Zoom in (factor > 1) or out and show the new frame."""
        self._client.camera(zoom=factor)
        return self.refresh()

    def reset_camera(self) -> Frame:
        self._client.camera(reset=True)
        return self.refresh()

    def load(self, dataset: str | None = None, *, path: str | None = None) -> dict[str, Any]:
        """Show another built-in dataset or a file on the server's host."""
        self.dataset = self._client.load(dataset, path=path)
        self.refresh()
        return self.dataset

    def save_png(self, path: str | os.PathLike[str]) -> Path:
        """Render the current view as PNG and write it to `path`."""
        frame = self._client.save_png(path)
        self.last_png = frame.data
        return Path(path)

    def _on_message(self, _widget: Any, content: dict[str, Any], _buffers: list[bytes]) -> None:
        kind = content.get("type")
        if kind == "drag":
            self.rotate(
                -float(content.get("dx", 0)) * DEGREES_PER_PIXEL,
                float(content.get("dy", 0)) * DEGREES_PER_PIXEL,
            )
        elif kind == "wheel":
            # Wheel down (positive delta) moves away, as in ParaView.
            self.zoom(ZOOM_PER_WHEEL ** (-float(content.get("delta", 0)) / 100))
        elif kind == "save":
            frame = self._client.render("png")
            self.last_png = frame.data
            self.send({"type": "png", "filename": "paraconnect-view.png"}, [frame.data])

    def close(self) -> None:
        # Also called from __del__, possibly for an instance whose __init__ failed early.
        client = self.__dict__.pop("_client", None)
        if client is not None:
            client.close()
        super().close()
