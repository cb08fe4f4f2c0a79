"""Data channels asked of an agent that phoned home: the listener sends ``open {channel}`` on
the agent's control channel, and the agent dials back a data connection whose hello carries
that one-time token.  Used by `ReverseListener` (``listen`` and the hub)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import anyio

from ..errors import NetworkError, ParaconnectError
from ._control import Control
from ._hello import Hello
from ._messages import Open
from ._stream import ByteStream

__all__ = ["CHANNEL_TIMEOUT", "DataChannels"]

CHANNEL_TIMEOUT = 15.0

Arrival = tuple[ByteStream, Hello, str]  # the data connection, its hello, where it came from


class DataChannels:
    """The channels asked for and not yet answered, by token."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[str, anyio.Event, list[Arrival]]] = {}

    def arrived(self, conn: ByteStream, hello: Hello, where: str) -> bool:
        """Hand in a data connection; False when nobody asked for it (the caller closes it):
        an unknown or used token, or one asked of another server."""
        pending = self._pending.get(hello.channel or "")
        if pending is None or pending[2] or pending[0] != hello.server_id:
            return False
        pending[2].append((conn, hello, where))
        pending[1].set()
        return True

    @contextlib.asynccontextmanager
    async def request(self, control: Control, server_id: str) -> AsyncIterator[Arrival]:
        """Ask the agent `server_id` on `control` for a data connection and wait for it
        (NetworkError if none comes within CHANNEL_TIMEOUT); it is closed on leaving."""
        channel = secrets.token_hex(16)
        event = anyio.Event()
        slot: list[Arrival] = []
        self._pending[channel] = (server_id, event, slot)
        try:
            try:
                await control.send(Open(channel))
                with anyio.move_on_after(CHANNEL_TIMEOUT):
                    await event.wait()
            except ParaconnectError as exc:
                raise NetworkError(f"cannot ask server {server_id} for a channel: {exc}") from exc
            finally:
                del self._pending[channel]
            if not slot:
                raise NetworkError(
                    f"server {server_id} opened no data channel within {CHANNEL_TIMEOUT:g} s"
                )
            yield slot[0]
        finally:
            with anyio.CancelScope(shield=True):
                for conn, _hello, _where in slot:
                    await conn.aclose()
