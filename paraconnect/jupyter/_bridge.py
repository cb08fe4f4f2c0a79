"""The hub on an event-loop thread of its own, and the one door the handlers use to reach it.

Jupyter's tornado loop must never wait on the hub: an operation is started on the hub's loop
through its blocking portal and awaited here as an asyncio future, so a slow launch or a busy
relay never stalls the notebook server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..hub import Hub, find_hub, serve_control
from ._config import Paraconnect

__all__ = ["HubThread"]

log = logging.getLogger("paraconnect.jupyter")

EventCallback = Callable[[dict[str, Any]], None]


async def _serve_control(hub: Hub) -> Path:
    # In the hub's own task group, so that stopping the hub also closes the control socket
    # and removes <home>/run/hub.json (kernels find the hub there).
    path: Path = await hub.start_task(serve_control, hub)
    return path


class HubThread:
    """Start, reach and stop the hub of one Jupyter server."""

    def __init__(self, config: Paraconnect) -> None:
        self.config = config
        self.hub: Hub | None = None
        # Why the hub does not run, for every request while it does not (one line).
        self.error: str | None = "the paraconnect hub has not started yet"
        self._listeners: list[EventCallback] = []

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
        )
        for callback in self._listeners:  # before it starts: re-adoption is announced at start
            hub.subscribe(callback)
        hub.start_in_thread()
        try:
            hub.call(_serve_control, hub)
            for name in self.config.open_sessions:
                hub.call(hub.open_session, name)
        except BaseException:
            hub.stop_thread()
            raise
        self.hub = hub
        self.error = None
        log.info("paraconnect: hub for %s runs (phone home on %s)", home, self.config.listen)

    async def op(self, op: str, fields: Mapping[str, Any]) -> Any:
        """Run operation `op` (docs/hub-api.md) on the hub's loop; await it on the caller's."""
        from .._hub._ops import dispatch

        hub = self.hub
        if hub is None:
            raise ConfigError(f"the paraconnect hub does not run: {self.error or 'it stopped'}")
        return await asyncio.wrap_future(hub.submit(dispatch, hub, op, dict(fields)))

    def stop(self) -> None:
        """Stop the hub's thread (blocking).  Launched servers keep running and phone home to
        the next hub, which re-adopts them."""
        hub, self.hub = self.hub, None
        self.error = "the paraconnect hub stopped with Jupyter"
        if hub is not None:
            hub.stop_thread()
            log.info("paraconnect: hub for %s stopped", hub.home)
