"""``python -m paraconnect.servers._xvfb [--always] -- COMMAND ...``: run COMMAND under a
private Xvfb when there is no DISPLAY (or always).

Debian's ParaView has no EGL/OSMesa: without X, pvserver silently stops rendering (FACTS.md).
Xvfb picks its own display and reports it (``-displayfd``), so concurrent servers never race for
one; ``-noreset`` keeps it from regenerating when its last client leaves.  It listens on no TCP
port and on no socket path in /tmp/.X11-unix (which every local user may connect to): only on
Linux's abstract socket, which belongs to the network namespace, so that inside the agent's
private namespace (``tunnel/_netns``) no other user can reach the X server and its pictures.
COMMAND's exit status is passed on and Xvfb is stopped with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from paraconnect.servers._kinds_tie import tie_to_parent

STOP_GRACE = 5  # seconds the command has to end after SIGTERM before it is killed


def main(argv: list[str]) -> int:
    tie_to_parent()  # end with the agent, whatever kills it
    always = False
    while argv and argv[0] != "--":
        if argv[0] == "--always":
            always = True
        argv = argv[1:]
    command = argv[1:]
    if not command:
        print("paraconnect-xvfb: give the command after '--'", file=sys.stderr)
        return 2
    if command[0].endswith("pvserver") or "pvserver" in command:
        print(
            "paraconnect: pvserver serves one client; when it leaves, pvserver ends and a fresh "
            "one is started: ParaView state is not kept between clients",
            file=sys.stderr,
            flush=True,
        )
    if os.environ.get("DISPLAY") and not always:
        os.execvp(command[0], command)  # noqa: S606 - the user's own program, no shell
    read_end, write_end = os.pipe()
    try:
        xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp", "-nolisten", "unix",
             "-noreset",
             "-screen", "0", "1280x1024x24"],
            pass_fds=[write_end],
            preexec_fn=tie_to_parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
    except OSError as exc:
        print(
            f"paraconnect-xvfb: cannot start Xvfb ({exc.strerror}); install it (Debian: xvfb) "
            "or run with a DISPLAY",
            file=sys.stderr,
        )
        return 127
    os.close(write_end)
    number = b""
    while not number.endswith(b"\n"):
        chunk = os.read(read_end, 16)
        if not chunk:
            print("paraconnect-xvfb: Xvfb did not start", file=sys.stderr)
            xvfb.wait()
            return 1
        number += chunk
    os.close(read_end)
    env = {**os.environ, "DISPLAY": f":{number.decode().strip()}"}
    try:
        child = subprocess.Popen(command, env=env, preexec_fn=tie_to_parent)

        def stop(*_: object) -> None:
            child.terminate()
            # pvserver --rc ignores SIGTERM while it dials: without this, it and this wrapper
            # outlive whoever stopped them.
            signal.signal(signal.SIGALRM, lambda *_: child.kill())
            signal.alarm(STOP_GRACE)

        signal.signal(signal.SIGTERM, stop)
        code = child.wait()
    finally:
        xvfb.terminate()
        xvfb.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
