"""The web app proxy (/paraconnect/proxy/<id>/) against the same app reached directly.

Runs a real `jupyter server` with the extension, launches tests/helpers_webapp.py as a `web`
server (local launcher, reverse: the app on its private leg, through the hub's tunnel and
Jupyter's proxy), and a second copy of the app on a loopback port (the reference, no tunnel, no
Jupyter).  In the same run, for each:

- HTTP: sequential `GET /headers` on one keep-alive connection (the browser's case), for
  `--seconds`: requests/s and median latency;
- websocket: `--messages` round trips of a 64-byte text message: median and p99 ms;
- a `--mib` MiB download: MB/s.

Also the hub's local endpoint itself ("tunnel": the tunnel without Jupyter's proxy), to show
which part costs what.  Printed side by side with the ratios to direct.  No assertions.

    .venv/bin/python benchmarks/proxy.py [--seconds 5] [--messages 2000] [--mib 256]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers_jupyter import JupyterServer, start_jupyter  # noqa: E402

APP = str(REPO / "tests" / "helpers_webapp.py")


@contextlib.contextmanager
def _direct_app() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen([sys.executable, APP, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the reference app did not listen")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _http(port: int, prefix: str, auth: dict[str, str], seconds: float) -> tuple[float, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            conn.request("GET", f"{prefix}/headers", headers=auth)
            reply = conn.getresponse()
            reply.read()
            assert reply.status == 200, reply.status
            times.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return len(times) / sum(times), statistics.median(times) * 1000


def _ws(url: str, auth: list[str], messages: int) -> tuple[float, float]:
    import websocket

    ws = websocket.create_connection(url, header=auth, timeout=60)
    times = []
    try:
        for _ in range(messages):
            t0 = time.perf_counter()
            ws.send("x" * 64)
            ws.recv()
            times.append(time.perf_counter() - t0)
    finally:
        ws.close()
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.99)] * 1000


def _download(port: int, prefix: str, auth: dict[str, str], mib: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        t0 = time.perf_counter()
        conn.request("GET", f"{prefix}/big?n={mib << 20}", headers=auth)
        reply = conn.getresponse()
        got = 0
        while piece := reply.read(1 << 20):
            got += len(piece)
        return got / (time.perf_counter() - t0) / 1e6
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--mib", type=int, default=256)
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp,
        start_jupyter(Path(tmp)) as lab,
        _direct_app() as direct,
    ):
        proxied, tunnel = _launch(lab)
        jport = int(lab.base_url.rstrip("/").rsplit(":", 1)[1])
        auth = {"Authorization": f"token {lab.token}"}
        prefix = f"/paraconnect/proxy/{proxied}"
        runs: dict[str, tuple[Callable[[], tuple[float, ...]], ...]] = {
            "direct": (
                lambda: _http(direct, "", {}, args.seconds),
                lambda: _ws(f"ws://127.0.0.1:{direct}/ws", [], args.messages),
                lambda: (_download(direct, "", {}, args.mib),),
            ),
            "tunnel": (
                lambda: _http(tunnel, "", {}, args.seconds),
                lambda: _ws(f"ws://127.0.0.1:{tunnel}/ws", [], args.messages),
                lambda: (_download(tunnel, "", {}, args.mib),),
            ),
            "proxied": (
                lambda: _http(jport, prefix, auth, args.seconds),
                lambda: _ws(
                    f"{lab.ws_base}paraconnect/proxy/{proxied}/ws",
                    [f"Authorization: token {lab.token}"],
                    args.messages,
                ),
                lambda: (_download(jport, prefix, auth, args.mib),),
            ),
        }
        for port, pre, head in ((direct, "", {}), (tunnel, "", {}), (jport, prefix, auth)):
            _http(port, pre, head, 0.3)  # warm: first connections, code paths
        got = {name: [f() for f in fs] for name, fs in runs.items()}
    d, t, p = got["direct"], got["tunnel"], got["proxied"]
    rows = [
        ("HTTP GET keep-alive, requests/s", d[0][0], t[0][0], p[0][0]),
        ("HTTP GET median latency, ms", d[0][1], t[0][1], p[0][1]),
        ("websocket round trip median, ms", d[1][0], t[1][0], p[1][0]),
        ("websocket round trip p99, ms", d[1][1], t[1][1], p[1][1]),
        (f"download {args.mib} MiB, MB/s", d[2][0], t[2][0], p[2][0]),
    ]
    print(f"{'':34} {'direct':>9} {'tunnel':>9} {'proxied':>9} {'tunnel/d':>9} {'proxied/d':>10}")
    for label, a, b, c in rows:
        print(f"{label:34} {a:9.2f} {b:9.2f} {c:9.2f} {b / a:9.2f} {c / a:10.2f}")


def _launch(lab: JupyterServer) -> tuple[str, int]:
    """The web server's id, and its local endpoint's port (the tunnel without Jupyter)."""
    body = {"kind": "web", "command": [sys.executable, APP, "{port}"]}
    info = lab.ok("POST", "servers", body)
    info = lab.wait_state(info["id"], {"connected"})
    if info["state"] != "connected":
        raise RuntimeError(f"the web server did not connect: {info}")
    return str(info["id"]), int(str(info["local"]).rsplit(":", 1)[1])


if __name__ == "__main__":
    main()
