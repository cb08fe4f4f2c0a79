"""The hub on an event-loop thread of its own (Jupyter, kernels, scripts): start it there, run
its async methods from other threads, stop it.  The loop thread is the one blocking-portal
helper of the package (`paraconnect._portal`)."""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Self

import anyio

from .._portal import PortalThread
from ..errors import ConfigError
from ..tunnel import loop_options

__all__ = ["ThreadedHub"]


class ThreadedHub:
    """What `Hub` adds to its async life (`run`, `started`, `_cancel`) to live on a thread."""

    _thread: PortalThread | None = None
    started: anyio.Event

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        raise NotImplementedError

    async def _cancel(self) -> None:
        raise NotImplementedError

    def start_in_thread(
        self, on_exit: Callable[[BaseException | None], None] | None = None
    ) -> Self:
        """Run the hub on an event loop thread of its own; returns once it serves.  `on_exit`
        hears, on that thread, why the hub stopped serving (None: it was stopped)."""
        # The hub relays every byte of its servers' streams: the relays' loop (uvloop).
        self._thread = PortalThread("the hub's thread is closed", loop_options())
        self._thread.open()
        try:
            running = self._thread.submit(self.run)
            if on_exit is not None:
                running.add_done_callback(
                    lambda f: on_exit(None if f.cancelled() else f.exception())
                )
            # A hub that fails before it serves says why here, instead of a wait for ever.
            started = self._thread.submit(self.started.wait)
            concurrent.futures.wait((running, started), return_when="FIRST_COMPLETED")
            if not started.done():
                started.cancel()
                running.result()
                raise ConfigError("the hub stopped before it served; see the log above")
        except BaseException:
            self.stop_thread()
            raise
        return self

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run the async method `fn` (e.g. ``hub.launch``) on the hub's loop and wait for it."""
        return self.submit(fn, *args).result()

    def submit(
        self, fn: Callable[..., Awaitable[Any]], *args: Any
    ) -> concurrent.futures.Future[Any]:
        """Start the async `fn` on the hub's loop from another thread, without waiting: an
        asyncio caller awaits ``asyncio.wrap_future(hub.submit(...))``."""
        thread = self._thread
        if thread is None:
            raise ConfigError("the hub runs no thread of its own; use start_in_thread() first")
        try:
            return thread.submit(fn, *args)
        except RuntimeError as exc:  # the portal closed under us
            raise ConfigError("the hub is stopping; try again once it runs") from exc

    def stop_thread(self) -> None:
        """Stop the hub's loop thread.  Launched servers keep running and phone home again."""
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(Exception):  # the thread stops even when the cancel fails
                thread.close(self._cancel)
