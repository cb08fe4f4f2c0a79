"""The hub on an event-loop thread of its own, and the one door the handlers use to reach it.

Jupyter's tornado loop must never wait on the hub: an operation is started on the hub's loop
through its blocking portal and awaited here as an asyncio future, so a slow launch or a busy
relay never stalls the notebook server.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from ..errors import ConfigError
from ..hub import Hub, find_hub, serve_control
from ..tunnel import single_error
from ._config import Paraconnect

__all__ = ["RESTART_DELAYS", "HubThread"]

log = logging.getLogger("paraconnect.jupyter")

EventCallback = Callable[[dict[str, Any]], None]

# Seconds before each try to restart a hub that died, the last one repeated: a bug that kills
# every new hub at once costs a log line every minute, not a busy loop.
RESTART_DELAYS = (1.0, 2.0, 5.0, 15.0, 60.0)
_STABLE = 300.0  # a hub that served this long before failing is restarted after the first pause

# Test-only.  No input reaches the hub's loop with an exception any more, so the test that
# Jupyter notices a dead hub and restarts it (tests/test_jupyter_hub_dies.py) makes the loop
# fail here: when the file this names appears, it is removed and the hub's task group fails.
_FAULT_ENV = "PARACONNECT_TEST_HUB_FAULT"


async def _serve_control(hub: Hub) -> Path:
    # In the hub's own task group, so that stopping the hub also closes the control socket
    # and removes <home>/run/hub.json (kernels find the hub there).
    path: Path = await hub.start_task(serve_control, hub)
    return path


async def _fault_when(
    path: Path, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    task_status.started()
    trigger = anyio.Path(path)
    while not await trigger.exists():  # noqa: ASYNC110 - a file from another process
        await anyio.sleep(0.05)
    await trigger.unlink()
    raise RuntimeError(f"a fault injected for a test ({path} appeared)")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        exc = single_error(exc)
    return f"{type(exc).__name__}: {exc}"


class HubThread:
    """Start, reach and stop the hub of one Jupyter server."""

    def __init__(self, config: Paraconnect) -> None:
        self.config = config
        self.hub: Hub | None = None
        # Why the hub does not run, for every request while it does not (one line).
        self.error: str | None = "the paraconnect hub has not started yet"
        self._listeners: list[EventCallback] = []
        # Held while starting or stopping: a restart and Jupyter's stop never overlap.
        self._lock = threading.Lock()
        self._stopping = False
        self._failures = 0
        self._started_at = 0.0
        self._timer: threading.Timer | None = None

    def add_listener(self, callback: EventCallback) -> None:
        """`callback` gets every event as a dict, on the hub's thread; add before start()."""
        self._listeners.append(callback)

    def start(self) -> None:
        """Start the hub and its control socket; on failure keep the reason in `error`."""
        home = self.config.home
        try:
            control = find_hub(home)
        except ConfigError:
            control = None  # no hub runs for this data directory: ours will
        if control is not None:
            raise ConfigError(
                f"a paraconnect hub already runs for {home} (control socket {control}); stop "
                "it, or give this Jupyter server another --Paraconnect.data_dir"
            )
        hub = Hub(
            home,
            listen=self.config.listen,
            advertise=self.config.advertise or None,
            connect_timeout=self.config.connect_timeout,
            readopt_grace=self.config.readopt_grace,
            enroll_listen=self.config.enroll_listen or None,
            rules=self.config.launch_rules(),
            radius=self.config.radius_config(),
            walltime_warnings=self.config.walltime_warnings,
        )
        for callback in self._listeners:  # before it starts: re-adoption is announced at start
            hub.subscribe(callback)
        hub.start_in_thread(on_exit=functools.partial(self._exited, hub))
        try:
            hub.call(_serve_control, hub)
            for name in self.config.open_sessions:
                hub.call(hub.open_session, name)
            fault = os.environ.get(_FAULT_ENV)
            if fault:
                hub.call(hub.start_task, _fault_when, Path(fault))
        except BaseException:
            hub.stop_thread()
            raise
        self.hub = hub
        self.error = None
        self._started_at = time.monotonic()
        log.info("paraconnect: hub for %s runs (phone home on %s)", home, self.config.listen)

    def _exited(self, hub: Hub, exc: BaseException | None) -> None:
        """The hub's loop ended (on its thread).  Unless Jupyter stops it, that is a failure:
        REST answers 503 with the reason until the hub, restarted after a pause, serves."""
        if exc is None or self._stopping or self.hub is not hub:
            return
        self.hub = None
        if time.monotonic() - self._started_at > _STABLE:
            self._failures = 0  # it served a good while: start again from the shortest pause
        delay = self._next_delay()
        self.error = f"it failed ({_reason(exc)}); restarting it in {delay:g} s"
        log.error("paraconnect: the hub failed; restarting it in %g s", delay, exc_info=exc)
        self._notify("failed", self.error)
        self._schedule(delay, hub)

    def _next_delay(self) -> float:
        delay = RESTART_DELAYS[min(self._failures, len(RESTART_DELAYS) - 1)]
        self._failures += 1
        return delay

    def _schedule(self, delay: float, dead: Hub | None) -> None:
        timer = threading.Timer(delay, self._restart, args=(dead,))
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _restart(self, dead: Hub | None) -> None:
        if dead is not None:
            dead.stop_thread()  # its loop thread is still there, idle
        with self._lock:
            if self._stopping:
                return
            try:
                self.start()
            except Exception as exc:
                delay = self._next_delay()
                self.error = f"it did not restart ({_reason(exc)}); trying again in {delay:g} s"
                log.error("paraconnect: the hub did not restart: %s", exc)
                self._schedule(delay, None)
                return
        log.info("paraconnect: the hub serves again")
        self._notify("running", "")

    def _notify(self, state: str, reason: str) -> None:
        """Tell the listeners (the panel's websocket) that the hub failed or serves again."""
        event = {"event": "hub", "state": state, "reason": reason, "at": time.time()}
        for callback in self._listeners:
            try:
                callback(event)
            except Exception:
                log.exception("paraconnect: a hub event listener failed")

    async def op(self, op: str, fields: Mapping[str, Any]) -> Any:
        """Run operation `op` (docs/hub-api.md) on the hub's loop; await it on the caller's."""
        from ..hub import dispatch

        hub = self.hub
        if hub is None:
            raise ConfigError(f"the paraconnect hub does not run: {self.error or 'it stopped'}")
        return await asyncio.wrap_future(hub.submit(dispatch, hub, op, dict(fields)))

    def stop(self) -> None:
        """Stop the hub's thread (blocking).  Launched servers keep running and phone home to
        the next hub, which re-adopts them."""
        with self._lock:
            self._stopping = True
            if self._timer is not None:
                self._timer.cancel()
            hub, self.hub = self.hub, None
        self.error = "the paraconnect hub stopped with Jupyter"
        if hub is not None:
            hub.stop_thread()
            log.info("paraconnect: hub for %s stopped", hub.home)
