"""Issue 16, a ParaView version mismatch in the JupyterLab panel (Debian's Chromium through
Playwright): a pvserver whose ``--version`` says another major.minor than this host's pvpython
(the wrapper of test_pvserver_version) phones home to Jupyter's hub; its card shows the
version among its facts and the hub's one line (which versions, what to do) as a warning,
without a reload: the hub asks pvpython off its loop and announces the check when it can."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .helpers_jupyter import JupyterServer, start_jupyter
from .helpers_lab import PANEL, VIEWPORT, chromium, lab_args, open_panel, screenshot
from .helpers_peers import require_programs
from .test_pvserver_version import _local_version, _version_of, old_pvserver  # noqa: F401

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
]
require_programs("pvserver", "pvpython", "Xvfb")
expect.set_options(timeout=60_000)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[JupyterServer]:
    with start_jupyter(tmp_path, extra_args=lab_args(tmp_path)) as server:
        server.ok("POST", "sessions", {"name": "lab"})
        yield server


def test_the_card_warns_of_a_version_mismatch(
    lab: JupyterServer,
    old_pvserver: str,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    other, client = _version_of(old_pvserver), _local_version()
    with chromium() as browser:
        context = browser.new_context(viewport=VIEWPORT)
        page: Page = context.new_page()
        page.goto(lab.url(f"lab?token={lab.token}"))
        open_panel(page)
        expect(page.locator(PANEL)).to_be_visible()
        # Launched once the panel is open: the card is drawn before the hub has compared.
        info = lab.ok("POST", "servers", {
            "kind": "pvserver", "session": "lab",
            "options": {"xvfb": "always", "pvserver": old_pvserver},
        })  # fmt: skip
        try:
            card = page.locator(f"{PANEL} .pc-card[data-server='{info['id']}']")
            expect(card).to_have_attribute("data-state", "connected", timeout=120_000)
            expect(card.locator("dd[data-fact=version]")).to_have_text(other)
            warning = card.locator("[data-warning=version]")
            expect(warning).to_be_visible()
            text = warning.inner_text()
            assert f"is {other}" in text and f"pvpython is {client}" in text, text
            assert "same major.minor" in text and "pvserver=PATH" in text, text
            assert text == lab.ok("GET", f"servers/{info['id']}")["version_check"]
            screenshot(page, "version-mismatch", tmp_path)
        finally:
            assert lab.ok("DELETE", f"servers/{info['id']}")["state"] == "stopped"
            context.close()
