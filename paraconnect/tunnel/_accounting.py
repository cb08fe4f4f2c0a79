"""Accounting: one durable record per connection attempt, accepted or refused.

SQLite in WAL mode (stdlib ``sqlite3``), one file in the data directory
(``$PARACONNECT_HOME/accounting.sqlite3``, 0600).  A row is inserted when a connection is
established (``end`` NULL) and completed when it closes; a refused attempt is one complete row.
Open rows are touched now and then with their byte counts (``last_seen``), so that when the
writing process dies (kill -9, a crash, a reboot) the row keeps what was known: the next opener
marks rows of dead writers ``lost`` (the writer is told apart by boot id, pid and the pid's
start time, so a reused pid is not taken for the dead one), with ``end`` set to the last sign
of life.  Commits survive the death of the process (WAL, ``synchronous=NORMAL``); a side
gathers its open and close rows for a few milliseconds into one commit (`_ledger`).

Rotation moves closed rows past an age or a row count into ``accounting-archive.sqlite3``
beside it, in one transaction; queries read both files, so summaries do not change.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .._fs import boot_id
from ..errors import StorageError

__all__ = [
    "ACCOUNTING_FILE",
    "ARCHIVE_FILE",
    "Accounting",
    "Attempt",
    "ConnRecord",
    "Summary",
    "parse_since",
    "summarize",
    "writer_id",
]

log = logging.getLogger("paraconnect.tunnel")

ACCOUNTING_FILE = "accounting.sqlite3"
ARCHIVE_FILE = "accounting-archive.sqlite3"
AUTO_ROTATE_ROWS = 200_000  # at open: past this many rows, keep the newest half
AUTO_ROTATE_AGE = 90 * 86400.0

_COLUMNS = (
    "id",
    "session",
    "server_id",
    "kind",
    "side",
    "local_identity",
    "remote_identity",
    "remote_role",
    "remote_name",
    "remote_serial",
    "remote_unique_id",
    "remote_address",
    "start",
    "end",
    "bytes_in",
    "bytes_out",
    "outcome",
    "reason",
    "writer",
    "last_seen",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {db}connections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    server_id TEXT,
    kind TEXT,
    side TEXT,
    local_identity TEXT,
    remote_identity TEXT,
    remote_role TEXT,
    remote_name TEXT,
    remote_serial TEXT,
    remote_unique_id TEXT,
    remote_address TEXT,
    start REAL NOT NULL,
    "end" REAL,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL,
    reason TEXT,
    writer TEXT,
    last_seen REAL
);
CREATE INDEX IF NOT EXISTS {db}connections_start ON connections(start);
CREATE INDEX IF NOT EXISTS {db}connections_open ON connections(outcome) WHERE outcome = 'open';
"""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def writer_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{boot_id()}/{pid}/{_start_time(pid) or '?'}"


def _writer_alive(writer: str, boot: str) -> bool:
    try:
        wboot, pid_text, started = writer.split("/")
        pid = int(pid_text)
    except ValueError:
        return False
    if wboot != boot:
        return False
    now = _start_time(pid)
    return now is not None and (started == "?" or now == started)


@dataclass(frozen=True, slots=True)
class Attempt:
    """What is known of a connection when it starts (or is refused)."""

    session: str
    server_id: str
    kind: str  # control, data, or unknown (refused before the hello said)
    side: str  # our acting role: server (agent) or client
    local_identity: str
    remote_address: str
    remote_identity: str | None = None
    remote_role: str | None = None
    remote_name: str | None = None
    remote_serial: str | None = None
    remote_unique_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConnRecord:
    id: int
    session: str
    server_id: str | None
    kind: str | None
    side: str | None
    local_identity: str | None
    remote_identity: str | None
    remote_role: str | None
    remote_name: str | None
    remote_serial: str | None
    remote_unique_id: str | None
    remote_address: str | None
    start: float
    end: float | None
    bytes_in: int
    bytes_out: int
    outcome: str  # open, closed, refused, lost; renewed (kind renewal)
    reason: str | None
    writer: str | None
    last_seen: float | None

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["start_iso"] = _iso(self.start)
        out["end_iso"] = _iso(self.end) if self.end is not None else None
        return out


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: an ISO date/time (UTC unless it says otherwise) or an age like 30m, 2h,
    7d, 90s."""
    from ..errors import ConfigError

    now = time.time() if now is None else now
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if text and text[-1] in units:
        try:
            return now - float(text[:-1]) * units[text[-1]]
        except ValueError:
            pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--since {text!r} is neither a date (2026-11-23T01:00) nor an age (30m, 2h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


class Accounting:
    """The accounting database of one data directory."""

    def __init__(self, path: Path, *, auto_rotate: bool = True) -> None:
        self.path = path
        self.archive_path = path.with_name(ARCHIVE_FILE)
        self.writer = writer_id()
        self._boot = boot_id()
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                os.close(fd)
            self.db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(
                f"cannot open the accounting database {path}: {exc}; check the data directory "
                "(PARACONNECT_HOME) is writable"
            ) from exc
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA.format(db=""))
            self.mark_lost()
            if auto_rotate:
                self.rotate(max_age=AUTO_ROTATE_AGE, max_rows=AUTO_ROTATE_ROWS, only_if_over=True)
        except sqlite3.Error as exc:
            self.db.close()
            raise StorageError(
                f"the accounting database {path} is unusable ({exc}); move it away and retry "
                "(a fresh one is created)"
            ) from exc

    @classmethod
    def in_home(cls, home: Path, **kw: bool) -> Accounting:
        return cls(home / ACCOUNTING_FILE, **kw)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Accounting:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:  # e.g. busy past the timeout: leave no transaction open
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """The writes made inside are committed together (one commit for many rows)."""
        return self._tx()

    # -- writing -------------------------------------------------------------------------

    def start(self, attempt: Attempt, when: float | None = None) -> int:
        """A connection established: a row with no end yet.  Returns its id."""
        now = time.time() if when is None else when
        return self._insert(attempt, now, None, "open", None, 0, 0)

    def closed(
        self, attempt: Attempt, start: float, end: float, *, bytes_in: int, bytes_out: int,
        reason: str,
    ) -> int:  # fmt: skip
        """A connection that opened and closed before its open row was written: one complete
        row, as `start` then `finish` would have left it."""
        return self._insert(attempt, start, end, "closed", reason, bytes_in, bytes_out)

    def refused(self, attempt: Attempt, reason: str, when: float | None = None) -> int:
        """A refused attempt: one complete row."""
        now = time.time()
        return self._insert(attempt, now if when is None else when, now, "refused", reason, 0, 0)

    def note(self, attempt: Attempt, outcome: str, reason: str) -> int:
        """Something done for a peer on an open channel (a certificate renewed or refused,
        `attempt.kind` naming what): one complete row."""
        now = time.time()
        return self._insert(attempt, now, now, outcome, reason, 0, 0)

    def _insert(
        self,
        a: Attempt,
        start: float,
        end: float | None,
        outcome: str,
        reason: str | None,
        bytes_in: int,
        bytes_out: int,
    ) -> int:
        cur = self.db.execute(
            'INSERT INTO connections (session, server_id, kind, side, local_identity, '
            "remote_identity, remote_role, remote_name, remote_serial, remote_unique_id, "
            'remote_address, start, "end", bytes_in, bytes_out, outcome, reason, writer, '
            "last_seen) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                a.session, a.server_id, a.kind, a.side, a.local_identity, a.remote_identity,
                a.remote_role, a.remote_name, a.remote_serial, a.remote_unique_id,
                a.remote_address, start, end, bytes_in, bytes_out, outcome, reason,
                self.writer, start if end is None else end,
            ),
        )  # fmt: skip
        return int(cur.lastrowid or 0)

    def finish(self, row: int, *, bytes_in: int, bytes_out: int, reason: str) -> None:
        now = time.time()
        self.db.execute(
            'UPDATE connections SET "end" = ?, bytes_in = ?, bytes_out = ?, outcome = ?, '
            "reason = ?, last_seen = ? WHERE id = ? AND outcome = 'open'",
            (now, bytes_in, bytes_out, "closed", reason, now, row),
        )

    def progress(self, rows: Iterable[tuple[int, int, int]]) -> None:
        """Byte counts so far of open rows (id, in, out): what a lost row will keep."""
        now = time.time()
        updates = [(i, o, now, row) for row, i, o in rows]
        if not updates:
            return
        with self._tx() as db:
            db.executemany(
                "UPDATE connections SET bytes_in = ?, bytes_out = ?, last_seen = ? "
                "WHERE id = ? AND outcome = 'open'",
                updates,
            )

    def mark_lost(self) -> int:
        """Close the open rows of writers that are gone; returns how many."""
        rows = self.db.execute(
            "SELECT id, writer FROM connections WHERE outcome = 'open'"
        ).fetchall()
        dead = [
            (row_id,)
            for row_id, writer in rows
            if writer != self.writer and not _writer_alive(writer or "", self._boot)
        ]
        if dead:
            with self._tx() as db:
                db.executemany(
                    "UPDATE connections SET outcome = 'lost', \"end\" = COALESCE(last_seen, "
                    "start), reason = 'lost: the writing process died before the connection "
                    "closed (end is its last sign of life)' WHERE id = ? AND outcome = 'open'",
                    dead,
                )
            log.warning(
                "accounting %s: %d connection(s) of a process that died marked lost",
                self.path,
                len(dead),
            )
        return len(dead)

    def rotate(
        self,
        *,
        max_age: float | None = None,
        max_rows: int | None = None,
        only_if_over: bool = False,
        now: float | None = None,
    ) -> int:
        """Move closed rows older than `max_age` seconds, and the oldest past the newest
        `max_rows`, into the archive file.  Returns how many moved."""
        now = time.time() if now is None else now
        count = int(self.db.execute("SELECT COUNT(*) FROM connections").fetchone()[0])
        if only_if_over:
            oldest = self.db.execute("SELECT MIN(start) FROM connections").fetchone()[0]
            too_old = max_age is not None and oldest is not None and oldest < now - max_age
            too_many = max_rows is not None and count > max_rows
            if not (too_old or too_many):
                return 0
            if too_many and max_rows is not None:
                max_rows //= 2  # room for a while before the next rotation
        cut_id = -1
        if max_rows is not None and count > max_rows:
            row = self.db.execute(
                "SELECT id FROM connections ORDER BY id DESC LIMIT 1 OFFSET ?", (max_rows,)
            ).fetchone()
            cut_id = int(row[0]) if row else -1
        cut_time = now - max_age if max_age is not None else None
        where = "outcome != 'open' AND (id <= ?" + (")" if cut_time is None else " OR start < ?)")
        params: tuple[float, ...] = (cut_id,) if cut_time is None else (cut_id, cut_time)
        self._attach()
        try:
            with self._tx() as db:
                db.execute(
                    f"INSERT INTO archive.connections SELECT * FROM main.connections WHERE {where}",  # noqa: S608
                    params,
                )
                moved = db.execute(f"DELETE FROM main.connections WHERE {where}", params).rowcount  # noqa: S608
        finally:
            self.db.execute("DETACH DATABASE archive")
        if moved:
            log.info("accounting: %d record(s) rotated into %s", moved, self.archive_path)
        return int(moved)

    def _attach(self) -> None:
        if not self.archive_path.exists():
            fd = os.open(
                self.archive_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            os.close(fd)
        self.db.execute("ATTACH DATABASE ? AS archive", (str(self.archive_path),))
        self.db.executescript(_SCHEMA.format(db="archive."))

    # -- reading -------------------------------------------------------------------------

    def records(
        self,
        *,
        session: str | Sequence[str] | None = None,
        since: float | None = None,
        archive: bool = True,
    ) -> list[ConnRecord]:
        """Records oldest first, from the archive too; `session` filters by session id(s)."""
        cols = ", ".join(f'"{c}"' for c in _COLUMNS)
        clauses: list[str] = []
        params: list[object] = []
        if session is not None:
            ids = [session] if isinstance(session, str) else list(session)
            clauses.append(f"session IN ({','.join('?' * len(ids))})")
            params += ids
        if since is not None:
            clauses.append('COALESCE("end", ?) >= ?')
            params += [time.time(), since]
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        sources = ["main.connections"]
        use_archive = archive and self.archive_path.exists()
        if use_archive:
            self._attach()
            sources.append("archive.connections")
        try:
            query = " UNION ALL ".join(f"SELECT {cols} FROM {src}{where}" for src in sources)  # noqa: S608
            rows = self.db.execute(f"{query} ORDER BY start, id", params * len(sources)).fetchall()
        finally:
            if use_archive:
                self.db.execute("DETACH DATABASE archive")
        return [ConnRecord(*row) for row in rows]

    def summary(
        self, *, session: str | Sequence[str] | None = None, since: float | None = None
    ) -> list[Summary]:
        """Per remote identity: attempts, refusals, time connected, bytes each way."""
        return summarize(self.records(session=session, since=since))


@dataclass(slots=True)
class Summary:
    identity: str
    role: str | None
    name: str | None
    unique_id: str | None
    count: int = 0
    refused: int = 0
    lost: int = 0
    open: int = 0
    seconds: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def summarize(records: Iterable[ConnRecord], now: float | None = None) -> list[Summary]:
    now = time.time() if now is None else now
    groups: dict[str, Summary] = {}
    for r in records:
        key = r.remote_identity or f"unidentified peer at {r.remote_address or '?'}"
        g = groups.get(key)
        if g is None:
            g = groups[key] = Summary(key, r.remote_role, r.remote_name, r.remote_unique_id)
        g.count += 1
        if r.outcome == "refused":
            g.refused += 1
        else:
            g.lost += r.outcome == "lost"
            g.open += r.outcome == "open"
            end = r.end if r.end is not None else now
            g.seconds += max(0.0, end - r.start)
        g.bytes_in += r.bytes_in
        g.bytes_out += r.bytes_out
    return sorted(groups.values(), key=lambda g: g.identity)
