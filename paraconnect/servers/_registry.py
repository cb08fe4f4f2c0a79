"""The persistent registry of launched servers: SQLite beside the sessions.

``$PARACONNECT_HOME/servers.sqlite3`` (WAL, 0600) holds one row per server: what was launched
where (the launcher's ``Job.describe()`` JSON), its state and why, and when it last phoned home;
and one row per session listener (the port agents phone home to), so that a restarted hub binds
the same port and re-adopts the agents that dial it again.  Nothing secret is stored: the
agent's key never reaches the hub, and enrolment tokens live hashed in their own table.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._fs import ensure_private_dir
from .._wire import record
from ..errors import ConfigError, NotFoundError, StorageError
from ..vocab import FINAL_STATES, ServerState

__all__ = ["FINAL_STATES", "ServerRecord", "ServerRegistry", "ServerState"]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS servers (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    session TEXT NOT NULL,
    mode TEXT NOT NULL,
    launcher TEXT NOT NULL,
    job TEXT,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    last_phone_home REAL,
    cert_sha256 TEXT,
    options TEXT NOT NULL,
    restarts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS listeners (
    session TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    port INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY,
    server_id TEXT NOT NULL,
    session TEXT NOT NULL,
    expires REAL NOT NULL,
    used REAL
);
"""


@dataclass(frozen=True)
class ServerRecord:
    """One server as the registry keeps it (JSON-able through :meth:`as_dict`)."""

    id: str
    kind: str
    session: str
    mode: str  # "reverse" or "forward"
    launcher: str
    state: str
    reason: str
    created: float
    updated: float
    job: dict[str, Any] | None = None
    last_phone_home: float | None = None
    cert_sha256: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def as_dict(self) -> dict[str, Any]:
        return record(self)


def _row(row: sqlite3.Row) -> ServerRecord:
    return ServerRecord(
        id=row["id"],
        kind=row["kind"],
        session=row["session"],
        mode=row["mode"],
        launcher=row["launcher"],
        state=row["state"],
        reason=row["reason"],
        created=row["created"],
        updated=row["updated"],
        job=json.loads(row["job"]) if row["job"] else None,
        last_phone_home=row["last_phone_home"],
        cert_sha256=row["cert_sha256"],
        options=json.loads(row["options"]),
        restarts=row["restarts"],
    )


class ServerRegistry:
    """SQLite, one connection per registry object, every change its own transaction (atomic)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        ensure_private_dir(path.parent)
        if not path.exists():
            # Create it 0600 before SQLite opens it (SQLite would honour the umask).
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                pass
            except OSError as exc:
                raise StorageError(f"cannot create the server registry {path}: {exc}") from exc
            else:
                os.close(fd)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(
                f"cannot open the server registry {path}: {exc}; move it aside to start afresh"
            ) from exc
        for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(OSError):
                os.chmod(extra, 0o600)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(
                f"the server registry {self.path} could not be written: {exc}"
            ) from exc

    # -- servers ------------------------------------------------------------------------

    def add(self, rec: ServerRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO servers (id, kind, session, mode, launcher, job, state, reason, "
                "created, updated, last_phone_home, cert_sha256, options, restarts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.id, rec.kind, rec.session, rec.mode, rec.launcher,
                    json.dumps(rec.job) if rec.job is not None else None,
                    rec.state, rec.reason, rec.created, rec.updated, rec.last_phone_home,
                    rec.cert_sha256, json.dumps(rec.options), rec.restarts,
                ),
            )  # fmt: skip

    def update(self, server_id: str, **changes: Any) -> ServerRecord:
        allowed = {"job", "state", "reason", "last_phone_home", "cert_sha256", "restarts"}
        bad = set(changes) - allowed
        if bad:
            raise ConfigError(f"registry fields {sorted(bad)} cannot be changed")
        changes["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in changes)
        values = [json.dumps(v) if k == "job" and v is not None else v for k, v in changes.items()]
        with self._tx() as db:
            cur = db.execute(f"UPDATE servers SET {cols} WHERE id = ?", (*values, server_id))  # noqa: S608 - column names are from the allow-list above
            if cur.rowcount != 1:
                raise NotFoundError(f"no server {server_id!r} in the registry {self.path}")
        rec = self.get(server_id)
        if rec is None:  # removed under us by another process
            raise NotFoundError(f"no server {server_id!r} in the registry {self.path}")
        return rec

    def get(self, server_id: str) -> ServerRecord | None:
        row = self._db.execute("SELECT * FROM servers WHERE id = ?", (server_id,)).fetchone()
        return _row(row) if row is not None else None

    def all(self) -> list[ServerRecord]:
        rows = self._db.execute("SELECT * FROM servers ORDER BY created").fetchall()
        return [_row(r) for r in rows]

    def live(self) -> list[ServerRecord]:
        return [r for r in self.all() if not r.final]

    # -- listeners -----------------------------------------------------------------------

    def listener(self, session: str) -> tuple[str, int] | None:
        row = self._db.execute(
            "SELECT host, port FROM listeners WHERE session = ?", (session,)
        ).fetchone()
        return (row["host"], row["port"]) if row is not None else None

    def set_listener(self, session: str, host: str, port: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO listeners (session, host, port) VALUES (?, ?, ?)",
                (session, host, port),
            )

    # -- enrolment tokens (hashed) -----------------------------------------------------------

    def add_token(self, digest: str, server_id: str, session: str, expires: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO tokens (digest, server_id, session, expires) VALUES (?, ?, ?, ?)",
                (digest, server_id, session, expires),
            )

    def token(self, digest: str) -> tuple[str, str, float, float | None] | None:
        """A token's (server_id, session, expires, used) without spending it, or None."""
        with self._tx() as db:
            return _token_row(db, digest)

    def use_token(self, digest: str, now: float) -> tuple[str, str, float, float | None] | None:
        """Mark a token used (atomically); returns (server_id, session, expires, used_before)
        or None if unknown."""
        with self._tx() as db:
            row = _token_row(db, digest)
            if row is not None and row[3] is None:
                db.execute("UPDATE tokens SET used = ? WHERE digest = ?", (now, digest))
            return row


def _token_row(db: sqlite3.Connection, digest: str) -> tuple[str, str, float, float | None] | None:
    row = db.execute(
        "SELECT server_id, session, expires, used FROM tokens WHERE digest = ?", (digest,)
    ).fetchone()
    if row is None:
        return None
    return row["server_id"], row["session"], row["expires"], row["used"]
