"""The tunnel's data path next to stunnel, in one run, on loopback.

Three paths to the same backend (a sink/echo server in its own process):

1. raw TCP to the backend;
2. a Debian stunnel4 pair: client stunnel -> server stunnel -> backend (TLS 1.3, mutual TLS,
   the same certificates, no resumption);
3. a paraconnect pair built from the tunnel API: a "connect" process (plain listener ->
   TLSConnection client -> splice) and a "serve" process (TLS listener -> TLSConnection
   server -> splice -> backend).

4. and 5. the real commands, ``paraconnect connect`` -> ``paraconnect serve`` -> the backend as
   serve's program on ``{port}``: ``serve-netns`` runs it in its own network namespace (the
   default: each connection comes from the broker in there, over a Unix socket, SCM_RIGHTS),
   ``serve-shared`` on the host's loopback (``--shared-leg``, the leg before issue 12).  Their
   ratios are the broker's cost; with both, the agent's own step is also timed alone: a
   connection to its program (``Program.connect``) on each leg.

The load generator runs in this process; every relay runs in a process of its own.  Printed:
throughput of one stream, 64-byte round trip (median, p99; "added" is over raw TCP), memory per
idle connection (RSS growth of the process that accepts TLS, divided by the count), and full
mutual-TLS handshakes per second (one at a time and 4 at once), each with its ratio to stunnel.
Rounds are interleaved (each measures every path in turn) and medians are printed, so that load
from elsewhere on a shared machine falls on all paths alike: trust the ratios more than the
absolute figures.  No assertions: figures vary with the machine.

    .venv/bin/python benchmarks/tunnel.py [--quick] [--bytes N] [--repeat N]
                                [--only raw,stunnel,paraconnect,serve-shared,serve-netns]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stunnel import StunnelPair
from _stunnel import binary as stunnel_binary

CHUNK = 1 << 20
TIMEOUT = 120.0  # every client socket: nothing here can hang for ever


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- the backend: sink, echo, idle -----------------------------------------------------------


async def _backend_conn(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """First byte picks the mode.  S + u64 length: read that many, answer the count.  E: echo.
    I: answer one byte, then hold the connection until EOF."""
    buf = bytearray(CHUNK)
    try:
        mode = await loop.sock_recv(sock, 1)
        if mode == b"S":
            head = b""
            while len(head) < 8:
                more = await loop.sock_recv(sock, 8 - len(head))
                if not more:
                    return
                head += more
            want = struct.unpack("!Q", head)[0]
            got = 0
            while got < want:
                n = await loop.sock_recv_into(sock, buf)
                if not n:
                    return
                got += n
            await loop.sock_sendall(sock, struct.pack("!Q", got))
        elif mode == b"E":
            view = memoryview(buf)
            while n := await loop.sock_recv_into(sock, buf):
                await loop.sock_sendall(sock, view[:n])
        elif mode == b"I":
            del buf
            await loop.sock_sendall(sock, b"k")
            while await loop.sock_recv(sock, 1024):
                pass
    except OSError:
        pass
    finally:
        sock.close()


Handler = Callable[[asyncio.AbstractEventLoop, socket.socket], Coroutine[Any, Any, None]]


async def _serve_forever(listener: socket.socket, handler: Handler) -> None:
    loop = asyncio.get_running_loop()
    listener.setblocking(False)
    tasks: set[asyncio.Task[None]] = set()
    while True:
        sock, _ = await loop.sock_accept(listener)
        sock.setblocking(False)
        _nodelay(sock)
        task = asyncio.ensure_future(handler(loop, sock))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def _listen(port: int = 0) -> socket.socket:
    listener = socket.create_server(("127.0.0.1", port), backlog=4096)
    print(listener.getsockname()[1], flush=True)
    return listener


def role_backend(port: int = 0) -> None:
    asyncio.run(_serve_forever(_listen(port), _backend_conn))


# -- the paraconnect pair ---------------------------------------------------------------------


def _contexts(home: str, role: str) -> ssl.SSLContext:
    from paraconnect.pki import Store, load_credentials
    from paraconnect.tls import client_context, server_context

    creds = load_credentials("bench", role=role, store=Store(Path(home)))
    return server_context(creds) if role == "server" else client_context(creds)


def role_pc_serve(home: str, backend: int) -> None:
    from paraconnect.tunnel._splice import splice
    from paraconnect.tunnel._tlsconn import TLSConnection

    ctx = _contexts(home, "server")

    async def conn(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        try:
            tls = await TLSConnection.handshake(sock, ctx, server_side=True)
        except Exception as exc:
            print(f"serve: {exc}", file=sys.stderr)
            return
        plain = socket.socket()
        plain.setblocking(False)
        try:
            await loop.sock_connect(plain, ("127.0.0.1", backend))
        except OSError:
            plain.close()
            await tls.aclose()
            return
        _nodelay(plain)
        await splice(tls, plain)

    asyncio.run(_serve_forever(_listen(), conn))


def role_pc_connect(home: str, server: int) -> None:
    from paraconnect.tunnel._splice import splice
    from paraconnect.tunnel._tlsconn import TLSConnection

    ctx = _contexts(home, "client")

    async def conn(loop: asyncio.AbstractEventLoop, plain: socket.socket) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", server))
            tls = await TLSConnection.handshake(sock, ctx, server_side=False)
        except Exception as exc:
            print(f"connect: {exc}", file=sys.stderr)
            sock.close()
            plain.close()
            return
        await splice(tls, plain)

    asyncio.run(_serve_forever(_listen(), conn))


def _serve_path(name: str, home: str, shared: bool) -> tuple[list[subprocess.Popen[str]], Path_]:
    """`paraconnect serve` with the backend as its program, and `paraconnect connect` to it."""
    env = {**os.environ, "PARACONNECT_HOME": home}
    pc = str(Path(sys.executable).with_name("paraconnect"))
    program = [sys.executable, __file__, "--role", "backend", "{port}"]
    serve = subprocess.Popen(
        [pc, "serve", "--creds", "cli", "--listen", "127.0.0.1:0", "--json", "-q",
         *(["--shared-leg"] if shared else []), "--", *program],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    procs = [serve]
    try:
        assert serve.stdout is not None
        addr = json.loads(serve.stdout.readline())["listen"][0]
        connect = subprocess.Popen(
            [pc, "connect", addr, "--creds", "cli", "--local", "127.0.0.1:0", "--json", "-q"],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        procs.append(connect)
        assert connect.stdout is not None
        local = json.loads(connect.stdout.readline())["local"]
    except BaseException:
        _stop(*procs)
        raise
    return procs, Path_(name, int(local.rsplit(":", 1)[1]))


_ACCEPT_AND_CLOSE = """
import socket, sys
s = socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=4096)
while True:
    s.accept()[0].close()
"""


def leg_connects(count: int, repeat: int) -> dict[str, list[float]]:
    """The agent's own step alone: median microseconds of `Program.connect` (a connected socket
    to the program, nothing sent), on the shared loopback leg and through the namespace broker,
    interleaved rounds."""
    import anyio

    from paraconnect.tunnel import Program

    out: dict[str, list[float]] = {"serve-shared": [], "serve-netns": []}

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            progs = {}
            for name in out:
                cmd = [sys.executable, "-c", _ACCEPT_AND_CLOSE, "{port}"]
                prog = Program(cmd, shared_leg=name == "serve-shared")
                await tg.start(prog.run)
                progs[name] = prog
            for _ in range(repeat):
                for name, prog in progs.items():
                    times = []
                    for _ in range(count):
                        t0 = time.perf_counter_ns()
                        sock = await prog.connect(None, "benchmark")  # type: ignore[arg-type]
                        times.append(time.perf_counter_ns() - t0)
                        sock.close()
                    out[name].append(statistics.median(times) / 1000)
            tg.cancel_scope.cancel()

    anyio.run(run)
    return out


# -- driving them -----------------------------------------------------------------------------


def _spawn(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{args[0]} did not start")
    return proc, int(line)


def _stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _dial(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    _nodelay(sock)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("connection closed early")
        buf += chunk
    return bytes(buf)


def throughput(port: int, nbytes: int) -> float:
    """MB/s of one stream through to the sink, until the sink has counted every byte."""
    block = memoryview(os.urandom(CHUNK))
    with _dial(port) as sock:
        t0 = time.perf_counter()
        sock.sendall(b"S" + struct.pack("!Q", nbytes))
        left = nbytes
        while left:
            n = min(left, CHUNK)
            sock.sendall(block[:n])
            left -= n
        got = struct.unpack("!Q", _recv_exactly(sock, 8))[0]
        elapsed = time.perf_counter() - t0
    assert got == nbytes, (got, nbytes)
    return nbytes / elapsed / 1e6


def latency(port: int, rounds: int) -> tuple[float, float]:
    """Median and p99 of a 64-byte round trip, in microseconds."""
    msg = os.urandom(64)
    times = []
    with _dial(port) as sock:
        sock.sendall(b"E")
        for i in range(rounds + 200):
            t0 = time.perf_counter_ns()
            sock.sendall(msg)
            _recv_exactly(sock, 64)
            if i >= 200:  # warm-up rounds are not counted
                times.append(time.perf_counter_ns() - t0)
    times.sort()
    return statistics.median(times) / 1000, times[int(len(times) * 0.99)] / 1000


def handshakes(port: int, count: int, parallel: int) -> float:
    """Connections per second, each carrying one echoed byte end to end (so each one is a full
    mutual-TLS handshake through the pair), `parallel` at a time."""

    def worker(n: int) -> None:
        for _ in range(n):
            with _dial(port) as sock:
                sock.sendall(b"Ex")
                _recv_exactly(sock, 1)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(count // parallel,)) for _ in range(parallel)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return (count // parallel) * parallel / (time.perf_counter() - t0)


def idle_memory(
    port: int, pids: dict[str, int], count: int, exchanges: int = 1
) -> dict[str, float]:
    """KiB of RSS per idle connection in each named process; each connection carries
    `exchanges` one-byte round trips first (a connection that lived, then went quiet)."""
    for _ in range(20):  # warm-up: first-connection allocations do not count
        with _dial(port) as sock:
            sock.sendall(b"I")
            _recv_exactly(sock, 1)
    time.sleep(0.3)
    before = {name: _rss_kib(pid) for name, pid in pids.items()}
    socks = []
    try:
        for _ in range(count):
            sock = _dial(port)
            socks.append(sock)
            if exchanges == 1:
                sock.sendall(b"I")
                _recv_exactly(sock, 1)
                continue
            sock.sendall(b"E")
            for _ in range(exchanges):
                sock.sendall(b"i")
                _recv_exactly(sock, 1)
        time.sleep(0.5)
        after = {name: _rss_kib(pid) for name, pid in pids.items()}
    finally:
        for sock in socks:
            sock.close()
    return {name: (after[name] - before[name]) / count for name in pids}


@dataclass
class Path_:
    """One way to the backend: its entry port and the processes whose memory is watched."""

    name: str
    port: int
    pids: dict[str, int] = field(default_factory=dict)
    mbps: list[float] = field(default_factory=list)
    rtt_median: list[float] = field(default_factory=list)
    rtt_p99: list[float] = field(default_factory=list)
    hs_serial: list[float] = field(default_factory=list)
    hs_parallel: list[float] = field(default_factory=list)
    idle_kib: dict[str, float] = field(default_factory=dict)


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure(paths: list[Path_], args: argparse.Namespace) -> None:
    """Interleaved: each round measures every path in turn, so that load from elsewhere on a
    shared machine falls on all of them alike; medians over the rounds are reported."""
    for rnd in range(args.repeat):
        for p in paths:
            _note(f"  round {rnd + 1}/{args.repeat}: {p.name} throughput")
            p.mbps.append(throughput(p.port, args.bytes))
        for p in paths:
            _note(f"  round {rnd + 1}/{args.repeat}: {p.name} latency")
            med, p99 = latency(p.port, args.rounds)
            p.rtt_median.append(med)
            p.rtt_p99.append(p99)
        for p in paths:
            _note(f"  round {rnd + 1}/{args.repeat}: {p.name} handshakes")
            p.hs_serial.append(handshakes(p.port, args.handshakes, 1))
            p.hs_parallel.append(handshakes(p.port, args.handshakes, 4))
    for p in paths:
        if p.pids:
            _note(f"  {p.name}: {args.idle} idle connections")
            p.idle_kib = idle_memory(p.port, p.pids, args.idle)
    if {"serve-shared", "serve-netns"} <= {p.name for p in paths}:
        _note("  the leg alone: connections to the program, shared and through the broker")
        args.leg_connects = leg_connects(max(args.handshakes, 200), args.repeat)


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def report(paths: list[Path_], args: argparse.Namespace) -> None:
    by = {p.name: p for p in paths}
    raw, ref, ours = by.get("raw"), by.get("stunnel"), by.get("paraconnect")
    med = statistics.median
    print()
    print(f"loopback, {args.bytes / 2**30:.2f} GiB one stream; {args.rounds} round trips;"
          f" {args.handshakes} connections; {args.idle} idle connections;"
          f" median of {args.repeat} interleaved rounds")  # fmt: skip
    compare = ref is not None and ours is not None
    print(f"{'':30}" + "".join(f"{p.name:>13}" for p in paths)
          + (f"{'pc/stunnel':>12}" if compare else ""))  # fmt: skip

    def row(label: str, get: Callable[[Path_], float | None], fmt: str, note: str = "") -> None:
        vals = [get(p) for p in paths]
        line = f"{label:30}" + "".join(f"{'-':>13}" if v is None else f"{v:>13{fmt}}" for v in vals)
        if compare:
            assert ref is not None and ours is not None
            a, b = get(ours), get(ref)
            line += f"{_ratio(a, b) if a is not None and b else '-':>12}"
        print(line + note)

    row("throughput MB/s", lambda p: med(p.mbps), ".0f", "   (higher is better)")
    row("64 B round trip median us", lambda p: med(p.rtt_median), ".1f")
    row("64 B round trip p99 us", lambda p: med(p.rtt_p99), ".1f")
    if raw is not None:
        base = med(raw.rtt_median)
        row("  added over raw TCP us", lambda p: None if p is raw else med(p.rtt_median) - base,
            ".1f")  # fmt: skip
    row("connections/s, 1 at a time", lambda p: med(p.hs_serial), ".0f", "   (higher is better)")
    row("connections/s, 4 at a time", lambda p: med(p.hs_parallel), ".0f", "   (higher is better)")
    row("idle KiB/conn, TLS server", lambda p: p.idle_kib.get("server"), ".1f")
    row("idle KiB/conn, TLS client", lambda p: p.idle_kib.get("client"), ".1f")
    shared, netns = by.get("serve-shared"), by.get("serve-netns")
    if shared is not None and netns is not None:

        def cost(get: Callable[[Path_], list[float]]) -> str:
            return _ratio(med(get(netns)), med(get(shared)))

        added = med(netns.rtt_median) - med(shared.rtt_median)
        print("the namespace broker's cost, paraconnect serve, serve-netns / serve-shared:"
              f" throughput {cost(lambda p: p.mbps)}, 64 B round trip"
              f" {cost(lambda p: p.rtt_median)} ({added:+.1f} us), connections/s"
              f" {cost(lambda p: p.hs_serial)} one at a time,"
              f" {cost(lambda p: p.hs_parallel)} 4 at a time")  # fmt: skip
        legs = getattr(args, "leg_connects", None)
        if legs:
            a, b = med(legs["serve-netns"]), med(legs["serve-shared"])
            print(f"the agent's connect to its program alone: {b:.1f} us on the shared leg, {a:.1f}"
                  f" us through the broker ({_ratio(a, b)}, {a - b:+.1f} us)")  # fmt: skip
    if args.repeat > 1:
        print("spread over rounds (min-max):")
        for p in paths:
            print(f"  {p.name:12} throughput {min(p.mbps):.0f}-{max(p.mbps):.0f} MB/s,"
                  f" round trip {min(p.rtt_median):.0f}-{max(p.rtt_median):.0f} us,"
                  f" connections/s {min(p.hs_serial):.0f}-{max(p.hs_serial):.0f}")  # fmt: skip
    print("raw TCP connections/s are plain TCP connects to the backend (no TLS). Load average at"
          f" the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs.")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", type=int, default=2 << 30, help="bytes in the one stream")
    parser.add_argument("--rounds", type=int, default=5000, help="64-byte round trips")
    parser.add_argument("--handshakes", type=int, default=400, help="connections to time")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections to hold")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument(
        "--only", default="raw,stunnel,paraconnect,serve-shared,serve-netns", help="which paths"
    )
    args = parser.parse_args()
    if args.quick:
        args.bytes = min(args.bytes, 64 << 20)
        args.rounds, args.handshakes, args.idle, args.repeat = 500, 40, 100, 1
    which = args.only.split(",")
    _raise_fd_limit()

    from paraconnect.pki import Store

    with tempfile.TemporaryDirectory(prefix="pc-bench-") as tmp_name:
        tmp = Path(tmp_name)
        store = Store(tmp / "home")
        session = store.create_session("bench")
        pem = tmp / "pem"
        for role, name in (("server", "srv"), ("client", "cli")):
            issued = session.issue(role, name)
            session.export(pem, name, issued.cert, issued.key)
        # The commands' own session, node-bound as 'paraconnect issue' makes them by default.
        cli = store.create_session("cli")
        for role, name in (("server", "srv"), ("client", "cli")):
            cli.issue(role, name, unique_id=store.unique_id().value)
        procs: list[subprocess.Popen[str]] = []
        pair = StunnelPair(tmp)
        try:
            backend, backend_port = _spawn("--role", "backend")
            procs.append(backend)
            paths: list[Path_] = []
            if "raw" in which:
                paths.append(Path_("raw", backend_port))
            if "stunnel" in which and stunnel_binary() is None:
                _note("stunnel4 is not installed (scripts/system-deps.sh installs it): skipped")
            elif "stunnel" in which:
                pair.start(pem, backend_port)
                pids = {"server": pair.server_pid, "client": pair.client_pid}
                paths.append(Path_("stunnel", pair.entry, pids))
            if "paraconnect" in which:
                home = str(tmp / "home")
                serve, serve_port = _spawn("--role", "pc-serve", home, str(backend_port))
                procs.append(serve)
                connect, entry = _spawn("--role", "pc-connect", home, str(serve_port))
                procs.append(connect)
                paths.append(
                    Path_("paraconnect", entry, {"server": serve.pid, "client": connect.pid})
                )
            for name in ("serve-shared", "serve-netns"):
                if name in which:
                    started, path = _serve_path(name, str(tmp / "home"), name == "serve-shared")
                    procs += started
                    paths.append(path)
            measure(paths, args)
        finally:
            pair.stop()
            _stop(*reversed(procs))
        report(paths, args)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        _raise_fd_limit()
        role, rest = sys.argv[2], sys.argv[3:]
        try:
            if role == "backend":
                role_backend(int(rest[0]) if rest else 0)
            elif role == "pc-serve":
                role_pc_serve(rest[0], int(rest[1]))
            elif role == "pc-connect":
                role_pc_connect(rest[0], int(rest[1]))
        except KeyboardInterrupt:
            pass
    else:
        main()
