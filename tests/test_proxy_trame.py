"""Issue 15, done when: a real trame app (a VTK cone, rendered on the server: remote
rendering) launched as a reverse ``trame`` server, opened through /paraconnect/proxy/ in
Chromium inside JupyterLab's page (Lab's own cookie is the only credential the browser has), its
picture shows, and a drag on it turns the cone over the proxied websocket."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page

from .helpers_jupyter import JupyterServer
from .helpers_lab import chromium, drag, screenshot, start_lab

pytestmark = pytest.mark.timeout(120)

APP = """
import os

# EGL: no display here; said before VTK picks a window class.
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import vtkmodules.vtkInteractionStyle  # noqa: F401
import vtkmodules.vtkRenderingOpenGL2  # noqa: F401
from trame.app import get_server
from trame.ui.html import DivLayout
from trame.widgets import vtk as vtk_widgets
from vtkmodules.vtkFiltersSources import vtkConeSource
from vtkmodules.vtkRenderingCore import (
    vtkActor, vtkPolyDataMapper, vtkRenderer, vtkRenderWindow, vtkRenderWindowInteractor,
)

cone = vtkConeSource(resolution=32)
mapper = vtkPolyDataMapper()
mapper.SetInputConnection(cone.GetOutputPort())
actor = vtkActor(mapper=mapper)
actor.GetProperty().SetColor(1.0, 0.4, 0.1)
renderer = vtkRenderer()
renderer.AddActor(actor)
renderer.SetBackground(0.1, 0.2, 0.4)
window = vtkRenderWindow(off_screen_rendering=True)
window.AddRenderer(renderer)
interactor = vtkRenderWindowInteractor(render_window=window)
interactor.GetInteractorStyle().SetCurrentStyleToTrackballCamera()
renderer.ResetCamera()

server = get_server(client_type="vue3")
with DivLayout(server) as layout:
    layout.root.style = "position: fixed; inset: 0; margin: 0;"
    vtk_widgets.VtkRemoteView(window, style="width: 100%; height: 100%;", interactive_ratio=1)

if __name__ == "__main__":
    server.start()
"""
BACKGROUND = np.array([25, 51, 102])
FRAME = "paraconnect-trame-test"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with start_lab(tmp_path_factory.mktemp("lab-trame")) as server:
        yield server


def _pixels(page: Page) -> np.ndarray:
    png = page.locator(f"#{FRAME}").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def _cone(pixels: np.ndarray) -> np.ndarray:
    """The lit parts of the orange cone (whatever its shading): red well above blue."""
    return np.asarray(pixels[..., 0] - pixels[..., 2] > 100)


def _near(pixels: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return np.abs(pixels - colour).max(axis=-1) < 40


def _until(what: str, check: object, timeout: float = 60) -> np.ndarray:
    deadline = time.monotonic() + timeout
    while True:
        got = check()  # type: ignore[operator]
        if got is not None:
            return got  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.2)


def test_a_trame_app_renders_and_turns_through_the_proxy_in_lab(
    lab: JupyterServer, tmp_path: Path
) -> None:
    app = tmp_path / "cone.py"
    app.write_text(APP)
    info = lab.ok("POST", "servers", {"kind": "trame", "options": {"app": str(app)}})
    assert info["mode"] == "reverse"
    info = lab.wait_state(info["id"], {"connected"})
    assert info["state"] == "connected", info
    url = f"/paraconnect/proxy/{info['id']}/"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto(lab.url(f"lab?token={lab.token}"))
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell")
        # The app in a frame of Lab's page: the browser's only credential is Lab's cookie.
        page.evaluate(
            """([id, url]) => {
                const frame = document.createElement('iframe');
                frame.id = id;
                frame.src = url;
                frame.style = 'position:fixed;left:40px;top:40px;width:640px;height:480px;'
                    + 'border:0;z-index:100000';
                document.body.appendChild(frame);
            }""",
            [FRAME, url],
        )

        def drawn() -> np.ndarray | None:
            px = _pixels(page)
            cone, back = _cone(px).mean(), _near(px, BACKGROUND).mean()
            return px if cone > 0.01 and back > 0.2 else None

        first = _until("the cone drawn in the frame", drawn)
        screenshot(page, "trame-first", tmp_path)
        assert any(s.endswith(f"{url}ws") for s in sockets), sockets
        drag(page, page.locator(f"#{FRAME}"), 180, 60, steps=15)

        def turned() -> np.ndarray | None:
            px = drawn()
            if px is None:
                return None
            changed = (_cone(px) != _cone(first)).mean()
            return px if changed > 0.005 else None

        try:
            _until("the cone turned by the drag", turned)
        finally:
            screenshot(page, "trame-after", tmp_path)
        screenshot(page, "trame-turned", tmp_path)
    lab.ok("DELETE", f"servers/{info['id']}?grace=2")
