"""Live hub events for the browser: ``WS /paraconnect/api/events``, one JSON object per message.

The hub calls its subscribers on its own thread; :class:`EventStream` hops to tornado's loop
with ``call_soon_threadsafe`` (tornado objects are not thread-safe) and fans each event out to
every open websocket.
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

__all__ = ["AUTH_RESOURCE", "EventStream", "EventsHandler"]

AUTH_RESOURCE = "paraconnect"


class EventStream:
    """Every open events websocket; fed from the hub's thread."""

    def __init__(self) -> None:
        self._clients: set[EventsHandler] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, client: EventsHandler) -> None:
        self._loop = asyncio.get_running_loop()  # tornado's loop: where clients are written
        self._clients.add(client)

    def discard(self, client: EventsHandler) -> None:
        self._clients.discard(client)

    def __call__(self, event: dict[str, Any]) -> None:
        """The hub's subscriber (its thread)."""
        loop = self._loop
        if loop is None or not self._clients:
            return
        message = json.dumps(event)
        with contextlib.suppress(RuntimeError):  # tornado's loop closed: Jupyter is stopping
            loop.call_soon_threadsafe(self._send, message)

    def _send(self, message: str) -> None:
        for client in list(self._clients):
            try:
                client.write_message(message)
            except WebSocketClosedError:
                self._clients.discard(client)

    def close_all(self) -> None:
        for client in list(self._clients):
            client.close(1001, "the Jupyter server is stopping")
        self._clients.clear()


class EventsHandler(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """Authenticated like Jupyter's kernel websocket: token or cookie, then the authorizer."""

    auth_resource = AUTH_RESOURCE

    @property
    def events(self) -> EventStream:
        return cast(EventStream, self.settings["paraconnect_events"])

    def set_default_headers(self) -> None:
        """JupyterHandler's headers make no sense on a websocket upgrade."""

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        user = self.current_user
        if not await ensure_async(self.authorizer.is_authorized(self, user, "read", AUTH_RESOURCE)):
            raise web.HTTPError(403)
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)  # WebSocketMixin: keep-alive pings
        self.events.add(self)

    def on_message(self, message: str | bytes) -> None:
        """The stream is one-way; what a client sends is ignored."""

    def on_close(self) -> None:
        self.events.discard(self)
