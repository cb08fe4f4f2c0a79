"""The web app of a server, in the browser: ``/paraconnect/proxy/<server-id>/<path>`` (under
Jupyter's base URL) forwards HTTP (every method, bodies streamed both ways) and WebSocket (text
and binary, both ways) to that server's local endpoint, and so through the tunnel to the app
on its private leg.

Who can use it: whoever Jupyter authenticates (token or cookie) and authorises to write on the
``paraconnect`` resource (as the view's websocket: what an app does is the session's), with
Jupyter's XSRF rules and Jupyter's origin check for websockets; a server of this hub's registry
only, at the endpoint the hub opened for it (never an arbitrary port).  The app cannot send
Jupyter's XSRF token (it never sees it), so a request that the browser says comes from a page
of this same app (``Sec-Fetch-Site: same-origin`` and a Referer under this server's prefix,
neither of which a page can forge) needs none: its scripts, styles and fetches work, also under
JupyterHub, which asks XSRF of every cookie-authenticated ``cors`` request.  Any other page, a
second user's app on the same domain included, still needs the token.

What the app sees: nothing of the user's Jupyter credentials (the token in ``Authorization`` or
``?token=``, Jupyter's cookies and XSRF header are removed: an app, or whoever runs it, must not
be able to act as the user on Jupyter, jupyter-server-proxy #590), and where it is mounted
(``X-Forwarded-Prefix``, ``-Host``, ``-Proto``, ``-For``).  Its own cookies pass both ways,
except a ``Set-Cookie`` that would overwrite one of Jupyter's; a redirect to a path of the app
comes back under the prefix.

Memory: a response is read in pieces, each written to the browser before the next is read;
a request body goes on as it arrives.  No timeout ends a websocket: tornado's pings (every
``Paraconnect.proxy_ping_interval`` seconds, answered by any live browser) keep proxies in
between from closing an idle one, and the line to the app has none at all (pyvista #3979).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from http.client import responses
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import ensure_async, url_path_join
from tornado import httputil, web
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import (
    WebSocketClientConnection,
    WebSocketClosedError,
    WebSocketHandler,
    websocket_connect,
)

from ..vocab import VIEW_KINDS
from ._bridge import HubThread
from ._view import local_endpoint
from ._websocket import AUTH_RESOURCE

__all__ = ["PROXY", "ProxyHandler"]

log = logging.getLogger("paraconnect.jupyter")

PROXY = "/paraconnect/proxy"
_PIECE = 1 << 16
_HEAD_LIMIT = 1 << 20  # the app's status line and headers
_WS_MESSAGE_LIMIT = 1 << 28
_CONNECT_TIMEOUT = 30.0
_IDLE_KEEP = 30.0  # seconds an idle connection to an app is kept for the next request
_POOL_SIZE = 8
# Hop-by-hop headers (RFC 9110 7.6.1) and those this proxy sets itself.
_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "expect", "proxy-connection",
    }
)  # fmt: skip
# Jupyter's XSRF token: a credential of the user's session, never the app's business.
_JUPYTER_HEADERS = frozenset({"x-xsrftoken", "x-xsrf-token"})
_WS_OWN = frozenset(
    {
        "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
        "sec-websocket-protocol", "sec-websocket-accept",
    }
)  # fmt: skip


class _Pool:
    """Idle keep-alive connections to apps' endpoints: each new one is a data connection
    through the tunnel (a TLS handshake), so requests reuse them."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[tuple[float, Any, Any]]] = {}

    def take(
        self, key: tuple[str, int]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        idle = self._idle.get(key, [])
        while idle:
            since, reader, writer = idle.pop()
            if time.monotonic() - since < _IDLE_KEEP and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    def give(self, key: tuple[str, int], reader: Any, writer: Any) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= _POOL_SIZE or writer.is_closing():
            writer.close()
            return
        idle.append((time.monotonic(), reader, writer))
        asyncio.get_running_loop().call_later(_IDLE_KEEP, self._expire, key)

    def _expire(self, key: tuple[str, int]) -> None:
        now = time.monotonic()
        keep = []
        for item in self._idle.get(key, []):
            if now - item[0] < _IDLE_KEEP and not item[1].at_eof():
                keep.append(item)
            else:
                item[2].close()
        self._idle[key] = keep


_POOL = _Pool()


def _is_upgrade(request: httputil.HTTPServerRequest) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


@web.stream_request_body
class ProxyHandler(WebSocketHandler, JupyterHandler):
    auth_resource = AUTH_RESOURCE

    def initialize(self) -> None:
        self._target: tuple[str, int] = ("", 0)  # set by prepare
        self._prefix = ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reused = False
        self._chunked_body = False
        self._sent_body = False
        self._app_ws: WebSocketClientConnection | None = None
        self._pump: asyncio.Future[None] | None = None

    @property
    def hub(self) -> HubThread:
        return cast(HubThread, self.settings["paraconnect_hub"])

    @property
    def ping_interval(self) -> float | None:
        return self.hub.config.proxy_ping_interval or None

    def set_default_headers(self) -> None:
        if not _is_upgrade(self.request):  # Jupyter's headers make no sense on an upgrade
            super().set_default_headers()
            # The app shows in a frame of this Jupyter's own pages (the Lab tab, srv.open())
            # and no other site's, whatever Jupyter's default (JupyterHub's single-user
            # servers say frame-ancestors 'none'); an app's own policy replaces this one.
            self.set_header("Content-Security-Policy", "frame-ancestors 'self'")

    def check_xsrf_cookie(self) -> None:
        # Jupyter's and JupyterHub's cookie authentication call this (JupyterHub the handler's,
        # so that a handler may narrow it): see the module's docstring.
        if not self._from_the_apps_own_page():
            super().check_xsrf_cookie()

    def _from_the_apps_own_page(self) -> bool:
        headers = self.request.headers
        if headers.get("Sec-Fetch-Site") != "same-origin":
            return False
        referer = urlsplit(headers.get("Referer", ""))
        base = url_path_join(self.base_url, PROXY) + "/"
        rest = self.request.path[len(base) :] if self.request.path.startswith(base) else ""
        server = rest.split("/", 1)[0]
        if not server:
            return False
        return referer.netloc == self.request.host and referer.path.startswith(f"{base}{server}/")

    def check_origin(self, origin_to_satisfy_tornado: str = "") -> bool:
        # Jupyter's rule (allow_origin and friends), not tornado's same-host one.
        return bool(JupyterHandler.check_origin(self, origin_to_satisfy_tornado))

    def compute_etag(self) -> str | None:
        return None  # the app's answer is passed on as it is, never turned into a 304 here

    # -- before the body: who asks, for which server -------------------------------------

    async def prepare(self) -> None:  # type: ignore[override]
        # Jupyter authenticates (and checks XSRF for unsafe methods); refuse, never redirect.
        await super().prepare(_redirect_to_login=False)
        user = self.current_user
        if user is None:
            raise web.HTTPError(403)
        if not await ensure_async(
            self.authorizer.is_authorized(self, user, "write", AUTH_RESOURCE)
        ):
            raise web.HTTPError(403, f"not authorized to write on resource: {AUTH_RESOURCE}")
        server_id = str(self.path_kwargs["server_id"])
        self._target = await local_endpoint(
            self.hub, server_id, lambda kind: kind not in VIEW_KINDS, "a web app"
        )
        # From the path as sent (not the decoded id), so that the app's path is cut right.
        base = url_path_join(self.base_url, PROXY) + "/"
        self._prefix = base + self.request.path[len(base) :].split("/", 1)[0]
        if _is_upgrade(self.request) or self.request.path == self._prefix:
            return
        await self._dial(reuse=True)

    async def _dial(self, *, reuse: bool) -> None:
        got = _POOL.take(self._target) if reuse else None
        self._reused = got is not None
        if got is None:
            try:
                got = await asyncio.wait_for(
                    asyncio.open_connection(*self._target, limit=_HEAD_LIMIT), _CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError) as exc:
                raise web.HTTPError(
                    502, reason=f"cannot reach the app at {self._target[0]}:{self._target[1]}"
                ) from exc
        self._reader, self._writer = got
        self._writer.write(self._request_head())

    def _request_head(self) -> bytes:
        req = self.request
        lines = [f"{req.method} {self._app_uri()} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in self._forward_headers(websocket=False)]
        if "Content-Length" not in req.headers and req.method not in ("GET", "HEAD", "OPTIONS"):
            # tornado took the body's own chunking off: it goes on chunked again.
            self._chunked_body = "chunked" in req.headers.get("Transfer-Encoding", "").lower()
            if self._chunked_body:
                lines.append("Transfer-Encoding: chunked")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _app_uri(self) -> str:
        path = self.request.path[len(self._prefix) :] or "/"
        query = "&".join(_without_token(self.request.query))
        return f"{path}?{query}" if query else path

    def _forward_headers(self, *, websocket: bool) -> list[tuple[str, str]]:
        headers = self.request.headers
        named = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
        out: list[tuple[str, str]] = []
        for name, value in headers.get_all():
            low = name.lower()
            if low in _HOP or low in named or low in _JUPYTER_HEADERS:
                continue
            if low.startswith("x-forwarded-") or (websocket and low in _WS_OWN):
                continue
            if low == "authorization" and value.split(" ", 1)[0].lower() in ("token", "bearer"):
                continue
            if low == "cookie":
                value = "; ".join(self._app_cookies(value))
                if not value:
                    continue
            out.append((name, value))
        earlier = headers.get("X-Forwarded-For")
        client = self.request.remote_ip or ""
        out += [
            ("Host", f"{self._target[0]}:{self._target[1]}"),
            ("X-Forwarded-Prefix", self._prefix + "/"),
            ("X-Forwarded-Host", self.request.host),
            ("X-Forwarded-Proto", self.request.protocol),
            ("X-Forwarded-For", f"{earlier}, {client}" if earlier else client),
        ]
        if not websocket:
            out.append(("Connection", "keep-alive"))
        return out

    def _is_jupyter_cookie(self, name: str) -> bool:
        return (
            name == "_xsrf"
            or name.startswith(("username-", "jupyterhub-"))
            or name == self.identity_provider.get_cookie_name(self)
        )

    def _app_cookies(self, header: str) -> Iterator[str]:
        for part in header.split(";"):
            name = part.split("=", 1)[0].strip()
            if name and not self._is_jupyter_cookie(name):
                yield part.strip()

    # -- the body, as it arrives ------------------------------------------------------------

    async def data_received(self, chunk: bytes) -> None:
        writer = self._writer
        if writer is None:
            return
        self._sent_body = True
        if self._chunked_body:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        else:
            writer.write(chunk)
        try:
            await writer.drain()
        except ConnectionError:
            raise web.HTTPError(502, reason="the app closed the connection") from None

    # -- the answer -------------------------------------------------------------------------

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if _is_upgrade(self.request):
            await self._websocket(*args, **kwargs)
        else:
            await self._http()

    async def _other(self, *args: Any, **kwargs: Any) -> None:
        await self._http()

    # Every other method goes to the app as it came; tornado looks handlers up by name.
    head = post = put = patch = delete = options = _other

    async def _http(self) -> None:
        if self.request.path == self._prefix:
            # The app's relative links resolve under the prefix only with the slash.
            query = self.request.query
            self.redirect(self._prefix + "/" + (f"?{query}" if query else ""))
            return
        try:
            code, reason, headers = await self._response_head()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            if not self._reused or self._sent_body or self._chunked_body:
                raise web.HTTPError(502, reason="the app closed the connection") from None
            # A kept connection the app had closed meanwhile: once more, on a new one.
            self._close_app()
            await self._dial(reuse=False)
            try:
                code, reason, headers = await self._response_head()
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                raise web.HTTPError(502, reason="the app closed the connection") from None
        self.set_status(code, reason or responses.get(code, "Unknown"))
        self.clear_header("Content-Type")
        self._copy_headers(headers)
        keep = await self._copy_body(code, headers)
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        if keep and reader is not None and writer is not None and self._target[1]:
            _POOL.give(self._target, reader, writer)
        elif writer is not None:
            writer.close()
        self.finish()

    async def _response_head(self) -> tuple[int, str, httputil.HTTPHeaders]:
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise web.HTTPError(502, reason="no connection to the app")
        if self._chunked_body:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            first, _, rest = head.partition("\r\n")
            parts = first.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise web.HTTPError(502, reason="the app answered something that is not HTTP")
            code = int(parts[1])
            if 100 <= code < 200:  # 100 Continue and friends: the final answer follows
                continue
            headers = httputil.HTTPHeaders.parse(rest)
            if parts[0] == "HTTP/1.0" and "keep-alive" not in headers.get("Connection", "").lower():
                headers.add("Connection", "close")
            return code, parts[2] if len(parts) > 2 else "", headers

    def _copy_headers(self, headers: httputil.HTTPHeaders) -> None:
        named = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
        for name in {n for n, _ in headers.get_all()}:
            low = name.lower()
            if low in _HOP or low in named or low == "content-length":
                continue
            self.clear_header(name)
            for value in headers.get_list(name):
                if low == "location":
                    value = self._rewrite_location(value)
                elif low == "set-cookie" and self._is_jupyter_cookie(
                    value.split("=", 1)[0].strip()
                ):
                    log.warning("paraconnect: proxy: dropped an app's cookie named as Jupyter's")
                    continue
                self.add_header(name, value)

    def _rewrite_location(self, value: str) -> str:
        url = urlsplit(value)
        if (
            url.scheme in ("http", "https")
            and url.port == self._target[1]
            and url.hostname
            in (
                self._target[0],
                "localhost",
            )
        ):
            value = url.path + (f"?{url.query}" if url.query else "")
            value = value or "/"
        elif url.scheme or url.netloc or not value.startswith("/"):
            return value  # elsewhere, or relative: right as it is
        if value.startswith(self._prefix + "/"):
            return value  # the app used X-Forwarded-Prefix itself
        return self._prefix + value

    async def _copy_body(self, code: int, headers: httputil.HTTPHeaders) -> bool:
        """The app's body to the browser, piece by piece; whether the connection may serve
        another request."""
        reader = self._reader
        if reader is None:
            raise web.HTTPError(502, reason="no connection to the app")
        keep = "close" not in headers.get("Connection", "").lower()
        if self.request.method == "HEAD" or code in (204, 304):
            if "Content-Length" in headers:
                self.set_header("Content-Length", headers["Content-Length"])
            return keep
        try:
            if "chunked" in headers.get("Transfer-Encoding", "").lower():
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                    if size == 0:
                        while (await reader.readuntil(b"\r\n")) != b"\r\n":
                            pass  # trailers: not passed on
                        return keep
                    await self._pass(reader, size)
                    await reader.readexactly(2)
            if "Content-Length" in headers:
                length = int(headers["Content-Length"])
                self.set_header("Content-Length", length)
                await self._pass(reader, length)
                return keep
            while data := await reader.read(_PIECE):
                self.write(data)
                await self.flush()
            return False
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, StreamClosedError):
            # Mid-answer: the status is out already, so the browser sees a cut connection.
            self._close_app()
            self.request.connection.close()  # type: ignore[union-attr]
            raise web.Finish() from None

    async def _pass(self, reader: asyncio.StreamReader, length: int) -> None:
        while length > 0:
            data = await reader.read(min(_PIECE, length))
            if not data:
                raise asyncio.IncompleteReadError(b"", length)
            length -= len(data)
            self.write(data)
            await self.flush()  # written to the browser before the next piece is read

    def _close_app(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    def on_finish(self) -> None:
        self._close_app()  # a request that ended early (refused, cut) keeps no connection

    # -- websocket --------------------------------------------------------------------------

    async def _websocket(self, *args: Any, **kwargs: Any) -> None:
        asked = self.request.headers.get("Sec-WebSocket-Protocol", "")
        protocols = [p.strip() for p in asked.split(",") if p.strip()]
        headers = httputil.HTTPHeaders()
        for name, value in self._forward_headers(websocket=True):
            headers.add(name, value)
        request = HTTPRequest(
            f"ws://{self._target[0]}:{self._target[1]}{self._app_uri()}",
            headers=headers,
            connect_timeout=_CONNECT_TIMEOUT,
            request_timeout=_CONNECT_TIMEOUT,  # until the upgrade only (tornado drops it then)
            follow_redirects=False,
        )
        try:
            self._app_ws = await websocket_connect(
                request, subprotocols=protocols or None, max_message_size=_WS_MESSAGE_LIMIT
            )
        except HTTPClientError as exc:
            raise web.HTTPError(
                exc.code if exc.code >= 400 else 502, reason="the app refused the websocket"
            ) from None
        except (OSError, StreamClosedError, TimeoutError) as exc:
            raise web.HTTPError(502, reason=f"cannot reach the app: {exc}") from None
        await WebSocketHandler.get(self, *args, **kwargs)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return self._app_ws.selected_subprotocol if self._app_ws is not None else None

    def get_compression_options(self) -> dict[str, Any] | None:
        return None

    def open(self, *args: Any, **kwargs: Any) -> None:
        self._pump = asyncio.ensure_future(self._to_browser())

    async def _to_browser(self) -> None:
        app = self._app_ws
        if app is None:
            return
        try:
            while (msg := await app.read_message()) is not None:
                await self.write_message(msg, binary=isinstance(msg, bytes))
        except (WebSocketClosedError, StreamClosedError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                self.close(app.close_code or 1000, app.close_reason or "")

    async def on_message(self, message: str | bytes) -> None:
        app = self._app_ws
        if app is None:
            return
        try:
            await app.write_message(message, binary=isinstance(message, bytes))
        except WebSocketClosedError:
            self.close(1011, "the app closed its websocket")

    def on_close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self._app_ws is not None:
            self._app_ws.close(self.close_code or 1000, self.close_reason)
            self._app_ws = None
        self._close_app()


def _without_token(query: str) -> Iterator[str]:
    """The query's parts but Jupyter's ``token``, each as it was written."""
    for part in query.split("&"):
        if part and unquote(part.split("=", 1)[0].replace("+", " ")) != "token":
            yield part
