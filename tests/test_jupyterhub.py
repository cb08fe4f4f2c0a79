"""paraconnect in single-user servers of a real JupyterHub (issue 15): two real Unix users on one
machine, each with their own server at ``/user/<name>/`` (LocalProcessSpawner, DummyAuthenticator,
configurable-http-proxy; all on loopback).

Everything of a user's paraconnect honours the prefix (the panel, REST, the events websocket,
the view websocket, the app tabs); nothing of one user is reachable by the other (their REST
routes, events, views and proxied apps refuse the other's token and browser cookie; their local
endpoints refuse the other's processes).  One hub for the module (starting it and two servers
takes seconds).
"""

from __future__ import annotations

import io
import json
import pwd
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websocket
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, expect

from .helpers_jupyterhub import Hub, pids_of, start_jupyterhub
from .helpers_lab import PANEL, VIEWPORT, chromium, drag, open_panel, screenshot

pytest.importorskip("vtk")
pytestmark = pytest.mark.timeout(120)
expect.set_options(timeout=30_000)

LAUNCH = {"kind": "builtin", "launcher": "local", "session": "lab"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with start_jupyterhub(tmp_path_factory.mktemp("jupyterhub"), users=2) as h:
        for user in h.users:
            h.spawn(user)
            h.ok(user, "POST", "sessions", {"name": "lab"})
        yield h


@pytest.fixture(scope="module")
def servers(hub: Hub) -> dict[str, str]:
    """A connected built-in renderer for each user: user -> server id."""
    ids = {user: hub.ok(user, "POST", "servers", LAUNCH)["id"] for user in hub.users}
    for user, sid in ids.items():
        info = hub.wait_state(user, sid, {"connected"})
        assert info["state"] == "connected", info
    return ids


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def context_a(browser: Browser, hub: Hub) -> Iterator[BrowserContext]:
    """User A's browser, logged in at the hub's login page (A's cookies, nothing else)."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(60_000)
    a = hub.users[0]
    page.goto(hub.url + f"hub/login?next=/user/{a}/lab")
    page.fill("#username_input", a)
    page.fill("#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for_url(f"**/user/{a}/lab**")
    page.close()
    yield context
    context.close()


def _show_panel(page: Page) -> None:
    open_panel(page)
    expect(page.locator(PANEL)).to_be_visible()


def test_lab_under_the_user_prefix_lists_opens_and_follows_the_users_servers(
    hub: Hub,
    servers: dict[str, str],
    context_a: BrowserContext,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    a, b = hub.users
    page = context_a.new_page()
    page.set_default_timeout(60_000)
    page.goto(hub.url + f"user/{a}/lab")
    _show_panel(page)
    # REST under /user/A/: A's server is listed, B's is not.
    card = page.locator(f'{PANEL} [data-server="{servers[a]}"]')
    expect(card).to_have_attribute("data-state", "connected")
    expect(page.locator(f'[data-server="{servers[b]}"]')).to_have_count(0)
    # The view websocket under the prefix: frames arrive in the tab.
    card.locator('[data-action="view"]').click()
    view = page.locator(f"#paraconnect-view-{servers[a]} .pc-view")
    page.wait_for_function(
        "(el) => Number(el.dataset.frames) > 0", arg=view.element_handle(), timeout=90_000
    )
    # The events websocket under the prefix: a server launched elsewhere appears and turns
    # connected in the open panel, with no reload.
    second = hub.ok(a, "POST", "servers", LAUNCH)["id"]
    expect(page.locator(f'{PANEL} [data-server="{second}"]')).to_have_attribute(
        "data-state", "connected", timeout=90_000
    )
    hub.ok(a, "DELETE", f"servers/{second}?grace=2")
    # An app tab is on the proxy under the prefix, and comes back after a reload.
    src = hub.url + f"user/{a}/paraconnect/proxy/{servers[a]}/"
    # As srv.open()'s link in a notebook output: the extension turns its click into the tab.
    page.evaluate(
        """(id) => {
            const a = document.createElement('a');
            a.href = '#'; a.dataset.paraconnectApp = id; a.id = 'pc-test-link'; a.textContent = id;
            document.body.append(a);
        }""",
        servers[a],
    )
    page.locator("#pc-test-link").dispatch_event("click")  # the shell covers the body
    frame = page.locator(f"#paraconnect-app-{servers[a]} iframe")
    expect(frame).to_have_attribute("src", src)
    screenshot(page, "jupyterhub-lab", tmp_path_factory.mktemp("shots"))
    # Lab saves its layout to the workspace a moment after a change: reload once it has.
    deadline = time.monotonic() + 30
    saved = f"paraconnect-app:{servers[a]}".encode()
    while saved not in hub.api_raw(a, "GET", "lab/api/workspaces/default").body:
        assert time.monotonic() < deadline, "Lab never saved the app tab in its workspace"
        time.sleep(0.2)
    page.reload()
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.commands")
    page.evaluate("() => window.jupyterapp.restored")
    expect(page.locator(f"#paraconnect-app-{servers[a]} iframe")).to_have_attribute("src", src)
    page.close()


def _refused(resp_status: int, body: bytes, secret: str) -> bool:
    """Refused: 403, or a redirect to the hub's login; and nothing of the other user's."""
    return resp_status in (302, 403) and secret.encode() not in body


def test_a_users_token_and_cookie_are_refused_on_the_other_users_routes(
    hub: Hub, servers: dict[str, str], context_a: BrowserContext
) -> None:
    a, b = hub.users
    token_a = hub.user_token(a)
    sid_b = servers[b]
    base_b = f"user/{b}/paraconnect/api"
    for method, path, body in [
        ("GET", "servers", None),
        ("GET", f"servers/{sid_b}", None),
        ("GET", f"servers/{sid_b}/logs", None),
        ("POST", "servers", LAUNCH),
        ("DELETE", f"servers/{sid_b}", None),
        ("GET", "sessions", None),
    ]:
        resp = hub.request(method, f"{base_b}/{path}", body, token=token_a)
        assert _refused(resp.status, resp.body, sid_b), (method, path, resp.status, resp.body)
    # Still B's, still running, and B alone launched anything.
    assert hub.ok(b, "GET", f"servers/{sid_b}")["state"] == "connected"
    assert [s["id"] for s in hub.ok(b, "GET", "servers")] == [sid_b]
    # A's browser (A's hub cookie) on B's routes: the hub refuses A at B's door.
    page = context_a.new_page()
    try:
        for path in (f"{base_b}/servers", f"user/{b}/lab"):
            resp = page.goto(hub.url + path)
            assert resp is not None and resp.status == 403, (path, resp and resp.status)
            assert sid_b not in page.content()
    finally:
        page.close()


def _ws(url: str, token: str) -> websocket.WebSocket:
    return websocket.create_connection(url, header=[f"Authorization: token {token}"], timeout=60)


def test_events_and_view_websockets_are_the_owners_alone(hub: Hub, servers: dict[str, str]) -> None:
    from paraconnect.render import _protocol as P

    a, b = hub.users
    ws_base = "ws" + hub.url.removeprefix("http")
    token_a = hub.user_token(a)
    for path in ("events", f"servers/{servers[b]}/view"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            _ws(f"{ws_base}user/{b}/paraconnect/api/{path}", token_a)
        assert refused.value.status_code in (302, 403), path
    # The owner's own lines under the prefix work: an event, and a frame of the view.
    events = _ws(f"{ws_base}user/{a}/paraconnect/api/events", token_a)
    try:
        hub.ok(a, "POST", "sessions", {"name": "evt"})
        seen: list[dict[str, Any]] = []
        while not any(e.get("session") == "evt" or e.get("name") == "evt" for e in seen):
            seen.append(json.loads(events.recv()))
    finally:
        events.close()
    view = _ws(f"{ws_base}user/{a}/paraconnect/api/servers/{servers[a]}/view", token_a)
    try:
        view.send_binary(P.encode_message({"op": "hello", "v": P.VERSION}))
        decoder = P.FrameDecoder()
        decoder.feed(view.recv_data()[1])
        msg = decoder.next_message()
        assert msg is not None and msg.header["op"] == "hello"
    finally:
        view.shutdown()


_TRY_ENDPOINT = """
import socket, sys
from paraconnect.render import _protocol as P
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
s.sendall(P.encode_message({"op": "hello", "v": P.VERSION}))
d = P.FrameDecoder()
try:
    while (m := d.next_message()) is None:
        chunk = s.recv(65536)
        if not chunk:
            print("closed")
            raise SystemExit
        d.feed(chunk)
except OSError as exc:
    print("closed:", exc)
    raise SystemExit
print("answered", m.header["op"])
"""


def test_a_users_process_is_refused_at_the_other_users_local_endpoint(
    hub: Hub, servers: dict[str, str]
) -> None:
    """The hub's local endpoints check the connecting process's uid: on a shared node, A's
    process on B's port gets nothing; B's own process, the same code, gets the renderer."""
    a, b = hub.users
    local = hub.ok(b, "GET", f"servers/{servers[b]}")["local"]
    host, port = local.rsplit(":", 1)
    assert host == "127.0.0.1"
    owner = hub.as_user(b, _TRY_ENDPOINT, port)
    assert owner.stdout.strip() == "answered hello", owner.stderr
    other = hub.as_user(a, _TRY_ENDPOINT, port)
    assert other.stdout.startswith("closed"), (other.stdout, other.stderr)
    # Refused for its uid (said in B's server's log, which the hub collects), not by chance.
    uid_a, uid_b = (pwd.getpwnam(u).pw_uid for u in (a, b))
    said = f"user {uid_a} connected to {local}, which only user {uid_b} may use; refused"
    deadline = time.monotonic() + 30
    while said not in hub.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no refusal logged: {hub.log_tail()}"
        time.sleep(0.2)
    assert hub.ok(b, "GET", f"servers/{servers[b]}")["state"] == "connected"


def test_proxied_apps_are_the_owners_alone(hub: Hub, context_a: BrowserContext) -> None:
    """Needs the proxy route /paraconnect/proxy/<id>/ (issue 15, built beside this in wt-web):
    skipped until it answers for the owner."""
    a, b = hub.users
    app = {
        "kind": "command",
        "launcher": "local",
        "session": "lab",
        "command": [str(hub.python), "-m", "http.server", "--bind", "127.0.0.1", "{port}"],
    }
    sid = hub.ok(b, "POST", "servers", app)["id"]
    try:
        assert hub.wait_state(b, sid, {"connected"})["state"] == "connected"
        path = f"user/{b}/paraconnect/proxy/{sid}/"
        mine = hub.request("GET", path, token=hub.user_token(b))
        # Without the route, Jupyter answers 404, or redirects to the path less its slash.
        location = {k.lower(): v for k, v in mine.headers.items()}.get("location")
        missing = mine.status == 302 and location == "/" + path.rstrip("/")
        if mine.status == 404 or missing:
            pytest.skip("no /paraconnect/proxy/ route yet (issue 15's proxy, from wt-web)")
        assert mine.status == 200 and b"Directory listing" in mine.body, mine
        other = hub.request("GET", path, token=hub.user_token(a))
        assert _refused(other.status, other.body, "Directory listing"), other
        page = context_a.new_page()  # A's browser, A's cookie
        try:
            resp = page.goto(hub.url + path)
            assert resp is not None and resp.status == 403
            assert "Directory listing" not in page.content()
        finally:
            page.close()
    finally:
        hub.ok(b, "DELETE", f"servers/{sid}?grace=2")


def test_a_users_kernels_know_their_servers_base_url(hub: Hub) -> None:
    """srv.open() writes a frame whose URL the browser resolves: the kernel must know its
    server's base URL (/user/<name>/), which the extension exports to its kernels."""
    a = hub.users[0]
    token = hub.user_token(a)
    started = hub.request("POST", f"user/{a}/api/kernels", {"name": "python3"}, token=token)
    assert started.status == 201, started
    kid = started.json()["id"]
    try:
        uid = pwd.getpwnam(a).pw_uid
        deadline = time.monotonic() + 60
        while True:
            kernels = [
                pid
                for pid in pids_of(uid)
                if f"kernel-{kid}.json".encode() in _read(f"/proc/{pid}/cmdline")
            ]
            if kernels or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert kernels, f"no kernel process of {a} for {kid}"
        environ = _read(f"/proc/{kernels[0]}/environ").split(b"\0")
        assert f"PARACONNECT_JUPYTER_BASE_URL=/user/{a}/".encode() in environ
    finally:
        hub.request("DELETE", f"user/{a}/api/kernels/{kid}", token=token)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def test_a_web_app_opens_in_a_lab_tab_and_has_a_launcher_tile(
    hub: Hub, context_a: BrowserContext
) -> None:
    """Needs the web kind and the proxy (issue 15, built beside this in wt-web): skipped until
    the hub offers the kind."""
    a = hub.users[0]
    kinds = [k["name"] for k in hub.ok(a, "GET", "launch-options")["kinds"]]
    if "web" not in kinds:
        pytest.skip("the hub offers no web kind yet (issue 15's web kind, from wt-web)")
    app = {
        "kind": "web",
        "launcher": "local",
        "session": "lab",
        "command": [str(hub.python), "-m", "http.server", "--bind", "127.0.0.1", "{port}"],
    }
    sid = hub.ok(a, "POST", "servers", app)["id"]
    page = context_a.new_page()
    page.set_default_timeout(60_000)
    try:
        assert hub.wait_state(a, sid, {"connected"})["state"] == "connected"
        page.goto(hub.url + f"user/{a}/lab")
        _show_panel(page)
        card = page.locator(f'{PANEL} [data-server="{sid}"]')
        # Framed by this user's own pages only, though JupyterHub says 'none' by default.
        resp = page.request.get(hub.url + f"user/{a}/paraconnect/proxy/{sid}/")
        assert resp.headers["content-security-policy"] == "frame-ancestors 'self'"
        card.locator('[data-action="open-app"]').click()
        app_frame = page.frame_locator(f"#paraconnect-app-{sid} iframe")
        expect(app_frame.locator("body")).to_contain_text("Directory listing")
        # The launcher's tile for the kind opens the launch form with that kind chosen.
        page.evaluate("() => window.jupyterapp.commands.execute('launcher:create')")
        page.locator(".jp-LauncherCard", has_text="web server").first.click()
        expect(page.locator(f'{PANEL} select[name="kind"]')).to_have_value("web")
    finally:
        page.close()
        hub.ok(a, "DELETE", f"servers/{sid}?grace=2")


def test_a_trame_app_renders_and_turns_in_a_lab_tab_under_the_user_prefix(
    hub: Hub, context_a: BrowserContext, tmp_path: Path
) -> None:
    """Issue 15, done when, under JupyterHub: a real trame app (the cone of
    tests/test_proxy_trame.py) launched by user A as a reverse server, opened with the card's
    "Open" in a Lab tab at /user/A/, draws its cone and turns on a drag, over the proxied
    websocket under the prefix."""
    from .test_proxy_trame import APP, BACKGROUND, _cone, _near, _until

    a = hub.users[0]
    app = Path(pwd.getpwnam(a).pw_dir) / "cone.py"  # where user A's server can read it
    app.write_text(APP)
    shutil.chown(app, a)
    launch = {"kind": "trame", "session": "lab", "options": {"app": str(app)}}
    sid = hub.ok(a, "POST", "servers", launch)["id"]
    page = context_a.new_page()
    page.set_default_timeout(60_000)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    try:
        assert hub.wait_state(a, sid, {"connected"})["state"] == "connected"
        page.goto(hub.url + f"user/{a}/lab")
        _show_panel(page)
        page.locator(f'{PANEL} [data-server="{sid}"] [data-action="open-app"]').click()
        frame = page.locator(f"#paraconnect-app-{sid} iframe")

        def pixels() -> Any:
            png = frame.screenshot()
            return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)

        def drawn() -> Any:
            px = pixels()
            return px if _cone(px).mean() > 0.01 and _near(px, BACKGROUND).mean() > 0.2 else None

        first = _until("the cone drawn in the Lab tab", drawn)
        prefix = f"/user/{a}/paraconnect/proxy/{sid}/"
        assert any(prefix in s and s.endswith("ws") for s in sockets), sockets
        drag(page, frame, 180, 60, steps=15)

        def turned() -> Any:
            px = drawn()
            return px if px is not None and np.abs(px - first).max(axis=-1).mean() > 3 else None

        _until("the cone turned after a drag", turned)
    finally:
        page.close()
        hub.ok(a, "DELETE", f"servers/{sid}?grace=2")
