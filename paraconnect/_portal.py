"""The blocking facades' event loop: anyio's blocking portal on a thread of its own, opened and
closed in one place, so that a blocking client is its async client called through it (never a
second copy of the logic; STYLE.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

import anyio.from_thread

from .errors import NetworkError

__all__ = ["PortalThread"]


class PortalThread:
    """``open()`` starts the loop thread, ``call(fn, *args)`` runs a coroutine function there
    and waits, ``close(last)`` runs `last` (the client's ``aclose``) and stops the thread.
    A call while closed raises NetworkError with `closed_message`."""

    def __init__(self, closed_message: str, backend_options: dict[str, Any] | None = None) -> None:
        self.closed_message = closed_message
        self.backend_options = backend_options
        self._cm: Any = None
        self._portal: anyio.from_thread.BlockingPortal | None = None

    def open(self) -> None:
        cm = anyio.from_thread.start_blocking_portal(
            backend="asyncio", backend_options=self.backend_options
        )
        self._portal = cm.__enter__()
        self._cm = cm

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        if self._portal is None:
            raise NetworkError(self.closed_message)
        return self._portal.call(fn, *args)

    def submit(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Future[Any]:
        """Start `fn` on the loop thread without waiting for it."""
        if self._portal is None:
            raise NetworkError(self.closed_message)
        return self._portal.start_task_soon(fn, *args)

    def close(self, last: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Idempotent; the thread stops even when `last` fails."""
        portal, cm = self._portal, self._cm
        self._portal = self._cm = None
        if portal is None:
            return
        try:
            if last is not None:
                portal.call(last)
        finally:
            cm.__exit__(None, None, None)
