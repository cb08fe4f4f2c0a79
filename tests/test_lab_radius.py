"""Issue 17, a RADIUS refusal in the JupyterLab panel (Debian's Chromium through Playwright):
Jupyter's hub runs with the ``Paraconnect.radius*`` settings against a real FreeRADIUS whose
users file rejects the server certificate 'rogue' with a Reply-Message.  A real agent
(``paraconnect serve``) holding that certificate phones home and is refused; the panel says
who was refused, in which session, and the RADIUS server's reason."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from paraconnect.pki import Role, Store

from .conftest import PARACONNECT
from .fixtures_radius import FreeRadius, freeradius_factory  # noqa: F401 - the fixture
from .helpers_jupyter import JupyterServer, start_jupyter
from .helpers_lab import PANEL, VIEWPORT, chromium, lab_args, open_panel, screenshot
from .test_supervisor_policy import ECHO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
expect.set_options(timeout=30_000)

REASON = "rogue is not a registered render node"


@pytest.fixture
def lab(
    tmp_path: Path,
    freeradius_factory: type[FreeRadius],  # noqa: F811 - the fixture
) -> Iterator[JupyterServer]:
    radius = freeradius_factory(
        'DEFAULT Paraconnect-Role == "server", Paraconnect-Name == "rogue", Auth-Type := Reject\n'
        f'\tReply-Message = "{REASON}"\n\n'
        'DEFAULT Paraconnect-Role == "server", Auth-Type := Accept\n'
    )
    settings = [
        f"--Paraconnect.radius={radius.address}",
        f"--Paraconnect.radius_secret_file={radius.secret_file}",
    ]
    with start_jupyter(tmp_path, extra_args=[*lab_args(tmp_path), *settings]) as server:
        server.ok("POST", "sessions", {"name": "lab"})
        yield server


def test_the_panel_shows_a_radius_refusal_with_its_reply_message(
    lab: JupyterServer, tmp_path: Path
) -> None:
    address = lab.ok("POST", "sessions/lab/open")["phone_home"]
    store = Store(lab.home)
    uid = store.unique_id().value
    creds = tmp_path / "rogue"
    store.open_session("lab").issue(Role.SERVER, "rogue", unique_id=uid, out=creds)
    with chromium() as browser:
        context = browser.new_context(viewport=VIEWPORT)
        page: Page = context.new_page()
        page.goto(lab.url(f"lab?token={lab.token}"))
        open_panel(page)
        expect(page.locator(f"{PANEL} .pc-live")).to_have_text("live")
        agent = subprocess.Popen(
            [PARACONNECT, "serve", "--creds", str(creds), "--phone-home", str(address),
             "--", *ECHO],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PARACONNECT_HOME": str(tmp_path / "agent-home")},
        )  # fmt: skip
        try:
            # The notification says who, where and in which session (JupyterLab cuts its
            # text at 140 characters: the reason at its end is lost there)...
            toast = page.locator(".Toastify__toast", has_text="Refused server 'rogue'").first
            expect(toast).to_be_visible()
            assert "(session 'lab')" in toast.inner_text()
            # ...and the Servers section keeps the refusal whole, with RADIUS's reason.
            refusal = page.locator(f"{PANEL} [data-list=refusals] .pc-refusal").first
            expect(refusal).to_be_visible()
            expect(refusal).to_have_attribute("data-peer", f"server 'rogue' on {uid}")
            expect(refusal).to_contain_text("session lab")
            reason = refusal.locator(".pc-refusal-reason").inner_text()
            assert "RADIUS server" in reason and f"in: {REASON}; fix:" in reason, reason
            screenshot(page, "radius-refusal", tmp_path)
        finally:
            os.killpg(agent.pid, signal.SIGTERM)
            agent.wait(timeout=30)
            context.close()
