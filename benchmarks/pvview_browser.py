"""Frames per second of the pvserver view in Chromium beside the built-in renderer's, on the
same dataset and size, as a user dragging in JupyterLab gets them.

One JupyterLab (the tests' private one), one notebook: a builtin server and a pvserver, both
launched through the Jupyter server's hub (local launcher, phoning home over mutual TLS), each
shown by ``srv.view(dataset="sphere", width=W, height=H)``.  For each view in turn the mouse
drags across the image for S seconds in Debian's headless Chromium; the widget's front end keeps
one request in flight, so the frames shown per second (counted by a MutationObserver on the
image's ``src``) are what the whole chain delivers: browser → kernel → render protocol → (the
hub and the agent | the pvpython client and pvserver) → back.  The ratio is pvserver/builtin.

    python benchmarks/pvview_browser.py [--seconds 5] [--size 640x480]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers_lab import VIEWPORT, chromium, start_lab  # noqa: E402
from tests.helpers_lab import notebook as make_notebook  # noqa: E402
from tests.test_widgets_browser import KERNEL_IDLE  # noqa: E402

COUNTER = """(img) => {
  window.__frames = window.__frames || new Map();
  window.__frames.set(img, 0);
  new MutationObserver(() => window.__frames.set(img, window.__frames.get(img) + 1))
    .observe(img, { attributes: true, attributeFilter: ["src"] });
}"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--size", default="640x480")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    cells = [
        "import paraconnect as pc\ns = pc.Session('bench', create=True)\n"
        "b = pc.connect_reverse(kind='builtin', session=s)\n"
        "v = pc.connect_reverse(kind='pvserver', session=s, options={'xvfb': 'always'})\n"
        "b.wait_connected(timeout=120, quiet=True); v.wait_connected(timeout=120, quiet=True)",
        f"b.view(dataset='sphere', width={w}, height={h})",
        f"v.view(dataset='sphere', width={w}, height={h})",
    ]
    notebook = make_notebook(*cells)
    results: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="paraconnect-bench-") as tmp,
        start_lab(Path(tmp)) as lab,
    ):
        try:
            lab.request("PUT", "api/contents/b.ipynb", {"type": "notebook", "content": notebook})
            with chromium() as browser:
                page = browser.new_context(viewport=VIEWPORT).new_page()
                page.set_default_timeout(180_000)
                page.goto(lab.url(f"lab/tree/b.ipynb?token={lab.token}"))
                page.wait_for_function(KERNEL_IDLE)
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                imgs = page.locator(".paraconnect-remoteview img")
                imgs.nth(1).wait_for()
                page.wait_for_function(KERNEL_IDLE)
                for i, kind in enumerate(("builtin", "pvserver")):
                    img = imgs.nth(i)
                    img.scroll_into_view_if_needed()
                    handle = img.element_handle()
                    page.evaluate(COUNTER, handle)
                    box = img.bounding_box()
                    assert box is not None
                    x, y = box["x"] + 20, box["y"] + box["height"] / 2
                    page.mouse.move(x, y)
                    page.mouse.down()
                    start, step = time.perf_counter(), 0
                    while time.perf_counter() - start < args.seconds:
                        step += 1
                        page.mouse.move(x + (step % 40) * 4, y)
                    page.mouse.up()
                    elapsed = time.perf_counter() - start
                    frames = page.evaluate("(img) => window.__frames.get(img)", handle)
                    results[kind] = frames / elapsed
        finally:
            lab.stop_servers()
    print(f"sphere, {w}x{h}, JPEG (RemoteView's default), mouse dragging in Chromium")
    for kind, fps in results.items():
        print(f"  {kind:9} {fps:7.1f} frames/s shown")
    print(f"  ratio pvserver/builtin: {results['pvserver'] / results['builtin']:.2f}")


if __name__ == "__main__":
    main()
