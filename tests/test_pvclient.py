"""srv.paraview() and srv.view() on a pvserver: Debian's pvserver behind the hub, a pvpython
client started beside the kernel that runs paraview.simple code from the notebook, keeps its
pipeline between calls, raises the client's errors here, and serves its render view to a
RemoteView over paraconnect.render's frame protocol."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import paraconnect as pc
from paraconnect.api import Hub
from paraconnect.errors import NetworkError

from .helpers_leg import other_connects_unix, other_user_fixture  # noqa: F401 (other_user)
from .helpers_peers import require_programs

pytest.importorskip("anywidget")
pytest_plugins = ["tests.helpers_api"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(150),
]
require_programs("pvserver", "pvpython", "Xvfb")

RED_SPHERE = """
sphere = simple.Sphere(ThetaResolution=48, PhiResolution=48, Radius=0.5)
shown = simple.Show(sphere)
shown.AmbientColor = shown.DiffuseColor = [1.0, 0.0, 0.0]
view = simple.GetActiveViewOrCreate("RenderView")
view.UseColorPaletteForBackground = 0  # 5.11: else the palette wins
view.Background = [0.0, 0.0, 0.0]
view.OrientationAxesVisibility = 0
view.ResetCamera()
sphere.GetDataInformation().GetNumberOfPoints()
"""


def _rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_paraview_runs_code_keeps_state_and_raises_readable_errors(
    api_hub: Hub, other_user: str
) -> None:
    srv = pc.connect_reverse(
        kind="pvserver", session=pc.Session.create("lab"), options={"xvfb": "always"}
    )
    srv.wait_connected(timeout=90, quiet=True)
    pv = srv.paraview()
    assert pv.partitions == 1 and pv.version.startswith("5.")
    # Its sockets (the control line that carries code to run, the frames) are this user's
    # alone: another local user is refused at the directory.
    sockets = [pv.frames, str(Path(pv.frames).with_name("control"))]
    assert all(os.path.exists(p) for p in sockets), sockets
    tried = other_connects_unix(other_user, sockets)
    assert all("Permission denied" in why for why in tried.values()), tried
    assert pv(RED_SPHERE) == 48 * 46 + 2  # plain data comes back as itself
    assert srv.paraview() is pv  # one client per server, kept while it lives
    # The pipeline lives on in the client between calls.
    assert pv("sphere.Radius") == [0.5] or pv("sphere.Radius") == 0.5
    with pytest.raises(AttributeError) as err:
        pv("x = 1\nsimple.NoSuchFilter(Input=sphere)")
    assert isinstance(err.value, pc.ParaconnectError)
    assert "NoSuchFilter" in str(err.value) and "line 2: simple.NoSuchFilter" in str(err.value)
    assert "Traceback" in err.value.remote_traceback  # type: ignore[attr-defined]
    with pytest.raises(SyntaxError, match="line 1"):
        pv("simple.Show(")
    assert pv("sphere.GetDataInformation().GetNumberOfPoints()") == 48 * 46 + 2

    # The view shows the client's pipeline: a red sphere on black; the wheel zooms out.
    view = srv.view(width=320, height=240)
    first = view.last_frame
    assert first is not None and (first.width, first.height) == (320, 240)
    img = _rgb(first.data)
    centre, corner = img[120, 160], img[5, 5]
    assert centre[0] > 150 and centre[1] < 60 and centre[2] < 60, centre
    assert corner.max() < 30, corner
    view._handle_custom_msg({"type": "wheel", "delta": 400}, [])  # away: the sphere shrinks
    smaller = view.last_frame
    assert smaller is not None and smaller.number > first.number
    red = lambda frame: int((_rgb(frame.data)[:, :, 0] > 150).sum())  # noqa: E731
    assert red(smaller) < red(first) * 0.8, (red(smaller), red(first))
    view.close()

    srv.stop(grace=5)
    assert not pv.alive
    with pytest.raises(NetworkError, match="has ended"):
        pv("1 + 1")
