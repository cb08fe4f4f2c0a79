"""A `paraconnect hub` process for the API and notebook tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .conftest import PARACONNECT


def start_hub(home: Path) -> subprocess.Popen[str]:
    """`paraconnect hub` on `home`, once it serves (what a Jupyter server's hub is to kernels)."""
    env = {**os.environ, "PARACONNECT_HOME": str(home)}
    proc = subprocess.Popen(
        [PARACONNECT, "hub", "--json"], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and '"ready"' in proc.stdout.readline()
    return proc


def stop_hub(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(30)
    if proc.stdout is not None:
        proc.stdout.close()
