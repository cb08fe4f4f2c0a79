"""``python -m paraconnect.servers._kinds_pvrc --unix PATH -- COMMAND ...``: the hardened
pvserver leg (``--pv-reverse``), where nothing listens on the remote host's network at all.

Debian's pvserver binds 0.0.0.0 and has no bind option.  With ``--rc --client-host=127.0.0.1
--server-port=Q`` it instead DIALS a loopback port, so this bridge listens on the agent's
private leg (a Unix socket in a 0700 directory), and for each connection the agent makes there
(one per client) it listens on 127.0.0.1:Q (this user only), starts COMMAND with ``{rc_port}``
replaced by Q, takes pvserver's connection and splices the two.  A fresh pvserver per client:
ParaView state is not kept between clients.

ParaView's handshake depends on TCP direction: pvserver connected, so the client end must be
the accepting one (``pvpython`` with ``simple.ReverseConnect(port)``), which the hub then dials
(:meth:`paraconnect.hub.Hub.dial_client`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from paraconnect._proc import end_process
from paraconnect.servers._kinds_tie import pump_both, tie_to_parent

ACCEPT_TIMEOUT = 60.0


def _same_user(sock: socket.socket) -> bool:
    from paraconnect.tunnel import peer_uid

    try:
        return peer_uid(sock) == os.getuid()
    except OSError:
        return False


def serve_one(agent: socket.socket, command: list[str]) -> None:
    rc = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    rc.bind(("127.0.0.1", 0))
    rc.listen(1)
    rc.settimeout(ACCEPT_TIMEOUT)
    port = rc.getsockname()[1]
    argv = [a.replace("{rc_port}", str(port)) for a in command]
    proc = subprocess.Popen(argv, preexec_fn=tie_to_parent)
    pv: socket.socket | None = None
    try:
        while pv is None:
            try:
                conn, _addr = rc.accept()
            except TimeoutError:
                print(
                    f"paraconnect-pvrc: pvserver did not dial 127.0.0.1:{port} within "
                    f"{ACCEPT_TIMEOUT:g} s",
                    file=sys.stderr,
                    flush=True,
                )
                return
            if _same_user(conn):
                pv = conn
            else:
                conn.close()  # another user's stray connection: never spliced to a client
        rc.close()
        print("paraconnect-pvrc: pvserver dialled in; relaying", file=sys.stderr, flush=True)
        pump_both(agent, pv)
    finally:
        rc.close()
        if pv is not None:
            pv.close()
        agent.close()
        end_process(proc, 10)
        print(
            "paraconnect-pvrc: client left; pvserver ended (its state is lost); a fresh one "
            "starts for the next client",
            file=sys.stderr,
            flush=True,
        )


def main(argv: list[str]) -> int:
    tie_to_parent()  # end with the agent, whatever kills it
    if len(argv) < 4 or argv[0] != "--unix" or argv[2] != "--":
        print(
            "usage: python -m paraconnect.servers._kinds_pvrc --unix PATH -- COMMAND",
            file=sys.stderr,
        )
        return 2
    path, command = argv[1], argv[3:]
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(4)
    print(f"paraconnect-pvrc listening on unix:{path}", file=sys.stderr, flush=True)
    while True:
        agent, _ = lsock.accept()
        serve_one(agent, command)  # pvserver serves one client at a time


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
