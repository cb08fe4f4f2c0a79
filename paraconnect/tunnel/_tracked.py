"""One open tunnel connection as its side keeps it: the identity TLS proved, the cancel scope a
revocation cancels, and what its accounting record needs when it ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

import anyio

from ..tls import PeerIdentity
from ._hello import Hello
from ._ledger import Row
from ._stream import ByteStream

if TYPE_CHECKING:
    from ._splice import SpliceResult

__all__ = ["Tracked"]


class Tracked:
    """One open tunnel connection: who is on the other end, and how to close it.

    Use as a context manager around the connection's work: its cancel scope is what a
    revocation cancels, and leaving it completes the accounting record."""

    __slots__ = ("closed_by", "conn", "hello", "kind", "live", "on_exit", "reason", "row", "scope",
                 "started", "where")  # fmt: skip

    def __init__(
        self, on_exit: Callable[[Tracked], None], conn: ByteStream, hello: Hello, where: str
    ) -> None:
        self.on_exit = on_exit  # the side's: off its registry, and accounted
        self.conn = conn
        self.hello = hello
        self.kind = hello.purpose.value
        self.where = where
        self.scope = anyio.CancelScope()
        self.started = time.time()
        self.live: SpliceResult | None = None  # the relay's live counters (data connections)
        self.row: Row | None = None
        self.closed_by: str | None = None
        self.reason = "closed"

    @property
    def peer(self) -> PeerIdentity:
        return self.conn.peer

    def byte_counts(self) -> tuple[int, int]:
        """(from the peer, to the peer): payload for data connections, messages for control."""
        if self.live is not None:
            return self.live.counts()
        return getattr(self.conn, "bytes_in", 0), getattr(self.conn, "bytes_out", 0)

    def close(self, why: str) -> None:
        """Close it now (from the event loop's thread): the work inside is cancelled."""
        if self.closed_by is None:
            self.closed_by = why
        self.scope.cancel()

    def __enter__(self) -> Tracked:
        self.scope.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            return bool(self.scope.__exit__(exc_type, exc, tb))
        finally:
            self.on_exit(self)
