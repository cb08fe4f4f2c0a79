"""Issue 16, wall time in the JupyterLab panel (Debian's Chromium through Playwright): a server
on the suite's real Slurm with a one-minute time limit, Jupyter's hub warning 50 s and 20 s
before the end.  The server's card shows the time left; the warning comes as a notification;
the card's Resubmit button gives the server a new job that re-attaches to the same local
endpoint."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import expect

from .helpers_jupyter import JupyterServer, start_jupyter
from .helpers_lab import PANEL, browser_page, chromium, lab_args, open_panel, screenshot
from .helpers_tunnel import ECHO
from .test_supervisor_policy import echo

if TYPE_CHECKING:
    from tests.fixtures_slurm import SlurmCluster

pytest_plugins = ["tests.fixtures_slurm"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
expect.set_options(timeout=30_000)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[JupyterServer]:
    warnings = ["--Paraconnect.walltime_warnings=50", "--Paraconnect.walltime_warnings=20"]
    with start_jupyter(tmp_path, extra_args=[*lab_args(tmp_path), *warnings]) as server:
        server.ok("POST", "sessions", {"name": "lab"})
        yield server


def test_time_left_warning_and_resubmit_in_the_panel(
    lab: JupyterServer, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    info = lab.ok("POST", "servers", {
        "kind": "command", "launcher": "slurm", "session": "lab", "mode": "reverse",
        "command": [sys.executable, ECHO, "--port", "{port}"],
        "launcher_options": {"slurm_conf": str(slurm_cluster.conf),
                             "job_root": str(tmp_path / "jobs"), "time": "1"},
    })  # fmt: skip
    server_id = info["id"]
    with chromium() as browser, browser_page(browser, 60_000) as page:
        page.goto(lab.url(f"lab?token={lab.token}"))
        open_panel(page)
        expect(page.locator(PANEL)).to_be_visible()
        card = page.locator(f"{PANEL} .pc-card[data-server='{server_id}']")
        expect(card).to_have_attribute("data-state", "connected", timeout=90_000)
        first = lab.ok("GET", f"servers/{server_id}")
        left = card.locator("dd[data-time-left]")
        expect(left).to_be_visible()
        assert 0 <= int(left.get_attribute("data-time-left") or "-1") <= 60
        toast = page.locator(".Toastify__toast", has_text="reaches its time limit")
        expect(toast.first).to_be_visible(timeout=70_000)
        screenshot(page, "walltime-warning", tmp_path)
        card.locator("[data-action=resubmit]").click()
        deadline = time.monotonic() + 60
        while True:
            now = lab.ok("GET", f"servers/{server_id}")
            if now["job_id"] != first["job_id"] and now["state"] == "connected":
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.5)
        assert now["local"] == first["local"]
        expect(card.locator("dd.pc-mono").get_by_text(now["job_id"], exact=True)).to_be_visible()
        assert echo(int(now["local"].rsplit(":", 1)[1]), b"resubmitted") == b"resubmitted"
