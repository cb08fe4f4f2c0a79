"""A render-server connection's frames: render, encode on the pool, send; and streams that
follow the scene's changes, with a viewer's acknowledgement window and drag quality."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..errors import ParaconnectError
from . import _protocol as P
from ._encode import encode_timed
from ._scene import RawFrame, Scene

__all__ = ["EncodeResult", "Frames", "Renders"]

T = TypeVar("T")
EncodeResult = tuple[RawFrame, bytes, float]
# A frame encoding, how it was asked, and the last request of the viewer's it shows.
_Pending = tuple[Future[EncodeResult], P.Stream, P.RequestId]


class Renders(Protocol):
    """What frames need of the server: its one render thread and its encoder pool."""

    _encode: ThreadPoolExecutor

    @property
    def encoders(self) -> int: ...

    async def on_render_thread(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T: ...


class Frames:
    """Mixed into the server's connection, which sets these up."""

    server: Renders
    frame_no: int
    changed: anyio.Event
    interactive: bool  # the viewer is dragging: stream frames at drag quality
    inflight: int  # stream frames made and not yet acknowledged
    unacked: deque[int]  # numbers of stream frames sent, not yet acked
    acked: anyio.Event
    stream_scope: anyio.CancelScope | None
    stream_done: anyio.Event | None
    last_input: P.RequestId  # this connection's last scene request carried out (render thread)
    frame_input: P.RequestId  # ... as the frame being rendered shows it

    async def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        raise NotImplementedError

    async def error(self, exc: Exception, request_id: P.RequestId, *, fatal: bool) -> None:
        raise NotImplementedError

    def ack(self, n: int) -> None:
        while self.unacked and self.unacked[0] <= n:
            self.unacked.popleft()
            self.inflight -= 1
        self.acked.set()

    async def render_frame(
        self, scene: Scene, spin: float, drag: P.Stream | None = None
    ) -> tuple[RawFrame, bool]:
        """A frame, and whether it was drawn as a drag's (`drag`: a stream with its drag
        settings)."""

        def step() -> tuple[RawFrame, bool]:
            if spin:
                scene.camera(azimuth=spin)
            # Read on the render thread, where requests are carried out: the frame shows
            # exactly the requests up to this one, and is drawn as a drag's only if the viewer
            # was still dragging then (a still asked for meanwhile is never drawn coarse).
            self.frame_input = self.last_input
            if drag is None or not self.interactive:
                return scene.render(), False
            scale = drag.drag_scale if drag.drag_scale is not None else scene.drag_scale()
            return scene.render(scale), True

        # Shielded: a cancelled wait must not lose a pooled buffer the render thread filled.
        with anyio.CancelScope(shield=True):
            done = await self.server.on_render_thread(step)
        return done

    def encode(self, raw: RawFrame, spec: P.Render | P.Stream) -> Future[EncodeResult]:
        def job() -> EncodeResult:
            data, ms = encode_timed(raw.pixels, spec.format, spec.quality, spec.optimize)
            return raw, data, ms

        fut = self.server._encode.submit(job)
        # Also runs when the job is cancelled before it starts: the buffer always comes back.
        fut.add_done_callback(lambda _: raw.release())
        return fut

    async def send_frame(
        self,
        result: EncodeResult,
        spec: P.Render | P.Stream,
        rid: P.RequestId,
        *,
        stream: bool,
        shows: P.RequestId = None,
    ) -> None:
        raw, data, encode_ms = result
        self.frame_no += 1
        header = {
            "op": "frame",
            "id": rid,
            "stream": stream,
            "n": self.frame_no,
            "w": raw.width,
            "h": raw.height,
            "format": spec.format,
            "quality": spec.quality,
            "render_ms": round(raw.render_ms, 3),
            "encode_ms": round(encode_ms, 3),
            "t": raw.t,
        }
        if shows is not None:
            # The viewer's last request this frame shows: after a drag, the viewer keeps only
            # frames of its final request (no stale frame after the still).
            header["input"] = shows
        await self.send(header, data)

    async def stream_task(
        self, scene: Scene, spec: P.Stream, scope: anyio.CancelScope, done: anyio.Event
    ) -> None:
        depth = max(1, min(3, self.server.encoders))
        send, receive = anyio.create_memory_object_stream[_Pending](depth)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.stream_sender, receive)
                with scope:
                    async with send:
                        try:
                            await self.stream_producer(scene, spec, send)
                        except ParaconnectError as exc:
                            await self.error(exc, spec.id, fatal=False)
        finally:
            done.set()

    async def stream_producer(
        self, scene: Scene, spec: P.Stream, send: MemoryObjectSendStream[_Pending]
    ) -> None:
        interval = 1.0 / spec.fps if spec.fps > 0 else 0.0
        due = time.monotonic()
        first = True
        self.inflight, self.unacked = 0, deque()
        while True:
            if not (first or spec.spin):
                await self.changed.wait()
            first = False
            # A viewer with `window` frames unacknowledged gets nothing more until it acks;
            # what changes meanwhile folds into the one frame rendered after.
            while spec.window and self.inflight >= spec.window:
                self.acked = anyio.Event()
                await self.acked.wait()
            self.changed = anyio.Event()
            if interval:
                now = time.monotonic()
                if due > now:
                    await anyio.sleep(due - now)
                due = max(due + interval, time.monotonic() - interval)
            # While the viewer drags: smaller, coarser frames, so that they keep up with the
            # pointer (as ParaView's image reduction while interacting); the still after is
            # full size and quality.
            raw, dragging = await self.render_frame(scene, spec.spin, spec)
            use = spec
            if dragging and spec.drag_quality is not None:
                use = replace(spec, quality=spec.drag_quality)
            self.inflight += 1
            await send.send((self.encode(raw, use), use, self.frame_input))

    async def stream_sender(self, receive: MemoryObjectReceiveStream[_Pending]) -> None:
        async with receive:
            async for fut, spec, shows in receive:
                try:
                    result = await asyncio.wrap_future(fut)
                except ParaconnectError as exc:
                    self.inflight -= 1
                    self.acked.set()
                    await self.error(exc, spec.id, fatal=False)
                    continue
                self.unacked.append(self.frame_no + 1)  # the number send_frame gives it
                await self.send_frame(result, spec, None, stream=True, shows=shows)

    async def stop_stream(self) -> None:
        if self.stream_scope is not None and self.stream_done is not None:
            self.stream_scope.cancel()
            await self.stream_done.wait()
        self.stream_scope = self.stream_done = None
