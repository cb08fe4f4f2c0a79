"""One `paraconnect listen` (or, with --hub, one `paraconnect hub`) holding many agents phoned
home and idle, on loopback.

The listener is the real command (its own process, measured through /proc); the agents are the
library's `paraconnect.tunnel.Agent` objects, many to a worker process (one event loop each),
all serving one shared echo program through ``target``.  Printed:

- memory per agent on the listen side: RSS growth as agents join in steps (the slope of a
  least-squares line through the steps, and the fd count);
- CPU of the listener at rest over 10 s with every agent idle (their control channels open);
- time for every agent to be taken again after the listener is killed (SIGKILL) and restarted on
  the same address (agents phone every ``--interval`` s, with ±20 % jitter);
- full mutual-TLS handshakes (TLS 1.3 + hello) per second at saturation: a load generator (one
  process) dialling the listener as agents would, ``--concurrency`` at a time, for a few
  seconds; and the reconnect storm's own rate (every worker dialling at once), which on a
  small machine is the higher of the two, the single generator being its own bottleneck;
- the extrapolation to 10,000 agents from the measured slopes.

With ``--hub`` the listener is the hub: every agent is first registered as a server started by
hand (the ``agent_command`` operation: a registry record and a local endpoint each), holds a
server certificate of its own (the hub takes an agent only under its server's name), and its
arrival is the ``last_phone_home`` the hub records; after the kill -9 the new hub re-adopts
them all from its registry.

The load generator, the workers and the listener share the machine's cores: read the figures
as what one small machine does, not as the listener's ceiling.  No assertions.

    .venv/bin/python benchmarks/scale.py [--agents 200] [--per-worker 100] [--interval 1] [--hub]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARACONNECT = str(Path(sys.executable).with_name("paraconnect"))
UNIQUE_ID = "bench-node"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the worker: many agents in one event loop ----------------------------------------------


def worker(args: argparse.Namespace) -> int:
    import anyio

    from paraconnect.pki import load_credentials
    from paraconnect.tunnel import Agent, Home

    if args.ids:
        # The hub's servers: each agent under its own name, with a certificate of its own.
        from paraconnect.pki import Role, Store

        session = Store().open_session("lab")
        ids = Path(args.ids).read_text().split()
        creds_of = []
        for sid in ids:
            out = Path(args.ids).parent / "creds" / sid
            session.issue(Role.SERVER, sid, unique_id=UNIQUE_ID, out=out)
            creds_of.append(load_credentials(out))
    else:
        ids = [f"agent-{args.first + i}" for i in range(args.count)]
        creds_of = [load_credentials("lab", role="server")] * len(ids)
    agents = [
        Agent(
            creds,
            target=args.target,
            phone_home=[Home.parse(args.home, args.interval)],
            server_id=sid,
        )
        for sid, creds in zip(ids, creds_of, strict=True)
    ]

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            for agent in agents:
                await tg.start(agent.run)
            print(json.dumps({"event": "ready"}), flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()

    anyio.run(run)
    return 0


def handshakes(args: argparse.Namespace) -> int:
    """Dial the listener as agents do (TLS + hello, control purpose), close, repeat; print the
    count of completed handshakes after `seconds`."""
    import anyio

    from paraconnect.pki import load_credentials
    from paraconnect.tunnel import Purpose, Side, parse_endpoint
    from paraconnect.tunnel._leg import connect_endpoint

    creds = load_credentials("lab", role="server")
    side = Side(creds, "server", server_id="probe")
    ep = parse_endpoint(args.home)
    done = 0
    failed = 0

    async def loop(stop: float) -> None:
        nonlocal done, failed
        while time.monotonic() < stop:
            try:
                sock = await connect_endpoint(ep)
                conn, _hello = await side.establish(
                    sock, server_side=False, purpose=Purpose.CONTROL
                )
            except Exception:
                failed += 1
                await anyio.sleep(0.01)
                continue
            done += 1
            await conn.aclose()

    async def run() -> None:
        stop = time.monotonic() + args.seconds
        async with anyio.create_task_group() as tg:
            for _ in range(args.concurrency):
                tg.start_soon(loop, stop)

    t0 = time.monotonic()
    anyio.run(run)
    print(json.dumps({"done": done, "failed": failed, "seconds": time.monotonic() - t0}))
    return 0


# -- the driver -----------------------------------------------------------------------------


class Listener:
    def __init__(self, address: str, env: dict[str, str], log: Path) -> None:
        self.log = open(log, "a")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [PARACONNECT, "listen", address, "--creds", "lab", "--local", "127.0.0.1:0",
             "--json", "-q", "--handshake-timeout", "30"],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
        )  # fmt: skip
        self.events: queue.Queue[tuple[float, dict[str, object]]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        _when, ready = self.events.get(timeout=60)
        assert ready.get("event") == "ready", ready
        self.address = str(ready["listen"])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put((time.monotonic(), json.loads(line)))

    def wait_servers(self, count: int, timeout: float = 600) -> list[float]:
        """Arrival times of `count` distinct servers (bounded)."""
        seen: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while len(seen) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"only {len(seen)} of {count} agents phoned home")
            when, event = self.events.get(timeout=left)
            if event.get("event") == "server":
                seen.setdefault(str(event["server_id"]), when)
        return sorted(seen.values())

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.log.close()


class HubListener(Listener):
    """`paraconnect hub` in the listener's place; arrivals from the hub's own records."""

    def __init__(self, address: str, env: dict[str, str], log: Path) -> None:
        # Agents phone home as soon as the hub listens, before it prints that it is ready.
        self.since = time.time()
        self.log = open(log, "a")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [PARACONNECT, "hub", "--listen", address, "--session", "lab", "--json"],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        assert ready.get("event") == "ready", ready
        self.address = str(ready["phone_home"]["lab"])
        self.expected: list[str] = []

    def register(self, count: int, path: Path) -> None:
        """`count` servers started by hand; their ids in `path`, for a worker."""
        from paraconnect.hub import HubClient

        with HubClient() as hub:
            ids = [
                hub.request("agent_command", kind="command", session="lab",
                            command=["true", "{port}"])["server"]["id"]
                for _ in range(count)
            ]  # fmt: skip
        path.write_text("\n".join(ids))
        self.expected += ids

    def wait_servers(self, count: int, timeout: float = 600) -> list[float]:
        """Arrival times (monotonic) of the last `count` registered servers, once all have
        phoned home to this hub (polled; the times are the hub's own records)."""
        from paraconnect.hub import HubClient

        want = set(self.expected[-count:])
        deadline = time.monotonic() + timeout
        with HubClient() as hub:
            while True:
                infos = [i for i in hub.request("servers") if i["id"] in want]
                when = [i["last_phone_home"] for i in infos if i["state"] == "connected"
                        and (i["last_phone_home"] or 0) >= self.since]  # fmt: skip
                if len(when) == len(want):
                    offset = time.monotonic() - time.time()
                    return sorted(t + offset for t in when)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(when)} of {count} agents phoned home")
                time.sleep(0.25)


def rest_cpu(listener: Listener, seconds: float) -> float:
    """The listener's CPU use (fraction of a core) over `seconds` of doing nothing new."""
    c0, w0 = listener.cpu_s(), time.monotonic()
    time.sleep(seconds)
    return (listener.cpu_s() - c0) / (time.monotonic() - w0)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def setup(home: Path) -> dict[str, str]:
    env = {**os.environ, "PARACONNECT_HOME": str(home), "PARACONNECT_UNIQUE_ID": UNIQUE_ID}
    os.environ.update(env)
    from paraconnect.pki import Store

    store = Store(home)
    session = store.create_session("lab")
    session.issue("server", "srv", unique_id=UNIQUE_ID)
    session.issue("client", "alice", unique_id=UNIQUE_ID)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drive(args: argparse.Namespace) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    tmp = Path(tempfile.mkdtemp(prefix="pc-scale-"))
    env = setup(tmp / "home")
    echo_port = free_port()
    echo = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "helpers_echo.py"), "--port", str(echo_port)]
    )
    workers: list[subprocess.Popen[str]] = []
    worker_log = open(tmp / "workers.log", "a")  # noqa: SIM115 - closed below
    kind = HubListener if args.hub else Listener
    listener = kind("127.0.0.1:0", env, tmp / "listen.log")
    address = listener.address
    try:
        time.sleep(1)
        base_rss, base_fds = listener.rss_kib(), listener.fds()
        print(f"agents {args.agents} in workers of {args.per_worker}; phone-home interval "
              f"{args.interval:g} s; listener pid {listener.proc.pid} on {address}")  # fmt: skip
        cpu0 = rest_cpu(listener, args.rest)
        print(f"listener at rest, no agent: RSS {base_rss / 1024:.1f} MiB, {base_fds} fds, "
              f"CPU {cpu0 * 100:.2f} % of a core (over {args.rest:g} s)")  # fmt: skip
        counts, rss = [0], [float(base_rss)]
        joined = 0
        t0 = time.monotonic()
        while joined < args.agents:
            n = min(args.per_worker, args.agents - joined)
            ids: list[str] = []
            if isinstance(listener, HubListener):
                ids_file = tmp / f"ids-{joined}.txt"
                listener.register(n, ids_file)
                ids = ["--ids", str(ids_file)]
            proc = subprocess.Popen(
                [sys.executable, __file__, "--worker", "--home", address, "--count", str(n),
                 "--first", str(joined), "--interval", str(args.interval),
                 "--target", f"127.0.0.1:{echo_port}", *ids],
                stdout=subprocess.PIPE, stderr=worker_log, text=True, env=env,
            )  # fmt: skip
            workers.append(proc)
            assert proc.stdout is not None
            t_start = time.monotonic()
            proc.stdout.readline()  # ready: its agents are built and dialling
            t_ready = time.monotonic()
            joined += n
            arrived = listener.wait_servers(n, timeout=300)
            print(f"  worker of {n} ready after {t_ready - t_start:.1f} s; its agents all taken "
                  f"{arrived[-1] - t_ready:.2f} s later")  # fmt: skip
            time.sleep(1)  # let allocations settle before reading RSS
            counts.append(joined)
            rss.append(float(listener.rss_kib()))
            print(f"  {joined:5d} agents held: RSS {rss[-1] / 1024:7.1f} MiB, "
                  f"{listener.fds()} fds")  # fmt: skip
        join_s = time.monotonic() - t0
        per_agent_kib = slope(counts, rss)
        print(f"memory per agent on the listen side: {per_agent_kib:.1f} KiB "
              f"(slope over {len(counts)} steps); fds per agent "
              f"{(listener.fds() - base_fds) / args.agents:.2f}")  # fmt: skip

        cpu = rest_cpu(listener, args.rest)
        print(f"listener CPU at rest with {args.agents} idle agents: {cpu * 100:.2f} % of a core "
              f"(over {args.rest:g} s)")  # fmt: skip

        # The listener dies (kill -9) and comes back on the same address.
        listener.kill()
        time.sleep(args.interval * 1.5)  # every agent has seen it go and is dialling again
        t_restart = time.monotonic()
        expected = listener.expected if isinstance(listener, HubListener) else []
        listener = kind(address if not args.hub else "127.0.0.1:0", env, tmp / "listen.log")
        if isinstance(listener, HubListener):
            listener.expected = expected  # re-adopted from the registry
        arrivals = listener.wait_servers(args.agents, timeout=600)
        reconnect = arrivals[-1] - t_restart
        spread = arrivals[-1] - arrivals[0]
        storm_rate = (args.agents - 1) / spread if spread > 0 else float("inf")
        print(f"all {args.agents} agents taken again {reconnect:.2f} s after the restart "
              f"(first {arrivals[0] - t_restart:.2f} s; arrivals spread over {spread:.2f} s: "
              f"{storm_rate:.0f}/s)")  # fmt: skip

        # Handshakes at saturation, from a load generator.
        out = subprocess.run(
            [sys.executable, __file__, "--handshakes", "--home", address,
             "--concurrency", str(args.concurrency), "--seconds", str(args.seconds)],
            capture_output=True, text=True, env=env, timeout=120, check=True,
        )  # fmt: skip
        hs = json.loads(out.stdout.strip().splitlines()[-1])
        rate = hs["done"] / hs["seconds"]
        print(
            f"full handshakes (TLS 1.3 + hello) at saturation: {rate:.0f}/s "
            f"({args.concurrency} at once for {hs['seconds']:.1f} s; {hs['failed']} failed)"
        )

        n = 10_000
        print(f"extrapolated to {n:,} agents on one listener (from the slopes above):")
        print(
            f"  memory  {base_rss / 1024 + per_agent_kib * n / 1024:8.0f} MiB "
            f"({per_agent_kib:.1f} KiB x {n:,} + {base_rss / 1024:.0f} MiB base)"
        )
        per_agent_cpu = max(cpu - cpu0, 0.0) / args.agents
        print(f"  CPU at rest  {(cpu0 + per_agent_cpu * n) * 100:5.1f} % of a core "
              f"({cpu0 * 100:.2f} % with no agent + {per_agent_cpu * 1e6:.2f} ppm of a core per "
              "idle agent, if that grows linearly)")  # fmt: skip
        print(
            f"  fds  {base_fds + n * (listener.fds() - base_fds) / args.agents:8.0f} "
            f"(raise RLIMIT_NOFILE above that; here it is {hard})"
        )
        print(
            f"  reconnect after a restart  ~{n / max(rate, storm_rate) + args.interval:.0f} s "
            f"({n:,} handshakes at {max(rate, storm_rate):.0f}/s, the better of the two rates "
            f"above, after an interval of {args.interval:g} s)"
        )
        print(f"  (first join of {args.agents} took {join_s:.1f} s including worker start-up)")
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        listener.kill(signal.SIGTERM)
        echo.kill()
        echo.wait()
        worker_log.close()
        print(f"logs in {tmp}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--per-worker", type=int, default=100, help="agents per worker process")
    parser.add_argument("--interval", type=float, default=1.0, help="phone-home interval, s")
    parser.add_argument("--rest", type=float, default=10.0, help="seconds of CPU at rest")
    parser.add_argument("--concurrency", type=int, default=16, help="handshakes at once")
    parser.add_argument("--seconds", type=float, default=5.0, help="handshake test length")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--handshakes", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument(
        "--hub", action="store_true", help="measure `paraconnect hub` instead of `listen`"
    )
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.handshakes:
        return handshakes(args)
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
