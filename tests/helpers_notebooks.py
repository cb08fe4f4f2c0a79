"""Run a notebook of notebooks/ headless (nbclient, a real kernel) in a working directory, with
extra environment for its kernel; a failing cell fails the test with the cell's traceback.

The notebooks are committed with the outputs of such a run (so they read well on a web page):
``python -m tests.helpers_notebooks [NAME ...]`` runs them here as the tests do (a fresh data
directory and working directory each, a Slurm of its own for 04) and writes them back.
:func:`same_outputs` is how a test checks that the committed outputs are what a run produces:
text with its volatile parts (ids, ports, paths, fingerprints, numbers) masked, pictures by
type and rough size, widgets by kind.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str, cwd: Path, timeout: int = 180) -> Any:
    """Run notebooks/`name` in `cwd` with this process's environment; the executed notebook."""
    import nbclient
    import nbformat

    # jupyter_core warns (DeprecationWarning, an error here) unless told to use platformdirs.
    os.environ["JUPYTER_PLATFORM_DIRS"] = "1"
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        book, timeout=timeout, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(cwd)}},
    )  # fmt: skip
    client.execute()
    return book


def run_notebook(
    name: str, cwd: Path, monkeypatch: pytest.MonkeyPatch, timeout: int = 180, **env: str
) -> Any:
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    book = execute(name, cwd, timeout)
    assert os.environ["PARACONNECT_HOME"]  # the test's own data directory, never the user's
    return book


def outputs(book: Any) -> str:
    """Every text output of the executed notebook, for asserts on what it printed."""
    text = []
    for cell in book.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", ""))  # stdout and stderr streams
            text.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


# -- comparing a run with the committed outputs -----------------------------------------------

_MASKS = [
    (re.compile(r"base64,[A-Za-z0-9+/=]+"), "base64,DATA"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?"), "ADDR"),
    (re.compile(r"(?<![\w:/])/(?:[\w.+@-]+/)*[\w.+@-]+"), "PATH"),
    (re.compile(r"\b[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){7,}\b"), "FINGERPRINT"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{6,}\b"), "HEX"),
    (re.compile(r"\d+"), "N"),
    (re.compile(r"\bOverwriting\b"), "Writing"),  # %%writefile run twice in one folder
]
# wait_connected prints each state it sees; how many of the quick ones it sees is timing.
_PASSING = re.compile(r"^\S+: (submitted|starting|waiting|idle) \(.*$\n?", re.MULTILINE)


def mask(text: str) -> str:
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return _PASSING.sub("", text)


def _summary(out: dict[str, Any]) -> list[tuple[str, Any]]:
    kind = out["output_type"]
    if kind == "stream":
        return [(f"stream:{out['name']}", mask(out["text"]))]
    if kind == "error":
        return [("error", out["ename"])]
    data = out.get("data", {})
    if "application/vnd.jupyter.widget-view+json" in data:
        # A widget: its live state is in the notebook's metadata; its text repr is timing.
        return [("widget", "application/vnd.jupyter.widget-view+json")]
    if len(data) > 1:
        # What a web page shows is the richer one; the text repr beside it is for terminals.
        data = {mime: value for mime, value in data.items() if mime != "text/plain"}
    found: list[tuple[str, Any]] = []
    for mime, value in sorted(data.items()):
        if mime.startswith("image/"):
            found.append((mime, len(base64.b64decode(value))))
        else:
            found.append((mime, mask(value if isinstance(value, str) else "".join(value))))
    return found


def _merged(outs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each stream's writes as one output, stderr first, then the rest in order: where the
    kernel cuts a stream, and how it interleaves stdout and stderr, is timing."""
    streams: dict[str, str] = {}
    rest = []
    for out in outs:
        if out["output_type"] == "stream":
            streams[out["name"]] = streams.get(out["name"], "") + out["text"]
        else:
            rest.append(out)
    merged = [{"output_type": "stream", "name": n, "text": t} for n, t in sorted(streams.items())]
    return merged + rest


def summaries(book: Any) -> list[list[tuple[str, Any]]]:
    return [
        [item for out in _merged(cell.get("outputs", [])) for item in _summary(out)]
        for cell in book.cells
        if cell.cell_type == "code"
    ]


def same_outputs(name: str, book: Any) -> None:
    """Assert that the run `book` produced what notebooks/`name` holds: the same outputs,
    cell by cell, volatile parts masked; pictures of the same type within half to twice the
    committed size."""
    import nbformat

    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    want, got = summaries(committed), summaries(book)
    assert len(want) == len(got)
    for number, (expected, actual) in enumerate(zip(want, got, strict=True), 1):
        where = f"{name}, code cell {number}"
        assert [k for k, _ in actual] == [k for k, _ in expected], where
        for (kind, value), (_, was) in zip(actual, expected, strict=True):
            if kind.startswith("image/"):
                assert was / 2 <= value <= was * 2, f"{where}: {kind} of {value} bytes, was {was}"
            else:
                assert value == was, (
                    f"{where}: {kind} differs\n--- committed\n{was}\n--- run\n{value}"
                )


# -- writing the committed outputs ------------------------------------------------------------


@contextlib.contextmanager
def _fresh(env: dict[str, str]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pc-nb-") as folder:
        work, home = Path(folder, "work"), Path(folder, "home")
        work.mkdir()
        saved = dict(os.environ)
        os.environ.update(PARACONNECT_HOME=str(home), **env)
        os.environ.pop("DISPLAY", None)  # as the tests run them: no screen
        try:
            yield work
        finally:
            os.environ.clear()
            os.environ.update(saved)


def write(name: str, env: dict[str, str] | None = None) -> None:
    import nbformat

    with _fresh(env or {}) as work:
        book = execute(name, work, timeout=300)
    for cell in book.cells:
        cell.get("metadata", {}).pop("execution", None)
    nbformat.write(book, NOTEBOOKS / name)
    print(f"wrote {NOTEBOOKS / name}")


def main(names: list[str]) -> None:
    for name in names or sorted(p.name for p in NOTEBOOKS.glob("0*.ipynb")):
        if name.startswith("04"):
            from tests.fixtures_slurm import start_slurm

            with (
                tempfile.TemporaryDirectory(prefix="pcs-") as folder,
                start_slurm(Path(folder)) as cluster,
            ):
                write(name, {
                    "PARACONNECT_SLURM_CONF": str(cluster.conf),
                    "PARACONNECT_SLURM_PARTITION": cluster.partition,
                    "PARACONNECT_SLURM_JOB_ROOT": str(Path(folder, "jobs")),
                })  # fmt: skip
        else:
            write(name)


if __name__ == "__main__":
    main(sys.argv[1:])
