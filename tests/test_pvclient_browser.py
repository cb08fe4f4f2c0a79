"""A ParaView pipeline built from a notebook through ``srv.paraview()`` and seen in the
RemoteView in Chromium: JupyterLab, a kernel that finds the Jupyter server's hub, Debian's
pvserver behind it, the pvpython client beside the kernel, frames in the browser, and a drag
in the browser that turns ParaView's camera."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("playwright")

from playwright.sync_api import expect

from .helpers_jupyter import JupyterServer
from .helpers_lab import browser_page, chromium, drag, screenshot, start_lab
from .helpers_lab import notebook as make_notebook
from .helpers_peers import require_programs
from .test_widgets_browser import KERNEL_IDLE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
]
require_programs("pvserver", "pvpython", "Xvfb")

CELLS = [
    "import paraconnect as pc\n"
    "srv = pc.connect_reverse(kind='pvserver', session=pc.Session('lab', create=True),\n"
    "                         options={'xvfb': 'always'})\n"
    "srv.wait_connected(timeout=90)",
    "pv = srv.paraview()\n"
    "pv('''\n"
    "cone = simple.Cone(Resolution=6, Height=1.0, Radius=0.45)\n"
    "shown = simple.Show(cone)\n"
    "shown.AmbientColor = shown.DiffuseColor = [0.0, 1.0, 0.0]\n"
    "view = simple.GetActiveViewOrCreate('RenderView')\n"
    "view.UseColorPaletteForBackground = 0\n"
    "view.Background = [0.0, 0.0, 0.0]\n"
    "view.OrientationAxesVisibility = 0\n"
    "view.ResetCamera()\n"
    "''')",
    "try:\n    pv('simple.Cone(NoSuchProperty=1)')\nexcept AttributeError as exc:\n"
    "    print('client said:', exc)",
    "view = srv.view(width=320, height=240)\nview",
]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[JupyterServer]:
    with start_lab(tmp_path) as server:
        try:
            yield server
        finally:
            server.stop_servers()


def _rgb(src: str | None) -> np.ndarray:
    assert src is not None and src.startswith("data:image/jpeg;base64,")
    data = base64.b64decode(src.split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_pipeline_from_the_notebook_seen_and_turned_in_chromium(
    lab: JupyterServer, tmp_path: Path
) -> None:
    notebook = make_notebook(*CELLS)
    resp = lab.request("PUT", "api/contents/pv.ipynb", {"type": "notebook", "content": notebook})
    assert resp.status in (200, 201), resp.body
    with chromium() as browser, browser_page(browser, 120_000) as page:
        page.goto(lab.url(f"lab/tree/pv.ipynb?token={lab.token}"))
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget")
        page.wait_for_function(KERNEL_IDLE)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        img = page.locator(".paraconnect-remoteview img")
        expect(img).to_have_attribute("src", re.compile("^data:image/jpeg;base64,"))
        # The client's error came back as a readable AttributeError, with the line at fault.
        expect(page.get_by_text(re.compile("client said: .*NoSuchProperty"))).to_be_visible()
        first = img.get_attribute("src")
        pixels = _rgb(first)
        green = (pixels[:, :, 1] > 150) & (pixels[:, :, 0] < 80)
        assert green.sum() > 2000, int(green.sum())  # the notebook's green cone, on black
        assert pixels[3, 3].max() < 30, pixels[3, 3]
        img.scroll_into_view_if_needed()  # below the cells' output: the mouse must reach it
        drag(page, img, 80, 30, steps=8)
        expect(img).not_to_have_attribute("src", first or "")
        turned = _rgb(img.get_attribute("src"))
        assert np.abs(turned - pixels).mean() > 1.0  # the six-sided cone turned
        screenshot(page, "paraview-view", tmp_path)
