"""A built-in renderer's live picture in a JupyterLab tab: ``WS /paraconnect/api/servers/ID/view``.

The browser cannot reach the server's local endpoint (127.0.0.1 of the machine Jupyter runs
on) itself, so this handler is its client there: one render connection per open tab (the
renderer keeps one scene per connection), a JPEG frame as a binary message after the tab
opens and after each request it sends (``{"camera": {azimuth, elevation, zoom, reset}}``,
``{"resize": {w, h}}``).  Tornado runs one ``on_message`` at a time, so a tab that sends while a
frame renders waits for it: the tab sends its next request when a frame arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, cast

from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import ensure_async
from tornado import web
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from ..errors import ParaconnectError
from ..render import DATASETS, AsyncRenderClient
from ._bridge import HubThread
from ._websocket import AUTH_RESOURCE

__all__ = ["ViewHandler"]

MAX_SIDE = 4096  # pixels: a tab larger than this is drawn scaled
_CLOSING: set[asyncio.Task[None]] = set()  # render connections being closed (kept referenced)


def _side(value: Any, default: int) -> int:
    try:
        side = int(value)
    except (TypeError, ValueError):
        return default
    return max(16, min(MAX_SIDE, side))


class ViewHandler(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """Authenticated and authorized (read) like the events websocket, before the upgrade."""

    auth_resource = AUTH_RESOURCE

    def set_default_headers(self) -> None:
        """JupyterHandler's headers make no sense on a websocket upgrade."""

    @property
    def hub(self) -> HubThread:
        return cast(HubThread, self.settings["paraconnect_hub"])

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        user = self.current_user
        if not await ensure_async(self.authorizer.is_authorized(self, user, "read", AUTH_RESOURCE)):
            raise web.HTTPError(403)
        server_id = str(kwargs.get("server_id", ""))
        try:
            info = await self.hub.op("server", {"id": server_id})
        except ParaconnectError as exc:
            raise web.HTTPError(404, reason=str(exc)[:200]) from None
        if info["kind"] != "builtin" or not info.get("local"):
            # Refused before the upgrade: the tab shows why instead of an empty picture.
            raise web.HTTPError(
                409, reason=f"server {server_id} is a {info['kind']} server, {info['state']}"
            )
        self._port = int(str(info["local"]).rsplit(":", 1)[1])
        self._client: AsyncRenderClient | None = None
        await super().get(*args, **kwargs)

    async def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)  # WebSocketMixin: keep-alive pings
        dataset = self.get_query_argument("dataset", "wavelet")
        try:
            if dataset not in DATASETS:
                raise ValueError(f"dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
            client = AsyncRenderClient(port=self._port)
            await client.open()
            self._client = client
            await client.load(dataset)
            await client.resize(
                _side(self.get_query_argument("w", None), 640),
                _side(self.get_query_argument("h", None), 480),
            )
            await self._frame()
        except (ParaconnectError, OSError, ValueError) as exc:
            self._fail(exc)

    async def on_message(self, message: str | bytes) -> None:
        client = self._client
        if client is None:
            return
        try:
            request = json.loads(message)
            if not isinstance(request, dict):
                raise ValueError("send a JSON object: {camera: {...}} or {resize: {w, h}}")
            if isinstance(request.get("resize"), dict):
                size = request["resize"]
                await client.resize(_side(size.get("w"), 640), _side(size.get("h"), 480))
            if isinstance(request.get("camera"), dict):
                cam = request["camera"]
                await client.camera(
                    azimuth=float(cam.get("azimuth", 0.0)),
                    elevation=float(cam.get("elevation", 0.0)),
                    zoom=float(cam.get("zoom", 1.0)),
                    reset=bool(cam.get("reset", False)),
                )
            await self._frame()
        except (ParaconnectError, OSError, ValueError, TypeError) as exc:
            self._fail(exc)

    async def _frame(self) -> None:
        if self._client is None:
            return
        frame = await self._client.render("jpeg", 85)
        with contextlib.suppress(WebSocketClosedError):  # the tab went away meanwhile
            await self.write_message(frame.data, binary=True)

    def _fail(self, exc: Exception) -> None:
        # One line for the tab, then close: the tab offers to open it again.
        line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        with contextlib.suppress(WebSocketClosedError):
            self.write_message(json.dumps({"error": line}))
        self.close(1011, "render failed")

    def on_close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            # Close the render connection (the agent's data stream) without holding tornado.
            task = asyncio.get_running_loop().create_task(client.aclose())
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)
