"""Tie a process to its parent's life: the wrappers of the kinds (``_xvfb``, ``_kinds_probe``,
``_kinds_pvrc``) call `tie_to_parent` for themselves and in their children (Xvfb, pvserver), so
a wrapper killed with SIGKILL takes them along. The agent ties the wrapper itself to the agent
(paraconnect.tunnel's Program does so for every program it starts). Linux only; elsewhere it
does nothing. ``python -m paraconnect.servers._kinds_tie -- COMMAND`` is the same as a wrapper.
The wrappers that relay a connection (``_kinds_probe``, ``_kinds_pvrc``, and ``paraconnect pvsc``'s
relay) share `pump_both` too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading

PR_SET_PDEATHSIG = 1


def tie_to_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel for `sig` when our parent dies (best effort; Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return


def pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy `src` to `dst` until `src` ends, then end `dst`'s sending side (a relay thread)."""
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def pump_both(a: socket.socket, b: socket.socket) -> None:
    """Relay `a` and `b` both ways, a thread each way, until both directions have ended."""
    threads = [
        threading.Thread(target=pump, args=(a, b), daemon=True),
        threading.Thread(target=pump, args=(b, a), daemon=True),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--":
        print("usage: python -m paraconnect.servers._kinds_tie -- COMMAND ...", file=sys.stderr)
        return 2
    parent = os.getppid()
    tie_to_parent()
    if os.getppid() != parent:  # the parent died before the tie took effect
        return 1
    os.execvp(argv[1], argv[1:])  # noqa: S606 - the kind's own command line, no shell


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
