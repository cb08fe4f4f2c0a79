"""Shared scenes and viewer flow control in the built-in render server, over real sockets.

The notebook's kernel and the browser showing its view are two connections to one scene
(``hello``'s ``scene``): what the kernel changes, the browser's stream shows.  A viewer's stream
with a ``window`` never runs ahead of what it acknowledged, and frames made while the camera is
interactive use the drag quality, the still after the drag the full one.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paraconnect.render import RenderClient
from paraconnect.render import _protocol as P

from .test_render_server import Raw, start_server

pytest.importorskip("vtk")


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with start_server(tmp_path_factory.mktemp("render") / "server.log", "--size", "96x72") as p:
        yield p


class Viewer(Raw):
    """A browser's connection, as the view's front end speaks it."""

    def __init__(self, port: int, scene: str | None) -> None:
        super().__init__(port)
        hello: dict[str, Any] = {"op": "hello", "v": P.VERSION}
        if scene is not None:
            hello["scene"] = scene
        self.send(hello)
        assert self.next()["op"] == "hello"

    def next(self) -> dict[str, Any]:
        msg = self.recv()
        assert msg is not None, "the server closed the connection"
        self.last_payload = msg.payload
        return msg.header

    def until_reply(self, rid: int) -> list[P.Message]:
        """Every message up to and including the reply with id `rid`."""
        got = []
        while True:
            msg = self.recv()
            assert msg is not None
            got.append(msg)
            if msg.header.get("id") == rid:
                return got


def png(client: RenderClient) -> bytes:
    return client.render("png").data


def test_connections_naming_a_scene_share_it_and_others_do_not(port: int) -> None:
    name = secrets.token_urlsafe(12)
    with RenderClient(port=port, scene=name) as kernel, RenderClient(port=port) as private:
        kernel.load("wavelet")
        private.load("wavelet")
        before = png(kernel)
        assert png(private) == before  # the same dataset and camera: the same picture

        viewer = Viewer(port, name)
        viewer.send({"op": "stream", "fps": 0, "format": "png", "id": 1})
        assert viewer.next() == {"op": "ok", "id": 1}
        first = viewer.next()
        assert first["op"] == "frame" and first["stream"] and viewer.last_payload == before
        viewer.send({"op": "ack", "n": first["n"]})

        # The kernel turns the camera: the browser's stream shows it without asking.
        kernel.camera(azimuth=90)
        turned = png(kernel)
        assert turned != before
        frame = viewer.next()
        assert frame["op"] == "frame" and frame["stream"] and viewer.last_payload == turned
        # The connection without the name keeps its own scene.
        assert png(private) == before
        viewer.close()

        # The scene outlives one of its connections, and a newcomer joins it as it is.
        with RenderClient(port=port, scene=name) as late:
            assert png(late) == turned
    # Once every connection left, the name starts a fresh scene.
    with RenderClient(port=port, scene=name) as fresh:
        fresh.load("wavelet")
        assert png(fresh) == before


def test_a_window_holds_frames_until_acknowledged_and_folds_changes(port: int) -> None:
    name = secrets.token_urlsafe(12)
    with RenderClient(port=port, scene=name) as kernel:
        kernel.load("wavelet")
        viewer = Viewer(port, name)
        viewer.send({"op": "stream", "fps": 0, "format": "png", "window": 1, "id": 1})
        assert viewer.next() == {"op": "ok", "id": 1}
        first = viewer.next()
        assert first["op"] == "frame"
        # Five changes while frame 1 is not acknowledged: nothing more may be sent.
        for _ in range(5):
            kernel.camera(azimuth=15)
        final = png(kernel)
        viewer.send({"op": "stop", "id": 2})  # its reply comes after the last stream frame
        held = [m.header for m in viewer.until_reply(2)]
        assert [h["op"] for h in held] == ["ok"], held

        # Streaming again with the ack: one frame, of the final state, then nothing queued.
        viewer.send({"op": "stream", "fps": 0, "format": "png", "window": 1, "id": 3})
        assert viewer.next() == {"op": "ok", "id": 3}
        frame = viewer.next()
        assert viewer.last_payload == final
        viewer.send({"op": "ack", "n": frame["n"]})
        for _ in range(3):
            kernel.camera(azimuth=10)
        after = png(kernel)
        got = viewer.next()  # woken by the changes after the ack: the newest state
        viewer.send({"op": "ack", "n": got["n"]})
        frames = [got]
        payloads = [viewer.last_payload]
        viewer.send({"op": "stop", "id": 4})
        for msg in viewer.until_reply(4)[:-1]:
            frames.append(msg.header)
            payloads.append(msg.payload)
        # At most one more (changes that came while the first was in flight), and the last
        # one shown is the newest state: no backlog of stale frames.
        assert len(frames) <= 2, frames
        assert payloads[-1] == after
        viewer.close()


def test_drag_quality_while_interactive_and_a_full_still_after(port: int) -> None:
    name = secrets.token_urlsafe(12)
    with RenderClient(port=port, scene=name) as kernel:
        kernel.load("sphere")
        viewer = Viewer(port, name)
        viewer.send({
            "op": "stream", "fps": 0, "format": "jpeg", "quality": 92, "drag_quality": 35,
            "drag_scale": 0.5, "window": 1, "id": 1,
        })  # fmt: skip
        assert viewer.next() == {"op": "ok", "id": 1}
        still = viewer.next()
        assert still["quality"] == 92 and (still["w"], still["h"]) == (96, 72)
        viewer.send({"op": "ack", "n": still["n"]})
        viewer.send({"op": "camera", "azimuth": 20, "interactive": True, "id": 2})
        assert viewer.next() == {"op": "ok", "id": 2}
        dragged = viewer.next()
        assert dragged["op"] == "frame" and dragged["quality"] == 35
        assert (dragged["w"], dragged["h"]) == (48, 36)  # drag_scale: half of each side
        assert dragged["input"] == 2  # the request it shows: the viewer can drop older ones
        # The kernel's picture, meanwhile, is the view's full size; so is the view's state.
        assert kernel.render(format="png").width == 96
        assert kernel.state()["size"] == [96, 72]
        dragged_size = len(viewer.last_payload)
        viewer.send({"op": "ack", "n": dragged["n"]})
        viewer.send({"op": "camera", "interactive": False, "id": 3})  # the pointer is up
        assert viewer.next() == {"op": "ok", "id": 3}
        final = viewer.next()
        assert final["op"] == "frame" and final["quality"] == 92 and final["input"] == 3
        assert (final["w"], final["h"]) == (96, 72)
        assert len(viewer.last_payload) > dragged_size  # the same picture, finer
        viewer.send({"op": "ack", "n": final["n"]})

        # "auto": the server's rule for the view's size (half of each side above 640x480).
        viewer.send({"op": "stop", "id": 4})
        viewer.until_reply(4)
        kernel.resize(800, 600)
        viewer.send({"op": "stream", "fps": 0, "drag_scale": "auto", "window": 1, "id": 5})
        assert viewer.next() == {"op": "ok", "id": 5}
        viewer.send({"op": "ack", "n": viewer.next()["n"]})
        viewer.send({"op": "camera", "azimuth": 20, "interactive": True, "id": 6})
        assert viewer.next() == {"op": "ok", "id": 6}
        auto = viewer.next()
        assert (auto["w"], auto["h"], auto["input"]) == (400, 300, 6)
        viewer.close()


def test_bad_scene_names_and_acks_are_refused(port: int, tmp_path: Path) -> None:
    for bad in ("short", "x" * 65, "../etc/passwd", 12345678):
        raw = Raw(port)
        raw.send({"op": "hello", "v": P.VERSION, "scene": bad})
        msg = raw.recv()
        assert msg is not None and msg.header["op"] == "error" and msg.header["fatal"]
        assert "'scene'" in msg.header["message"]
        raw.close()
    viewer = Viewer(port, None)
    viewer.send({"op": "ack", "n": -1, "id": 5})
    err = viewer.next()
    assert err["op"] == "error" and not err["fatal"] and err["id"] == 5
    viewer.send({"op": "stream", "window": 65, "id": 6})
    err = viewer.next()
    assert err["op"] == "error" and "'window'" in err["message"]
    for bad in (0, 1.5, "half", None):
        viewer.send({"op": "stream", "drag_scale": bad, "id": 7})
        err = viewer.next()
        assert err["op"] == "error" and "'drag_scale'" in err["message"], (bad, err)
    viewer.close()
