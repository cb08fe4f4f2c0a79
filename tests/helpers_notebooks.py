"""Run a notebook of notebooks/ headless (nbclient) in a working directory, with extra
environment for its kernel; a failing cell fails the test with the cell's traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run_notebook(
    name: str, cwd: Path, monkeypatch: pytest.MonkeyPatch, timeout: int = 180, **env: str
) -> object:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # jupyter_core warns (DeprecationWarning, an error here) unless told to use platformdirs.
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        book, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    assert os.environ["PARACONNECT_HOME"]  # the test's own data directory, never the user's
    return book


def outputs(book: object) -> str:
    """Every text output of the executed notebook, for asserts on what it printed."""
    text = []
    for cell in book.cells:  # type: ignore[attr-defined]
        for out in cell.get("outputs", []):
            text.append(out.get("text", ""))  # stdout and stderr streams
            text.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)
