"""Does bulk traffic through the hub stall Jupyter?

The hub runs inside the Jupyter server's process, on an event-loop thread of its own, so that
tornado's loop never waits on it; but both share one interpreter (and its GIL).  This runs a
real `jupyter server` with the extension, launches the echo/sha256 program behind an agent
that phones home (local launcher), and times Jupyter's own `GET /api/status` and the
extension's `GET /paraconnect/api/servers`, one request every 20 ms:

- idle: nothing flows;
- bulk, direct: the same bulk load sent straight to a second copy of the program (no tunnel,
  no Jupyter): the machine's cores are as busy, Jupyter's process is not;
- bulk, through the hub: `--streams` streams of `--size` MiB each through the hub's local
  endpoint, i.e. through Jupyter's process.

Printed side by side: median and p99 latency per phase, the bulk's throughput, and the ratios
(through the hub / idle, and through the hub / direct).  No assertions.

    .venv/bin/python benchmarks/jupyter.py [--size 512] [--streams 2]
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
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers_jupyter import JupyterServer, start_jupyter  # noqa: E402

ECHO = [sys.executable, str(REPO / "tests" / "helpers_echo.py")]
SHA_CLIENT = [sys.executable, "-m", "tests.fixtures_netns", "sha"]


def _get(server: JupyterServer, path: str) -> float:
    """One authenticated GET; its latency in ms."""
    req = urllib.request.Request(server.url(path))  # noqa: S310 - loopback, our server
    req.add_header("Authorization", f"token {server.token}")
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as reply:  # noqa: S310
        reply.read()
    return (time.perf_counter() - t0) * 1000


def _sample(server: JupyterServer, until: threading.Event | float) -> dict[str, list[float]]:
    """Both routes, one request every 20 ms, until the event is set (or for N seconds)."""
    out: dict[str, list[float]] = {"status": [], "servers": []}
    deadline = time.monotonic() + until if isinstance(until, float) else None
    while True:
        if isinstance(until, threading.Event) and until.is_set():
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        out["status"].append(_get(server, "api/status"))
        out["servers"].append(_get(server, "paraconnect/api/servers"))
        time.sleep(0.02)
    return out


def _bulk(port: int, size_mib: int, streams: int) -> tuple[threading.Event, list[float]]:
    """Run the sha256 client against 127.0.0.1:port in a subprocess; its MB/s when done."""
    done, rate = threading.Event(), []

    def run() -> None:
        t0 = time.perf_counter()
        out = subprocess.run(
            [*SHA_CLIENT, "127.0.0.1", str(port), "--size", str(size_mib << 20),
             "--streams", str(streams)],
            cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - t0
        ok = json.loads(out.stdout.strip().splitlines()[-1])["ok"] if out.stdout else False
        if not ok:
            print(f"bulk client failed: {out.stderr[-2000:]}", file=sys.stderr)
        rate.append(size_mib * streams * 1.048576 / elapsed)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, rate


def _row(name: str, lat: dict[str, list[float]], rate: str) -> list[str]:
    def q(xs: list[float], p: float) -> float:
        return statistics.quantiles(xs, n=100)[int(p) - 1] if len(xs) > 2 else max(xs)

    return [name, f"{statistics.median(lat['status']):.1f}", f"{q(lat['status'], 99):.1f}",
            f"{statistics.median(lat['servers']):.1f}", f"{q(lat['servers'], 99):.1f}",
            str(len(lat["status"])), rate]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="MiB per stream")
    ap.add_argument("--streams", type=int, default=2)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of the idle phase")
    args = ap.parse_args()
    env = {"PYTHONPATH": str(REPO), "JUPYTER_PLATFORM_DIRS": "1"}
    with tempfile.TemporaryDirectory(prefix="pc-bench-jupyter-") as tmp, \
            start_jupyter(Path(tmp), env=env) as server:  # fmt: skip
        info = server.ok("POST", "servers", {"kind": "command", "session": "default",
                                             "command": [*ECHO, "--port", "{port}"]})  # fmt: skip
        info = server.ok("GET", f"servers/{info['id']}")
        deadline = time.monotonic() + 60
        while info["state"] != "connected":
            if time.monotonic() > deadline:
                raise SystemExit(f"the server did not connect: {info}")
            time.sleep(0.2)
            info = server.ok("GET", f"servers/{info['id']}")
        hub_port = int(str(info["local"]).rsplit(":", 1)[1])

        idle = _sample(server, args.idle)

        direct_port = _free_port()
        program = subprocess.Popen([*ECHO, "--port", str(direct_port)], cwd=REPO)
        try:
            _wait_port(direct_port)
            done, direct_rate = _bulk(direct_port, args.size, args.streams)
            direct = _sample(server, done)
        finally:
            program.terminate()
            program.wait(30)

        done, hub_rate = _bulk(hub_port, args.size, args.streams)
        through = _sample(server, done)

    rows = [
        ["phase", "status p50 ms", "p99", "servers p50 ms", "p99", "requests", "bulk MB/s"],
        _row("idle", idle, "-"),
        _row("bulk, direct", direct, f"{direct_rate[0]:.0f}"),
        _row("bulk, through the hub", through, f"{hub_rate[0]:.0f}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                        enumerate(zip(r, widths, strict=True))))  # fmt: skip
    for route in ("status", "servers"):
        t, i, d = (statistics.median(x[route]) for x in (through, idle, direct))
        tp, dp = (statistics.quantiles(x[route], n=100)[98] for x in (through, direct))
        print(f"/{route}: through the hub / idle {t / i:.2f}x (median); "
              f"through the hub / direct {t / d:.2f}x (median), {tp / dp:.2f}x (p99)")  # fmt: skip
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the direct echo program did not listen on {port}")
        time.sleep(0.05)


if __name__ == "__main__":
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    raise SystemExit(main())
