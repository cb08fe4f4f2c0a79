"""Frames per second of the pvserver view (srv.view() on pvserver) beside the built-in
renderer's, on the same dataset, size and camera motion, through the same hub.

In one run: a hub in this process launches a builtin server and a pvserver (local launcher,
each behind its agent, phoning home over mutual TLS).  For each, a RenderClient asks for frames
in a loop, turning the camera 2° per frame, and counts frames received per second:

- builtin: the client talks to the hub's local endpoint; the renderer is the VTK wheel's;
- pvserver: the client talks to the ParaView client process beside the kernel (pvclient), which
  renders through pvserver (server-side rendering, image delivered to the client) and encodes.

This is what a RemoteView gets from its server before the browser (one request in flight, as
the widget's front end keeps it); the ratio is pvserver / builtin.

    python benchmarks/pvview.py [--seconds 5] [--size 640x480] [--dataset wavelet]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from paraconnect.hub import Hub  # noqa: E402
from paraconnect.pki import Store  # noqa: E402
from paraconnect.pvclient import ParaViewClient  # noqa: E402
from paraconnect.render import RenderClient  # noqa: E402


def frames_per_second(client: RenderClient, seconds: float, w: int, h: int, dataset: str) -> float:
    client.resize(w, h)
    client.load(dataset)
    client.camera(reset=True)
    client.render()  # warm: first frame builds the pipeline
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        client.camera(azimuth=2.0)
        frame = client.render("jpeg", 85)
        assert (frame.width, frame.height) == (w, h)
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--size", default="640x480")
    p.add_argument("--dataset", default="wavelet", choices=["wavelet", "sphere", "cone"])
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="paraconnect-bench-") as tmp:
        home = Path(tmp) / "home"
        os.environ["PARACONNECT_HOME"] = str(home)
        Store(home).create_session("bench")
        hub = Hub(home)
        hub.start_in_thread()
        try:
            results = {}
            for kind, options in (("builtin", {}), ("pvserver", {"xvfb": "always"})):
                info = hub.call(hub.launch, kind, "local", "bench", "reverse", options)
                info = hub.call(hub.wait, info.id, "connected", 120.0)
                assert info.local_port is not None, info
                if kind == "builtin":
                    with RenderClient(port=info.local_port, timeout=120) as c:
                        results[kind] = frames_per_second(c, args.seconds, w, h, args.dataset)
                else:
                    pv = ParaViewClient("127.0.0.1", info.local_port)
                    try:
                        with RenderClient(unix=pv.frames, timeout=120) as c:
                            results[kind] = frames_per_second(c, args.seconds, w, h, args.dataset)
                    finally:
                        pv.close()
                hub.call(hub.stop, info.id, 5.0)
        finally:
            hub.stop_thread()
    print(f"dataset {args.dataset}, {w}x{h}, JPEG q85, camera turning 2 deg per frame")
    for kind, fps in results.items():
        print(f"  {kind:9} {fps:7.1f} frames/s")
    print(f"  ratio pvserver/builtin: {results['pvserver'] / results['builtin']:.2f}")


if __name__ == "__main__":
    main()
