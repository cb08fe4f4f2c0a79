"""The panel's launch form offers the launchers the hub lists in GET /hub: one registered in
the server (and nowhere in the panel's code) shows up, describes its options, and launches."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from .helpers_jupyter import JupyterServer, start_jupyter
from .helpers_lab import PANEL, VIEWPORT, chromium, lab_args, open_panel
from .test_launchers_registry import register_in_server

pytestmark = pytest.mark.timeout(120)
expect.set_options(timeout=30_000)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[JupyterServer]:
    with start_jupyter(
        tmp_path, extra_args=[*lab_args(tmp_path), register_in_server(tmp_path)]
    ) as s:
        s.ok("POST", "sessions", {"name": "lab"})
        yield s


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def test_the_launch_form_offers_a_launcher_registered_in_the_server(
    browser: Browser, lab: JupyterServer
) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(lab.url(f"lab?token={lab.token}"))
        open_panel(page)
        panel = page.locator(PANEL)
        form = panel.locator("details[data-form=launch]")
        form.locator("summary").click()
        choices = form.locator("select[name=launcher] option")
        # 'manual' is not offered: the hub does not run it (the "Copy agent command" button).
        expect(choices).to_have_text(["local", "ssh", "slurm", "tiny"])
        form.locator("select[name=launcher]").select_option("tiny")
        # Its options as fields of their own, each with its help; the required one marked.
        expect(form.locator("[data-hint=launcher]")).to_have_text("a test launcher")
        fields = form.locator("[data-options=launcher] [data-option]")
        expect(fields).to_have_count(2)
        flavour = form.locator("input[name='launcher_options.flavour']")
        expect(flavour).to_have_attribute("title", "which flavour of tiny")
        expect(flavour).to_have_attribute("required", "")
        expect(form.locator("input[name='launcher_options.run_root']")).to_have_attribute(
            "title", "where job directories go"
        )
        form.locator("select[name=kind]").select_option("command")
        program = f"{sys.executable} -m http.server --bind 127.0.0.1 {{port}}"
        form.locator("input[name=command]").fill(program)
        # Without the required option the form says so under the field and sends nothing.
        form.get_by_role("button", name="Launch", exact=True).click()
        expect(form.locator("[data-error-for='launcher_options.flavour']")).to_have_text(
            "flavour is required: which flavour of tiny"
        )
        assert lab.ok("GET", "servers") == []
        flavour.fill("mint")
        form.get_by_role("button", name="Launch", exact=True).click()
        card = panel.locator(".pc-card[data-server]")
        expect(card).to_have_count(1)
        expect(card.locator(".pc-muted").first).to_contain_text("tiny")
        assert [s["launcher"] for s in lab.ok("GET", "servers")] == ["tiny"]
    finally:
        context.close()
