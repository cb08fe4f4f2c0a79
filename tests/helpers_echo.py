"""An echo / sha256 server: the real program behind the agent in the tunnel tests.

Run as ``python tests/helpers_echo.py --port N`` (or ``--unix PATH``, ``--fd N``, or
``--stdio`` for one connection on stdin/stdout, as ``serve --per-connection`` runs it).  Each
connection sends one command line, then:

``echo``    every byte is sent back until the client half-closes;
``sha256``  read until the client half-closes, answer the hex digest and the byte count;
``pid``     answer this process's pid (proves the same server outlived a client);
``connect_id`` answer the ``--connect-id`` the program was started with;
``env``     answer PARACONNECT_* environment variables as JSON;
``proxy``   answer the PROXY v2 header that began the connection, parsed (with ``--proxy``);
``reset``   answer one line, then reset the connection (SO_LINGER 0);
``die N``   exit the whole server at once with status N (the program dying).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import struct
import sys
import threading


def _line(conn: socket.socket) -> tuple[str, bytes]:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    line, _, rest = data.partition(b"\n")
    return line.decode(errors="replace").strip(), rest


def _exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed inside the PROXY header")
        data += chunk
    return data


def _read_proxy_v2(conn: socket.socket) -> dict[str, object]:
    """Parse a PROXY protocol v2 header (written from the HAProxy spec, not from our code)."""
    head = _exactly(conn, 16)
    if head[:12] != b"\r\n\r\n\x00\r\nQUIT\n" or head[12] != 0x21:
        raise ValueError("no PROXY v2 header")
    family, length = head[13], struct.unpack(">H", head[14:16])[0]
    body = _exactly(conn, length)
    info: dict[str, object] = {"family": family}
    if family == 0x11:
        src, dst, sport, dport = body[:4], body[4:8], *struct.unpack(">HH", body[8:12])
        tlvs, size = body[12:], 4
    elif family == 0x21:
        src, dst, sport, dport = body[:16], body[16:32], *struct.unpack(">HH", body[32:36])
        tlvs, size = body[36:], 16
    else:
        tlvs, size = body, 0
    if size:
        info["src"] = [
            socket.inet_ntop(socket.AF_INET if size == 4 else socket.AF_INET6, src),
            sport,
        ]
        info["dst"] = [
            socket.inet_ntop(socket.AF_INET if size == 4 else socket.AF_INET6, dst),
            dport,
        ]
    while tlvs:
        kind, n = tlvs[0], struct.unpack(">H", tlvs[1:3])[0]
        value, tlvs = tlvs[3 : 3 + n], tlvs[3 + n :]
        if kind == 0xE0:
            info["identity"] = json.loads(value)
        elif kind == 0x20:
            info["ssl_verify"] = struct.unpack(">I", value[1:5])[0]
            subs = value[5:]
            while subs:
                sk, sn = subs[0], struct.unpack(">H", subs[1:3])[0]
                info[{0x21: "ssl_version", 0x22: "ssl_cn", 0x23: "ssl_cipher"}.get(sk, str(sk))] = (
                    subs[3 : 3 + sn].decode()
                )
                subs = subs[3 + sn :]
    return info


PROXY = False
CONNECT_ID: int | None = None


def _handle(conn: socket.socket) -> None:
    with conn:
        proxy = _read_proxy_v2(conn) if PROXY else None
        cmd, rest = _line(conn)
        if cmd == "echo":
            if rest:
                conn.sendall(rest)
            while chunk := conn.recv(1 << 16):
                conn.sendall(chunk)
            conn.shutdown(socket.SHUT_WR)
        elif cmd == "sha256":
            digest = hashlib.sha256(rest)
            count = len(rest)
            while chunk := conn.recv(1 << 16):
                digest.update(chunk)
                count += len(chunk)
            conn.sendall(f"{digest.hexdigest()} {count}\n".encode())
        elif cmd == "proxy":
            conn.sendall(json.dumps(proxy).encode() + b"\n")
        elif cmd == "connect_id":
            conn.sendall(f"{CONNECT_ID}\n".encode())
        elif cmd == "pid":
            conn.sendall(f"{os.getpid()}\n".encode())
        elif cmd == "env":
            env = {k: v for k, v in os.environ.items() if k.startswith(("PARACONNECT_", "LISTEN"))}
            conn.sendall(json.dumps(env).encode() + b"\n")
        elif cmd == "reset":
            conn.sendall(b"resetting\n")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif cmd.startswith("die"):
            os._exit(int(cmd.split()[1]) if " " in cmd else 3)
        else:
            conn.sendall(f"unknown command {cmd!r}\n".encode())


def main() -> int:
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--port", type=int)
    group.add_argument("--unix")
    group.add_argument("--fd", type=int)
    group.add_argument("--stdio", action="store_true", help="one connection on stdin/stdout")
    parser.add_argument("--proxy", action="store_true", help="expect a PROXY v2 header first")
    parser.add_argument("--connect-id", type=int, help="answered by the 'connect_id' command")
    args = parser.parse_args()
    global CONNECT_ID
    CONNECT_ID = args.connect_id
    global PROXY
    PROXY = args.proxy
    if args.stdio:
        os.dup2(2, 1)  # keep the connection on fd 0 only, so closing it ends the connection
        _handle(socket.socket(fileno=0))
        return 0
    if args.port is not None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", args.port))
        server.listen(64)
    elif args.unix is not None:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(args.unix)
        server.listen(64)
    else:
        if os.environ.get("LISTEN_FDS") != "1":
            print("--fd needs LISTEN_FDS=1 (socket activation)", file=sys.stderr)
            return 2
        server = socket.socket(fileno=args.fd)
    while True:
        conn, _addr = server.accept()
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
