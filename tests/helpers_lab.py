"""JupyterLab in Debian's Chromium for the panel's browser tests.

The server is tests/helpers_jupyter.py's ``jupyter server`` (JupyterLab is one of its
extensions, so ``/lab`` is served) with private settings and workspaces, the news toast off and
``window.jupyterapp`` exposed, so that tests can run palette commands.  Playwright's sync API
drives ``/usr/bin/chromium`` (its own browser download cannot work here); pytest-jupyter is
avoided on purpose: its event loop breaks the sync API.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, sync_playwright

from .helpers_jupyter import JupyterServer, start_jupyter

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage",
]  # fmt: skip
VIEWPORT = {"width": 1366, "height": 768}
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "lab"
PANEL = "#paraconnect-panel"


def notebook(*sources: str) -> dict[str, Any]:
    """A notebook (nbformat 4, the python3 kernel) of code cells with these sources, as the
    contents API takes it."""
    return {
        "cells": [{"cell_type": "code", "metadata": {}, "source": src, "outputs": [],
                   "execution_count": None} for src in sources],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip


def lab_args(tmp: Path) -> list[str]:
    """Private JupyterLab settings (no news, no update check) and workspaces."""
    settings = tmp / "lab-settings"
    notes = settings / "@jupyterlab" / "apputils-extension"
    notes.mkdir(parents=True)
    (notes / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    workspaces = tmp / "lab-workspaces"
    workspaces.mkdir()
    return [
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={workspaces}",
        "--LabApp.expose_app_in_browser=True",
    ]


@contextlib.contextmanager
def start_lab(tmp: Path) -> Iterator[JupyterServer]:
    with start_jupyter(tmp, extra_args=lab_args(tmp)) as server:
        yield server


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A Playwright Browser on Debian's Chromium (skips the module when it is missing)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: run scripts/system-deps.sh (Debian package chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def browser_page(browser: Browser, timeout_ms: int, **context: Any) -> Iterator[Page]:
    """A page of a context of its own (the tests' viewport unless `context` says otherwise),
    waiting at most `timeout_ms` by default; the context is closed after, also on failure."""
    ctx = browser.new_context(**{"viewport": VIEWPORT, **context})
    try:
        page = ctx.new_page()
        page.set_default_timeout(timeout_ms)
        yield page
    finally:
        ctx.close()


def open_panel(page: Page) -> None:
    """Once JupyterLab (just loaded in `page`) has restored its layout, open paraconnect's side
    panel: the command exists once the extension loaded."""
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.commands.hasCommand('paraconnect:open')"
    )
    page.evaluate("() => window.jupyterapp.restored")
    page.evaluate("() => window.jupyterapp.commands.execute('paraconnect:open')")


def drag(page: Page, target: Locator, dx: float, dy: float = 5, *, steps: int = 10) -> None:
    """Press the mouse at the middle of `target`, move it by (dx, dy) in `steps` moves, let go."""
    box = target.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=steps)
    page.mouse.up()


def screenshot(page: Page, name: str, tmp: Path) -> Path:
    """Save a screenshot in tmp and copy it to test-artifacts/lab/ (gitignored) to look at."""
    path = tmp / f"{name}.png"
    page.screenshot(path=str(path))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)
    return path
