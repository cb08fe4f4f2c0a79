"""The widgets' models, driven as the front end would (button clicks, custom messages) against
a real hub embedded in this process; the hub's state is what is checked."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

import paraconnect as pc
from paraconnect.api import Hub
from paraconnect.errors import ConfigError

pytest.importorskip("vtk")
pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")
pytest_plugins = ["tests.helpers_api"]
pytestmark = pytest.mark.timeout(90)


def test_credentials_widget_creates_and_shows_a_session(api_hub: Hub) -> None:
    from paraconnect.widgets import CredentialsWidget

    cw = CredentialsWidget("cfd-run", hub=api_hub)
    assert "no session" in cw.summary.value
    cw.key_type.value, cw.days.value, cw.level.value = "ed25519", 30, "encrypt"
    cw.open_button.click()
    [info] = [s for s in api_hub.request("sessions") if s["name"] == "cfd-run"]
    assert (info["key_type"], info["level"]) == ("ed25519", "encrypt")
    assert info["phone_home"]  # opened: its listener runs
    assert info["ca_sha256"] in cw.summary.value
    assert "<td>hub</td><td>client</td><td>valid</td>" in cw.certs.value  # the hub's own
    cw.close()


def test_share_widget_issues_downloads_and_revokes_live(api_hub: Hub) -> None:
    from paraconnect.widgets import ShareWidget

    pc.Session.create("lab")
    sw = ShareWidget("lab", hub=api_hub)
    sw.friend.value, sw.passphrase.value = "alice", "short"
    sw.issue_button.click()
    assert "8 characters" in sw.message.value and not api_hub.request("friends", session="lab")
    sw.passphrase.value = "correct horse battery"
    sw.issue_button.click()
    assert sw.last_bundle is not None and sw.last_bundle["filename"] == "lab-alice.p12"
    assert sw.passphrase.value == ""
    assert "data:application/x-pkcs12;base64," in sw.download.value
    serial = sw.last_bundle["serial"]
    assert set(sw.revoke_buttons) == {serial}
    sw.revoke_buttons[serial].click()
    assert sw.message.value.startswith("revoked"), sw.message.value
    [friend] = api_hub.request("friends", session="lab")
    assert friend["status"] == "revoked" and friend["serial"] == serial
    assert sw.revoke_buttons[serial].disabled
    sw.close()


def test_phone_home_watcher_follows_events_and_rejects(api_hub: Hub) -> None:
    from paraconnect.widgets import PhoneHomeWatcher

    s = pc.Session.create("lab")
    watcher = PhoneHomeWatcher(s, hub=api_hub)
    assert watcher.servers == {}
    srv = pc.connect_reverse(kind="builtin", session=s)
    # Only the event feed updates the table: nothing polls and the test calls no refresh.
    assert watcher.wait_for(
        lambda: watcher.servers.get(srv.id, {}).get("state") == "connected", timeout=60
    ), watcher.servers
    row = watcher.servers[srv.id]
    assert row["attempts"] >= 1 and row["where"] and row["last_phone_home"]
    accept, reject = watcher.buttons[srv.id]
    accept.click()
    policy = api_hub.request("policy", session="lab")
    assert policy["rules"][0]["action"] == "allow" and policy["rules"][0]["name"] == srv.id
    reject.click()
    policy = api_hub.request("policy", session="lab")
    assert policy["rules"][0]["action"] == "deny" and policy["rules"][0]["name"] == srv.id
    assert api_hub.request("server", id=srv.id)["state"] == "stopped"
    assert srv.id not in watcher.servers
    watcher.close()
    # A watcher that also lists ended servers offers nothing to decide for them: the row says
    # it ended, with no accept or reject button.
    history = PhoneHomeWatcher(s, hub=api_hub, show_final=True)
    assert history.servers[srv.id]["state"] == "stopped"
    assert srv.id not in history.buttons
    labels = [c.value for c in history.table.children if hasattr(c, "value")]
    assert "ended" in labels and "accept" not in str(history.table.children)
    history.close()


def test_remote_view_drag_wheel_and_save(api_hub: Hub, tmp_path: Path) -> None:
    srv = pc.connect_reverse(kind="builtin", session=pc.Session.create("lab"))
    srv.wait_connected(timeout=60, quiet=True)
    view = srv.view(dataset="wavelet", width=320, height=240)
    first = view.last_frame
    assert first is not None and (first.width, first.height) == (320, 240)
    assert view.src.startswith("data:image/jpeg;base64,")
    assert view.dataset  # facts about the dataset the server loaded
    view._handle_custom_msg({"type": "drag", "dx": 60, "dy": 10}, [])
    turned = view.last_frame
    assert turned is not None and turned.number > first.number and turned.data != first.data
    view._handle_custom_msg({"type": "wheel", "delta": -300}, [])
    zoomed = view.last_frame
    assert zoomed is not None and zoomed.number > turned.number and zoomed.data != turned.data
    view._handle_custom_msg({"type": "save"}, [])
    assert view.last_png is not None and view.last_png.startswith(b"\x89PNG")
    out = view.save_png(tmp_path / "view.png")
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (320, 240)
    with Image.open(io.BytesIO(view.last_png)) as img:
        assert img.size == (320, 240)
    view.drag_scale = 0.25  # the browser's drag frames: a quarter of each side
    for bad in (1.5, 0.05, -1):
        with pytest.raises(ConfigError, match="drag_scale"):
            view.drag_scale = bad
    assert view.drag_scale == 0.25
    view.close()
    srv.stop(grace=5)


def test_server_view_of_a_file_on_its_host(api_hub: Hub, tmp_path: Path) -> None:
    """srv.view(path=...) used to raise TypeError; the file is read on the server's side."""
    from paraconnect.errors import ConfigError

    from .helpers_render import write_edge_on

    data = tmp_path / "field.vti"
    write_edge_on(data)
    srv = pc.connect_reverse(kind="builtin", session=pc.Session.create("lab"))
    srv.wait_connected(timeout=60, quiet=True)
    with pytest.raises(ConfigError, match="give dataset= or path=, not both"):
        srv.view(dataset="cone", path=str(data))
    view = srv.view(path=str(data), width=320, height=240)
    assert view.dataset["name"] == str(data) and view.dataset["arrays"] == ["distance"]
    assert view.state["color"]["array"] == "distance"
    before = view.last_frame
    view.color_by("distance", colormap="magma")
    assert view.view_state["colormap"] == "magma"
    assert view.last_frame is not None and before is not None
    assert view.last_frame.data != before.data
    view.close()
    srv.stop(grace=5)
