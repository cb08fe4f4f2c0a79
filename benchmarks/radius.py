"""The cost of asking RADIUS: mutual-TLS handshakes per second into one accepting side, with and
without a RADIUS check, in the same run.

The accepting side is `SecureListener` (what the agent, `listen` and the hub use) whose handler
tracks each connection (local accounting, and with RADIUS an Access-Request before the verdict
and an Accounting-Request Start and Stop) and closes it; the dialler is a `Side` in the same
process and event loop, one handshake at a time and 8 at once.  RADIUS is Debian's FreeRADIUS on
loopback (the tests' configuration: a users file that accepts, the detail module writing every
accounting packet).  Two figures each, medians of `--repeat` rounds (with and without taking
turns at going first): handshakes per wall-clock second, which a busy machine disturbs, and per
CPU second (this process, plus FreeRADIUS's CPU time for the runs that use it), which it
hardly does.  Ratios are with RADIUS over without.

    .venv/bin/python benchmarks/radius.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.tunnel import cpu_seconds  # noqa: E402
from paraconnect.pki import Role  # noqa: E402
from paraconnect.tunnel import Endpoint, Established, RadiusConfig, SecureListener  # noqa: E402
from paraconnect.tunnel._leg import connect_endpoint  # noqa: E402
from paraconnect.tunnel._secure import Side  # noqa: E402
from tests.fixtures_radius import FreeRadius  # noqa: E402
from tests.helpers_tunnel import make_pki  # noqa: E402


async def rate(
    home: Path, radius: RadiusConfig | None, count: int, parallel: int, radius_pid: int
) -> tuple[float, float]:
    pki = make_pki(home) if not (home / "sessions").exists() else None
    from paraconnect.pki import Store, load_credentials

    store = Store(home)
    server = pki.server if pki else load_credentials("lab", role=Role.SERVER, store=store)
    client = pki.client if pki else load_credentials("lab", role=Role.CLIENT, store=store)
    accept = Side(server, Role.SERVER, store=store, radius=radius)
    dial = Side(client, Role.CLIENT, store=store, accounting=False)

    async def handle(peer: Established) -> None:
        with accept.track(peer.conn, peer.hello, peer.where):
            pass
        await peer.conn.aclose()

    listener = SecureListener(accept, [Endpoint("127.0.0.1", 0)], handle)
    [address] = listener.bind()

    async def one() -> None:
        sock = await connect_endpoint(Endpoint(address.host, address.port))
        conn, _hello = await dial.establish(sock, server_side=False)
        await conn.aclose()

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, tg)
        tg.start_soon(accept.watch)
        await one()  # warm: contexts built, the accounting database open
        t0, cpu0, rad0 = time.perf_counter(), time.process_time(), cpu_seconds(radius_pid)
        async with anyio.create_task_group() as workers:
            for _ in range(parallel):
                workers.start_soon(worker, count // parallel)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0 + (cpu_seconds(radius_pid) - rad0 if radius else 0.0)
        tg.cancel_scope.cancel()
    accept.close()
    done = (count // parallel) * parallel
    return done / elapsed, done / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=400, help="handshakes per measurement")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="100 handshakes, 2 rounds")
    args = ap.parse_args()
    if args.quick:
        args.count, args.repeat = 100, 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        home = root / "home"
        os.environ["PARACONNECT_HOME"] = str(home)
        radius = FreeRadius(root / "radius", "DEFAULT Auth-Type := Accept\n")
        radius.start()
        try:
            config = RadiusConfig.load(radius.address, radius.secret_file)
            assert radius.proc is not None
            pid = radius.proc.pid
            results: dict[tuple[str, int], list[tuple[float, float]]] = {}
            for round_ in range(args.repeat):
                for parallel in (1, 8):
                    runs = [("without", None), ("with", config)]
                    for name, cfg in runs if round_ % 2 else runs[::-1]:
                        got = anyio.run(rate, home, cfg, args.count, parallel, pid)
                        results.setdefault((name, parallel), []).append(got)
            detail = radius.detail()
        finally:
            radius.stop()
    starts = sum(1 for r in detail if r.get("Acct-Status-Type") == "Start")
    print(f"handshakes/s into one SecureListener ({args.count} per round, median of "
          f"{args.repeat}); RADIUS = FreeRADIUS on loopback")  # fmt: skip
    for parallel in (1, 8):
        for i, unit in ((0, "wall-clock s"), (1, "CPU s")):
            without = statistics.median(r[i] for r in results[("without", parallel)])
            with_ = statistics.median(r[i] for r in results[("with", parallel)])
            print(
                f"  {parallel} at a time, per {unit:12}: without RADIUS {without:6.0f}, "
                f"with RADIUS {with_:6.0f}, ratio {with_ / without:.2f}"
            )
    print(f"  (FreeRADIUS recorded {starts} accounting Starts)")


if __name__ == "__main__":
    main()
