"""Look at data as a scientist would: colour by arrays with perceptual maps and a scalar bar,
representations, slice/clip/contour/threshold, time steps, camera presets, and a state JSON
that follows every change; through a real render server, checked by pixels and by the state.
The RemoteView test drives the same through the notebook widget's Python API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from paraconnect.errors import ConfigError
from paraconnect.render import RenderClient

from .helpers_render import (
    BACKGROUND,
    changed,
    colours,
    foreground,
    pixels,
    write_in_subprocess,
)
from .test_render_server import start_server

W, H = 240, 180


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    root = tmp_path_factory.mktemp("data")
    write_in_subprocess(root)
    log = tmp_path_factory.mktemp("render") / "server.log"
    with start_server(log, "--size", f"{W}x{H}", "--root", str(root)) as port:
        yield port, root


@pytest.fixture
def client(served: tuple[int, Path]) -> Iterator[RenderClient]:
    with RenderClient(port=served[0], timeout=60) as c:
        c.load(path="grid.vtu")
        c.camera(azimuth=30, elevation=20)
        yield c


def bar_region(img: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    """Where the scalar bar sits: the right edge of the view."""
    return img[int(H * 0.15) : int(H * 0.85), int(W * 0.86) : int(W * 0.92)]


def test_colour_by_arrays_maps_and_ranges(client: RenderClient) -> None:
    state = client.state()
    # The default: the first scalar array, sequential data -> viridis, its own range.
    assert state["color"] == {"array": "RTData", "association": "point", "component": None}
    assert state["colormap"] == "viridis" and state["range_mode"] == "auto"
    rt = next(a for a in state["arrays"] if a["name"] == "RTData")
    assert state["range"] == rt["range"] and rt["range"][0] > 0
    velocity = next(a for a in state["arrays"] if a["name"] == "velocity")
    assert velocity["components"] == 3 and len(velocity["component_ranges"]) == 3
    base = pixels(client)
    assert colours(base) > 50

    # pressure spans zero with both signs: the diverging map.
    state = client.request("color", array="pressure")["state"]
    assert state["colormap"] == "Cool to Warm" and state["range"] == [-5.0, 5.0]
    pressure = pixels(client)
    assert changed(base, pressure) > 0.1

    state = client.request("color", array="velocity", component="magnitude")["state"]
    assert state["color"]["component"] == "magnitude"
    magnitude = pixels(client)
    client.request("color", array="velocity", component=2)
    assert changed(magnitude, pixels(client)) > 0.05

    state = client.request("color", array="RTData", colormap="inferno", range=[100, 120])["state"]
    assert (state["colormap"], state["range"], state["range_mode"]) == (
        "inferno",
        [100.0, 120.0],
        "fixed",
    )
    assert changed(base, pixels(client)) > 0.1
    with pytest.raises(ConfigError, match="unknown colour map 'rainbow2'; use one of viridis"):
        client.request("color", array="RTData", colormap="rainbow2")
    with pytest.raises(ConfigError, match=r"no array 'nope'.*its arrays: RTData, pressure"):
        client.request("color", array="nope")

    client.request("color", array=None)
    solid = pixels(client)
    assert client.state()["color"] is None
    assert colours(solid[foreground(solid)]) < colours(base[foreground(base)]) / 2


def test_scalar_bar_axes_and_outline(client: RenderClient) -> None:
    with_bar = pixels(client)
    region = bar_region(with_bar)
    assert colours(region) > 20, "no scalar bar on the right"
    client.request("display", scalar_bar=False)
    without = bar_region(pixels(client))
    assert (np.abs(without - BACKGROUND).max(axis=2) > 12).mean() < 0.05
    client.request("display", scalar_bar=True)
    corner = (slice(int(H * 0.8), H), slice(0, int(W * 0.15)))
    plain = pixels(client)[corner]
    state = client.request("display", axes=True, outline=True)["state"]
    assert state["axes"] and state["outline"]
    assert changed(plain, pixels(client)[corner]) > 0.02, "no orientation axes in the corner"


def test_representations_and_volume(client: RenderClient) -> None:
    pictures = {}
    for rep in ("surface", "surface with edges", "wireframe", "points"):
        assert client.request("display", representation=rep)["state"]["representation"] == rep
        pictures[rep] = pixels(client)
    reps = list(pictures)
    for i, a in enumerate(reps):
        for b in reps[i + 1 :]:
            assert changed(pictures[a], pictures[b]) > 0.01, f"{a} looks like {b}"
    with pytest.raises(ConfigError, match="volume rendering needs image data"):
        client.request("display", representation="volume")
    client.load(path="image.vti")
    assert "volume" in client.state()["representations"]
    surface = pixels(client)
    client.request("display", representation="volume")
    volume = pixels(client)
    assert changed(surface, volume) > 0.1 and foreground(volume).mean() > 0.1


def test_filters_change_the_picture_and_clear(client: RenderClient) -> None:
    base = pixels(client)
    fg = foreground(base).mean()
    state = client.request("filter", action="slice", normal=[0, 0, 1])["state"]
    assert state["filters"] == [{"type": "slice", "origin": [0.0, 0.0, 0.0], "normal": [0, 0, 1]}]
    assert changed(base, pixels(client)) > 0.05
    client.request("filter", action="slice", origin=[0, 0, 3], normal=[0, 0, 1])
    assert len(client.state()["filters"]) == 1, "a second slice() should move the slice"
    client.request("filter", action="clear")
    clipped = client.request("filter", action="clip", normal=[1, 0, 0])["state"]
    assert clipped["filters"][0]["invert"] is False
    one_side = pixels(client)
    assert foreground(one_side).mean() < fg * 0.9
    client.request("filter", action="clip", normal=[1, 0, 0], invert=True)
    assert changed(one_side, pixels(client)) > 0.05
    client.request("filter", action="clear")
    contour = client.request("filter", action="contour", array="RTData", values=[150.0])
    assert contour["state"]["filters"][0]["values"] == [150.0]
    assert changed(base, pixels(client)) > 0.05
    client.request("filter", action="clear")
    client.request("filter", action="threshold", array="pressure", range=[-5, -1])
    assert foreground(pixels(client)).mean() < fg * 0.8
    state = client.request("filter", action="clear")["state"]
    assert state["filters"] == []
    assert changed(base, pixels(client)) < 0.01, "clearing did not bring the data back"


def test_default_contour_of_a_flat_field_is_seen_face_on(client: RenderClient) -> None:
    """The issue's blank .vti: its isosurface is a plane; the camera turns to face it."""
    client.load(path="edge_on.vti")
    client.camera(reset=True)  # looking down -z: the plane x = const is edge-on
    client.request("filter", action="contour")
    img = pixels(client)
    assert foreground(img).mean() > 0.2
    state = client.state()
    assert state["filters"][0]["values"] == [7.5]  # the median of 0..15
    position, focal = state["camera"]["position"], state["camera"]["focal_point"]
    assert abs(position[0] - focal[0]) > abs(position[2] - focal[2])


def test_time_steps(client: RenderClient) -> None:
    client.load(path="series.pvd")
    state = client.state()
    assert state["times"] == [0.0, 0.5, 1.0] and state["time"] == 0
    first = pixels(client)
    state = client.request("time", index=2)["state"]
    assert state["time"] == 2
    assert changed(first, pixels(client)) > 0.05
    client.request("time", index=0)
    assert changed(first, pixels(client)) < 0.01
    with pytest.raises(ConfigError, match=r"time step 5 does not exist.*steps 0 to 2"):
        client.request("time", index=5)


def test_camera_presets_pan_and_the_state_counter(client: RenderClient) -> None:
    versions = [client.state()["version"]]
    seen = {}
    for preset in ("+x", "-x", "+y", "+z"):
        state = client.request("camera", preset=preset)["state"]
        versions.append(state["version"])
        seen[preset] = pixels(client)
    assert versions == sorted(set(versions)), f"the counter did not grow: {versions}"
    for a, b in [("+x", "+y"), ("+x", "+z"), ("+y", "+z"), ("+x", "-x")]:
        assert changed(seen[a], seen[b]) > 0.01, f"{a} looks like {b}"
    cam = client.request("camera", preset="+x")["state"]["camera"]
    assert cam["position"][0] < cam["focal_point"][0], "+x looks along +X: the camera sits at -X"
    client.request("display", scalar_bar=False)
    before = foreground(pixels(client))
    client.request("camera", pan=[0.2, 0.0])
    after = foreground(pixels(client))
    cols_before, cols_after = np.nonzero(before)[1].mean(), np.nonzero(after)[1].mean()
    assert cols_after > cols_before + 0.1 * H, "panning right did not move the picture right"
    with pytest.raises(ConfigError, match="unknown preset 'x'"):
        client.request("camera", preset="x")


def test_remote_view_python_api(served: tuple[int, Path], tmp_path: Path) -> None:
    pytest.importorskip("anywidget")
    from paraconnect.render import RemoteView

    view = RemoteView(port=served[0], path="grid.vtu", width=W, height=H)
    try:
        first = view.last_frame
        assert first is not None and view.state["dataset"]["name"] == "grid.vtu"
        view.color_by("pressure", colormap="plasma", range=(-2, 2))
        assert view.view_state["colormap"] == "plasma" and view.view_state["range"] == [-2, 2]
        assert view.last_frame is not None and view.last_frame.number > first.number
        view.representation = "surface with edges"
        assert view.representation == "surface with edges"
        view.slice(normal=(0, 1, 0))
        view.clip(normal=(1, 0, 0), invert=True)
        view.contour(values=[0.0], array="pressure")
        view.threshold("RTData", 100, 200)
        assert [f["type"] for f in view.view_state["filters"]] == [
            "slice",
            "clip",
            "contour",
            "threshold",
        ]
        view.clear_filters()
        view.scalar_bar = False
        view.axes = True
        assert not view.scalar_bar and view.axes
        view.camera("+y", zoom=1.5, pan=(0.1, 0.1))
        view.load(path="series.pvd")
        assert view.times == [0.0, 0.5, 1.0]
        view.time = 2
        assert view.time == 2 and view.state["time"] == 2
        assert {e["name"] for e in view.files()["entries"]} >= {"series.pvd", "grid.vtu"}
        view.load(path="blocks.vtm")
        assert [b["name"] for b in view.blocks] == ["ball", "grid"]
        view.select_blocks([1])
        assert [b["selected"] for b in view.blocks] == [False, True]
        out = view.save_png(tmp_path / "view.png")
        with Image.open(out) as img:
            assert img.format == "PNG" and img.size == (W, H)
    finally:
        view.close()
