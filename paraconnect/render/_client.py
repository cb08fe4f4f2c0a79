"""The render server's client: AsyncRenderClient (anyio); RenderClient, its blocking facade, is
in _blocking.py.

Neither needs VTK: a notebook kernel or the RemoteView widget can use them with only paraconnect
installed.  One connection carries replies and streamed frames interleaved; whichever caller is
waiting reads the next message and files it (replies by request id, stream frames in a short
queue that drops the oldest), so a caller waiting for a reply never blocks one waiting for a
frame, and an unread stream pushes back on the server through TCP.
"""

from __future__ import annotations

import collections
import itertools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.from_thread

from .._notes import read_refusal
from ..errors import ConfigError, NetworkError, ParaconnectError, ProtocolError, TrustError
from . import _protocol as P

__all__ = ["AsyncRenderClient", "Frame", "RemoteRenderError", "RenderTimeout"]

T = TypeVar("T")
_FRAME_QUEUE = 4


class RemoteRenderError(ParaconnectError):
    """The render server could not carry out a request (it failed to render or read a file)."""


class RenderTimeout(NetworkError, TimeoutError):
    """No reply or frame came in time (catch it as NetworkError or as TimeoutError)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded image and what the server said about it."""

    data: bytes
    format: str
    width: int
    height: int
    number: int
    render_ms: float
    encode_ms: float
    server_time: float
    stream: bool
    received: float = field(default_factory=time.time)

    @classmethod
    def from_message(cls, msg: P.Message) -> Frame:
        h = msg.header
        return cls(
            data=msg.payload,
            format=str(h.get("format", "")),
            width=int(h.get("w", 0)),
            height=int(h.get("h", 0)),
            number=int(h.get("n", 0)),
            render_ms=float(h.get("render_ms", 0.0)),
            encode_ms=float(h.get("encode_ms", 0.0)),
            server_time=float(h.get("t", 0.0)),
            stream=bool(h.get("stream", False)),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the encoded bytes as they are (a .png for PNG frames, .jpg for JPEG)."""
        out = Path(path)
        out.write_bytes(self.data)
        return out


_ERRORS: dict[str, type[ParaconnectError]] = {
    "protocol": ProtocolError,
    "config": ConfigError,
    "server": RemoteRenderError,
}


def _error_from(header: dict[str, Any]) -> ParaconnectError:
    cls = _ERRORS.get(str(header.get("kind")), RemoteRenderError)
    return cls(str(header.get("message", "the render server reported an error")))


# A render server answers hello at once (no rendering happens before it); a peer that says
# nothing for this long is another program, such as pvserver, waiting for its own handshake.
HELLO_TIMEOUT = 10.0


def _reason(exc: BaseException) -> str:
    """Why a connection broke, never empty: anyio's errors carry the system's in __cause__."""
    for err in (exc, exc.__cause__, exc.__context__):
        if isinstance(err, OSError) and err.errno:
            return os.strerror(err.errno).lower()
        if err is not None and str(err):
            return str(err)
    return f"{type(exc).__name__} (the peer reset or closed the connection)"


class AsyncRenderClient:
    """``async with AsyncRenderClient(port=N) as c:`` (or ``unix=PATH``, or ``sock=`` a
    connected socket, such as half of a socketpair); then load, camera, render, stream.
    Not bound to one task: any task may call any method."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        unix: str | os.PathLike[str] | None = None,
        sock: socket.socket | None = None,
        timeout: float = 30.0,
        scene: str | None = None,
    ) -> None:
        if [port is None, unix is None, sock is None].count(False) != 1:
            raise ConfigError(
                "give the render server's TCP port, its Unix socket path, or a connected socket"
            )
        self.host, self.port, self.unix, self.timeout = host, port, unix, timeout
        self.scene = scene  # a shared scene's name (protocol ``hello``)
        self._sock = sock
        if sock is not None:
            self.where = f"socket fd {sock.fileno()}"
        elif unix is not None:
            self.where = f"unix:{os.fspath(unix)}"
        else:
            self.where = f"{host}:{port}"
        self.server_info: dict[str, Any] = {}
        self.dropped = 0
        self._stream: anyio.abc.ByteStream | None = None
        self._decoder = P.FrameDecoder()
        self._ids = itertools.count(1)
        self._replies: dict[int, P.Message] = {}
        self._frames: collections.deque[Frame] = collections.deque()
        self._send_lock = anyio.Lock()
        self._rx_lock = anyio.Lock()
        self._arrived = anyio.Event()
        self._failure: ParaconnectError | None = None
        self._stream_error: ParaconnectError | None = None

    # --- connection --------------------------------------------------------------------

    async def __aenter__(self) -> AsyncRenderClient:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> dict[str, Any]:
        """Connect and say hello; returns the server's hello (window, GL vendor, formats)."""
        try:
            with anyio.fail_after(self.timeout):
                if self._sock is not None:
                    self._stream = await anyio.abc.SocketStream.from_socket(self._sock)
                elif self.unix is not None:
                    self._stream = await anyio.connect_unix(self.unix)
                else:
                    self._stream = await anyio.connect_tcp(self.host, self.port or 0)
        except (OSError, TimeoutError) as exc:
            raise NetworkError(
                f"cannot reach the render server at {self.where}: "
                f"{getattr(exc, 'strerror', None) or exc or 'timed out'}; is it running?"
            ) from exc
        try:
            self.server_info = await self._hello()
        except BaseException:
            stream, self._stream = self._stream, None
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise
        return self.server_info

    async def _hello(self) -> dict[str, Any]:
        """Say hello, and check that what answers is paraconnect's renderer: anything else
        (Jupyter, pvserver, an echo) fails here, in one line, rather than at the timeout."""
        fix = "point it at a builtin server's port (srv.port, or the port on the panel's card)"
        not_ours = f"{self.where} is not paraconnect's render server"
        try:
            with anyio.fail_after(min(self.timeout, HELLO_TIMEOUT)):
                hello: dict[str, Any] = {"op": "hello", "v": P.VERSION}
                if self.scene is not None:
                    hello["scene"] = self.scene
                header = (await self._request(hello, tail=P.HELLO_TAIL)).header
        except TimeoutError:
            raise RenderTimeout(
                f"{not_ours}, or not ready: it did not answer the renderer's hello within "
                f"{min(self.timeout, HELLO_TIMEOUT):g} s (pvserver and most programs stay "
                f"silent); {fix}"
            ) from None
        except ProtocolError as exc:
            head = self._decoder.head(24)
            raise ProtocolError(
                f"{not_ours}: it answered with bytes of another protocol ({head!r}); {fix}"
            ) from exc
        except NetworkError as exc:
            self._refused()
            why = _reason(exc.__cause__) if exc.__cause__ else "it closed the connection"
            raise NetworkError(
                f"{not_ours}, or it is not running: the connection ended before the renderer's "
                f"hello was answered ({why}); {fix}"
            ) from exc
        if header.get("op") != "hello" or not {"server", "formats"} <= header.keys():
            raise ProtocolError(f"{not_ours}: it answered hello with {str(header)[:80]}; {fix}")
        return header

    async def aclose(self) -> None:
        """Say bye (best effort) and close."""
        if self._stream is None:
            return
        stream, failure = self._stream, self._failure
        try:
            if failure is None:
                with anyio.move_on_after(2):
                    await self._request({"op": "bye"})
        except ParaconnectError:
            pass
        finally:
            self._stream = None
            await stream.aclose()

    # --- requests ----------------------------------------------------------------------

    async def load(
        self,
        /,
        dataset: str | None = None,
        *,
        path: str | None = None,
        representation: str = "auto",
        reader: str | None = None,
        **options: int,
    ) -> dict[str, Any]:
        """Load a built-in dataset ("wavelet", "sphere", "cone") or a file on the server's host
        (its reader chosen by extension and content, or ``reader`` by name: "ioss", ...);
        returns facts about it (points, cells, bounds, arrays)."""
        header: dict[str, Any] = {"op": "load", "representation": representation, **options}
        if dataset is not None:
            header["dataset"] = dataset
        if path is not None:
            header["path"] = path
        if reader is not None:
            header["reader"] = reader
        reply = await self._request(header)
        return dict(reply.header.get("dataset", {}))

    async def resize(self, width: int, height: int) -> None:
        await self._request({"op": "resize", "w": width, "h": height})

    async def camera(
        self,
        *,
        azimuth: float = 0.0,
        elevation: float = 0.0,
        zoom: float = 1.0,
        reset: bool = False,
        preset: str | None = None,
        pan: tuple[float, float] | None = None,
    ) -> None:
        """Reset, then look along an axis (``preset`` "+x" ... "-z"), turn, zoom, and pan:
        move the picture right and up by (dx, dy) view heights."""
        header: dict[str, Any] = {
            "op": "camera",
            "azimuth": azimuth,
            "elevation": elevation,
            "zoom": zoom,
            "reset": reset,
        }
        if preset is not None:
            header["preset"] = preset
        if pan is not None:
            header["pan"] = list(pan)
        await self._request(header)

    async def request(self, /, op: str, **fields: Any) -> dict[str, Any]:
        """Any request of the protocol (``"color"``, ``"filter"``, ``"time"`` ...; see
        ``_protocol.py``); returns the reply's fields, such as ``"state"``."""
        header = {"op": op, **fields}
        reply = dict((await self._request(header)).header)
        reply.pop("op", None)
        reply.pop("id", None)
        return reply

    async def state(self) -> dict[str, Any]:
        """The whole view: arrays, colouring, filters, time steps, blocks, camera."""
        return dict((await self.request("state"))["state"])

    async def files(self, path: str = "") -> dict[str, Any]:
        """One directory of the server's data root: entries with size, kind and reader."""
        return dict((await self.request("files", path=path))["files"])

    async def render(
        self, format: str = "jpeg", quality: int = 85, *, optimize: bool = False
    ) -> Frame:
        """One frame.  ``optimize``: JPEG with optimized Huffman tables (about a third smaller,
        about twice the encode time; worth it on slow links)."""
        header = {"op": "render", "format": format, "quality": quality, "optimize": optimize}
        return Frame.from_message(await self._request(header))

    async def save_png(self, path: str | os.PathLike[str]) -> Frame:
        """Render one PNG frame and write it to ``path``."""
        frame = await self.render(format="png")
        frame.save(path)
        return frame

    async def stream(
        self,
        fps: float = 30.0,
        spin: float = 0.0,
        format: str = "jpeg",
        quality: int = 85,
        *,
        optimize: bool = False,
    ) -> None:
        """Start pushing frames: on every scene change (camera, load, resize), or every frame
        while spinning ``spin`` degrees each; at most ``fps`` per second (0: no cap)."""
        await self._request(
            {
                "op": "stream",
                "fps": fps,
                "spin": spin,
                "format": format,
                "quality": quality,
                "optimize": optimize,
            }
        )

    async def stop(self) -> list[Frame]:
        """Stop the stream; returns the stream frames that arrived but were not read (the
        server's reply comes after its last stream frame, so none follow)."""
        await self._request({"op": "stop"})
        unread = list(self._frames)
        self._frames.clear()
        return unread

    async def next_frame(self, timeout: float | None = None) -> Frame:  # noqa: ASYNC109
        """The oldest unread stream frame (the queue keeps the newest few; see ``dropped``)."""

        def take() -> Frame | None:
            if self._frames:
                return self._frames.popleft()
            if self._stream_error is not None:
                error, self._stream_error = self._stream_error, None
                raise error
            return None

        limit = timeout if timeout is not None else self.timeout
        try:
            with anyio.fail_after(limit):
                return await self._wait(take)
        except TimeoutError:
            raise RenderTimeout(
                f"no frame from the render server at {self.where} within {limit:g} s"
            ) from None

    # --- machinery ---------------------------------------------------------------------

    async def _request(self, header: dict[str, Any], *, tail: str = "") -> P.Message:
        if self._stream is None:
            raise NetworkError(f"the connection to the render server at {self.where} is closed")
        if self._failure is not None:
            raise self._failure
        rid = next(self._ids)
        data = P.encode_message({**header, "id": rid}, tail=tail)
        try:
            async with self._send_lock:
                await self._stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise self._fail(
                NetworkError(
                    f"lost the render server at {self.where} while sending: {_reason(exc)}"
                )
            ) from exc
        try:
            with anyio.fail_after(self.timeout):
                msg = await self._wait(lambda: self._replies.pop(rid, None))
        except TimeoutError:
            raise RenderTimeout(
                f"the render server at {self.where} did not answer {header['op']!r} within "
                f"{self.timeout:g} s"
            ) from None
        if msg.header.get("op") == "error":
            raise _error_from(msg.header)
        return msg

    def _fail(self, exc: ParaconnectError) -> ParaconnectError:
        if self._failure is None:
            self._failure = exc
        return self._failure

    def _refused(self) -> None:
        """When this port is a tunnel's local endpoint that was just refused upstream, say so:
        the connection's end alone cannot tell a revoked certificate from a crash."""
        if self.port is None:
            return
        why = read_refusal(f"{self.host}:{self.port}")
        if why is not None:
            raise self._fail(TrustError(f"the tunnel at {self.where} was refused: {why}")) from None

    async def _wait(self, take: Callable[[], T | None]) -> T:
        while True:
            got = take()
            if got is not None:
                return got
            if self._failure is not None:
                raise self._failure
            if self._rx_lock.locked():
                await self._arrived.wait()
                continue
            async with self._rx_lock:
                try:
                    msg = await self._read()
                    self._file(msg)
                finally:
                    arrived, self._arrived = self._arrived, anyio.Event()
                    arrived.set()

    async def _read(self) -> P.Message:
        if self._stream is None:
            raise NetworkError(f"the connection to the render server at {self.where} is closed")
        while True:
            try:
                msg = self._decoder.next_message()
            except ProtocolError as exc:
                raise self._fail(ProtocolError(f"render server at {self.where}: {exc}")) from exc
            if msg is not None:
                return msg
            try:
                chunk = await self._stream.receive(1 << 20)
            except anyio.EndOfStream:
                self._refused()
                raise self._fail(
                    NetworkError(f"the render server at {self.where} closed the connection")
                ) from None
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                self._refused()
                raise self._fail(
                    NetworkError(f"lost the render server at {self.where}: {_reason(exc)}")
                ) from exc
            self._decoder.feed(chunk)

    def _file(self, msg: P.Message) -> None:
        h = msg.header
        rid = h.get("id")
        if h.get("op") == "frame" and h.get("stream"):
            if len(self._frames) >= _FRAME_QUEUE:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(Frame.from_message(msg))
        elif isinstance(rid, int) and not isinstance(rid, bool):
            self._replies[rid] = msg
        elif h.get("op") == "error":
            error = _error_from(h)
            if h.get("fatal"):
                self._fail(error)
            # A non-fatal error with no request id belongs to a stream frame that failed.
            elif self._failure is None:
                self._stream_error = error
