"""What users run, next to stunnel, in one run, on loopback: the product's figures.

`benchmarks/tunnel.py` times the tunnel's parts in a harness (a design aid).  This one drives the
commands a user types, with everything they bring (hello, accounting, the policy watcher, the
private leg, the peer-uid check of the local endpoint):

1. ``raw``: TCP straight to the backend (a sink/echo server in its own process);
2. ``stunnel``: a Debian stunnel4 pair as stunnel ships (no socket options), mutual TLS 1.3,
   the same certificates, no resumption;
3. ``stunnel-nd``: the same pair with ``TCP_NODELAY`` on all four sockets, its best case here;
4. ``pc``: ``paraconnect connect --local`` → ``paraconnect serve --listen … -- BACKEND {port}``
   (the backend is the agent's program, on the agent's private leg, as a user runs pvserver);
5. ``pc-hub`` (``--hub``): a ``paraconnect hub`` with a server launched through it (``paraconnect
   launch command``), reached at the hub's local endpoint: the notebook's path, through the
   hub's relay;
6. ``pc-aio`` (``--aio``): ``pc`` again with ``PARACONNECT_LOOP=asyncio``: serve and connect on
   the standard library's event loop rather than uvloop's (where uvloop is installed);
7. ``pc-base`` (``--baseline DIR``): ``pc`` again, running the paraconnect of another checkout
   (``git worktree add DIR REV``): a change's before and after in one run, under the same load.

Printed, each as a ratio to both stunnel configurations: throughput of one stream and the
aggregate of 4 concurrent streams, the 64-byte round trip (median, p99, what the pair adds to
raw TCP's, and the median with every process on one CPU; 5 connections a round, since where a
connection's processes and threads land decides its round trip more than the relays do), full
mutual-TLS connections per second (one and 4 at a time) and the CPU each side spends per
connection, and the RSS per idle connection (one that carried ten round trips, then went
quiet) of the process that accepts TLS and of the one that dials.  Rounds are interleaved and
medians printed, so that load from elsewhere falls on every path alike; the machine's load is
printed with them.
No assertions: figures vary with the machine.

    .venv/bin/python benchmarks/product.py [--quick] [--hub] [--aio] [--baseline DIR]
        [--bytes N] [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tunnel as T  # the harness's load generators and backend
from _stunnel import StunnelPair, free_port
from _stunnel import binary as stunnel_binary

PARACONNECT = str(Path(sys.executable).with_name("paraconnect"))


def role_backend_at(port: int) -> None:
    """The backend as an agent's program: it listens where the agent's {port} says."""
    import asyncio
    import socket

    listener = socket.create_server(("127.0.0.1", port), backlog=4096)
    asyncio.run(T._serve_forever(listener, T._backend_conn))


@dataclass
class Route:
    name: str
    port: int
    pids: dict[str, int] = field(default_factory=dict)
    one: list[float] = field(default_factory=list)
    four: list[float] = field(default_factory=list)
    rtt: list[float] = field(default_factory=list)
    rtt99: list[float] = field(default_factory=list)
    # The same round trip with every process of the run on one CPU: the relays' own work on
    # the path, without the cross-CPU wakeups whose share varies with where the scheduler
    # puts the processes (a design aid beside the figure above, not the product's number).
    rtt_one: list[float] = field(default_factory=list)
    hs1: list[float] = field(default_factory=list)
    hs4: list[float] = field(default_factory=list)
    # CPU ms per connection of each watched process (and its children: the namespace broker)
    # over the connection tests: what load from elsewhere changes least.
    hs_cpu: dict[str, list[float]] = field(default_factory=dict)
    idle: dict[str, float] = field(default_factory=dict)


def _children(pid: int) -> list[int]:
    """The direct children of every thread of `pid` (none once it is gone)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return out


def _cpu_with_children(pid: int) -> float:
    """A process's CPU seconds and its direct children's (serve's namespace broker; not the
    program under it, which is the backend)."""
    return T.cpu_seconds(pid) + sum(T.cpu_seconds(child) for child in _children(pid))


def concurrent(port: int, nbytes: int, streams: int) -> float:
    """Aggregate MB/s of `streams` streams at once, each carrying nbytes / streams."""
    each = nbytes // streams
    errors: list[BaseException] = []

    def one() -> None:
        try:
            T.throughput(port, each)
        except BaseException as exc:  # reported below, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(streams)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return each * streams / (time.perf_counter() - t0) / 1e6


def _started(proc: subprocess.Popen[str], what: str) -> dict[str, object]:
    """The first JSON event of a --json paraconnect command ('ready')."""
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "ready":
            return event
    raise RuntimeError(f"{what} ended before it was ready (exit {proc.wait()})")


def _json_cmd(*argv: str, env: dict[str, str]) -> subprocess.Popen[str]:
    command, *rest = argv
    quiet = ["-q"] if command != "hub" else []  # the hub logs at INFO only about its servers
    return subprocess.Popen(
        [PARACONNECT, command, "--json", *quiet, *rest],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _port_of(address: object) -> int:
    return int(str(address).rsplit(":", 1)[1])


def start_pc(
    home: Path, procs: list[subprocess.Popen[str]], name: str = "pc", tree: Path | None = None
) -> Route:
    env = {**os.environ, "PARACONNECT_HOME": str(home)}
    if name == "pc-aio":
        env["PARACONNECT_LOOP"] = "asyncio"  # the standard library's loop, not uvloop
    if tree is not None:  # that checkout's package first on the path, for serve and connect
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    backend = [sys.executable, __file__, "--role", "backend-at", "{port}"]
    serve = _json_cmd(
        "serve", "--creds", "bench", "--listen", "127.0.0.1:0", "--", *backend, env=env
    )
    procs.append(serve)
    ready = _started(serve, "paraconnect serve")
    listen = ready["listen"]
    assert isinstance(listen, list) and listen, ready
    address = listen[0]
    local = free_port()
    connect = _json_cmd(
        "connect", "--creds", "bench", "--local", f"127.0.0.1:{local}", str(address), env=env
    )
    procs.append(connect)
    _started(connect, "paraconnect connect")
    return Route(name, local, {"server": serve.pid, "client": connect.pid})


def start_hub(
    home: Path, procs: list[subprocess.Popen[str]], cleanups: list[Callable[[], object]]
) -> Route:
    env = {**os.environ, "PARACONNECT_HOME": str(home)}
    hub = _json_cmd("hub", "--session", "bench", env=env)
    procs.append(hub)
    _started(hub, "paraconnect hub")
    backend = [sys.executable, __file__, "--role", "backend-at", "{port}"]
    launched = subprocess.run(
        [PARACONNECT, "launch", "command", "--session", "bench", "--json", "--wait",
         "--timeout", "60", "--", *backend],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    info = json.loads(launched.stdout.strip().splitlines()[-1])
    # A hub that stops leaves its servers running (the next hub re-adopts them): stop ours.
    stop = [PARACONNECT, "servers", "stop", info["id"]]
    cleanups.append(lambda: subprocess.run(stop, capture_output=True, env=env, timeout=60))
    return Route("pc-hub", _port_of(info["local"]), {"server": 0, "client": hub.pid})


def measure(routes: list[Route], args: argparse.Namespace) -> None:
    for rnd in range(args.repeat):
        tag = f"round {rnd + 1}/{args.repeat}"
        # Each round starts with another route: none is always measured right after the same
        # neighbour (whose closing connections and threads still hold a core for a moment).
        shift = rnd % len(routes)
        order = routes[shift:] + routes[:shift]
        for r in order:
            T._note(f"  {tag}: {r.name} one stream")
            r.one.append(T.throughput(r.port, args.bytes))
        for r in order:
            T._note(f"  {tag}: {r.name} 4 streams")
            r.four.append(concurrent(r.port, args.bytes, 4))
        # Several connections a round, interleaved: where the scheduler puts a connection's
        # threads and processes decides a round trip more than the relays' work (stunnel's own
        # vary from 100 to 140 us here), so each route is sampled over as many placements.
        for k in range(args.rt_connections):
            for r in order:
                T._note(f"  {tag}: {r.name} round trips ({k + 1}/{args.rt_connections})")
                med, p99 = T.latency(r.port, args.rounds)
                r.rtt.append(med)
                r.rtt99.append(p99)
        with _one_cpu():
            for r in order:
                T._note(f"  {tag}: {r.name} round trips on one CPU")
                r.rtt_one.append(T.latency(r.port, args.rounds)[0])
        for r in order:
            T._note(f"  {tag}: {r.name} handshakes")
            pids = {k: v for k, v in r.pids.items() if v}
            before = {k: _cpu_with_children(v) for k, v in pids.items()}
            r.hs1.append(T.handshakes(r.port, args.handshakes, 1))
            r.hs4.append(T.handshakes(r.port, args.handshakes, 4))
            for k, v in pids.items():
                used = _cpu_with_children(v) - before[k]
                r.hs_cpu.setdefault(k, []).append(used * 1000 / (2 * args.handshakes))
    for r in routes:
        pids = {k: v for k, v in r.pids.items() if v}
        if pids:
            T._note(f"  {r.name}: {args.idle} idle connections")
            # Ten round trips first: a connection that lived, then went quiet (where the C
            # relay is built, each one's relays are on their threads by then).
            r.idle = T.idle_memory(r.port, pids, args.idle, exchanges=10)


def _tasks_below(pid: int) -> list[int]:
    """The threads of `pid` and of all its descendants."""
    try:
        out = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []
    for child in _children(pid):
        out += _tasks_below(child)
    return out


@contextlib.contextmanager
def _one_cpu() -> Iterator[None]:
    """Every thread of this benchmark and of what it started on the first allowed CPU, for
    the duration; back on all of them after."""
    allowed = os.sched_getaffinity(0)
    tasks = _tasks_below(os.getpid())
    for task in tasks:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(task, {min(allowed)})
    try:
        yield
    finally:
        for task in tasks:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(task, allowed)


def _added(r: Route, raw: Route | None) -> float | None:
    """What the pair adds to a round trip: its median less raw TCP's, round by round."""
    if raw is None or r is raw:
        return None
    return statistics.median(a - b for a, b in zip(r.rtt, raw.rtt, strict=True))


def _median_of(values: dict[str, list[float]], key: str) -> float | None:
    got = values.get(key)
    return statistics.median(got) if got else None


def report(routes: list[Route], args: argparse.Namespace) -> None:
    med = statistics.median
    by = {r.name: r for r in routes}
    refs = [by[n] for n in ("stunnel", "stunnel-nd") if n in by]
    ours = [r for r in routes if r.name.startswith("pc")]
    print()
    print(f"loopback, {args.bytes / 2**20:.0f} MiB a stream test; {args.rounds} round trips"
          f" on each of {args.rt_connections} connections a round; {args.handshakes}"
          f" connections; {args.idle} idle; median of {args.repeat} interleaved"
          " rounds")  # fmt: skip
    head = f"{'':28}" + "".join(f"{r.name:>11}" for r in routes)
    head += "".join(f"{o.name + '/' + s.name:>20}" for o in ours for s in refs)
    print(head)

    def row(label: str, get: Callable[[Route], float | None], fmt: str, lower: bool) -> None:
        vals = [get(r) for r in routes]
        line = f"{label:28}" + "".join(f"{'-':>11}" if v is None else f"{v:>11{fmt}}" for v in vals)
        for o in ours:
            for s in refs:
                a, b = get(o), get(s)
                # Ratios read "higher is better" for every row: times are inverted.
                ratio = (b / a if lower else a / b) if a and b else None
                line += f"{'-' if ratio is None else f'{ratio:.2f}x':>20}"
        print(line)

    row("1 stream MB/s", lambda r: med(r.one), ".0f", False)
    row("4 streams MB/s (sum)", lambda r: med(r.four), ".0f", False)
    row("64 B round trip median us", lambda r: med(r.rtt), ".1f", True)
    row("64 B round trip p99 us", lambda r: med(r.rtt99), ".1f", True)
    row("64 B RT added to raw us", lambda r: _added(r, by.get("raw")), ".1f", True)
    row("64 B RT on one CPU us", lambda r: med(r.rtt_one), ".1f", True)
    row("connections/s, 1 at a time", lambda r: med(r.hs1), ".0f", False)
    row("connections/s, 4 at a time", lambda r: med(r.hs4), ".0f", False)
    row("CPU ms/conn, TLS server", lambda r: _median_of(r.hs_cpu, "server"), ".3f", True)
    row("CPU ms/conn, TLS client", lambda r: _median_of(r.hs_cpu, "client"), ".3f", True)
    row("idle KiB/conn, TLS server", lambda r: r.idle.get("server"), ".1f", True)
    row("idle KiB/conn, TLS client", lambda r: r.idle.get("client"), ".1f", True)
    print("Ratios: paraconnect over stunnel, higher is better on every row (times and memory")
    print("inverted). raw connections/s are plain TCP. pc-hub's 'client' memory is the hub's.")
    print("CPU ms/conn: over the connection tests, per process with its children (serve's")
    print("namespace broker), at the clock tick's resolution; stunnel's threads count in it.")
    print("RT added to raw: the median less raw TCP's, round by round. RT on one CPU: every")
    print("process of the run on one CPU (no cross-CPU wakeups): the relays' own work.")
    from paraconnect.tunnel import _offloop, loop_options

    loop = "uvloop's" if loop_options() else "asyncio's"
    print(f"serve, connect and the hub run on {loop} event loop (pc-aio: asyncio's),")
    if _offloop.available():
        print("each relay that lives on a C thread of its own, as stunnel's connections are.")
    else:
        print("every relay on it (the C relay was not built here).")
    load = os.getloadavg()
    print(f"Load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
          f"{os.cpu_count()} CPUs.")  # fmt: skip


def _size(text: str) -> int:
    """Bytes, with an optional KiB/MiB/GiB suffix (the way the issue's figures are given)."""
    for suffix, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("", 1)):
        if text.endswith(suffix):
            try:
                return int(text[: len(text) - len(suffix)]) * factor
            except ValueError:
                break
    raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 128MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bytes", type=_size, default=512 << 20, help="bytes a stream test moves (e.g. 128MiB)"
    )
    parser.add_argument("--rounds", type=int, default=2000, help="64-byte round trips a connection")
    parser.add_argument(
        "--rt-connections", type=int, default=5, help="connections a round for round trips"
    )
    parser.add_argument("--handshakes", type=int, default=400, help="connections to time")
    parser.add_argument("--idle", type=int, default=500, help="idle connections to hold")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--hub", action="store_true", help="also the hub's relay (pc-hub)")
    parser.add_argument(
        "--aio", action="store_true", help="also pc on asyncio's own loop (pc-aio), not uvloop"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also pc from the paraconnect of this checkout (pc-base): before and after in one run",
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    if args.quick:
        args.bytes = min(args.bytes, 64 << 20)
        args.rounds, args.handshakes, args.idle, args.repeat = 500, 40, 100, 1
        args.rt_connections = 1
    if stunnel_binary() is None:
        raise SystemExit("stunnel4 is not installed (scripts/system-deps.sh installs it)")
    T._raise_fd_limit()

    from paraconnect.pki import Store, node_unique_id

    with tempfile.TemporaryDirectory(prefix="pc-product-") as tmp_name:
        tmp = Path(tmp_name)
        store = Store(tmp / "home")
        session = store.create_session("bench")
        node = node_unique_id(store.home).value
        pem = tmp / "pem"
        for role, name in (("server", "srv"), ("client", "cli")):
            issued = session.issue(role, name, unique_id=node)
            session.export(pem, name, issued.cert, issued.key)
        procs: list[subprocess.Popen[str]] = []
        cleanups: list[Callable[[], object]] = []
        pairs = [StunnelPair(tmp / "default", nodelay=False), StunnelPair(tmp / "nd")]
        try:
            backend, backend_port = T._spawn("--role", "backend")
            procs.append(backend)
            routes = [Route("raw", backend_port)]
            for name, pair in zip(("stunnel", "stunnel-nd"), pairs, strict=True):
                pair.dir.mkdir()
                pair.start(pem, backend_port)
                routes.append(
                    Route(name, pair.entry, {"server": pair.server_pid, "client": pair.client_pid})
                )
            routes.append(start_pc(tmp / "home", procs))
            if args.aio:
                routes.append(start_pc(tmp / "home", procs, "pc-aio"))
            if args.baseline is not None:
                if not (args.baseline / "paraconnect" / "__init__.py").is_file():
                    raise SystemExit(f"--baseline {args.baseline}: no paraconnect package there")
                routes.append(start_pc(tmp / "home", procs, "pc-base", args.baseline.resolve()))
            if args.hub:
                routes.append(start_hub(tmp / "home", procs, cleanups))
            measure(routes, args)
        finally:
            for cleanup in cleanups:
                cleanup()
            for pair in pairs:
                pair.stop()
            T._stop(*reversed(procs))
        report(routes, args)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        T._raise_fd_limit()
        try:
            if sys.argv[2] == "backend-at":
                role_backend_at(int(sys.argv[3]))
            else:
                raise SystemExit(f"unknown role {sys.argv[2]}")
        except KeyboardInterrupt:
            pass
    else:
        main()
