"""The hub inside Jupyter: no input on its enrolment endpoint stops it (issue 12, item 3: one
bare TCP connect with no session open killed the hub's thread, and REST answered 500 until
Jupyter restarted); and if its thread dies all the same, REST answers 503 with the reason and
the extension restarts the hub, which then serves REST again."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .helpers_jupyter import JupyterServer, Response, free_port, start_jupyter
from .helpers_lab import PANEL, VIEWPORT, chromium, lab_args, open_panel, screenshot

pytestmark = pytest.mark.timeout(120)


def _poll(server: JupyterServer, status: int, deadline_s: float = 60) -> Response:
    """GET /hub until it answers `status` (bounded)."""
    deadline = time.monotonic() + deadline_s
    while True:
        got = server.api("GET", "hub")
        if got.status == status or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_a_bare_connect_to_enrolment_leaves_the_hub_in_jupyter_serving(tmp_path: Path) -> None:
    port = free_port()
    with start_jupyter(tmp_path, extra_args=[f"--Paraconnect.enroll_listen=127.0.0.1:{port}"]) as (
        server
    ):
        assert server.api("GET", "hub").status == 200
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"\x16\x03\x01 not quite TLS")
                # The hub closes at once (no session open): with our bytes unread, the close
                # may arrive as a reset rather than an EOF. Either way, it closed.
                with contextlib.suppress(ConnectionResetError):
                    while sock.recv(4096):
                        pass
        got = server.api("GET", "hub")
        assert got.status == 200, got.body
        assert "no session open for enrolment" in server.log.read_text(errors="replace")


def test_a_dead_hub_answers_503_with_the_reason_and_comes_back(tmp_path: Path) -> None:
    """No input can make the hub's loop fail any more (the test above and tests/test_robust_*),
    so this one uses the test-only fault of paraconnect/jupyter/_bridge.py: a file that, once
    it appears, makes a task in the hub's task group raise."""
    fault = tmp_path / "fault"
    with start_jupyter(tmp_path, env={"PARACONNECT_TEST_HUB_FAULT": str(fault)}) as server:
        assert server.api("GET", "hub").status == 200
        fault.touch()
        down = _poll(server, 503)
        assert down.status == 503, down.body
        error = down.json()["error"]
        assert "RuntimeError: a fault injected for a test" in error, error
        assert "restarting it" in error, error
        up = _poll(server, 200)
        assert up.status == 200, up.body
        # The restarted hub serves its operations and its control socket again.
        assert server.api("GET", "sessions").status == 200
        assert (server.home / "run" / "hub.json").exists()
        assert "the hub serves again" in server.log.read_text(errors="replace")


def test_the_panel_says_the_hub_failed_and_recovers(tmp_path: Path) -> None:
    """The panel hears of the failure on its websocket: a notification with the reason, then
    REST (503 with the reason, shown where the panel shows errors) until the hub serves again,
    when the error goes away without a page reload.  The same test-only fault as above."""
    fault = tmp_path / "fault"
    env = {"PARACONNECT_TEST_HUB_FAULT": str(fault)}
    with (
        start_jupyter(tmp_path, env=env, extra_args=lab_args(tmp_path)) as lab,
        chromium() as browser,
    ):
        context = browser.new_context(viewport=VIEWPORT)
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(lab.url(f"lab?token={lab.token}"))
            open_panel(page)
            error = page.locator(f"{PANEL} .pc-error")
            expect(page.locator(PANEL)).to_be_visible(timeout=30_000)
            expect(error).to_be_hidden(timeout=30_000)
            fault.touch()
            toast = page.locator(".Toastify__toast", has_text="hub failed")
            expect(toast).to_contain_text(
                "RuntimeError: a fault injected for a test", timeout=30_000
            )
            screenshot(page, "09-hub-failed", tmp_path)
            assert _poll(lab, 200).status == 200
            expect(error).to_be_hidden(timeout=30_000)
        finally:
            context.close()
