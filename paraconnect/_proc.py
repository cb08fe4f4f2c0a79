"""Ending a child process: ask, wait, then kill (the one copy of that dance)."""

from __future__ import annotations

import subprocess
from typing import Any

__all__ = ["end_process"]


def end_process(proc: subprocess.Popen[Any], grace: float) -> int:
    """Ask `proc` to end (SIGTERM), give it `grace` seconds, then kill it; its exit status."""
    proc.terminate()
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
