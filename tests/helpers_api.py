"""Fixtures for the notebook API and widget tests: the process's API runtime on the test's data
directory, with a hub embedded in this process (what a kernel gets when no Jupyter hub runs),
closed after the test (which stops the servers it launched)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import paraconnect as pc
from paraconnect._runtime import runtime
from paraconnect.api import Hub


@pytest.fixture
def api_hub(home: Path) -> Iterator[Hub]:
    rt = runtime(home)
    assert rt.embedded
    try:
        yield pc.connect_hub(home)
    finally:
        rt.close()
