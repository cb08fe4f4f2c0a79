"""The README's first screen, as a scientist meets it: what paraconnect is, the demo's picture,
the install line for an existing JupyterLab, the repository's two commands, a five-line example
that needs no cluster, and links that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
pytest_plugins = ["tests.helpers_api"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def test_first_screen_in_order() -> None:
    lines = README.splitlines()
    assert lines[0] == "# paraconnect"
    blocks = list(FENCE.finditer(README))
    first_sh = next(b for b in blocks if b.group(1) == "sh")
    # The first commands of all: exactly the demo and the whole test suite.
    assert blocks[0] is first_sh
    commands = [ln.split("#")[0].strip() for ln in first_sh.group(2).splitlines()]
    assert commands == ["make demo", "make test"]
    before = README[: first_sh.start()]
    assert "JupyterLab" in before.split("\n\n")[1]  # the sentence that says what it is
    assert 'pip install "paraconnect[jupyter,render]"' in before
    picture = re.search(r"!\[[^\]]+\]\(([^)]+)\)", before)
    assert picture is not None, "no picture before the commands"
    png = REPO / picture.group(1)
    with Image.open(png) as img:
        assert img.format == "PNG"
        # Colour-mapped, not one flat colour on a background.
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


def test_the_laptop_example_is_five_lines_without_a_cluster() -> None:
    example = next(b.group(2) for b in FENCE.finditer(README) if b.group(1) == "python")
    code = [ln for ln in example.splitlines() if ln.strip()]
    assert len(code) == 5, code
    assert 'launcher="local"' in example and "slurm" not in example.lower()
    compile(example, "README example", "exec")


def test_next_steps_and_troubleshooting() -> None:
    for words in ("## Next steps", "ssh", "Slurm", "pvserver", "friend", "paraconnect debug"):
        assert words in README, words
    # Which of the mission's packages are core, said where users look.
    assert re.search(r"jupyter-server, pyzmq and ipywidgets\*\*, which are core", README)


def test_local_links_lead_somewhere() -> None:
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert "docs/architecture.md" in local
    missing = [t for t in local if not (REPO / t).exists()]
    assert not missing, missing


def test_the_laptop_example_runs(api_hub: object) -> None:
    """The five lines, as they stand in the README, against a hub on this machine: a session
    made, a renderer that phones home, a view that shows a picture."""
    pytest.importorskip("vtk")
    import paraconnect as pc

    example = next(b.group(2) for b in FENCE.finditer(README) if b.group(1) == "python")
    scope: dict[str, object] = {}
    exec(compile(example, "README example", "exec"), scope)  # noqa: S102 - our own README
    srv = scope["srv"]
    assert isinstance(srv, pc.Server) and srv.info["state"] == "connected"
    view = srv.view(dataset="wavelet", width=160, height=120)
    try:
        assert view.last_frame is not None and view.last_frame.data
        assert view.state["color"]["array"] == "RTData"  # coloured by its array, not flat
    finally:
        view.close()
        srv.stop(grace=5)
