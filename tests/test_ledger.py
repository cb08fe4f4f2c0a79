"""The ledger: a side's open and close rows gathered into one commit, in order, none lost when
one write fails, all written by a flush (the side's close) and by the loop's timer."""

from __future__ import annotations

import functools
import sqlite3
import time
from pathlib import Path

import anyio
import pytest

from paraconnect.tunnel import Accounting, Attempt
from paraconnect.tunnel._ledger import Ledger

pytestmark = [pytest.mark.timeout(60)]


def _attempt(name: str) -> Attempt:
    return Attempt(
        session="s1", server_id="srv", kind="data", side="server", local_identity="server 'srv'",
        remote_address="127.0.0.1:1", remote_identity=f"client {name!r}", remote_role="client",
        remote_name=name,
    )  # fmt: skip


def _transactions(acc: Accounting) -> list[str]:
    """How each write on `acc` from now on is committed: "COMMIT" for an explicit transaction,
    "autocommit" for a statement that is its own transaction."""
    seen: list[str] = []
    in_tx = False

    def trace(sql: str) -> None:
        nonlocal in_tx
        word = sql.split()[0].upper()
        if word == "BEGIN":
            in_tx = True
        elif word in ("COMMIT", "ROLLBACK"):
            in_tx = False
            seen.append(word)
        elif word in ("INSERT", "UPDATE") and not in_tx:
            seen.append("autocommit")

    acc.db.set_trace_callback(trace)
    return seen


@pytest.mark.anyio
async def test_open_and_close_rows_of_many_connections_take_one_commit(home: Path) -> None:
    with Accounting.in_home(home, auto_rotate=False) as acc:
        commits = _transactions(acc)
        ledger = Ledger(lambda: acc)
        rows = [ledger.start(_attempt(name), 1000.0 + i) for i, name in enumerate("abc")]
        for i, row in enumerate(rows):
            ledger.finish(row, bytes_in=i, bytes_out=10 * i, reason="eof")
        # The loop's timer writes them: wait for that, not for a fixed time.
        with anyio.fail_after(20):
            while True:
                if all(row.id is not None for row in rows):
                    break
                await anyio.sleep(0.005)
        assert commits == ["COMMIT"]  # six writes, one transaction
        records = {r.remote_name: r for r in acc.records()}
    assert sorted(records) == ["a", "b", "c"]
    for i, name in enumerate("abc"):
        rec = records[name]
        assert (rec.outcome, rec.reason, rec.bytes_in, rec.bytes_out) == (
            "closed",
            "eof",
            i,
            10 * i,
        )
        assert rec.start == 1000.0 + i and rec.end is not None


@pytest.mark.anyio
async def test_a_connection_closed_before_the_flush_is_one_complete_insert(home: Path) -> None:
    """Its open row was never written: the flush inserts the closed row, no UPDATE after, and
    its end is when it closed, not when the flush came."""
    with Accounting.in_home(home, auto_rotate=False) as acc:
        statements: list[str] = []
        acc.db.set_trace_callback(lambda sql: statements.append(sql.split()[0].upper()))
        writes = {"BEGIN", "INSERT", "UPDATE", "COMMIT"}
        ledger = Ledger(lambda: acc)
        row = ledger.start(_attempt("quick"), 1000.0)
        ledger.finish(row, bytes_in=3, bytes_out=4, reason="eof")
        closed_at = time.time()
        # Holding the loop on purpose: its flush timer cannot run before the flush below.
        time.sleep(0.2)  # noqa: ASYNC251
        ledger.flush()
        [rec] = acc.records()
        # A connection still open at the flush is inserted open, then completed by an UPDATE.
        later = ledger.start(_attempt("slow"), 2000.0)
        ledger.flush()
        ledger.finish(later, bytes_in=1, bytes_out=2, reason="eof")
        ledger.flush()
        slow = {r.remote_name: r for r in acc.records()}["slow"]
    assert [w for w in statements if w in writes] == [
        "BEGIN", "INSERT", "COMMIT",  # the quick one, complete
        "BEGIN", "INSERT", "COMMIT", "BEGIN", "UPDATE", "COMMIT",  # the slow one, open then closed
    ]  # fmt: skip
    assert (rec.outcome, rec.reason, rec.bytes_in, rec.bytes_out, rec.start) == (
        "closed", "eof", 3, 4, 1000.0,
    )  # fmt: skip
    assert rec.end is not None and closed_at - 0.1 < rec.end <= closed_at
    assert rec.last_seen == rec.end and row.id == rec.id
    assert (slow.outcome, slow.bytes_in, slow.bytes_out) == ("closed", 1, 2)


@pytest.mark.anyio
async def test_what_waits_for_the_ledger_runs_after_the_commit_that_holds_its_row(
    home: Path,
) -> None:
    """The hub's connection events wait for the commit that writes their row (one commit for
    many connections), never for a commit of their own; with nothing queued they go at once."""
    with Accounting.in_home(home, auto_rotate=False) as acc:
        commits = _transactions(acc)
        ledger = Ledger(lambda: acc)
        told: list[tuple[str, list[str | None]]] = []
        both = anyio.Event()

        def tell(what: str) -> None:
            told.append((what, [r.remote_name for r in acc.records()]))
            if len(told) == 3:
                both.set()

        ledger.then(lambda: tell("nothing queued"))
        assert told == [("nothing queued", [])]
        for name in "ab":
            ledger.start(_attempt(name), 1000.0)
            ledger.then(functools.partial(tell, f"opened {name}"))
        assert len(told) == 1  # both wait for the write
        with anyio.fail_after(20):  # the loop's timer writes them
            await both.wait()
        assert commits == ["COMMIT"]
    assert told[1:] == [("opened a", ["a", "b"]), ("opened b", ["a", "b"])]


def test_flush_writes_at_once_and_one_failed_write_loses_no_other(home: Path) -> None:
    with Accounting.in_home(home, auto_rotate=False) as acc:
        ledger = Ledger(lambda: acc)  # no running loop: each write goes at once
        kept = ledger.start(_attempt("kept"), 1.0)
        assert kept.id is not None
        ledger._ops.append(lambda a: a.db.execute("INSERT INTO no_such_table VALUES (1)"))
        ledger._ops.append(lambda a: a.start(_attempt("after"), 2.0))
        ledger.flush()
        ledger.finish(kept, bytes_in=5, bytes_out=6, reason="eof")
        names = {r.remote_name: r.outcome for r in acc.records()}
    assert names == {"kept": "closed", "after": "open"}
    with sqlite3.connect(home / "accounting.sqlite3") as db:
        assert not db.in_transaction
