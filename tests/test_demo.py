"""The README's demo command: a session, the built-in renderer phoning home, a picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image


def test_demo_delivers_a_picture_through_the_tunnel(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "picture.png"
    res = cli("demo", "--out", str(out), "--dataset", "sphere")
    assert res.returncode == 0, res
    assert "the server phoned home: server 'render-node'" in res.stdout
    assert "done: a session, a server that phoned home, and a picture" in res.stdout
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (640, 480)
        rgb = img.convert("RGB")
        corner = rgb.getpixel((2, 2))
        centre = rgb.getpixel((320, 240))
        # A rendered object in the middle on a plain background, not an empty or noisy frame.
        assert centre != corner
        assert rgb.getpixel((637, 477)) == corner
        assert len(rgb.getcolors(maxcolors=1 << 20) or []) > 50
    # The demo cleans up after itself: no data directory or process is left behind.
    assert "kept" not in res.stdout
