"""Shared pieces of the hub tests: a hub on its own loop thread over the test's data directory,
and a check that a frame came through as the built-in renderer's reference picture."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from paraconnect.hub import Hub, ServerEvent
from paraconnect.render import RenderClient

from .test_render_image import REFERENCE, known_scene


class Events:
    """Every event a hub published (callbacks run on the hub's thread): server state changes
    in `seen`, everything (phone home, connections, refusals, credentials) in `all`."""

    def __init__(self) -> None:
        self.seen: list[ServerEvent] = []
        self.all: list[dict[str, object]] = []

    def __call__(self, event: dict[str, object]) -> None:
        self.all.append(event)
        if event["event"] == "server":
            fields = {k: v for k, v in event.items() if k != "event"}
            self.seen.append(ServerEvent(**fields))  # type: ignore[arg-type]

    def states(self, server_id: str) -> list[str]:
        out: list[str] = []
        for e in self.seen:
            if e.server_id == server_id and (not out or out[-1] != e.state):
                out.append(e.state)
        return out


@contextlib.contextmanager
def running_hub(home: Path, **kw: object) -> Iterator[tuple[Hub, Events]]:
    hub = Hub(home, **kw)  # type: ignore[arg-type]
    events = Events()
    hub.subscribe(events)  # before it starts: re-adoption is announced at start
    hub.start_in_thread()
    try:
        yield hub, events
    finally:
        with contextlib.suppress(Exception):
            for info in hub.call(hub.servers):
                if info.state not in ("stopped", "failed"):
                    hub.call(hub.stop, info.id, 2.0)
        hub.stop_thread()


def check_frame(port: int) -> None:
    """The reference scene, rendered behind the hub and fetched through its local endpoint."""
    from PIL import Image

    with RenderClient(port=port, timeout=60) as c:
        img = known_scene(c)
    ref = np.asarray(Image.open(REFERENCE).convert("RGB"), dtype=np.int16)
    assert img.shape == ref.shape == (240, 320, 3)
    diff = np.abs(img - ref)
    assert diff.mean() < 3.0, f"mean difference {diff.mean():.2f} per channel"
