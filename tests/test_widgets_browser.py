"""RemoteView's front end (the inline ``_esm``) in a real browser: JupyterLab in Debian's
Chromium, a notebook whose kernel finds the Jupyter server's hub, frames shown over the view's
own websocket, a mouse drag that turns the camera (also while the kernel is busy), and the
"save PNG" button's download."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright")
pytest.importorskip("vtk")

from playwright.sync_api import Page, expect

from paraconnect.widgets._watcher import _shorten_ids

from .helpers_jupyter import JupyterServer
from .helpers_lab import browser_page, chromium, drag, screenshot, start_lab
from .helpers_lab import notebook as make_notebook

pytestmark = pytest.mark.timeout(180)

CELLS = [
    "import paraconnect as pc\n"
    "srv = pc.connect_reverse(kind='builtin', session=pc.Session('lab', create=True))\n"
    "srv.wait_connected(timeout=90)",
    "view = srv.view(dataset='sphere', width=320, height=240)\nview",
    "from paraconnect.widgets import PhoneHomeWatcher, ShareWidget\n"
    "share = ShareWidget('lab')\nshare",
    "PhoneHomeWatcher('lab')",
]
KERNEL_IDLE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle';
}"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[JupyterServer]:
    with start_lab(tmp_path) as server:
        try:
            yield server
        finally:
            server.stop_servers()


STATS = "() => document.querySelector('.paraconnect-remoteview').paraconnectStats"
FRAMES = STATS + ".frames.length"
LIVE = """() => {
  const v = document.querySelector('.paraconnect-remoteview');
  return !!v && !!v.paraconnectStats && v.paraconnectStats.live;
}"""


def open_notebook(page: Page, lab: JupyterServer, cells: list[str] = CELLS) -> None:
    notebook = make_notebook(*cells)
    resp = lab.request("PUT", "api/contents/view.ipynb", {"type": "notebook", "content": notebook})
    assert resp.status in (200, 201), resp.body
    page.goto(lab.url(f"lab/tree/view.ipynb?token={lab.token}"))
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget")
    page.wait_for_function(KERNEL_IDLE)
    # Not awaited: the promise settles only when every cell has run (never, for a sleeper).
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def test_remote_view_shows_frames_turns_on_drag_and_saves(
    lab: JupyterServer, tmp_path: Path
) -> None:
    with chromium() as browser, browser_page(browser, 90_000, accept_downloads=True) as page:
        open_notebook(page, lab)
        img = page.locator(".paraconnect-remoteview img")
        # Frames come over the view's own websocket (blob: URLs), not through the kernel.
        expect(img).to_have_attribute("src", re.compile("^blob:"))
        page.wait_for_function(LIVE)
        first = img.get_attribute("src")
        status = page.locator(".paraconnect-remoteview-bar span")
        expect(status).to_contain_text("320x240")
        expect(status).to_contain_text("(live)")
        drag(page, img, 80, 10, steps=8)
        expect(img).not_to_have_attribute("src", first or "")
        screenshot(page, "remote-view-turned", tmp_path)
        with page.expect_download() as download:
            page.locator(".paraconnect-remoteview-bar button", has_text="save PNG").click()
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        assert saved.name == "paraconnect-view.png"
        assert saved.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

        # The watcher lists the server with the identity it proved and where it came from.
        info = lab.ok("GET", "servers")[0]
        notebook = page.locator(".jp-Notebook")  # not the paraconnect panel beside it
        expect(notebook.get_by_text(_shorten_ids(info["peer"]), exact=True)).to_be_visible()
        expect(notebook.get_by_text(info["where"], exact=True)).to_be_visible()
        # ShareWidget: a friend's bundle issued from the form and downloaded from its link.
        notebook.get_by_label("friend", exact=True).fill("alice")
        notebook.get_by_label("passphrase", exact=True).fill("correct horse battery")
        notebook.get_by_role("button", name="issue bundle").click()
        link = notebook.get_by_role("link", name="download lab-alice.p12")
        with page.expect_download() as download:
            link.click()
        bundle = tmp_path / download.value.suggested_filename
        download.value.save_as(bundle)
        assert bundle.name == "lab-alice.p12" and bundle.stat().st_size > 500
        notebook.get_by_role("button", name="revoke").click()
        expect(notebook.get_by_text("alice · revoked", exact=False)).to_be_visible()
        assert lab.ok("GET", "sessions/lab/friends")[0]["status"] == "revoked"
        screenshot(page, "share-widget", tmp_path)


KERNEL_BUSY = KERNEL_IDLE.replace("'idle'", "'busy'")


def test_the_view_turns_while_the_kernel_is_busy(lab: JupyterServer, tmp_path: Path) -> None:
    """A cell that sleeps keeps the kernel busy; the view still answers the mouse, because its
    frames and inputs never pass through the kernel.  The view is larger than 640x480, so a
    drag's frames come at half of each side and coarser; the still after the release is full
    size and quality, and no older picture appears after it."""
    cells = [
        CELLS[0],
        "view = srv.view(dataset='sphere', width=800, height=600)\nview",
        "import time\ntime.sleep(600)",
    ]
    with chromium() as browser, browser_page(browser, 90_000) as page:
        open_notebook(page, lab, cells)
        img = page.locator(".paraconnect-remoteview img")
        expect(img).to_have_attribute("src", re.compile("^blob:"))
        page.wait_for_function(LIVE)
        page.wait_for_function(KERNEL_BUSY)  # the sleeping cell runs
        before = page.evaluate(FRAMES)
        shown = img.get_attribute("src")
        img.scroll_into_view_if_needed()
        drag(page, img, 90)
        page.wait_for_function(f"() => ({FRAMES[6:]}) > {before}")
        expect(img).not_to_have_attribute("src", shown or "")
        page.wait_for_function(f"() => ({STATS[6:]}).frames.some((f) => f.still)")
        stats = page.evaluate(f"() => JSON.parse(JSON.stringify({STATS[6:]}))")
        frames = stats["frames"][before:]
        ours = [f for f in frames if (f.get("input") or 0) > stats["down"]]  # the drag's requests
        dragged = [f for f in ours if f["t"] <= stats["up"]]
        assert dragged and {(f["w"], f["h"], f["quality"]) for f in dragged} == {(400, 300, 60)}
        after = [f for f in frames if f["t"] > stats["up"]]
        [still] = [f for f in after if f["still"]]
        assert (still["w"], still["h"], still["quality"]) == (800, 600, 90)
        # Nothing older than the last move shows after the release, and the still comes last.
        assert all(f["still"] or f.get("input") == stats["lastMove"] for f in after), after
        assert after[-1]["still"]
        assert img.evaluate("(i) => [i.naturalWidth, i.naturalHeight]") == [800, 600]
        assert page.evaluate(KERNEL_BUSY), "the kernel finished: the test proved nothing"
        screenshot(page, "remote-view-busy-kernel", tmp_path)
        page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.interrupt()"
        )
        page.wait_for_function(KERNEL_IDLE)


def test_the_views_controls_colour_slice_and_step_time_while_the_kernel_sleeps(
    lab: JupyterServer, tmp_path: Path
) -> None:
    """The compact controls under a view of a time series (.pvd) in the server's data root:
    colour map, colour array, slice, time steps and the file browser, each answered by the
    render server through the view's own line while the kernel runs a long cell."""
    from .helpers_render import _series

    data = tmp_path / "data"
    data.mkdir()
    _series(data)
    (tmp_path / "outside.vtu").write_bytes((data / "series_0.vtu").read_bytes())
    cells = [
        "import paraconnect as pc\n"
        "srv = pc.connect_reverse(kind='builtin', session=pc.Session('lab', create=True),\n"
        f"                         options={{'data': {str(data)!r}}})\n"
        "srv.wait_connected(timeout=90)",
        "view = srv.view(path='series.pvd', width=320, height=240)\nview",
        "import time\ntime.sleep(600)",
    ]
    with chromium() as browser, browser_page(browser, 90_000) as page:
        open_notebook(page, lab, cells)
        page.wait_for_function(LIVE)
        page.wait_for_function(KERNEL_BUSY)
        controls = page.locator(".paraconnect-remoteview-controls")

        def changes(action: Callable[[], None], settled: str) -> None:
            """Do `action`; a new frame comes and the controls show `settled` (JS, true when
            the server's reply redrew them)."""
            before = page.evaluate(FRAMES)
            action()
            page.wait_for_function(f"() => ({FRAMES[6:]}) > {before}")
            page.wait_for_function(settled)

        sel = ".paraconnect-remoteview-controls"
        changes(
            lambda: controls.locator("select[name=map]").select_option("inferno"),
            f"() => document.querySelector('{sel} select[name=map]').value === 'inferno'",
        )
        changes(
            lambda: controls.locator("input[name=slice]").check(),
            f"() => document.querySelector('{sel} input[name=slice]').checked",
        )
        changes(
            lambda: controls.locator("input[name=contour]").check(),
            f"() => document.querySelector('{sel} input[name=contour]').checked",
        )
        # Unticking one filter keeps the other.
        changes(
            lambda: controls.locator("input[name=slice]").uncheck(),
            f"() => !document.querySelector('{sel} input[name=slice]').checked"
            f" && document.querySelector('{sel} input[name=contour]').checked",
        )
        changes(
            lambda: controls.locator("input[name=scalar_bar]").uncheck(),
            f"() => !document.querySelector('{sel} input[name=scalar_bar]').checked",
        )
        changes(
            lambda: controls.locator("input[name=time]").evaluate(
                "(t) => { t.value = 2; t.dispatchEvent(new Event('change')); }"
            ),
            f"() => document.querySelector('{sel}').textContent.includes('time 2/2')",
        )
        changes(
            lambda: controls.locator("select[name=colour]").select_option(""),
            f"() => document.querySelector('{sel} select[name=colour]').value === ''",
        )
        # The file browser lists the data root (the file outside it is not there) and opens
        # a file in this view: one step, so no time control any more.
        page.locator(".paraconnect-remoteview-bar button", has_text="open").click()
        files = page.locator(".paraconnect-remoteview-files")
        expect(files.get_by_role("button", name="series.pvd")).to_be_visible()
        assert files.get_by_role("button", name="outside.vtu").count() == 0
        changes(
            lambda: files.get_by_role("button", name="series_1.vtu").click(),
            f"() => !document.querySelector('{sel} input[name=time]')",
        )
        expect(files).to_be_hidden()
        # A new file is coloured by its array again, and the control says which.
        expect(controls.locator("select[name=colour]")).to_have_value("point:wave")
        assert page.evaluate(KERNEL_BUSY), "the kernel finished: the test proved nothing"
        screenshot(page, "remote-view-controls", tmp_path)
        page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.interrupt()"
        )
        page.wait_for_function(KERNEL_IDLE)
