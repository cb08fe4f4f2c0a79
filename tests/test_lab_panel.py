"""The JupyterLab panel in a real browser (Debian's Chromium through Playwright), against a real
Jupyter server with the paraconnect extension and its hub: one JupyterLab for the module.

Screenshots at 1366x768 land in test-artifacts/lab/ (and the test's tmp dir).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import PARACONNECT
from .helpers_jupyter import JupyterServer
from .helpers_lab import PANEL, VIEWPORT, chromium, open_panel, screenshot, start_lab
from .helpers_lab import notebook as make_notebook
from .helpers_tunnel import ECHO

pytestmark = pytest.mark.timeout(120)
# Conditions, not delays: generous bounds for a loaded 2-core machine.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with start_lab(tmp_path_factory.mktemp("lab")) as server:
        server.ok("POST", "sessions", {"name": "lab"})
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def _show_panel(page: Page) -> None:
    """Once JupyterLab has restored its layout, show the panel (the palette's command)."""
    open_panel(page)
    expect(page.locator(PANEL)).to_be_visible()


def _toasts_settled(page: Page) -> None:
    """Toasts slide in from the right: wait until they are all on screen (for pictures)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.Toastify__toast')].every("
        "t => t.getBoundingClientRect().right <= window.innerWidth)"
    )


@pytest.fixture(scope="module")
def page(browser: Browser, lab: JupyterServer) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(lab.url(f"lab?token={lab.token}"))
    _show_panel(pg)
    yield pg
    context.close()


def test_lab_loads_with_the_panel_and_its_three_sections(
    page: Page, lab: JupyterServer, tmp_path: Path
) -> None:
    panel = page.locator(PANEL)
    for name in ("sessions", "servers", "friends"):
        expect(panel.locator(f"details[data-section={name}]")).to_be_visible()
    expect(panel.locator(".pc-live")).to_have_text("live")
    expect(panel.locator(".pc-session[data-session=lab]")).to_be_visible()
    commands = page.evaluate(
        "() => window.jupyterapp.commands.listCommands().filter(c => c.startsWith('paraconnect:'))"
    )
    assert set(commands) >= {
        "paraconnect:open", "paraconnect:refresh", "paraconnect:create-session",
        "paraconnect:launch-server", "paraconnect:copy-agent-command", "paraconnect:issue-friend",
    }, commands  # fmt: skip
    # A session made from the panel's form shows up with its CA fingerprint.
    panel.locator("details[data-form=session] > summary").click()
    panel.locator("details[data-form=session] input[name=name]").fill("ui-made")
    panel.locator("details[data-form=session] select[name=key_type]").select_option("ed25519")
    panel.get_by_role("button", name="Create session").click()
    expect(panel.locator(".pc-session.pc-mod-selected[data-session=ui-made]")).to_be_visible()
    fingerprint = lab.ok("GET", "sessions/ui-made")["ca_sha256"]
    expect(panel.locator(".pc-fingerprint")).to_have_attribute("title", fingerprint)
    screenshot(page, "01-panel", tmp_path)


# Records every state each server card shows, so that a test can tell the badge changed live.
RECORD_STATES = """() => {
  window.__pcStates = {};
  const panel = document.querySelector('#paraconnect-panel');
  const scan = () => {
    for (const card of panel.querySelectorAll('.pc-card[data-server]')) {
      const seen = (window.__pcStates[card.dataset.server] ??= []);
      if (seen[seen.length - 1] !== card.dataset.state) seen.push(card.dataset.state);
    }
  };
  scan();
  new MutationObserver(scan).observe(panel, {childList: true, subtree: true, attributes: true});
}"""

LAUNCH_CELL = (
    "import paraconnect as pc\n"
    'session = pc.Session("lab", create=True)\n'
    'srv = pc.connect_reverse(kind="builtin", launcher="local", session=session)\n'
    'print("server id:", srv.id)'
)

KERNEL_IDLE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle';
}"""


@pytest.mark.timeout(180)
def test_server_launched_from_a_notebook_appears_live_and_connects(
    page: Page, lab: JupyterServer, tmp_path: Path
) -> None:
    page.evaluate(RECORD_STATES)
    notebook = make_notebook(LAUNCH_CELL)
    resp = lab.request(
        "PUT", "api/contents/launch.ipynb", {"type": "notebook", "content": notebook}
    )
    assert resp.status in (200, 201), resp.body
    # Opened in the same page: the panel must learn of the server from the hub's events.
    page.evaluate(
        "() => window.jupyterapp.commands.execute('docmanager:open', {path: 'launch.ipynb'})"
    )
    page.wait_for_function(KERNEL_IDLE)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    output = page.locator(".jp-OutputArea-output", has_text="server id:")
    expect(output).to_be_visible(timeout=90_000)
    server_id = output.inner_text().split("server id:", 1)[1].split()[0]

    card = page.locator(f"{PANEL} .pc-card[data-server='{server_id}']")
    expect(card).to_be_visible()
    expect(card).to_have_attribute("data-state", "connected", timeout=90_000)
    states = page.evaluate("(id) => window.__pcStates[id]", server_id)
    assert states[0] != "connected" and states[-1] == "connected", states
    expect(card.locator(".pc-badge")).to_have_text("connected")
    info = lab.ok("GET", f"servers/{server_id}")
    expect(card).to_contain_text(info["peer"])
    expect(card).to_contain_text(info["where"])
    expect(card).to_contain_text("1 time")
    expect(
        page.locator(".Toastify__toast", has_text=f"Server {server_id} phoned home")
    ).to_be_visible()
    _toasts_settled(page)
    screenshot(page, "02-server-connected", tmp_path)


def _select_session(page: Page, name: str) -> None:
    page.locator(f"{PANEL} .pc-session[data-session='{name}']").click()
    expect(
        page.locator(f"{PANEL} .pc-session.pc-mod-selected[data-session='{name}']")
    ).to_be_visible()


def _issue_and_download(
    page: Page, name: str, passphrase: str, out: Path, unique_id: str = ""
) -> Path:
    """Issue a friend bundle from the panel, then download it with the panel's button."""
    _select_session(page, "lab")
    form = page.locator(f"{PANEL} details[data-form=friend]")
    form.locator("input[name=friend]").fill(name)
    form.locator("input[name=passphrase]").fill(passphrase)
    form.locator("input[name=days]").fill("3")
    form.locator("input[name=unique_id]").fill(unique_id)
    form.get_by_role("button", name="Issue bundle").click()
    row = page.locator(f"{PANEL} .pc-friend[data-friend='{name}']")
    expect(row.locator(".pc-badge")).to_have_text("valid")
    with page.expect_download() as download:
        row.locator("[data-action=download]").click()
    path = out / download.value.suggested_filename
    download.value.save_as(path)
    return path


def test_friend_bundle_is_issued_and_downloaded_from_the_panel(
    page: Page, lab: JupyterServer, tmp_path: Path
) -> None:
    bundle = _issue_and_download(page, "bob", "bob's passphrase", tmp_path)
    assert bundle.name == "lab-bob.p12"
    info = subprocess.run(
        ["openssl", "pkcs12", "-info", "-noout", "-passin", "pass:bob's passphrase",
         "-in", str(bundle)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert info.returncode == 0, info.stderr
    assert "AES-256" in info.stderr, info.stderr  # openssl writes -info to stderr
    wrong = subprocess.run(
        ["openssl", "pkcs12", "-info", "-noout", "-passin", "pass:wrong", "-in", str(bundle)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert wrong.returncode != 0
    [cert] = [c for c in lab.ok("GET", "sessions/lab/friends") if c["name"] == "bob"]
    row = page.locator(f"{PANEL} .pc-friend[data-friend=bob]")
    expect(row).to_have_attribute("data-serial", cert["serial"])
    screenshot(page, "03-friend-issued", tmp_path)


def _launch_from_the_panel(page: Page, command: str) -> str:
    """Launch a forward `command` server in session lab with the panel's form; its id."""
    before = set(page.locator(f"{PANEL} .pc-card[data-server]").evaluate_all(
        "cards => cards.map(c => c.dataset.server)"))  # fmt: skip
    form = page.locator(f"{PANEL} details[data-form=launch]")
    if form.get_attribute("open") is None:
        form.locator("summary").click()
    form.locator("select[name=kind]").select_option("command")
    form.locator("select[name=session]").select_option("lab")
    form.locator("select[name=mode]").select_option("forward")
    form.locator("input[name=command]").fill(command)
    form.get_by_role("button", name="Launch", exact=True).click()
    new = page.locator(f"{PANEL} .pc-card[data-server^='command-']")
    page.wait_for_function(
        "([sel, before]) => [...document.querySelectorAll(sel)].some("
        "c => !before.includes(c.dataset.server))",
        arg=[f"{PANEL} .pc-card[data-server^='command-']", sorted(before)],
    )
    ids = new.evaluate_all("cards => cards.map(c => c.dataset.server)")
    [server_id] = [i for i in ids if i not in before]
    return str(server_id)


def _read_event(proc: subprocess.Popen[str], event: str) -> dict[str, object]:
    assert proc.stdout is not None
    for line in proc.stdout:  # blocks until the line comes (the test's timeout bounds it)
        data = json.loads(line)
        if data.get("event") == event:
            return dict(data)
    raise AssertionError(f"no {event!r} event; exit {proc.wait()}")


def _echo_open(port: int) -> socket.socket:
    """A stream through the tunnel that stays open: the echo program answers each chunk."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(b"echo\nping")
    got = b""
    while len(got) < 4:
        chunk = sock.recv(4 - len(got))
        assert chunk, f"the tunnel closed before echoing: {got!r}"
        got += chunk
    assert got == b"ping"
    return sock


def _closed(sock: socket.socket) -> bool:
    """Wait (socket timeout) until the far end closes; True on EOF or reset."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _refused(port: int) -> bool:
    """A new stream through the friend's tunnel: True when it closes without echoing."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(b"echo\nping")
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return True
        return _closed(sock)


@pytest.mark.timeout(180)
def test_revoke_from_the_panel_drops_the_friends_open_connection(
    page: Page, lab: JupyterServer, tmp_path: Path
) -> None:
    server_id = _launch_from_the_panel(page, f"{sys.executable} {ECHO} --port {{port}}")
    card = page.locator(f"{PANEL} .pc-card[data-server='{server_id}']")
    expect(card).to_have_attribute("data-state", "connected", timeout=90_000)
    # The agent listens (forward); the friend dials it with the bundle from the panel.
    logs = lab.ok("GET", f"servers/{server_id}/logs")
    agent_address = re.search(r'"listen": \["([^"]+)"', logs)
    assert agent_address, logs

    # At level mutual the friend's certificate names the friend's node: they tell us its ID.
    friend_home = tmp_path / "friend-home"
    env = {**os.environ, "PARACONNECT_HOME": str(friend_home)}
    uid = subprocess.run(
        [PARACONNECT, "unique-id", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert uid.returncode == 0, uid.stderr
    passphrase = "carol's passphrase"
    bundle = _issue_and_download(
        page, "carol", passphrase, tmp_path, json.loads(uid.stdout)["unique_id"]
    )
    pass_file = tmp_path / "carol.pass"
    pass_file.write_text(passphrase)
    pass_file.chmod(0o600)
    bundle.chmod(0o600)  # as `paraconnect import` asks of a downloaded bundle
    imported = subprocess.run(
        [PARACONNECT, "import", str(bundle), "--passphrase-file", str(pass_file), "--as", "lab"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    log = tmp_path / "connect.log"
    with open(log, "w") as err:
        friend = subprocess.Popen(
            [PARACONNECT, "connect", agent_address.group(1), "--creds", "lab",
             "--local", "127.0.0.1:0", "--json"],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env,
        )  # fmt: skip
    try:
        ready = _read_event(friend, "ready")
        local_port = int(str(ready["local"]).rsplit(":", 1)[1])
        stream = _echo_open(local_port)
        expect(card.locator(".pc-actions")).to_be_visible()

        row = page.locator(f"{PANEL} .pc-friend[data-friend=carol]")
        row.locator("[data-action=revoke]").click()
        page.locator(".jp-Dialog").get_by_role("button", name="Revoke").click()
        expect(row.locator(".pc-badge")).to_have_text("revoked")
        screenshot(page, "04-friend-revoked", tmp_path)

        # The open stream is cut (EOF) ...
        assert _closed(stream), "the revoked friend's stream stayed open"
        stream.close()
        # ... and a new attempt is refused: the tunnel closes without echoing anything.
        assert _refused(local_port), "a new attempt of the revoked friend got through"
    finally:
        friend.terminate()
        friend.wait(30)
        assert friend.stdout is not None
        friend.stdout.close()
    assert "revoked" in log.read_text(), log.read_text()


# Closes the toasts on screen (as often as it takes: they leave with an animation).
DISMISS_TOASTS = """() => {
  document.querySelectorAll('.Toastify__close-button').forEach(b => b.click());
  return document.querySelectorAll('.Toastify__toast').length === 0;
}"""


def test_a_refused_connection_is_notified_with_its_reason(
    page: Page, lab: JupyterServer, tmp_path: Path
) -> None:
    page.wait_for_function(DISMISS_TOASTS)
    address = lab.ok("POST", "sessions/lab/open")["phone_home"]
    # A peer with no certificate of the session: the hub refuses it, the panel says why.
    probe = subprocess.run(
        ["openssl", "s_client", "-connect", address, "-tls1_3", "-quiet"],
        input="hello\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode != 0 or "alert" in probe.stderr, probe
    toast = page.locator(".Toastify__toast", has_text="Refused")
    expect(toast).to_be_visible()
    expect(toast).to_contain_text(f"{address.split(':')[0]}")
    expect(toast).to_contain_text("session 'lab'")
    _toasts_settled(page)
    screenshot(page, "05-refused-notification", tmp_path)


def test_logs_and_the_agent_command_open_in_dialogs(page: Page, lab: JupyterServer) -> None:
    launched = [s for s in lab.ok("GET", "servers") if s["launcher"] == "local"]
    if not launched:  # run alone: launch one (the echo program) to read the logs of
        command = [sys.executable, ECHO, "--port", "{port}"]
        launched = [lab.ok("POST", "servers", {"kind": "command", "session": "lab",
                                               "command": command})]  # fmt: skip
    card = page.locator(f"{PANEL} .pc-card[data-server='{launched[0]['id']}']")
    card.locator("[data-action=logs]").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text(f"Logs of {launched[0]['id']}")
    expect(dialog.locator("pre.pc-logs")).not_to_be_empty()
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)

    form = page.locator(f"{PANEL} details[data-form=launch]")
    if form.get_attribute("open") is None:
        form.locator("summary").click()
    form.locator("select[name=kind]").select_option("builtin")
    form.locator("select[name=session]").select_option("lab")
    form.locator("input[name=command]").fill("")
    form.get_by_role("button", name="Copy agent command").click()
    expect(dialog.locator("pre.pc-logs")).to_contain_text("paraconnect")
    title = dialog.locator(".jp-Dialog-header").inner_text()
    server_id = title.split("Start server ", 1)[1].split()[0]
    dialog.get_by_role("button", name="Close").click()
    # The server it stands for is in the panel, waiting for the agent to be started by hand;
    # nobody will: stop it from the panel.
    manual = page.locator(f"{PANEL} .pc-card[data-server='{server_id}']")
    expect(manual).to_be_visible()
    manual.locator("[data-action=stop]").click()
    expect(manual).to_have_attribute("data-state", "stopped")
    expect(manual.locator("[data-action=stop]")).to_have_count(0)


def test_a_page_reload_shows_everything_again(
    page: Page, lab: JupyterServer, tmp_path: Path
) -> None:
    servers = lab.ok("GET", "servers")
    page.reload()
    _show_panel(page)
    panel = page.locator(PANEL)
    expect(panel.locator(".pc-live")).to_have_text("live")
    for info in servers:
        card = panel.locator(f".pc-card[data-server='{info['id']}']")
        expect(card).to_have_attribute("data-state", info["state"])
    _select_session(page, "lab")
    expect(panel.locator(".pc-friend[data-friend=bob] .pc-badge")).to_have_text("valid")
    expect(panel.locator(".pc-friend[data-friend=carol] .pc-badge")).to_have_text("revoked")
    screenshot(page, "06-after-reload", tmp_path)
    page.set_viewport_size({"width": 1280, "height": 800})
    screenshot(page, "07-after-reload-1280x800", tmp_path)
    page.set_viewport_size(VIEWPORT)
