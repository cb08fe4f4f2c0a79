"""A side's accounting writes for accepted connections, gathered into one transaction.

Each SQLite commit costs some seventy system calls here (WAL frames, shared-memory locks, the
pid checks SQLite makes): written one at a time, the row a connection opens and the one it
closes were a tenth of a busy agent's time.  The ledger queues them and commits what gathered
within `FLUSH_DELAY` in one transaction, on the loop's thread, in order (a row is inserted
before it is completed, also within one flush; a connection that opens and closes within
one flush is written once, as its complete row).  `flush()` writes at once: the side calls it
before its periodic byte counts and when it closes, so nothing queued is lost on an orderly
stop; what must not run before the rows are written (telling an observer, the hub's events, of
a connection) waits for the next commit with `then()`, so no one hears of a connection that the
accounting does not show yet.  A process killed with SIGKILL loses at most the last
`FLUSH_DELAY` of openings and closings; refused attempts are not queued (their rows are
written when they happen).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable

from ._accounting import Accounting, Attempt

__all__ = ["FLUSH_DELAY", "Ledger", "Row"]

log = logging.getLogger("paraconnect.tunnel")

FLUSH_DELAY = 0.02  # seconds: short beside any human or polling reader, long beside a handshake


class Row:
    """An accounting row that may not be written yet: its id once it is."""

    __slots__ = ("closed", "id", "queued")

    def __init__(self) -> None:
        self.id: int | None = None
        self.queued = True  # its insert waits for the next flush
        # How it closed, when that came before the flush: the insert writes the complete row.
        self.closed: tuple[float, int, int, str] | None = None


class Ledger:
    def __init__(self, accounting: Callable[[], Accounting | None]) -> None:
        """`accounting` gives the database when a flush needs it (None: not accounting)."""
        self._accounting = accounting
        self._ops: list[Callable[[Accounting], object]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._then: list[Callable[[], object]] = []  # to run once `_ops` are written

    def start(self, attempt: Attempt, when: float) -> Row:
        """An accepted connection's open row, written at the next flush."""
        row = Row()

        def insert(acc: Accounting) -> None:
            row.queued = False
            if row.closed is None:
                row.id = acc.start(attempt, when)
            else:  # opened and closed since the last flush: one complete row, not two writes
                end, bytes_in, bytes_out, reason = row.closed
                row.id = acc.closed(
                    attempt, when, end, bytes_in=bytes_in, bytes_out=bytes_out, reason=reason
                )

        self._queue(insert)
        return row

    def finish(self, row: Row, *, bytes_in: int, bytes_out: int, reason: str) -> None:
        if row.queued:  # its insert has not run: it writes the whole row
            row.closed = (time.time(), bytes_in, bytes_out, reason)
            return

        def complete(acc: Accounting) -> None:
            if row.id is not None:  # None: its insert failed (and was logged)
                acc.finish(row.id, bytes_in=bytes_in, bytes_out=bytes_out, reason=reason)

        self._queue(complete)

    def _queue(self, op: Callable[[Accounting], object]) -> None:
        self._ops.append(op)
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to come back later: write now
            self.flush()
            return
        self._timer = loop.call_later(FLUSH_DELAY, self.flush)

    def then(self, call: Callable[[], object]) -> None:
        """Run `call` once what is queued now is written: at the next flush, or at once when
        nothing is queued.  Calls run in the order given, after the commit."""
        if self._ops:
            self._then.append(call)
        else:
            call()

    def flush(self) -> None:
        """Write what is queued, in one transaction; then run what waited for it (`then`)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ops, self._ops = self._ops, []
        try:
            self._write(ops)
        finally:
            waiting, self._then = self._then, []
            for call in waiting:
                call()

    def _write(self, ops: list[Callable[[Accounting], object]]) -> None:
        if not ops:
            return
        acc = self._accounting()
        if acc is None:
            return
        try:
            with acc.transaction():
                for op in ops:
                    try:
                        op(acc)
                    except sqlite3.Error as exc:  # one bad write never loses the others
                        log.error("accounting %s failed: %s", acc.path, exc)
        except (sqlite3.Error, OSError) as exc:  # accounting never stops a tunnel
            log.error("accounting %s failed: %s", acc.path, exc)
