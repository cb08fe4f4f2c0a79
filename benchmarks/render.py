"""Frames per second of the built-in renderer, next to VTK's own render-and-JPEG-writer loop.

In one run, on the same scene (an N-triangle sphere, turning 1° per frame) and window size:

1. the reference: VTK's render + vtkWindowToImageFilter + vtkJPEGWriter (to memory) loop;
2. paraconnect in-process: render only, render + raw readback, and delivered JPEG frames with
   readback on the render thread and encoding on a thread pool (the server's pipeline);
3. end to end: a `python -m paraconnect.render` subprocess streaming to a RenderClient over
   loopback TCP: frames received per second and frame latency (render start to received, same
   clock), and the request/response round trip of one `render`.

Ratios are to the reference.  Runs from a checkout with only vtk, numpy and simplejpeg (and anyio
for the end-to-end part) installed:

    python benchmarks/render.py [--quick] [--size 1280x720] [--triangles 80000] [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from paraconnect.render._encode import JPEG_ENCODER, encode  # noqa: E402
from paraconnect.render._scene import RawFrame, Scene  # noqa: E402


class Method:
    """One way of producing frames; ``step()`` makes one, ``finish()`` drains any in flight.

    ``frames`` counts frames delivered (encoded, where the method encodes) and ``sizes`` their
    bytes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.frames = 0
        self.sizes: list[int] = []

    def step(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


class Reference(Method):
    def __init__(self, scene: Scene, quality: int) -> None:
        from vtkmodules.vtkIOImage import vtkJPEGWriter
        from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

        super().__init__("reference: VTK render + vtkWindowToImageFilter + vtkJPEGWriter")
        self.scene = scene
        self.grab = vtkWindowToImageFilter()
        self.grab.SetInput(scene.window)
        self.grab.ReadFrontBufferOff()
        self.writer = vtkJPEGWriter()
        self.writer.SetQuality(quality)
        self.writer.WriteToMemoryOn()
        self.writer.SetInputConnection(self.grab.GetOutputPort())

    def step(self) -> None:
        self.scene.camera(azimuth=1.0)
        self.scene.window.Render()
        self.grab.Modified()
        self.writer.Write()
        self.sizes.append(self.writer.GetResult().GetNumberOfTuples())
        self.frames += 1


class RenderOnly(Method):
    def __init__(self, scene: Scene) -> None:
        super().__init__("render only (no pixels leave the GPU)")
        self.scene = scene

    def step(self) -> None:
        self.scene.camera(azimuth=1.0)
        self.scene.window.Render()
        self.frames += 1


class Readback(Method):
    def __init__(self, scene: Scene) -> None:
        super().__init__("render + GetRGBACharPixelData readback")
        self.scene = scene

    def step(self) -> None:
        self.scene.camera(azimuth=1.0)
        self.scene.render().release()
        self.frames += 1


class Pipelined(Method):
    """The server's pipeline without the network: render+readback here, encode on a pool."""

    def __init__(self, scene: Scene, quality: int, encoders: int) -> None:
        super().__init__("paraconnect in-process: delivered JPEG frames, pipelined")
        self.scene, self.quality = scene, quality
        self.pool = ThreadPoolExecutor(encoders)
        self.depth = max(1, min(3, encoders))
        self.inflight: deque[Future[bytes]] = deque()

    def submit(self, raw: RawFrame) -> Future[bytes]:
        fut = self.pool.submit(encode, raw.pixels, "jpeg", self.quality)
        fut.add_done_callback(lambda _: raw.release())
        return fut

    def deliver(self) -> None:
        self.sizes.append(len(self.inflight.popleft().result()))
        self.frames += 1

    def step(self) -> None:
        self.scene.camera(azimuth=1.0)
        self.inflight.append(self.submit(self.scene.render()))
        while len(self.inflight) > self.depth or (self.inflight and self.inflight[0].done()):
            self.deliver()

    def finish(self) -> None:
        while self.inflight:
            self.deliver()

    def close(self) -> None:
        self.pool.shutdown()


def measure(methods: list[Method], seconds: float, rounds: int) -> dict[str, float]:
    """Frames per second of each method, median over rounds that take turns, so that a busy
    shared machine slows them all alike."""
    for m in methods:
        for _ in range(3):
            m.step()
        m.finish()
    rates: dict[str, list[float]] = {m.name: [] for m in methods}
    for _ in range(rounds):
        for m in methods:
            before, start = m.frames, time.perf_counter()
            while time.perf_counter() - start < seconds / rounds or m.frames - before < 3:
                m.step()
            m.finish()
            rates[m.name].append((m.frames - before) / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def make_scene(w: int, h: int, triangles: int, backend: str, msaa: int) -> Scene:
    scene = Scene(width=w, height=h, backend=backend, multisamples=msaa)
    scene.load(dataset="sphere", options={"triangles": triangles})
    return scene


class _Tunnel:
    """The renderer behind the real tunnel: `paraconnect listen` and `paraconnect serve
    --phone-home` (mutual TLS, level mutual) as subprocesses, as in the demo. The client then
    talks to the listener's local endpoint."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        import tempfile

        from paraconnect._demo import _Command  # the demo's process wrapper
        from paraconnect.pki import Store

        self.home = Path(tempfile.mkdtemp(prefix="pc-render-bench-"))
        env = {**env, "PARACONNECT_HOME": str(self.home)}
        store = Store(self.home)
        session = store.create_session("bench")
        session.issue("node", "client")
        remote = self.home / "remote"
        session.issue("server", "render", unique_id=store.unique_id().value, out=remote)
        listen_args = ["listen", "127.0.0.1:0", "--creds", "bench", "--local", "127.0.0.1:0"]
        self.listen = _Command([*listen_args, "--json", "-q"], env, self.home / "listen.log")
        ready = self.listen.event("ready", 60)
        self.serve = _Command(
            ["serve", "--creds", str(remote), "--phone-home", str(ready["listen"]),
             "--interval", "0.5", "--json", "-q", "--", *command],
            env,
            self.home / "serve.log",
        )  # fmt: skip
        self.listen.event("server", 120)
        self.port = int(str(ready["local"]).rsplit(":", 1)[1])

    def close(self) -> None:
        import shutil

        self.serve.stop()
        self.listen.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def end_to_end(
    args: argparse.Namespace,
    w: int,
    h: int,
    seconds: float,
    rounds: int,
    reference: Method,
    tunnel: bool = False,
) -> dict[str, float]:
    """Stream from a server subprocess, in rounds that take turns with the in-process reference
    (so the ratio compares like with like on a busy machine); with `tunnel`, through a real
    listen/serve pair over mutual TLS."""
    from paraconnect.render import RenderClient

    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    options = ["--backend", args.backend, "--msaa", str(args.msaa)]
    options += ["--encoders", str(args.encoders)]
    q = args.quality
    proc: subprocess.Popen[str] | None = None
    via: _Tunnel | None = None
    if tunnel:
        via = _Tunnel([sys.executable, "-m", "paraconnect.render", "--unix", "{unix}", *options],
                      env)  # fmt: skip
        port = via.port
    else:
        command = [sys.executable, "-m", "paraconnect.render", "--port", "0", *options]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        if proc is not None:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "listening on" not in line:
                raise SystemExit(f"the render server did not start: {line!r}")
            port = int(line.rsplit(":", 1)[1])
        with RenderClient(port=port, timeout=60) as client:
            client.resize(w, h)
            client.load("sphere", triangles=args.triangles)
            rtt: list[float] = []
            for _ in range(3):
                client.render(quality=q)
            start = time.perf_counter()
            while time.perf_counter() - start < max(1.0, seconds / 2) or len(rtt) < 5:
                t0 = time.perf_counter()
                client.camera(azimuth=1.0)
                client.render(quality=q)
                rtt.append((time.perf_counter() - t0) * 1000)
            ages: list[float] = []
            nbytes: list[int] = []
            rates: list[float] = []
            ref_rates: list[float] = []
            for _ in range(rounds):
                before, t0 = reference.frames, time.perf_counter()
                while time.perf_counter() - t0 < seconds / rounds or reference.frames - before < 3:
                    reference.step()
                ref_rates.append((reference.frames - before) / (time.perf_counter() - t0))
                client.stream(fps=0, spin=1.0, quality=q)
                for _ in range(3):
                    client.next_frame()
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds / rounds or n < 5:
                    frame = client.next_frame()
                    ages.append((frame.received - frame.server_time) * 1000)
                    nbytes.append(len(frame.data))
                    n += 1
                rates.append(n / (time.perf_counter() - t0))
                client.stop()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        if via is not None:
            via.close()
    return {
        "fps": statistics.median(rates),
        "ref_fps": statistics.median(ref_rates),
        "latency_median": statistics.median(ages),
        "latency_p99": _p99(ages),
        "rtt_median": statistics.median(rtt),
        "rtt_p99": _p99(rtt),
        "bytes": statistics.median(nbytes),
    }


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="about 1.5 s per measurement")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="seconds per figure (in-process figures: in 5 interleaved rounds)",
    )
    p.add_argument("--size", default="1280x720")
    p.add_argument("--triangles", type=int, default=80_000)
    p.add_argument("--quality", type=int, default=85)
    p.add_argument("--encoders", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--backend", default="egl", choices=("egl", "osmesa", "auto"))
    p.add_argument(
        "--msaa", type=int, default=0, help="MSAA samples, both paths (VTK's default: 8)"
    )
    p.add_argument("--no-tcp", action="store_true", help="skip the end-to-end part")
    p.add_argument(
        "--tunnel",
        action="store_true",
        help="also stream through a real paraconnect listen / serve --phone-home pair",
    )
    args = p.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    seconds = args.seconds or (1.5 if args.quick else 6.0)

    scene = make_scene(w, h, args.triangles, args.backend, args.msaa)
    facts = scene.gl_facts()
    assert scene.info is not None
    print(f"window   {facts.get('window')}")
    print(f"GL       {facts.get('gl_vendor')} / {facts.get('gl_renderer')}")
    print(f"         {facts.get('gl_version')}")
    print(
        f"scene    sphere, {scene.info.triangles:,} triangles, {w}x{h}, MSAA {args.msaa}, "
        f"JPEG quality {args.quality}; encoder {JPEG_ENCODER} x{args.encoders}; "
        f"{os.cpu_count()} CPUs; {seconds:g} s per figure"
    )
    methods: list[Method] = [
        Reference(scene, args.quality),
        RenderOnly(scene),
        Readback(scene),
        Pipelined(scene, args.quality, args.encoders),
    ]
    rounds = 1 if args.quick else 5
    rates = measure(methods, seconds, rounds)
    ref_fps = rates[methods[0].name]
    rows = [
        (m.name, rates[m.name], ref_fps, f"{statistics.median(m.sizes) / 1024:.0f} KiB/frame")
        if m.sizes
        else (m.name, rates[m.name], ref_fps, "")
        for m in methods
    ]
    e2e: dict[str, float] | None = None
    via_tunnel: dict[str, float] | None = None
    if not args.no_tcp:
        try:
            e2e = end_to_end(args, w, h, seconds, rounds, methods[0])
            if args.tunnel:
                via_tunnel = end_to_end(args, w, h, seconds, rounds, methods[0], tunnel=True)
        except ImportError as exc:
            print(f"(end-to-end part skipped: {exc})")
    for m in methods:
        m.close()
    scene.close()
    if e2e is not None:
        rows.append(
            (
                "paraconnect end to end, TCP loopback stream: frames received",
                e2e["fps"],
                e2e["ref_fps"],
                f"{e2e['bytes'] / 1024:.0f} KiB/frame (ref in these rounds: {e2e['ref_fps']:.1f})",
            )
        )
    if via_tunnel is not None:
        rows.append(
            (
                "paraconnect end to end, through the mutual-TLS tunnel",
                via_tunnel["fps"],
                via_tunnel["ref_fps"],
                f"{via_tunnel['bytes'] / 1024:.0f} KiB/frame "
                f"(ref in these rounds: {via_tunnel['ref_fps']:.1f})",
            )
        )
    print()
    print(f"{'':64} {'frames/s':>9} {'vs ref':>7}")
    for name, fps, ref, note in rows:
        print(f"{name:64} {fps:9.1f} {fps / ref:6.2f}x  {note}")
    if e2e is not None:
        print()
        print(
            f"stream frame latency (render start -> received): median "
            f"{e2e['latency_median']:.1f} ms, p99 {e2e['latency_p99']:.1f} ms"
        )
        print(
            f"request/response (camera + render round trip):   median "
            f"{e2e['rtt_median']:.1f} ms, p99 {e2e['rtt_p99']:.1f} ms"
        )
    if via_tunnel is not None:
        print(
            f"through the tunnel: stream latency median {via_tunnel['latency_median']:.1f} ms, "
            f"p99 {via_tunnel['latency_p99']:.1f} ms; request/response median "
            f"{via_tunnel['rtt_median']:.1f} ms, p99 {via_tunnel['rtt_p99']:.1f} ms"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
