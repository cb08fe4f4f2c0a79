"""The hub's side of forward servers: it dials each agent's ``--listen`` address and keeps one
local endpoint per server, following the agent through restarts (the connector dials its
control channel again when it is lost)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from ..errors import ParaconnectError
from ..pki import Credentials
from ..tunnel import Connector, Endpoint, identity_label

__all__ = ["ForwardLinks"]

log = logging.getLogger("paraconnect.hub")

Observer = Callable[[dict[str, Any], BaseException | None], None]
Start = Callable[..., Awaitable[Any]]


class ForwardLinks:
    """One connector per forward server.  `up(server_id, why)` / `down(server_id, why)` hear
    its control channel come and go; `start` runs a task in the hub's task group."""

    def __init__(
        self,
        start: Start,
        up: Callable[[str, str], None],
        down: Callable[[str, str], None],
        observe: Observer,
    ) -> None:
        self._start, self._up, self._down, self._observe = start, up, down, observe
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._connectors: dict[str, Connector] = {}

    async def dial(
        self, server_id: str, creds: Credentials, remote: Endpoint, unique_id: str
    ) -> Endpoint:
        """Connect to the agent of `server_id` at `remote`; returns the local endpoint once
        its control channel is open (a ParaconnectError if the first dial fails)."""

        def control(up: bool, why: str) -> None:
            (self._up if up else self._down)(server_id, why)

        connector = Connector(
            creds, remote, "127.0.0.1:0", server_id=server_id, unique_id=unique_id,
            on_control=control,
        )  # fmt: skip
        connector.side.observers.append(self._observe)
        self.cancel(server_id)  # a restarted agent listens elsewhere: stop dialling the old one
        scope = anyio.CancelScope()
        self._scopes[server_id] = scope
        self._connectors[server_id] = connector
        started = anyio.Event()

        async def run(*, task_status: anyio.abc.TaskStatus[Endpoint]) -> None:
            with scope:
                try:
                    async with anyio.create_task_group() as tg:
                        local = await tg.start(connector.run)
                        started.set()
                        task_status.started(local)
                except ParaconnectError as exc:
                    if not started.is_set():
                        raise
                    self._down(server_id, f"connection to its agent failed: {exc}")

        local: Endpoint = await self._start(run)
        return local

    def cancel(self, server_id: str) -> None:
        """Stop dialling (the server stopped or failed, or its agent moved)."""
        scope = self._scopes.pop(server_id, None)
        self._connectors.pop(server_id, None)
        if scope is not None:
            scope.cancel()

    def connect_id(self, server_id: str) -> int | None:
        connector = self._connectors.get(server_id)
        return connector.connect_id if connector is not None else None

    def stream_counts(self) -> Counter[str]:
        """Data connections open through each connector now, by server id."""
        return Counter({
            sid: sum(1 for t in connector.side.open if t.kind == "data")
            for sid, connector in self._connectors.items()
        })  # fmt: skip

    def agent_of(self, server_id: str) -> tuple[str | None, str | None]:
        """The identity the agent proved and its address, while its control channel is open."""
        connector = self._connectors.get(server_id)
        peer = connector.agent_peer if connector is not None else None
        if connector is None or peer is None:
            return None, None
        return identity_label(peer.identity), str(connector.remote)
