"""A tiny web app for the proxy's tests and benchmark, run as a ``web`` server's program:
``python helpers_webapp.py PORT``.  It tells what reached it: ``/headers`` answers the headers
and URI it received as JSON; ``/`` a marker; ``/big?n=N`` streams N bytes (``&chunked=1``:
chunked); ``/echo`` (any method) answers the body it got; ``/go`` redirects to ``/headers``;
``/cookie`` sets a cookie of its own and one named as Jupyter's; ``/ws`` echoes websocket
messages, text as text, binary as binary."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from tornado import web, websocket

PIECE = b"x" * (1 << 20)
MARKER = "only-for-the-session-webapp-5c1e"  # what "/" answers: a leak shows it


class Root(web.RequestHandler):
    def get(self) -> None:
        self.write(MARKER)


class Headers(web.RequestHandler):
    def get(self, *args: Any) -> None:
        self.write({"headers": list(self.request.headers.get_all()), "uri": self.request.uri})


class Big(web.RequestHandler):
    async def get(self) -> None:
        left = int(self.get_argument("n"))
        if not self.get_argument("chunked", ""):  # else tornado sends it chunked
            self.set_header("Content-Length", str(left))
        self.set_header("Content-Type", "application/octet-stream")
        while left > 0:
            piece = PIECE[: min(left, len(PIECE))]
            self.write(piece)
            await self.flush()
            left -= len(piece)


@web.stream_request_body
class Echo(web.RequestHandler):
    def prepare(self) -> None:
        self.got = bytearray()

    def data_received(self, chunk: bytes) -> None:
        self.got += chunk

    def _answer(self) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        self.write(bytes(self.got))

    post = put = patch = delete = _answer  # type: ignore[assignment]


class Go(web.RequestHandler):
    def get(self) -> None:
        self.redirect("/headers?from=go")


class Cookie(web.RequestHandler):
    def get(self) -> None:
        self.set_cookie("appcookie", "42")
        self.set_cookie("_xsrf", "planted-by-the-app")
        self.write("ok")


class Echoes(websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


async def main(port: int) -> None:
    app = web.Application(
        [("/", Root), ("/headers(.*)", Headers), ("/big", Big), ("/echo", Echo), ("/go", Go),
         ("/cookie", Cookie), ("/ws", Echoes)],
        websocket_max_message_size=1 << 26,
    )  # fmt: skip
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
