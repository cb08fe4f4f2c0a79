"""RenderClient: the blocking facade of AsyncRenderClient (_client.py), for notebooks and
scripts."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from .._portal import PortalThread
from ._client import AsyncRenderClient

__all__ = ["RenderClient"]


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _blocking(
    method: Callable[Concatenate[AsyncRenderClient, _P], Awaitable[_R]],
) -> Callable[Concatenate[RenderClient, _P], _R]:
    """The async client's `method`, run to its end on the portal's thread: same parameters and
    docstring (functools.wraps, so that help() and IDEs show them)."""

    def call(self: RenderClient, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        result: _R = self._call(functools.partial(method, self._client, *args, **kwargs))
        return result

    functools.update_wrapper(call, method)
    return call


def _same_parameters(
    of: Callable[Concatenate[AsyncRenderClient, _P], None],
) -> Callable[[Callable[..., None]], Callable[Concatenate[RenderClient, _P], None]]:
    """Give a facade's ``__init__`` the async client's parameters (for type checkers, help())."""

    def wrap(init: Callable[..., None]) -> Callable[Concatenate[RenderClient, _P], None]:
        functools.update_wrapper(init, of)
        return init

    return wrap


class RenderClient:
    """The blocking facade of AsyncRenderClient, for notebooks and scripts.

    ``with RenderClient(port=N) as c: c.load("wavelet"); c.save_png("w.png")``.  Runs the async
    client on a private event-loop thread (anyio's blocking portal); each method is the async
    client's, with the same parameters.
    """

    @_same_parameters(AsyncRenderClient.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._client = AsyncRenderClient(*args, **kwargs)
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

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
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

    load = _blocking(AsyncRenderClient.load)
    resize = _blocking(AsyncRenderClient.resize)
    camera = _blocking(AsyncRenderClient.camera)
    request = _blocking(AsyncRenderClient.request)
    state = _blocking(AsyncRenderClient.state)
    files = _blocking(AsyncRenderClient.files)
    render = _blocking(AsyncRenderClient.render)
    save_png = _blocking(AsyncRenderClient.save_png)
    stream = _blocking(AsyncRenderClient.stream)
    stop = _blocking(AsyncRenderClient.stop)
    next_frame = _blocking(AsyncRenderClient.next_frame)
