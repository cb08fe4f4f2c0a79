"""A view's own line to its render server: ``WS /paraconnect/api/servers/<id>/view``.

The browser showing a RemoteView speaks the render protocol (render/_protocol.py) to the
server's local endpoint through this websocket, so dragging the view never waits for the
notebook's kernel: a busy or interrupted kernel leaves it interactive.  One websocket message
is one protocol frame, both ways; frames from the server go out as binary messages, unchanged.

Who can use it: whoever Jupyter authenticates (token or cookie) and authorises to write on the
``paraconnect`` resource, for a server of this hub's registry only (never an arbitrary port:
the handler is no way to reach other local services).  What a browser may send is checked
before it goes on: exactly one frame with a header within the protocol's limit and no payload;
anything else closes the websocket.  Backpressure: a frame is read from the render server only
once the last one was written to the browser, and the protocol's ``window`` bounds what is in
flight, so nothing piles up here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import ensure_async
from tornado import web
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from ..errors import NotFoundError, ParaconnectError
from ..render import MAX_HEADER, FrameDecoder
from ._bridge import HubThread
from ._websocket import AUTH_RESOURCE

__all__ = ["ViewHandler", "local_endpoint"]

log = logging.getLogger("paraconnect.jupyter")

# Server kinds whose program speaks the render protocol.
RENDER_KINDS = frozenset({"builtin"})
_PREFIX = 8  # u32 header length, u32 payload length


async def local_endpoint(
    hub: HubThread, server_id: str, serves: Callable[[str], bool], what: str
) -> tuple[str, int]:
    """Where this hub reaches server `server_id` (its local endpoint), for a handler that
    relays to it: 404 for a server the hub does not know, 400 for one of a kind `serves`
    refuses (`what` names the kinds it takes), 409 for one not connected yet; never a port
    the hub did not open."""
    try:
        info = await hub.op("server", {"id": server_id})
    except NotFoundError as exc:
        raise web.HTTPError(404, reason=str(exc).splitlines()[0][:200]) from None
    except ParaconnectError as exc:
        raise web.HTTPError(503, reason=str(exc).splitlines()[0][:200]) from None
    kind = str(info.get("kind"))
    if not serves(kind):
        raise web.HTTPError(400, reason=f"server {server_id} is a {kind}, not {what}")
    local = info.get("local")
    if not local:
        raise web.HTTPError(409, reason=f"server {server_id} is not connected yet")
    host, _, port = str(local).rpartition(":")
    return host, int(port)


class ViewHandler(WebSocketMixin, WebSocketHandler, JupyterHandler):
    auth_resource = AUTH_RESOURCE

    def initialize(self) -> None:
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None

    @property
    def hub(self) -> HubThread:
        return cast(HubThread, self.settings["paraconnect_hub"])

    def set_default_headers(self) -> None:
        """JupyterHandler's headers make no sense on a websocket upgrade."""

    @ws_authenticated
    async def get(self, server_id: str, *args: Any, **kwargs: Any) -> None:
        user = self.current_user
        # Turning a view changes what others of the session see: a write, as in the REST API.
        if not await ensure_async(
            self.authorizer.is_authorized(self, user, "write", AUTH_RESOURCE)
        ):
            raise web.HTTPError(403)
        host, port = await local_endpoint(
            self.hub, server_id, lambda kind: kind in RENDER_KINDS, "a built-in renderer"
        )
        try:
            self._reader, self._writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            raise web.HTTPError(
                502,
                reason=f"cannot reach server {server_id} at {host}:{port}: {exc.strerror or exc}",
            ) from None
        await super().get(server_id, *args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)  # WebSocketMixin: keep-alive pings
        self._pump = asyncio.ensure_future(self._to_browser())

    async def _to_browser(self) -> None:
        """Render server -> browser, one binary message a frame, each written before the next
        is read."""
        reader = self._reader
        if reader is None:
            return
        decoder = FrameDecoder()
        try:
            while True:
                msg = decoder.next_raw()
                if msg is None:
                    data = await reader.read(1 << 20)
                    if not data:
                        decoder.eof()
                        break
                    decoder.feed(data)
                    continue
                await self.write_message(msg, binary=True)
        except (WebSocketClosedError, ConnectionError, asyncio.CancelledError):
            pass
        except ParaconnectError as exc:
            log.warning("paraconnect: a view's render server broke the protocol: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                self.close(1000, "the render server closed the view")

    def on_message(self, message: str | bytes) -> None:
        """Browser -> render server: exactly one request frame, checked before it goes on."""
        writer = self._writer
        if writer is None:
            return
        why = _bad_request(message)
        if why is not None:
            log.warning("paraconnect: closing a view's websocket: %s", why)
            self.close(1003, why[:120])
            return
        if writer.transport.get_write_buffer_size() > MAX_HEADER * 16:
            # A viewer that sends faster than the renderer reads is not following the protocol.
            self.close(1008, "too many requests in flight")
            return
        writer.write(cast(bytes, message))

    def on_close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _bad_request(message: str | bytes) -> str | None:
    if not isinstance(message, bytes):
        return "a view sends binary frames, not text"
    if len(message) < _PREFIX:
        return "a frame shorter than its prefix"
    hlen = int.from_bytes(message[:4], "big")
    plen = int.from_bytes(message[4:8], "big")
    if plen != 0:
        return "a request frame with a payload"
    if hlen > MAX_HEADER or len(message) != _PREFIX + hlen:
        return "a message that is not exactly one request frame"
    return None
