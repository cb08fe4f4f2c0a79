"""RenderClient: the blocking facade of AsyncRenderClient (_client.py), for notebooks and
scripts."""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .._portal import PortalThread
from ._client import AsyncRenderClient, Frame

__all__ = ["RenderClient"]


class RenderClient:
    """The blocking facade of AsyncRenderClient, for notebooks and scripts.

    ``with RenderClient(port=N) as c: c.load("wavelet"); c.save_png("w.png")``.  Runs the async
    client on a private event-loop thread (anyio's blocking portal).
    """

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
        self._client = AsyncRenderClient(
            host, port, unix=unix, sock=sock, timeout=timeout, scene=scene
        )
        self._portal = PortalThread(f"the render client for {self._client.where} is not open")

    @property
    def server_info(self) -> dict[str, Any]:
        return self._client.server_info

    @property
    def dropped(self) -> int:
        return self._client.dropped

    def __enter__(self) -> RenderClient:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._portal.call(fn, *args)

    def open(self) -> dict[str, Any]:
        self._portal.open()
        try:
            return dict(self._call(self._client.open))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._portal.close(self._client.aclose)

    def load(
        self,
        dataset: str | None = None,
        *,
        path: str | None = None,
        representation: str = "auto",
        reader: str | None = None,
        **options: int,
    ) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            return await self._client.load(
                dataset, path=path, representation=representation, reader=reader, **options
            )

        return dict(self._call(go))

    def resize(self, width: int, height: int) -> None:
        self._call(self._client.resize, width, height)

    def camera(
        self,
        *,
        azimuth: float = 0.0,
        elevation: float = 0.0,
        zoom: float = 1.0,
        reset: bool = False,
        preset: str | None = None,
        pan: tuple[float, float] | None = None,
    ) -> None:
        async def go() -> None:
            await self._client.camera(
                azimuth=azimuth, elevation=elevation, zoom=zoom, reset=reset, preset=preset, pan=pan
            )

        self._call(go)

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call(functools.partial(self._client.request, op, **fields))
        return result

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call(self._client.state)
        return result

    def files(self, path: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self._call(self._client.files, path)
        return result

    def render(self, format: str = "jpeg", quality: int = 85, *, optimize: bool = False) -> Frame:
        result: Frame = self._call(
            functools.partial(self._client.render, format, quality, optimize=optimize)
        )
        return result

    def save_png(self, path: str | os.PathLike[str]) -> Frame:
        result: Frame = self._call(self._client.save_png, path)
        return result

    def stream(
        self,
        fps: float = 30.0,
        spin: float = 0.0,
        format: str = "jpeg",
        quality: int = 85,
        *,
        optimize: bool = False,
    ) -> None:
        self._call(
            functools.partial(self._client.stream, fps, spin, format, quality, optimize=optimize)
        )

    def stop(self) -> list[Frame]:
        result: list[Frame] = self._call(self._client.stop)
        return result

    def next_frame(self, timeout: float | None = None) -> Frame:
        result: Frame = self._call(self._client.next_frame, timeout)
        return result
