"""The local sockets ParaView users' paths add, tried by a second Unix user (made with
useradd): the relay that `paraconnect pvsc`'s "new pvserver" entry leaves on a loopback port
for the ParaView GUI lets only this user through to the server, and another user's connection
is closed before a byte reaches the server."""

from __future__ import annotations

import json
import socket
import threading

from paraconnect.cli_pvsc import relay, relay_listener

from .helpers_leg import as_other, other_user_fixture  # noqa: F401  (the other_user fixture)

RESET = "Connection reset by peer"
_TRY = """
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.settimeout(10)
try:
    s.sendall(b"hello from another user")
    got = s.recv(100)
except OSError as exc:
    got = repr(exc).encode()
print(json.dumps(got.decode(errors="replace")))
"""


def test_the_pvsc_relay_closes_another_users_connection_and_relays_ours(
    other_user: str,
) -> None:
    # The "server": an echo that records every connection it gets.
    upstream = socket.create_server(("127.0.0.1", 0))
    reached: list[bytes] = []

    def echo() -> None:
        while True:
            try:
                conn, _ = upstream.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(100)
                reached.append(data)
                conn.sendall(data)

    echoer = threading.Thread(target=echo, daemon=True)
    echoer.start()
    with socket.create_server(("127.0.0.1", 0)) as probe:  # a free port, as pvsc's
        port = probe.getsockname()[1]
    listener = relay_listener(port)
    relayer = threading.Thread(target=relay, args=(listener, upstream.getsockname()), daemon=True)
    relayer.start()
    try:
        other = as_other(other_user, _TRY, str(port))
        assert other.returncode == 0, other.stderr
        # Closed without a byte back, and nothing reached the server.
        assert json.loads(other.stdout) in ("", repr(ConnectionResetError(104, RESET)))
        assert reached == []
        # This user's ParaView is relayed (the one client the relay takes).
        with socket.create_connection(("127.0.0.1", port), timeout=10) as mine:
            mine.sendall(b"pvserver handshake")
            assert mine.recv(100) == b"pvserver handshake"
        relayer.join(timeout=30)
        assert not relayer.is_alive()
        assert reached == [b"pvserver handshake"]
    finally:
        upstream.shutdown(socket.SHUT_RDWR)  # wakes its accept(); close() alone does not
        upstream.close()
        echoer.join(timeout=10)
