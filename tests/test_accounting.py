"""Accounting: one record per connection attempt, accepted or refused, with identities,
reasons and byte counts; a kill -9 mid-stream leaves a record marked lost; rotation into the
archive keeps the summary; the `paraconnect accounting` command."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import sys
import time
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from paraconnect.errors import TrustError
from paraconnect.pki import Rule, update_policy
from paraconnect.tunnel import (
    Accounting,
    Agent,
    Attempt,
    Connector,
    ConnRecord,
    Program,
    summarize,
)

from .helpers_cli import Proc, procs_fixture  # noqa: F401 - the fixture `procs`
from .helpers_tunnel import ECHO, Pki, ask, echo_command, make_pki

pytestmark = [pytest.mark.timeout(90)]

BOB_NODE = "bob-laptop"


def _records(home: Path) -> list[ConnRecord]:
    with Accounting.in_home(home, auto_rotate=False) as acc:
        return acc.records()


async def _until(home: Path, predicate: object, bound: float = 20) -> list[ConnRecord]:
    """Poll the database until `predicate(records)` holds; the bound only stops the test."""
    with anyio.fail_after(bound):
        while True:
            records = _records(home)
            if predicate(records):  # type: ignore[operator]
                return records
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_accepted_and_refused_attempts_are_recorded(
    pki: Pki, home: Path, tmp_path: Path
) -> None:
    bob = pki.friend("bob", home, unique_id=BOB_NODE)
    rule = Rule.make("deny", name="bob")
    update_policy(pki.session, lambda p: replace(p, rules=(rule,)))
    other = make_pki(tmp_path / "elsewhere", "other")
    size = 3 * 1024 * 1024 + 7
    data = hashlib.shake_256(b"accounting").digest(size)
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(
            Agent(pki.server, program=Program(echo_command()), listen=["127.0.0.1:0"]).run
        )
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        answer = await ask(local, "sha256", data)
        assert answer == f"{hashlib.sha256(data).hexdigest()} {size}\n".encode()
        with anyio.fail_after(20), pytest.raises(TrustError, match="policy"):
            await Connector(bob, addr, "127.0.0.1:0", unique_id=BOB_NODE).run()
        with anyio.fail_after(20), pytest.raises(TrustError):
            await Connector(other.client, addr, "127.0.0.1:0", unique_id=other.uid).run()

        def agent_saw_all(records: list[ConnRecord]) -> bool:
            data = any(r.side == "server" and r.kind == "data" and r.end for r in records)
            stranger = any(
                r.side == "server" and r.outcome == "refused" and r.remote_name is None
                for r in records
            )
            return data and stranger

        records = await _until(home, agent_saw_all)
        tg.cancel_scope.cancel()
    records = _records(home)  # after the stop: the control channels are closed too
    session_id = pki.session.id
    assert all(r.session in (session_id, other.session.id) for r in records)

    [data_in] = [r for r in records if r.side == "server" and r.kind == "data"]
    assert data_in.outcome == "closed" and data_in.reason == "eof"
    assert data_in.bytes_in == len(b"sha256\n") + size
    assert data_in.bytes_out == len(answer)
    assert data_in.remote_name == "alice" and data_in.remote_role == "client"
    assert data_in.remote_unique_id == pki.uid
    assert data_in.local_identity == f"server 'srv' on {pki.uid}"
    assert data_in.server_id == "srv" and data_in.remote_address.startswith("127.0.0.1:")
    assert data_in.end is not None and data_in.end >= data_in.start

    [data_out] = [r for r in records if r.side == "client" and r.kind == "data"]
    assert (data_out.bytes_in, data_out.bytes_out) == (data_in.bytes_out, data_in.bytes_in)
    assert data_out.remote_name == "srv" and data_out.server_id == "srv"

    controls = [r for r in records if r.kind == "control" and r.outcome == "closed"]
    assert {r.side for r in controls} == {"server", "client"}

    refused = [r for r in records if r.outcome == "refused"]
    bob_refused = [r for r in refused if r.remote_name == "bob"]
    assert bob_refused and all("denied by the policy" in (r.reason or "") for r in bob_refused)
    assert any(
        r.side == "server" and r.remote_unique_id == BOB_NODE and r.kind == "control"
        for r in bob_refused
    )
    # The stranger never got past TLS on the agent: no identity, a reason, its address.
    strangers = [r for r in refused if r.side == "server" and r.remote_name is None]
    assert strangers and all(r.reason and r.remote_address for r in strangers)
    assert all(r.end is not None for r in refused)


def _serve(procs: object) -> Proc:
    return procs(  # type: ignore[operator, no-any-return]
        "serve", "--creds", "lab", "--listen", "127.0.0.1:0", "--json", "--",
        sys.executable, ECHO, "--port", "{port}",
    )  # fmt: skip


@pytest.mark.anyio
async def test_kill_9_mid_stream_leaves_a_record_marked_lost(
    pki: Pki, home: Path, procs: object
) -> None:
    agent = _serve(procs)
    [addr] = agent.ready()["listen"]  # type: ignore[misc]
    async with anyio.create_task_group() as tg:
        local = await tg.start(Connector(pki.client, str(addr), "127.0.0.1:0").run)
        stream = await anyio.connect_tcp(local.host, local.port)
        await stream.send(b"echo\n" + b"x" * 100_000)
        got = 0
        with anyio.fail_after(20):
            while got < 100_000:
                got += len(await stream.receive())

        def agent_progress(records: list[ConnRecord]) -> bool:
            return any(r.side == "server" and r.kind == "data" and r.bytes_in > 0 for r in records)

        await _until(home, agent_progress)  # the agent has told the database of bytes so far
        os.kill(agent.popen.pid, signal.SIGKILL)
        agent.wait()
        await stream.aclose()
        tg.cancel_scope.cancel()
    # The agent restarted: it finds the dead writer's rows at start and marks them lost.
    again = _serve(procs)
    again.ready()
    with contextlib.closing(sqlite3.connect(home / "accounting.sqlite3")) as db:
        [(outcome,)] = db.execute(
            "SELECT outcome FROM connections WHERE side = 'server' AND kind = 'data'"
        ).fetchall()
    assert outcome == "lost"
    records = _records(home)
    [lost] = [r for r in records if r.side == "server" and r.kind == "data"]
    assert lost.outcome == "lost" and lost.end is not None and lost.end >= lost.start
    assert "died" in (lost.reason or "")
    assert lost.bytes_in >= 100_000 and lost.remote_name == "alice"
    assert all(r.outcome != "open" for r in records if r.side == "server")


def _attempt(name: str, kind: str = "data") -> Attempt:
    return Attempt(
        session="s1", server_id="srv", kind=kind, side="server", local_identity="server 'srv'",
        remote_address="127.0.0.1:1", remote_identity=f"client {name!r}", remote_role="client",
        remote_name=name,
    )  # fmt: skip


def test_rotation_keeps_queries_and_the_summary(home: Path) -> None:
    now = time.time()
    with Accounting.in_home(home) as acc:
        for i in range(10):
            name = ("alice", "bob", "carol")[i % 3]
            row = acc.start(_attempt(name), when=now - 1000 + i)
            acc.finish(row, bytes_in=100 * i, bytes_out=10 * i, reason="eof")
        acc.refused(_attempt("bob"), "denied by the policy", when=now - 10)
        open_row = acc.start(_attempt("carol", "control"))
        before = [s.as_dict() for s in acc.summary()]
        records_before = acc.records()
        assert acc.rotate(max_rows=3) == 9
        assert acc.rotate(max_age=500) == 1  # the rest is newer, or still open
        records_after = acc.records()
        assert [r.id for r in records_after] == [r.id for r in records_before]
        main_rows = acc.records(archive=False)
        assert open_row in {r.id for r in main_rows} and len(main_rows) == 2
        after = [s.as_dict() for s in acc.summary()]
    for b, a in zip(before, after, strict=True):
        b.pop("seconds"), a.pop("seconds")  # the open row keeps counting
    assert before == after
    assert (home / "accounting-archive.sqlite3").stat().st_mode & 0o777 == 0o600
    assert (home / "accounting.sqlite3").stat().st_mode & 0o777 == 0o600
    with contextlib.closing(sqlite3.connect(home / "accounting.sqlite3")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rows_of_a_dead_writer_are_marked_lost_on_open(home: Path) -> None:
    with Accounting.in_home(home) as acc:
        row = acc.start(_attempt("alice"))
        acc.progress([(row, 5, 6)])
        mine = acc.start(_attempt("bob"))
        acc.db.execute("UPDATE connections SET writer = 'another-boot/1/1' WHERE id = ?", (row,))
    with Accounting.in_home(home) as acc:
        by_id = {r.id: r for r in acc.records()}
    assert by_id[row].outcome == "lost" and (by_id[row].bytes_in, by_id[row].bytes_out) == (5, 6)
    assert by_id[mine].outcome == "open"  # this process is alive: not lost


def test_summary_per_identity() -> None:
    base = dict.fromkeys(ConnRecord.__slots__)  # type: ignore[attr-defined]
    rows = [
        ConnRecord(**{**base, "id": 1, "session": "s", "remote_identity": "client 'a'",
                      "start": 0.0, "end": 10.0, "bytes_in": 5, "bytes_out": 7,
                      "outcome": "closed"}),
        ConnRecord(**{**base, "id": 2, "session": "s", "remote_identity": "client 'a'",
                      "start": 20.0, "end": 20.0, "bytes_in": 0, "bytes_out": 0,
                      "outcome": "refused"}),
        ConnRecord(**{**base, "id": 3, "session": "s", "remote_identity": None,
                      "remote_address": "10.0.0.1:5", "start": 0.0, "end": 1.0,
                      "bytes_in": 0, "bytes_out": 0, "outcome": "refused"}),
    ]  # fmt: skip
    [a, unknown] = summarize(rows, now=100.0)
    assert (a.identity, a.count, a.refused, a.seconds, a.bytes_in, a.bytes_out) == (
        "client 'a'", 2, 1, 10.0, 5, 7,
    )  # fmt: skip
    assert unknown.identity == "unidentified peer at 10.0.0.1:5" and unknown.refused == 1


def test_cli_accounting_lists_and_summarises(pki: Pki, home: Path, cli: object) -> None:
    with Accounting.in_home(home) as acc:
        attempt = replace(_attempt("alice"), session=pki.session.id)
        row = acc.start(attempt)
        acc.finish(row, bytes_in=2048, bytes_out=10, reason="eof")
        acc.refused(replace(_attempt("bob"), session="another"), "denied by the policy")
    run = cli
    r = run("accounting", "--session", "lab", "--json")  # type: ignore[operator]
    assert r.returncode == 0, r
    [record] = json.loads(r.stdout)
    assert record["remote_name"] == "alice" and record["bytes_in"] == 2048
    r = run("accounting", "--summary", "--since", "1h")  # type: ignore[operator]
    assert r.returncode == 0 and "client 'alice': 1 attempt(s)" in r.stdout, r
    assert "client 'bob': 1 attempt(s), 1 refused" in r.stdout
    r = run("accounting")  # type: ignore[operator]
    assert "denied by the policy" in r.stdout and "2.0 KiB" in r.stdout, r
    r = run("accounting", "--since", "yesterday-ish")  # type: ignore[operator]
    assert r.returncode == 1 and "--since" in r.stderr, r
    r = run("accounting", "--rotate-rows", "0", "--json")  # type: ignore[operator]
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 2, r


def test_automatic_rotation_at_open_past_the_row_limit(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from paraconnect.tunnel import _accounting

    monkeypatch.setattr(_accounting, "AUTO_ROTATE_ROWS", 10)
    with Accounting.in_home(home) as acc:
        for i in range(15):
            acc.refused(_attempt(f"n{i}"), "denied")
        total = acc.summary()
    with Accounting.in_home(home) as acc:  # the next opener rotates: keeps the newest half
        assert len(acc.records(archive=False)) == 5
        assert len(acc.records()) == 15
        assert [s.as_dict() for s in acc.summary()] == [s.as_dict() for s in total]
