"""RADIUS accounting: Accounting-Request Start when a connection opens, Interim-Update every
`interim` seconds while it is open, Stop when it closes (bytes each way, duration, the close
reason), alongside the local SQLite record, which stays the source of truth.

Packets go out from one task (`run`, started by the side's `watch`), in order.  A packet the
server does not acknowledge goes into a retry queue in the accounting database
(``radius_outbox``), and so does every later one until the queue is empty again, so the server
sees a connection's Start before its Stop; a restart finds the queue and sends it.  A retried
packet carries Acct-Delay-Time, the seconds it waited (RFC 2866).  Two processes of one data
directory that share a RADIUS server may both send a queued packet: RADIUS accounting takes a
duplicate (same Acct-Session-Id and status) as such.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio

from ._accounting import Accounting
from ._radius_wire import RadiusConfig, dictionary, exchange, fit, peer_attributes
from ._tracked import Tracked

__all__ = ["RETRY_SECONDS", "RadiusAccounting"]

log = logging.getLogger("paraconnect.tunnel")

RETRY_SECONDS = 5.0  # how often the retry queue is tried while the server does not answer
FINAL_SEND = 2.0  # at most this long, when stopping, to send what is queued
ACCOUNTING_REQUEST = 4
_BATCH = 100

_OUTBOX = """
CREATE TABLE IF NOT EXISTS radius_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    server TEXT NOT NULL,
    created REAL NOT NULL,
    attrs TEXT NOT NULL
)
"""

Item = tuple[float, dict[str, Any]]  # (when it was made, its attributes)


def _delete(row_id: int, db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM radius_outbox WHERE id = ?", (row_id,))


def _octets(attrs: dict[str, Any], direction: str, count: int) -> None:
    attrs[f"Acct-{direction}-Octets"] = count & 0xFFFFFFFF
    if count >> 32:
        attrs[f"Acct-{direction}-Gigawords"] = count >> 32


class RadiusAccounting:
    def __init__(
        self,
        config: RadiusConfig,
        *,
        local_identity: str,
        session_id: str,
        accounting_db: Callable[[], Accounting | None] | None,
    ) -> None:
        self.config = config
        self.local_identity = local_identity
        self.session_id = session_id
        self._db = accounting_db or (lambda: None)
        self._open: dict[Tracked, dict[str, Any]] = {}
        self._queue: deque[Item] = deque()
        self._wake: anyio.Event | None = None
        self._backlog = False  # the retry queue holds packets of ours: new ones go behind them
        self._table_ready = False

    # -- what the side tells ---------------------------------------------------------------

    def opened(self, tracked: Tracked) -> None:
        attrs: dict[str, Any] = dict(peer_attributes(tracked.peer, tracked.hello, tracked.where))
        attrs |= {
            "Acct-Session-Id": f"{self.session_id[:8]}-{secrets.token_hex(8)}",
            "Acct-Multi-Session-Id": self.session_id,
            "NAS-Identifier": fit(self.local_identity),
            "Paraconnect-Kind": tracked.kind,
        }
        self._open[tracked] = attrs
        self._put(tracked, "Start", attrs)

    def closed(self, tracked: Tracked, bytes_in: int, bytes_out: int, reason: str) -> None:
        attrs = self._open.pop(tracked, None)
        if attrs is None:
            return
        stop = dict(attrs)
        _octets(stop, "Input", bytes_in)  # from the peer (RFC 2866: received from the port)
        _octets(stop, "Output", bytes_out)
        stop["Acct-Terminate-Cause"] = "Admin-Reset" if tracked.closed_by else "User-Request"
        stop["Paraconnect-Close-Reason"] = fit(reason)
        self._put(tracked, "Stop", stop)

    def interim(self) -> None:
        for tracked, attrs in self._open.items():
            update = dict(attrs)
            bytes_in, bytes_out = tracked.byte_counts()
            _octets(update, "Input", bytes_in)
            _octets(update, "Output", bytes_out)
            self._put(tracked, "Interim-Update", update)

    def _put(self, tracked: Tracked, status: str, attrs: dict[str, Any]) -> None:
        now = time.time()
        attrs = attrs | {
            "Acct-Status-Type": status,
            "Acct-Session-Time": int(now - tracked.started),
            "Event-Timestamp": int(now),
        }
        self._queue.append((now, attrs))
        if self._wake is not None:
            self._wake.set()

    # -- sending ----------------------------------------------------------------------------

    async def send(self, created: float, attrs: dict[str, Any]) -> bool:
        """One Accounting-Request; True once the server acknowledged it."""
        from pyrad.packet import AcctPacket

        try:
            packet = AcctPacket(
                code=ACCOUNTING_REQUEST, secret=self.config.secret, dict=dictionary()
            )
            for name, value in attrs.items():
                packet[name] = value
            packet["Acct-Delay-Time"] = max(0, int(time.time() - created))
        except Exception:  # a packet that cannot be built never will be: not retried for ever
            log.exception("a RADIUS accounting packet could not be built; dropped: %s", attrs)
            return True
        reply = await exchange(self.config, packet, self.config.acct_port)
        return reply is not None and reply.code == ACCOUNTING_REQUEST + 1

    async def run(self) -> None:
        """Send what connections report, Interim-Updates, and the retry queue, until cancelled."""
        self._wake = anyio.Event()
        retry = min(RETRY_SECONDS, self.config.interim)
        self._backlog = bool(self._outbox(lambda db: self._pending(db, 1)))
        next_interim = time.monotonic() + self.config.interim
        next_retry = time.monotonic()
        try:
            await self._loop(next_interim, next_retry, retry)
        finally:
            # Stopping: what is queued goes out now if the server answers at once (a stopped
            # agent may never run again), else into the retry queue (`persist`, at close).
            with anyio.CancelScope(shield=True), anyio.move_on_after(FINAL_SEND):
                await self._send_queued()

    async def _loop(self, next_interim: float, next_retry: float, retry: float) -> None:
        while True:
            now = time.monotonic()
            if now >= next_interim:
                next_interim = now + self.config.interim
                self.interim()
            await self._send_queued()
            if self._backlog and now >= next_retry:
                next_retry = now + retry
                await self._retry()
            wait = min(next_interim, next_retry if self._backlog else next_interim) - now
            wake = self._wake = self._wake or anyio.Event()
            with anyio.move_on_after(max(wait, 0.0)):
                await wake.wait()
            self._wake = anyio.Event()

    async def _send_queued(self) -> None:
        while self._queue:
            if self._backlog:
                self.persist()
                return
            created, attrs = self._queue[0]
            if not await self.send(created, attrs):
                log.warning(
                    "the RADIUS server %s did not acknowledge accounting; queued for retry",
                    self.config.address,
                )
                self._backlog = True
                self.persist()
                return
            self._queue.popleft()

    async def _retry(self) -> None:
        rows: list[tuple[int, float, str]] = self._outbox(lambda db: self._pending(db, _BATCH))
        for row_id, created, text in rows:
            if not await self.send(created, json.loads(text)):
                return
            self._outbox(functools.partial(_delete, row_id))
        if len(rows) < _BATCH:
            self._backlog = False
            if rows:
                log.info(
                    "the RADIUS server %s took %d queued accounting packets",
                    self.config.address, len(rows),
                )  # fmt: skip

    # -- the retry queue (in the accounting database) -------------------------------------

    def _pending(self, db: sqlite3.Connection, limit: int) -> list[tuple[int, float, str]]:
        return db.execute(
            "SELECT id, created, attrs FROM radius_outbox WHERE server = ? ORDER BY id LIMIT ?",
            (self.config.address, limit),
        ).fetchall()

    def _outbox(self, call: Callable[[sqlite3.Connection], Any]) -> Any:
        acc = self._db()
        if acc is None:
            return []
        try:
            with acc.transaction() as db:
                if not self._table_ready:
                    db.execute(_OUTBOX)
                    self._table_ready = True
                return call(db)
        except (sqlite3.Error, OSError) as exc:
            log.error("the RADIUS retry queue in %s failed: %s", acc.path, exc)
            return []

    def persist(self) -> None:
        """Move what is not sent yet into the retry queue (for the next try, or the next run)."""
        if not self._queue:
            return
        items = list(self._queue)
        if self._db() is None:
            log.error(
                "%d RADIUS accounting packets for %s lost: no accounting database to queue them",
                len(items), self.config.address,
            )  # fmt: skip
            self._queue.clear()
            return
        stored = self._outbox(lambda db: db.executemany(
            "INSERT INTO radius_outbox (server, created, attrs) VALUES (?, ?, ?)",
            [(self.config.address, when, json.dumps(attrs)) for when, attrs in items],
        ))  # fmt: skip
        if stored != []:
            self._queue.clear()
            self._backlog = True
