"""The notebook's live view as a user dragging in JupyterLab gets it, beside the renderer's own
frame rate on the same scene, in one run.

One JupyterLab (the tests' private one, served by `jupyter server`), a notebook whose kernel
launches a built-in renderer through the Jupyter server's hub (local launcher, phoning home over
mutual TLS) and shows ``srv.view(dataset=D, width=W, height=H)``.  The widget's front end has
its own line to the renderer (``WS /paraconnect/api/servers/<id>/view``, relayed by the server
extension to the hub's local endpoint, through the tunnel), so what Chromium shows is the whole
chain: browser → Jupyter server → hub → agent → renderer → back.

For each size: the pointer drags across the picture for S seconds in Debian's headless
Chromium, moving once an animation frame (as a real mouse's moves arrive), once with the kernel
idle and once while a cell sleeps; every frame shown is timed in the page
(``paraconnectStats``, recorded when the image has decoded).  Printed, per size:

- frames/s shown while dragging, and the ratio to the renderer's own frames/s on the same
  scene (a spinning stream read straight from the hub's local endpoint by this process: render,
  encode, tunnel, no browser);
- input-to-frame latency, p50 and p95: for each pointer move, the time until the next frame is
  on screen;
- frames shown after the last pointer move: the ones in flight then, and the full-quality
  still the release asks for (the goal counts the frames beyond that still);
- the same frames/s while the kernel runs ``time.sleep``;
- bytes per frame while dragging (drag quality) and at rest (the still).

    python benchmarks/view_browser.py [--seconds 5] [--sizes 640x480,1280x720]
        [--datasets wavelet,sphere]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers_lab import chromium, start_lab  # noqa: E402
from tests.helpers_lab import notebook as make_notebook  # noqa: E402
from tests.test_widgets_browser import KERNEL_IDLE, LIVE  # noqa: E402

KERNEL_BUSY = KERNEL_IDLE.replace("'idle'", "'busy'")
STATS = "() => document.querySelector('.paraconnect-remoteview').paraconnectStats"


def renderer_fps(port: int, dataset: str, w: int, h: int, seconds: float) -> float:
    """The renderer's own frames/s on the same scene: a spinning stream from the hub's local
    endpoint, read by this process (no browser, no Jupyter)."""
    from paraconnect.render import RenderClient

    with RenderClient(port=port, timeout=60) as c:
        c.load(dataset)
        c.resize(w, h)
        c.stream(fps=0, spin=1.0, format="jpeg", quality=60)
        c.next_frame(timeout=30)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            c.next_frame(timeout=30)
            n += 1
        elapsed = time.perf_counter() - start
        c.stop()
    return n / elapsed


# The pointer moves once an animation frame, as Chromium delivers a real mouse's moves (aligned
# to the display's frames): dispatched in the page, because Playwright's mouse.move waits a
# round trip to the driver for each move and, on 2 loaded cores, moved 35-50 times a second.
DRAG = """async (seconds) => {
  const img = document.querySelector('.paraconnect-remoteview img');
  const r = img.getBoundingClientRect();
  const x = r.left + 20, y = r.top + r.height / 2;
  const ev = (type, dx, dy, buttons) => img.dispatchEvent(new PointerEvent(type, {
    clientX: x + dx, clientY: y + dy, pointerId: 1, pointerType: 'mouse', isPrimary: true,
    bubbles: true, buttons }));
  ev('pointerdown', 0, 0, 1);
  const start = performance.now();
  let step = 0;
  await new Promise((done) => {
    const tick = () => {
      if (performance.now() - start >= seconds * 1000) { done(); return; }
      step += 1;
      ev('pointermove', (step % 40) * 4, step % 7, 1);
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  ev('pointerup', (step % 40) * 4, step % 7, 0);
  return (performance.now() - start) / 1000;
}"""


def drag(page: Any, seconds: float) -> dict[str, Any]:
    """Drag across the view for `seconds`; then what the page saw."""
    page.evaluate(
        f"() => {{ const s = ({STATS})();"
        " s.frames.length = 0; s.inputs.length = 0; s.sent.length = 0; }"
    )
    elapsed = page.evaluate(DRAG, seconds)
    time.sleep(1.5)  # whatever was in flight, and the still, arrive
    stats: dict[str, Any] = page.evaluate(f"() => JSON.parse(JSON.stringify(({STATS})()))")
    stats["elapsed"] = elapsed
    return stats


def figures(stats: dict[str, Any]) -> dict[str, Any]:
    frames, inputs = stats["frames"], stats["inputs"]
    last_input = inputs[-1]
    during = [f for f in frames if f["t"] <= last_input]
    # After the release: the still it asks for, maybe the frame of the last move (its decode
    # under way at the release), and what else the page showed: older pictures (goal: none).
    after = [f for f in frames if f["t"] > stats.get("up", last_input)]
    stills = [f for f in after if f.get("still")]
    stale = [f for f in after if not f.get("still") and f.get("input") != stats.get("lastMove")]
    span = (last_input - inputs[0]) / 1000 if len(inputs) > 1 else stats["elapsed"]
    lat = []
    j = 0
    for t in inputs:
        while j < len(frames) and frames[j]["t"] <= t:
            j += 1
        if j < len(frames):
            lat.append(frames[j]["t"] - t)
    lat.sort()
    drag_bytes = [f["bytes"] for f in during] or [0]
    still = stills[-1] if stills else None
    sizes = sorted({(f["w"], f["h"]) for f in during})
    sent = [t for t in stats["sent"] if t <= last_input]
    return {
        "moves": len(inputs) / span if span > 0 else 0.0,
        "requests": len(sent) / span if span > 0 else 0.0,
        "drag_size": "/".join(f"{w}x{h}" for w, h in sizes) or "-",
        "stale_after": len(stale),
        "last_move_after": len(after) - len(stills) - len(stale),
        "fps": len(during) / span if span > 0 else 0.0,
        "p50": statistics.median(lat) if lat else float("nan"),
        "p95": lat[int(len(lat) * 0.95)] if lat else float("nan"),
        "still_full": 1.0 if still and still["quality"] >= 90 else 0.0,
        "still_size": f"{still['w']}x{still['h']}" if still else "-",
        "drag_kib": statistics.median(drag_bytes) / 1024,
        "rest_kib": (still["bytes"] / 1024) if still else float("nan"),
    }


def run_size(lab: Any, browser: Any, dataset: str, w: int, h: int, seconds: float) -> dict:
    cells = [
        "import paraconnect as pc\n"
        "srv = pc.connect_reverse(kind='builtin', session=pc.Session('bench', create=True))\n"
        "srv.wait_connected(timeout=120, quiet=True)",
        f"view = srv.view(dataset={dataset!r}, width={w}, height={h})\nview",
    ]
    name = f"view-{dataset}-{w}x{h}.ipynb"
    lab.request(
        "PUT", f"api/contents/{name}", {"type": "notebook", "content": make_notebook(*cells)}
    )
    context = browser.new_context(viewport={"width": max(1366, w + 500), "height": h + 400})
    page = context.new_page()
    page.set_default_timeout(180_000)
    # A workspace of its own: the previous size's notebook is not restored beside this one.
    page.goto(lab.url(f"lab/workspaces/{dataset}{w}x{h}/tree/{name}?token={lab.token}&reset"))
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget")
    page.wait_for_function(KERNEL_IDLE)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_function(LIVE)
    page.wait_for_function(KERNEL_IDLE)
    page.locator(".paraconnect-remoteview img").scroll_into_view_if_needed()
    drag(page, 1.0)  # warm up: the first drag's one-off costs are not what a user feels next
    idle = figures(drag(page, seconds))
    # A cell that sleeps longer than the drag: the kernel is busy throughout.
    page.evaluate(
        "() => { const nb = window.jupyterapp.shell.currentWidget;"
        " nb.content.activeCellIndex = nb.content.widgets.length - 1;"
        " window.jupyterapp.commands.execute('notebook:insert-cell-below').then(() => {"
        " nb.content.activeCell.model.sharedModel.setSource("
        f"'import time; time.sleep({seconds + 8})');"
        " window.jupyterapp.commands.execute('notebook:run-cell'); }); }"
    )
    page.wait_for_function(KERNEL_BUSY)
    busy = figures(drag(page, seconds))
    still_busy = page.evaluate(KERNEL_BUSY)
    [info] = [s for s in lab.ok("GET", "servers") if s["state"] == "connected"]
    port = int(info["local"].rsplit(":", 1)[1])
    own = renderer_fps(port, dataset, w, h, seconds)
    context.close()
    return {"idle": idle, "busy": busy, "busy_throughout": still_busy, "renderer": own}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--sizes", default="640x480,1280x720")
    p.add_argument(
        "--datasets",
        default="wavelet,sphere",
        help="built-in datasets: the view's default (wavelet) and the 80k-triangle sphere the "
        "render benchmark draws",
    )
    args = p.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    results = {}
    with (
        tempfile.TemporaryDirectory(prefix="paraconnect-bench-") as tmp,
        start_lab(Path(tmp)) as lab,
        chromium() as browser,
    ):
        try:
            for dataset in args.datasets.split(","):
                for w, h in sizes:
                    results[(dataset, w, h)] = run_size(lab, browser, dataset, w, h, args.seconds)
                    lab.stop_servers()
        finally:
            lab.stop_servers()
    print(f"\nJPEG (q60 dragging, q90 still), {args.seconds:g} s drags in Chromium, JupyterLab, "
          "through the hub and the tunnel")  # fmt: skip
    for (dataset, w, h), r in results.items():
        i, b = r["idle"], r["busy"]
        print(f"{dataset} {w}x{h}:")
        print(f"  renderer's own            {r['renderer']:7.1f} frames/s")
        ratio, busy_ratio = i["fps"] / r["renderer"], b["fps"] / i["fps"]
        print(f"  shown, kernel idle        {i['fps']:7.1f} frames/s   ratio {ratio:.2f}")
        print(f"  shown, kernel sleeping    {b['fps']:7.1f} frames/s   ratio to idle "
              f"{busy_ratio:.2f}"
              f"{'' if r['busy_throughout'] else '  (the cell ended early!)'}")  # fmt: skip
        print(f"  pointer moves             {i['moves']:7.1f} /s (one an animation frame)")
        print(f"  camera requests sent      {i['requests']:7.1f} /s (at most one a move, four "
              "ahead of the frames)")  # fmt: skip
        print(f"  input to frame            p50 {i['p50']:5.1f} ms   p95 {i['p95']:5.1f} ms")
        print(f"  after the release         the still: "
              f"{'full quality' if i['still_full'] else 'MISSING or coarse'} "
              f"{i['still_size']}; the last move's frame {i['last_move_after']}, "
              f"older frames {i['stale_after']}")  # fmt: skip
        display = min(r["renderer"], 60.0)  # a browser shows at most one frame per display frame
        print(f"  shown / min(renderer, 60 Hz display)  {i['fps'] / display:.2f}")
        print(f"  bytes per frame           dragging {i['drag_kib']:.1f} KiB "
              f"({i['drag_size']}), at rest {i['rest_kib']:.1f} KiB")  # fmt: skip
    load = os.getloadavg()
    print(f"Load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
          f"{os.cpu_count()} CPUs.")  # fmt: skip


if __name__ == "__main__":
    main()
