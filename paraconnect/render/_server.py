"""The render server: a TCP or Unix-socket listener speaking the frame protocol of _protocol.py.

Threads: the event loop does the network; one render thread owns every OpenGL context (one
Scene per connection, or per shared scene name: the kernel's view and the browser's stream of
it are two connections on one scene) and does render + raw readback; a small pool encodes
frames.  A streaming
connection pipelines: while frame N encodes on the pool and frame N-1 is being sent, frame N+1
renders.  A slow client pushes back through TCP onto its own stream only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import socket
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc

from .._accept import serve_listener
from .._version import __version__
from .._wire import hostport
from ..errors import ConfigError, ParaconnectError, ProtocolError
from . import _protocol as P
from ._encode import JPEG_ENCODER
from ._frames import Frames
from ._scene import RenderFailed, Scene

__all__ = ["RenderServer", "ServerOptions", "check_loopback"]

log = logging.getLogger("paraconnect.render")
T = TypeVar("T")


@dataclass(slots=True)
class _Shared:
    """A scene that the connections naming it share (``hello``'s ``scene``)."""

    scene: Scene
    members: set[_Connection] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """How the server renders: window backend, EGL device, encoder threads, limits."""

    backend: str = "egl"
    device: int | None = None
    encoders: int = max(1, min(4, os.cpu_count() or 1))
    max_clients: int = 16
    root: Path | None = None
    width: int = 640
    height: int = 480
    multisamples: int = 0


def check_loopback(host: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"refusing to listen on {host!r}: the renderer speaks plain text without "
            "authentication, so it listens on loopback (127.0.0.1, ::1) or a Unix socket only, "
            "behind paraconnect's tunnel"
        )


class RenderServer:
    """Serves any number of clients, each with its own scene, from one render thread."""

    def __init__(self, options: ServerOptions | None = None) -> None:
        self.options = options or ServerOptions()
        self._render = ThreadPoolExecutor(1, thread_name_prefix="paraconnect-render")
        self._encode = ThreadPoolExecutor(
            self.options.encoders, thread_name_prefix="paraconnect-encode"
        )
        self.facts: dict[str, str] = {}
        self.clients = 0
        self.shared: dict[str, _Shared] = {}
        self._sharing = anyio.Lock()  # one connection at a time makes or leaves a shared scene

    @property
    def encoders(self) -> int:
        return self.options.encoders

    async def on_render_thread(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._render, functools.partial(fn, *args, **kw))

    def new_scene(self) -> Scene:
        o = self.options
        return Scene(
            width=o.width,
            height=o.height,
            backend=o.backend,
            device=o.device,
            multisamples=o.multisamples,
        )

    async def start(self) -> dict[str, str]:
        """Make one scene to prove OpenGL works and learn the GL vendor; raises RenderFailed."""

        def probe() -> dict[str, str]:
            scene = self.new_scene()
            try:
                return scene.gl_facts()
            finally:
                scene.close()

        self.facts = await self.on_render_thread(probe)
        log.info("rendering with %s", self.facts)
        return self.facts

    def close(self) -> None:
        self._encode.shutdown(wait=True, cancel_futures=True)
        self._render.shutdown(wait=True, cancel_futures=True)

    async def serve_tcp(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on loopback TCP; ``task_status.started("host:port")`` once listening."""
        check_loopback(host)
        if not self.facts:
            await self.start()
        try:
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        sock = listener.listeners[0].extra(  # noqa: S610 (anyio's typed attributes)
            anyio.abc.SocketAttribute.local_address
        )
        where = hostport(sock[0], sock[1])
        await self._serve(listener, where, task_status)

    async def serve_unix(
        self,
        path: str | os.PathLike[str],
        *,
        task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on a Unix socket (mode 0600); ``task_status.started("unix:PATH")``."""
        if not self.facts:
            await self.start()
        try:
            listener = await anyio.create_unix_listener(path)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {str(path)!r}: {exc.strerror or exc}") from exc
        os.chmod(path, 0o600)
        await self._serve(listener, f"unix:{os.fspath(path)}", task_status)

    async def serve_fd(
        self,
        fd: int,
        *,
        task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve an inherited socket: a listening one (any number of clients), or a connected
        one such as half of a socketpair (that one client; returns when it leaves)."""
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ConfigError(f"file descriptor {fd} is not a socket: {exc.strerror}") from exc
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            check_loopback(str(sock.getsockname()[0]))
        if not self.facts:
            await self.start()
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            listener = await anyio.abc.SocketListener.from_socket(sock)
            await self._serve(listener, f"fd:{fd}", task_status)
            return
        stream = await anyio.abc.SocketStream.from_socket(sock)
        task_status.started(f"fd:{fd}")
        await self._handle(stream)

    async def _serve(
        self,
        listener: anyio.abc.Listener[Any],
        where: str,
        task_status: anyio.abc.TaskStatus[str],
    ) -> None:
        async with listener:
            task_status.started(where)
            # Clients are long-lived and counted by max_clients: no cap on accepting, but an
            # accept error (out of descriptors) never ends the server.
            await serve_listener(listener, self._handle, f"render server on {where}", cap=None)

    async def _handle(self, stream: anyio.abc.ByteStream) -> None:
        conn = _Connection(self, stream)
        try:
            await conn.run()
        except Exception as exc:
            # One bad client never takes the server down.
            if _is_disconnect(exc):
                log.info("client went away: %r", exc)
            else:
                log.exception("client connection failed")
        finally:
            await conn.cleanup()
            await stream.aclose()


def _fields(req: object, names: str) -> dict[str, Any]:
    """These fields of a request, as the keyword arguments of the scene's method of the same
    names."""
    return {name: getattr(req, name) for name in names.split()}


def _is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_disconnect(e) for e in exc.exceptions)
    return isinstance(exc, anyio.BrokenResourceError | anyio.ClosedResourceError | ConnectionError)


class _Connection(Frames):
    server: RenderServer

    def __init__(self, server: RenderServer, stream: anyio.abc.ByteStream) -> None:
        self.server = server
        self.stream = stream
        self.decoder = P.FrameDecoder(max_payload=0)
        self.send_lock = anyio.Lock()
        self.scene: Scene | None = None
        self.frame_no = 0
        self.changed = anyio.Event()
        self.stream_scope: anyio.CancelScope | None = None
        self.stream_done: anyio.Event | None = None
        self.counted = False
        self.scene_name: str | None = None
        self.interactive = False  # the viewer is dragging: stream frames at drag quality
        self.inflight = 0  # stream frames made and not yet acknowledged
        self.unacked: deque[int] = deque()  # numbers of stream frames sent, not yet acked
        self.acked = anyio.Event()
        self.last_input: P.RequestId = None
        self.frame_input: P.RequestId = None

    # --- I/O ---------------------------------------------------------------------------

    async def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        data = P.encode_message(header, payload)
        async with self.send_lock:
            await self.stream.send(data)

    async def error(self, exc: Exception, request_id: P.RequestId, *, fatal: bool) -> None:
        if isinstance(exc, P.BadRequest):
            kind = exc.kind
        elif isinstance(exc, ConfigError):
            kind = "config"
        elif isinstance(exc, ProtocolError):
            kind = "protocol"
        else:
            kind = "server"
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        header = {"op": "error", "id": request_id, "kind": kind, "fatal": fatal, "message": message}
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await self.send(header)

    async def receive(self) -> P.Message | None:
        while True:
            msg = self.decoder.next_message()
            if msg is not None:
                return msg
            try:
                data = await self.stream.receive(65536)
            except anyio.EndOfStream:
                self.decoder.eof()
                return None
            self.decoder.feed(data)

    # --- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            try:
                await self._loop(tg)
            finally:
                tg.cancel_scope.cancel()

    async def _loop(self, tg: anyio.abc.TaskGroup) -> None:
        greeted = False
        while True:
            try:
                msg = await self.receive()
            except P.BadRequest as exc:
                if not greeted:
                    await self.error(exc, None, fatal=True)
                    return
                await self.error(exc, None, fatal=False)
                continue
            except ProtocolError as exc:
                await self.error(exc, None, fatal=True)
                return
            if msg is None:
                return
            rid = msg.header.get("id") if isinstance(msg.header.get("id"), int | str) else None
            try:
                req = P.parse_request(msg.header)
            except P.BadRequest as exc:
                await self.error(exc, exc.request_id, fatal=not greeted)
                if not greeted:
                    return
                continue
            if not greeted:
                if not isinstance(req, P.Hello):
                    await self.error(
                        ProtocolError("the first message must be {'op': 'hello', 'v': 1}"),
                        rid,
                        fatal=True,
                    )
                    return
                if not await self.hello(req):
                    return
                greeted = True
                continue
            try:
                if not await self.dispatch(req, tg):
                    return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise
            except ParaconnectError as exc:
                await self.error(exc, req.id, fatal=False)
            except Exception as exc:
                log.exception("request %r failed", req)
                await self.error(
                    RenderFailed(f"the renderer failed: {type(exc).__name__}: {exc}"),
                    req.id,
                    fatal=False,
                )

    async def hello(self, req: P.Hello) -> bool:
        if req.v != P.VERSION:
            await self.error(
                ProtocolError(
                    f"protocol version {req.v} is not spoken here (this render server speaks "
                    f"{P.VERSION}); use matching paraconnect versions on both ends"
                ),
                req.id,
                fatal=True,
            )
            return False
        if self.server.clients >= self.server.options.max_clients:
            await self.error(
                ConfigError(
                    f"the render server is full ({self.server.options.max_clients} clients); "
                    "close another view and try again"
                ),
                req.id,
                fatal=True,
            )
            return False
        self.server.clients += 1
        self.counted = True
        self.scene_name = req.scene
        await self.send(
            {
                "op": "hello",
                "id": req.id,
                "v": P.VERSION,
                "server": f"paraconnect-render {__version__}",
                **self.server.facts,
                "jpeg_encoder": JPEG_ENCODER,
                "encoders": self.server.options.encoders,
                "formats": list(P.FORMATS),
                "datasets": list(P.DATASETS),
                "max_size": P.MAX_SIZE,
            }
        )
        return True

    async def get_scene(self) -> Scene:
        if self.scene is not None:
            return self.scene
        name = self.scene_name
        if name is None:
            self.scene = await self.server.on_render_thread(self.server.new_scene)
            return self.scene
        server = self.server
        async with server._sharing:
            shared = server.shared.get(name)
            if shared is None:
                scene = await server.on_render_thread(server.new_scene)
                shared = server.shared[name] = _Shared(scene)
            shared.members.add(self)
            self.scene = shared.scene
        return self.scene

    def mark_changed(self) -> None:
        """Every stream showing this scene renders again (its own only, if not shared)."""
        shared = self.server.shared.get(self.scene_name) if self.scene_name else None
        for conn in shared.members if shared is not None else (self,):
            conn.changed.set()

    async def dispatch(self, req: P.Request, tg: anyio.abc.TaskGroup) -> bool:
        """Carry out one request; False ends the connection."""
        on_render = self.server.on_render_thread
        if isinstance(req, P.Hello):
            raise P.BadRequest("'hello' was already said on this connection")
        if isinstance(req, P.Bye):
            await self.stop_stream()
            await self.send({"op": "ok", "id": req.id})
            return False
        if isinstance(req, P.Stop):
            await self.stop_stream()
            await self.send({"op": "ok", "id": req.id})
            return True
        if isinstance(req, P.Ack):
            self.ack(req.n)
            return True
        scene = await self.get_scene()
        if isinstance(req, P.SCENE_OPS):
            await self.scene_op(scene, req)
        elif isinstance(req, P.Resize):
            await on_render(scene.resize, req.w, req.h)
            self.mark_changed()
            await self.send({"op": "ok", "id": req.id, "w": req.w, "h": req.h})
        elif isinstance(req, P.Render):
            raw, _ = await self.render_frame(scene, 0.0)
            result = await asyncio.wrap_future(self.encode(raw, req))
            await self.send_frame(result, req, req.id, stream=False)
        elif isinstance(req, P.Stream):
            await self.stop_stream()
            self.stream_scope = anyio.CancelScope()
            self.stream_done = anyio.Event()
            tg.start_soon(self.stream_task, scene, req, self.stream_scope, self.stream_done)
            await self.send({"op": "ok", "id": req.id})
        return True

    async def scene_op(self, scene: Scene, req: P.Request) -> None:
        """What the scene shows (load, camera, colour, filters, time, blocks, files, state):
        carried out on the render thread; the reply carries the whole state."""
        root = self.server.options.root
        # A viewer's drags (``interactive`` set) come many a second: their replies carry no
        # state, which nothing but the camera changed.
        viewer = isinstance(req, P.Camera) and req.interactive is not None
        if viewer:
            self.interactive = bool(req.interactive)  # type: ignore[union-attr]

        def work() -> tuple[dict[str, Any], bool]:
            if req.id is not None:
                self.last_input = req.id
            pipe = scene.pipeline
            extra: dict[str, Any] = {}
            if isinstance(req, P.Load):
                info = scene.load(
                    dataset=req.dataset,
                    path=req.path,
                    options=req.options,
                    representation=req.representation,
                    root=root,
                    reader=req.reader,
                )
                extra["dataset"] = info.as_json()
            elif isinstance(req, P.Camera):
                scene.camera(**_fields(req, "azimuth elevation zoom reset preset pan"))
            elif isinstance(req, P.Files):
                return {"files": scene.files(req.path, root)}, False
            elif isinstance(req, P.State):
                return {"state": scene.state()}, False
            elif isinstance(req, P.Color):
                pipe.color_by(req.array, req.association, req.component, req.colormap, req.range)
            elif isinstance(req, P.Display):
                pipe.set_display(
                    **_fields(req, "representation scalar_bar axes outline colormap range")
                )
            elif isinstance(req, P.Filter):
                if req.action == "clear":
                    pipe.clear_filters()
                else:
                    pipe.add_filter(req.action, req.spec)
                    scene.face_flat_data()
            elif isinstance(req, P.Time):
                pipe.set_step(req.index)
            elif isinstance(req, P.Blocks):
                pipe.select_blocks(req.select)
            pipe.version += 1
            if viewer:
                return extra, True  # also when it only ends a drag: that brings the still
            return {**extra, "state": scene.state()}, True

        reply, changed = await self.server.on_render_thread(work)
        if changed:
            self.mark_changed()
        await self.send({"op": "ok", "id": req.id, **reply})

    async def cleanup(self) -> None:
        if self.counted:
            self.server.clients -= 1
            self.counted = False
        if self.scene is not None:
            scene, self.scene = self.scene, None
            name = self.scene_name
            shared = self.server.shared.get(name) if name else None
            if name and shared is not None:
                shared.members.discard(self)
                if shared.members:
                    return  # the others still show it
                del self.server.shared[name]
            with anyio.CancelScope(shield=True):
                await self.server.on_render_thread(scene.close)
