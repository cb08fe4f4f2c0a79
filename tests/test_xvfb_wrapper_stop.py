"""The Xvfb wrapper of the pvserver kind ends what it runs when told to stop, also a program
that ignores SIGTERM as pvserver --rc does while it dials: neither outlives the stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from .helpers_peers import require_programs

pytestmark = [pytest.mark.timeout(60)]
require_programs("Xvfb")

STUBBORN = (
    "import os, signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print(os.getpid(), flush=True)\n"
    "time.sleep(120)\n"
)


def test_a_program_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    wrapper = subprocess.Popen(
        [sys.executable, "-m", "paraconnect.servers._xvfb", "--always", "--",
         sys.executable, "-c", STUBBORN],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert wrapper.stdout is not None
        child = int(wrapper.stdout.readline())
        wrapper.send_signal(signal.SIGTERM)
        wrapper.wait(timeout=30)  # the grace is 5 s; before the fix it waited for ever
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
        if wrapper.stdout is not None:
            wrapper.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the program outlived its wrapper")
