"""Run a command under its own Xvfb: ``python tests/helpers_xvfb.py COMMAND ARGS...``.

Xvfb picks a free display itself and reports it (``-displayfd``), so concurrent runs never race
for the same display the way ``xvfb-run -a`` can (FACTS.md).  ``-noreset``: by default an X
server regenerates when its last client disconnects, and a program (pvserver probes the display
at start) that connects again during the regeneration fails with "bad X server connection".
The command's exit status is passed on; Xvfb is stopped when the command ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main() -> int:
    read_end, write_end = os.pipe()
    xvfb = subprocess.Popen(
        [
            "Xvfb",
            "-displayfd",
            str(write_end),
            "-nolisten",
            "tcp",
            "-noreset",
            "-screen",
            "0",
            "1280x1024x24",
        ],
        pass_fds=[write_end],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    number = b""
    while not number.endswith(b"\n"):
        chunk = os.read(read_end, 16)
        if not chunk:
            print("helpers_xvfb: Xvfb did not start", file=sys.stderr)
            return 1
        number += chunk
    os.close(read_end)
    env = {**os.environ, "DISPLAY": f":{number.decode().strip()}"}
    try:
        child = subprocess.Popen(sys.argv[1:], env=env)
        signal.signal(signal.SIGTERM, lambda *_: child.terminate())
        code = child.wait()
    finally:
        xvfb.terminate()
        xvfb.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
