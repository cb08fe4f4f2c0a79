"""The panel and the notebook together, in Debian's Chromium against a real JupyterLab with the
paraconnect extension and its hub (one JupyterLab for the module, which starts with no session):
the friends form waits for a session, the selected session follows the active notebook, the
launch form is built from the hub's description and checks input before it sends anything, a
server card puts the code that reaches it into the notebook (run there, it does), ended servers
fold into a history, and a pvserver card's copied line connects a real pvpython.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request, expect

from .helpers_jupyter import JupyterServer
from .helpers_lab import PANEL, VIEWPORT, chromium, drag, open_panel, screenshot, start_lab
from .helpers_lab import notebook as make_notebook
from .helpers_tunnel import ECHO
from .test_tunnel_pvserver import _xvfb

pytestmark = pytest.mark.timeout(120)
expect.set_options(timeout=30_000)

KERNEL_IDLE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle';
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with start_lab(tmp_path_factory.mktemp("lab")) as server:
        yield server
        for info in server.ok("GET", "servers"):
            if info["state"] not in ("stopped", "failed"):
                server.ok("DELETE", f"servers/{info['id']}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def page(browser: Browser, lab: JupyterServer) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(lab.url(f"lab?token={lab.token}"))
    open_panel(pg)
    expect(pg.locator(PANEL)).to_be_visible()
    yield pg
    context.close()


def _notebook(lab: JupyterServer, path: str, *sources: str) -> None:
    notebook = make_notebook(*sources)
    resp = lab.request("PUT", f"api/contents/{path}", {"type": "notebook", "content": notebook})
    assert resp.status in (200, 201), resp.body


def _open(page: Page, path: str) -> None:
    page.evaluate("(path) => window.jupyterapp.commands.execute('docmanager:open', {path})", path)
    page.wait_for_function(
        "(path) => { const w = window.jupyterapp.shell.currentWidget;"
        " return !!w && w.context && w.context.path === path; }",
        arg=path,
    )


# Resolves with whether the friends form is open once its own toggle handlers have run.
TOGGLE_FRIEND_FORM = """() => new Promise(resolve => {
  const form = document.querySelector('#paraconnect-panel details[data-form=friend]');
  form.addEventListener('toggle', () => resolve(form.open), {once: true});
  form.querySelector('summary').click();
})"""


def test_the_friends_form_stays_closed_until_a_session_exists(
    page: Page, lab: JupyterServer
) -> None:
    form = page.locator(f"{PANEL} details[data-form=friend]")
    expect(form.locator("summary")).to_have_text("Issue a bundle (create a session first)")
    assert form.get_attribute("open") is None
    # Clicking it opens nothing: there is no session to issue a bundle from.
    assert page.evaluate(TOGGLE_FRIEND_FORM) is False
    lab.ok("POST", "sessions", {"name": "alpha"})
    # The panel learns of the session from the hub's events; the form then opens by itself.
    expect(form).to_have_attribute("open", "")
    expect(form.locator("summary")).to_have_text("Issue a bundle")


def test_the_selected_session_follows_the_active_notebook(
    page: Page, lab: JupyterServer, tmp_path: Path
) -> None:
    lab.ok("POST", "sessions", {"name": "beta"})
    panel = page.locator(PANEL)
    expect(panel.locator(".pc-session[data-session=beta]")).to_be_visible()
    # A name the hub does not know comes first: the first known one is followed.
    _notebook(lab, "uses-beta.ipynb", 'import paraconnect as pc\nsrv = pc.Session("nope")',
              's = pc.Session("beta")')  # fmt: skip
    _notebook(lab, "uses-alpha.ipynb", 'pc.connect_reverse(kind="builtin", session="alpha")')
    selected = panel.locator(".pc-session.pc-mod-selected")
    _open(page, "uses-beta.ipynb")
    expect(selected).to_have_attribute("data-session", "beta")
    expect(selected.locator(".pc-followed")).to_have_attribute(
        "title", "the active notebook uses-beta.ipynb uses this session"
    )
    # The friends section shows the followed session's bundles.
    expect(panel.locator("details[data-section=friends] select[name=session]")).to_have_value(
        "beta"
    )
    _open(page, "uses-alpha.ipynb")
    expect(selected).to_have_attribute("data-session", "alpha")
    _open(page, "uses-beta.ipynb")
    expect(selected).to_have_attribute("data-session", "beta")
    screenshot(page, "10-session-follows-notebook", tmp_path)
    # A choice made in the panel stands while the notebook stays as it is.
    panel.locator(".pc-session[data-session=alpha]").click()
    expect(selected).to_have_attribute("data-session", "alpha")


def test_the_launch_form_is_built_from_the_hub_and_checks_input_before_launching(
    page: Page, lab: JupyterServer, tmp_path: Path
) -> None:
    sent: list[Request] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.split("?")[0].endswith("/api/servers"):
            sent.append(request)

    page.on("request", record)
    form = page.locator(f"{PANEL} details[data-form=launch]")
    if form.get_attribute("open") is None:
        form.locator("summary").click()
    described = lab.ok("GET", "launch-options")
    [pv] = [k for k in described["kinds"] if k["name"] == "pvserver"]

    form.locator("select[name=kind]").select_option("pvserver")
    expect(form.locator("[data-hint=kind]")).to_have_text(pv["summary"])
    keys = form.locator("[data-options=kind] [data-option]").evaluate_all(
        "els => els.map(e => e.dataset.option)"
    )
    assert keys == [o["key"] for o in pv["options"]]
    expect(form.locator("select[name='options.xvfb'] option")).to_have_text(
        ["auto", "always", "never"]
    )
    ranks = form.locator("input[name='options.ranks']")
    expect(ranks).to_have_attribute("title", pv["options"][0]["help"])
    ranks.fill("0")
    error = form.locator("[data-error-for='options.ranks']")
    expect(error).to_have_text("ranks must be a whole number of at least 1, not '0'")
    expect(ranks).to_have_attribute("aria-invalid", "true")
    ranks.fill("2")
    expect(error).to_be_hidden()

    # The command kind: its probe options, and the program line it needs.
    form.locator("select[name=kind]").select_option("command")
    form.locator("select[name=session]").select_option("alpha")
    form.locator("select[name='options.probe']").select_option("log")
    command = form.locator("input[name=command]")
    command.fill(f"{sys.executable} -u -m http.server --bind 127.0.0.1")
    expect(form.locator("[data-error-for=command]")).to_have_text(
        "put exactly one of {port}, {unix} or {fd} where it listens"
    )
    form.get_by_role("button", name="Launch", exact=True).click()
    expect(form.locator("[data-error-for='options.log_regex']")).to_have_text(
        "probe log needs the regular expression to wait for"
    )
    screenshot(page, "11-launch-form-invalid", tmp_path)

    command.fill(f"{sys.executable} -u -m http.server --bind 127.0.0.1 {{port}}")
    form.locator("input[name='options.log_regex']").fill("Serving HTTP")
    expect(form.locator("[data-error-for=command]")).to_be_hidden()
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.split("?")[0].endswith("/api/servers")
    ) as launch:
        form.get_by_role("button", name="Launch", exact=True).click()
    # Only the valid launch went out: the invalid one never left the browser.
    assert sent == [launch.value.request], [r.post_data for r in sent]
    body = json.loads(launch.value.request.post_data or "{}")
    assert body == {
        "kind": "command", "launcher": "local", "session": "alpha", "mode": "reverse",
        "options": {"probe": "log", "log_regex": "Serving HTTP"}, "launcher_options": {},
        "command": [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "{port}"],
    }, body  # fmt: skip
    page.remove_listener("request", record)
    server = launch.value.json()
    assert launch.value.status == 200, server
    card = page.locator(f"{PANEL} .pc-card[data-server='{server['id']}']")
    expect(card).to_have_attribute("data-state", "connected", timeout=90_000)
    lab.ok("DELETE", f"servers/{server['id']}")


def test_a_card_inserts_code_that_reaches_its_server_and_ended_ones_fold_into_history(
    page: Page, lab: JupyterServer, tmp_path: Path
) -> None:
    echo = [sys.executable, ECHO, "--port", "{port}"]
    launched = lab.ok("POST", "servers", {"kind": "command", "session": "alpha", "command": echo})
    info = lab.wait_state(launched["id"], {"connected"})
    _notebook(lab, "insert.ipynb", "import paraconnect as pc")
    _open(page, "insert.ipynb")
    page.wait_for_function(KERNEL_IDLE)
    card = page.locator(f"{PANEL} [data-list=live] .pc-card[data-server='{info['id']}']")
    card.locator("[data-action=insert]").click()
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")
    expect(cells).to_have_count(2)
    expect(cells.nth(1)).to_contain_text(f'srv = pc.Server.get("{info["id"]}")')
    # Run in the notebook's kernel, the inserted code reaches the server: its local endpoint.
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-cell')")
    expect(cells.nth(1).locator(".jp-OutputArea-output")).to_have_text(
        repr(info["local"]), timeout=60_000
    )
    screenshot(page, "12-code-inserted", tmp_path)

    card.locator("[data-action=stop]").click()
    history = page.locator(f"{PANEL} details[data-section=history]")
    ended = history.locator(f".pc-card[data-server='{info['id']}']")
    expect(ended).to_have_attribute("data-state", "stopped")
    expect(card).to_have_count(0)
    final = [s for s in lab.ok("GET", "servers") if s["state"] in ("stopped", "failed")]
    expect(history).to_have_attribute("data-count", str(len(final)))
    expect(history.locator("summary")).to_have_text(f"History ({len(final)} stopped or failed)")
    # Folded by default: there, but not shown until opened.
    assert history.get_attribute("open") is None
    expect(ended).to_be_hidden()
    expect(ended.locator("[data-action=insert]")).to_have_count(0)
    history.locator("summary").click()
    expect(ended).to_be_visible()
    screenshot(page, "13-history-open", tmp_path)
    history.locator("summary").click()


PV_CHECK = """from paraview.simple import *
{copied}
from paraview import servermanager
print("remote session:", servermanager.ActiveConnection.IsRemote())
"""

# Keeps what JupyterLab's Clipboard.copyToSystem put on the clipboard, as the copy event carried.
RECORD_COPY = """() => document.addEventListener('copy', e => {
  window.__pcCopied = e.clipboardData.getData('text');
})"""


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(
    not (shutil.which("pvserver") and shutil.which("pvpython") and shutil.which("Xvfb")),
    reason="needs Debian's paraview and xvfb",
)
def test_the_copied_pvpython_line_connects_pvpython_to_the_server(
    page: Page, lab: JupyterServer, tmp_path: Path
) -> None:
    launched = lab.ok("POST", "servers", {
        "kind": "pvserver", "session": "alpha", "options": {"xvfb": "always"},
    })  # fmt: skip
    info: dict[str, Any] = lab.wait_state(launched["id"], {"connected"}, timeout=150)
    card = page.locator(f"{PANEL} .pc-card[data-server='{info['id']}']")
    expect(card).to_have_attribute("data-state", "connected")
    page.evaluate(RECORD_COPY)
    card.locator("[data-action=copy-paraview]").click()
    copied = page.wait_for_function("() => window.__pcCopied").json_value()
    host, port = str(info["local"]).rsplit(":", 1)
    assert copied == f'Connect("{host}", {port})', copied
    expect(page.locator(".Toastify__toast", has_text=copied)).to_contain_text(
        f"paraview --server-url=cs://{host}:{port}"
    )
    # The copied line, run in a real pvpython, reaches the pvserver behind the hub.
    script = tmp_path / "check.py"
    script.write_text(PV_CHECK.format(copied=copied))
    proc = subprocess.run(
        [*_xvfb(), "pvpython", str(script)],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert "remote session: True" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert lab.ok("DELETE", f"servers/{info['id']}")["state"] == "stopped"


# The picture in the tab as a canvas: how many distinct colours, and a digest to compare.
PICTURE = """(sel) => {
  const img = document.querySelector(sel);
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const px = g.getImageData(0, 0, c.width, c.height).data;
  const colours = new Set();
  for (let i = 0; i < px.length; i += 4 * 97) colours.add((px[i] << 16) | (px[i+1] << 8) | px[i+2]);
  return {w: c.width, h: c.height, colours: colours.size, url: c.toDataURL()};
}"""


def _streams(lab: JupyterServer, server_id: str, want: int, timeout: float = 60) -> int:
    """The server's open data streams, polled until they are `want` or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        n = int(lab.ok("GET", f"servers/{server_id}")["streams"])
        if n == want or time.monotonic() > deadline:
            return n
        time.sleep(0.2)


def test_a_builtin_cards_view_opens_live_in_a_tab(
    page: Page, lab: JupyterServer, tmp_path: Path
) -> None:
    import websocket

    launched = lab.ok("POST", "servers", {"kind": "builtin", "session": "alpha"})
    info = lab.wait_state(launched["id"], {"connected"})

    # The view websocket serves only a built-in renderer the hub knows, and says so before
    # the upgrade.
    def view_status(server_id: str) -> int:
        url = f"{lab.ws_base}paraconnect/api/servers/{server_id}/view?token={lab.token}"
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, timeout=30)
        return int(refused.value.status_code)

    assert view_status("no-such-server") == 404

    card = page.locator(f"{PANEL} .pc-card[data-server='{info['id']}']")
    expect(card).to_have_attribute("data-state", "connected")
    card.locator("[data-action=view]").click()
    tab = page.locator(f"#paraconnect-view-{info['id']}")
    expect(tab).to_be_visible()
    view = tab.locator(".pc-view")
    img = f"#paraconnect-view-{info['id']} .pc-view-frame"
    # The picture follows the tab's size (the first frame may come before the layout).
    page.wait_for_function(
        "(sel) => { const i = document.querySelector(sel);"
        " return i && i.naturalWidth > 0 && Math.abs(i.naturalWidth - i.clientWidth) <= 2; }",
        arg=img,
    )
    first = page.evaluate(PICTURE, img)
    # A rendered scene (the wavelet's colour map), not a blank or uniform picture.
    assert first["colours"] > 20, first["colours"]
    assert _streams(lab, info["id"], 1) == 1
    screenshot(page, "14-view-tab", tmp_path)

    # Drag: the renderer turns the camera and a new, different picture arrives.
    frames = int(view.get_attribute("data-frames") or 0)
    drag(page, tab.locator(".pc-view-frame"), 120, 30, steps=6)
    page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel).dataset.frames) > n",
        arg=[f"#paraconnect-view-{info['id']} .pc-view", frames],
    )
    page.wait_for_function(
        "([sel, url]) => { const i = document.querySelector(sel); const c ="
        " document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;"
        " c.getContext('2d').drawImage(i, 0, 0); return c.toDataURL() !== url; }",
        arg=[img, first["url"]],
    )
    # A drag's frames may be smaller (drag_scale); the still after the release is full size.
    page.wait_for_function(
        "(sel) => { const i = document.querySelector(sel);"
        " return Math.abs(i.naturalWidth - i.clientWidth) <= 2; }",
        arg=img,
    )

    # Closing the tab closes its render connection through the tunnel.
    page.evaluate(
        "(id) => window.jupyterapp.shell.widgets('main').find(w => w.id === id).close()",
        f"paraconnect-view-{info['id']}",
    )
    expect(tab).to_have_count(0)
    assert _streams(lab, info["id"], 0) == 0
    assert lab.ok("DELETE", f"servers/{info['id']}")["state"] == "stopped"
    assert view_status(info["id"]) == 409
