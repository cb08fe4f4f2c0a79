"""The panel's launch form offers the launchers the hub lists in GET /hub: one registered in
the server (and nowhere in the panel's code) shows up, describes its options, and launches."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from .helpers_jupyter import JupyterServer, start_jupyter
from .helpers_lab import PANEL, VIEWPORT, chromium, lab_args
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
        page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.commands.hasCommand('paraconnect:open')"
        )
        page.evaluate("() => window.jupyterapp.restored")
        page.evaluate("() => window.jupyterapp.commands.execute('paraconnect:open')")
        panel = page.locator(PANEL)
        form = panel.locator("details[data-form=launch]")
        form.locator("summary").click()
        choices = form.locator("select[name=launcher] option")
        # 'manual' is not offered: the hub does not run it (the "Copy agent command" button).
        expect(choices).to_have_text(["local", "ssh", "slurm", "tiny"])
        form.locator("select[name=launcher]").select_option("tiny")
        box = form.locator("textarea[name=launcher_options]")
        expect(box).to_have_attribute("placeholder", "flavour=… (required), run_root=…")
        expect(box).to_have_attribute(
            "title", "a test launcher\nflavour: which flavour of tiny\nrun_root: where job "
            "directories go"
        )  # fmt: skip
        form.locator("select[name=kind]").select_option("command")
        box.fill("flavour=mint")
        program = f"{sys.executable} -m http.server --bind 127.0.0.1 {{port}}"
        form.locator("input[name=command]").fill(program)
        form.get_by_role("button", name="Launch", exact=True).click()
        card = panel.locator(".pc-card[data-server]")
        expect(card).to_have_count(1)
        expect(card.locator(".pc-muted").first).to_contain_text("tiny")
        assert [s["launcher"] for s in lab.ok("GET", "servers")] == ["tiny"]
    finally:
        context.close()
