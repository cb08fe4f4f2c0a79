"""The live view where scientists also meet it: Notebook 7, and JupyterLab behind a URL prefix
(as JupyterHub serves it at /user/NAME/).  Its front end finds the view's websocket from the
page's own configuration, so frames come and a drag turns the view in both."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright")
pytest.importorskip("vtk")

from playwright.sync_api import Page, expect

from .helpers_jupyter import JupyterServer, start_jupyter
from .helpers_lab import browser_page, chromium, drag, lab_args, screenshot
from .helpers_lab import notebook as make_notebook
from .test_widgets_browser import CELLS, FRAMES, KERNEL_IDLE, LIVE

pytestmark = pytest.mark.timeout(180)

PREFIX = "/user/alice/"


def put_notebook(server: JupyterServer) -> None:
    notebook = make_notebook(*CELLS[:2])
    resp = server.request(
        "PUT", "api/contents/view.ipynb", {"type": "notebook", "content": notebook}
    )
    assert resp.status in (200, 201), resp.body


def live_view_turns(page: Page, name: str, tmp_path: Path) -> None:
    page.wait_for_function(KERNEL_IDLE)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    img = page.locator(".paraconnect-remoteview img")
    expect(img).to_have_attribute("src", re.compile("^blob:"))
    page.wait_for_function(LIVE)
    before, shown = page.evaluate(FRAMES), img.get_attribute("src")
    drag(page, img, 80)
    page.wait_for_function(f"() => ({FRAMES[6:]}) > {before}")
    expect(img).not_to_have_attribute("src", shown or "")
    screenshot(page, name, tmp_path)


@pytest.fixture
def notebook7(tmp_path: Path) -> Iterator[JupyterServer]:
    args = ["--JupyterNotebookApp.expose_app_in_browser=True"]
    with start_jupyter(tmp_path, extra_args=args) as server:
        try:
            yield server
        finally:
            server.stop_servers()


@pytest.fixture
def prefixed_lab(tmp_path: Path) -> Iterator[JupyterServer]:
    with start_jupyter(tmp_path, extra_args=lab_args(tmp_path), prefix=PREFIX) as server:
        try:
            yield server
        finally:
            server.stop_servers()


def test_the_live_view_in_notebook_7(notebook7: JupyterServer, tmp_path: Path) -> None:
    put_notebook(notebook7)
    with chromium() as browser, browser_page(browser, 90_000) as page:
        page.goto(notebook7.url(f"notebooks/view.ipynb?token={notebook7.token}"))
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget")
        assert "/lab" not in page.url  # Notebook 7's own page, not JupyterLab's
        live_view_turns(page, "remote-view-notebook7", tmp_path)


def test_the_live_view_behind_a_url_prefix(prefixed_lab: JupyterServer, tmp_path: Path) -> None:
    assert prefixed_lab.base_url.endswith(PREFIX)
    put_notebook(prefixed_lab)
    with chromium() as browser, browser_page(browser, 90_000) as page:
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto(prefixed_lab.url(f"lab/tree/view.ipynb?token={prefixed_lab.token}"))
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget")
        live_view_turns(page, "remote-view-prefixed", tmp_path)
        views = [u for u in sockets if "/paraconnect/api/servers/" in u]
        assert views and all(f"{PREFIX}paraconnect/api/servers/" in u for u in views), sockets
