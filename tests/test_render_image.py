"""What the built-in renderer draws: a known scene against a committed reference picture (with a
tolerance), and properties a wrong renderer would fail.

Regenerate the reference (after a deliberate change of look) with
``PARACONNECT_REGENERATE_REFERENCE=1 pytest tests/test_render_image.py`` and look at it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from paraconnect.render import RenderClient

from .test_render_server import start_server

REFERENCE = Path(__file__).parent / "data" / "render_cone_320x240.png"
BACKGROUND = np.array([28, 31, 38])  # the scene's background, (0.11, 0.12, 0.15) * 255


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RenderClient]:
    with (
        start_server(tmp_path_factory.mktemp("render") / "server.log") as port,
        RenderClient(port=port, timeout=30) as c,
    ):
        yield c


def pixels(c: RenderClient) -> npt.NDArray[np.int16]:
    frame = c.render(format="png")
    return np.asarray(Image.open(io.BytesIO(frame.data)).convert("RGB"), dtype=np.int16)


def foreground(img: npt.NDArray[np.int16]) -> npt.NDArray[np.bool_]:
    return np.abs(img - BACKGROUND).max(axis=2) > 12  # type: ignore[no-any-return]


def known_scene(c: RenderClient) -> npt.NDArray[np.int16]:
    c.resize(320, 240)
    c.load("cone")
    c.camera(reset=True)
    c.camera(azimuth=30, elevation=20)
    return pixels(c)


def test_matches_the_reference_picture(client: RenderClient) -> None:
    img = known_scene(client)
    if os.environ.get("PARACONNECT_REGENERATE_REFERENCE"):
        REFERENCE.parent.mkdir(exist_ok=True)
        Image.fromarray(img.astype(np.uint8)).save(REFERENCE, optimize=True)
    ref = np.asarray(Image.open(REFERENCE).convert("RGB"), dtype=np.int16)
    assert img.shape == ref.shape == (240, 320, 3)
    diff = np.abs(img - ref)
    # GPUs and Mesa versions shade edges a little differently: a tolerance, not byte equality.
    assert diff.mean() < 3.0, f"mean difference {diff.mean():.2f} per channel"
    assert (diff.max(axis=2) > 48).mean() < 0.02, "more than 2% of pixels differ clearly"


def test_properties_a_wrong_renderer_would_fail(client: RenderClient) -> None:
    img = known_scene(client)
    fg = foreground(img)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20, "the picture is (almost) one colour"
    assert fg[120, 160], "nothing drawn in the middle"
    assert not fg[:8, :8].any() and not fg[-8:, -8:].any(), "the corners are not background"
    assert 0.05 < fg.mean() < 0.6, f"the cone covers {fg.mean():.0%} of the picture"
    rows, cols = np.nonzero(fg)
    assert abs(rows.mean() - 120) < 40 and abs(cols.mean() - 160) < 50, "the cone is off-centre"

    client.camera(azimuth=90)
    turned = pixels(client)
    assert (np.abs(turned - img).max(axis=2) > 30).mean() > 0.05, "rotating changed nothing"

    client.camera(azimuth=-90)
    assert np.abs(pixels(client) - img).mean() < 1.0, "turning back did not restore the view"

    client.camera(zoom=0.5)
    small = foreground(pixels(client)).mean()
    client.camera(zoom=4.0)
    big = foreground(pixels(client)).mean()
    assert small < fg.mean() / 2.5, f"zooming out: {small:.1%} vs {fg.mean():.1%}"
    assert big > fg.mean() * 2.0, f"zooming in: {big:.1%} vs {fg.mean():.1%}"

    client.camera(reset=True)
    client.camera(azimuth=30, elevation=20)
    assert np.abs(pixels(client) - img).mean() < 1.0, "reset did not return to the known view"


def test_wavelet_and_sphere_draw_something(client: RenderClient) -> None:
    client.resize(160, 120)
    for name in ("wavelet", "sphere"):
        client.load(name)
        fg = foreground(pixels(client))
        assert fg[60, 80] and 0.05 < fg.mean() < 0.8, name
