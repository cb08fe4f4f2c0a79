"""The notebook API's machinery: one event loop thread per process, a hub client per data
directory on it, and an embedded hub when none runs.

The loop thread is a daemon so that a script or kernel never hangs at exit on it; an
``atexit`` hook stops an embedded hub (and the servers launched through it, which have no hub
to phone home to once this process is gone) while the thread is still alive.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import logging
import queue
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread

from .errors import ConfigError, ParaconnectError
from .hub import AsyncHubClient
from .vocab import FINAL_STATES

__all__ = ["Runtime", "runtime"]

log = logging.getLogger("paraconnect.api")


class _Loop:
    """An asyncio loop on a daemon thread and the blocking portal into it."""

    def __init__(self) -> None:
        handoff: queue.Queue[anyio.from_thread.BlockingPortal] = queue.Queue()

        async def main() -> None:
            async with anyio.from_thread.BlockingPortal() as portal:
                handoff.put(portal)
                await portal.sleep_until_stopped()

        self.thread = threading.Thread(
            target=anyio.run, args=(main,), kwargs={"backend": "asyncio"},
            name="paraconnect-api", daemon=True,
        )  # fmt: skip
        self.thread.start()
        self.portal = handoff.get()


_loop: _Loop | None = None
_loop_lock = threading.Lock()


def _the_loop() -> _Loop:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = _Loop()
        return _loop


class Runtime:
    """A data directory's hub, as this process sees it: a client, maybe an embedded hub."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.loop = _the_loop()
        self.embedded = False
        self._embedded_task: concurrent.futures.Future[Any] | None = None
        self._embedded_done: anyio.Event | None = None
        self.client = self._connect()

    # -- calling into the loop ----------------------------------------------------------------

    def call(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        """Run the coroutine function on the API's loop and wait for it (from any other thread)."""
        if threading.current_thread() is self.loop.thread:
            raise ConfigError(
                "a blocking paraconnect call was made on its own event loop; use the async API"
            )
        return self.loop.portal.call(fn, *args)

    def submit(
        self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any
    ) -> concurrent.futures.Future[Any]:
        return self.loop.portal.start_task_soon(fn, *args)

    async def request(self, op: str, **fields: Any) -> Any:
        # After the hub went away (a Jupyter restart) the call that met the dead connection
        # failed, and was not retried since the hub may have carried it out (a launch, say);
        # this one finds the new hub.
        if self.client.broken:
            await self.client.aclose()
            self.client = AsyncHubClient(self.home)
            await self.client.connect()
        return await self.client.request(op, **fields)

    async def fresh_client(self) -> AsyncHubClient:
        """A client of its own, for a request that waits long (``wait``) beside others."""
        client = AsyncHubClient(self.home, timeout=self.client.timeout)
        await client.connect()
        return client

    # -- finding or embedding the hub -----------------------------------------------------------

    def _connect(self) -> AsyncHubClient:
        from .hub import find_hub

        for _attempt in range(2):
            try:
                find_hub(self.home)
            except ConfigError:
                try:
                    self._embed()
                except ConfigError as exc:
                    if "already runs" not in str(exc):
                        raise
                    continue  # another process embedded one at the same moment: use it
            client = AsyncHubClient(self.home)
            self.loop.portal.call(client.connect)
            return client
        raise ConfigError(f"cannot find or start a hub for {self.home}")

    def _embed(self) -> None:
        from .hub import Hub, serve_control

        async def embedded(*, task_status: anyio.abc.TaskStatus[anyio.Event]) -> None:
            hub = Hub(self.home)
            done = anyio.Event()
            async with anyio.create_task_group() as tg:
                await tg.start(hub.run)
                await tg.start(serve_control, hub)
                task_status.started(done)
                await done.wait()
                await _stop_servers(hub)
                tg.cancel_scope.cancel()

        try:
            future, done = self.loop.portal.start_task(embedded, name="paraconnect embedded hub")
        except BaseExceptionGroup as group:  # the hub's task group: say the one error it had
            from .tunnel import single_error

            raise single_error(group) from None
        self._embedded_task, self._embedded_done = future, done
        self.embedded = True
        print(
            f"paraconnect: no hub runs for {self.home}; started one inside this process "
            "(its servers stop when the process ends; run 'paraconnect hub' to keep them)",
            file=sys.stderr,
        )
        atexit.register(self.close)

    def close(self) -> None:
        """Close the client; stop the embedded hub (and its servers) if this process runs it."""
        client, task = self.client, self._embedded_task
        self._embedded_task = None
        atexit.unregister(self.close)
        with contextlib.suppress(ParaconnectError, RuntimeError):
            self.loop.portal.call(client.aclose)
        if task is not None and self._embedded_done is not None:
            self.loop.portal.call(self._embedded_done.set)
            try:
                task.result(timeout=60)
            except Exception as exc:  # at exit: say it, never raise
                log.warning("the embedded hub did not stop cleanly: %r", exc, exc_info=exc)
        _runtimes.pop(self.home, None)


async def _stop_servers(hub: Any) -> None:
    for info in await hub.servers():
        if info.state not in FINAL_STATES:
            try:
                await hub.stop(info.id, 5.0)
            except ParaconnectError as exc:
                log.warning("could not stop %s: %s", info.id, exc)


_runtimes: dict[Path, Runtime] = {}
_runtimes_lock = threading.Lock()


def runtime(home: Path | str | None = None) -> Runtime:
    """The process's runtime for `home` (default: $PARACONNECT_HOME, else the user data dir)."""
    from .pki import default_home

    path = Path(home).expanduser().absolute() if home is not None else default_home()
    with _runtimes_lock:
        rt = _runtimes.get(path)
        if rt is None:
            rt = _runtimes[path] = Runtime(path)
        return rt
