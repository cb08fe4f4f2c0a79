"""``python -m paraconnect.servers._kinds_probe --unix PATH (--log REGEX | --http PATH)
[--timeout S] -- COMMAND ...``: the command kind's readiness probes beyond "port open".

COMMAND's ``{inner_port}`` becomes a free loopback port where it must listen.  Its output is
passed through (to the agent's log) and watched; the program is ready once its output matched
REGEX (``--log``), or once ``GET PATH`` on its port answers below 500 (``--http``; after the
port opened).  Only then does this wrapper listen on the agent's private leg (PATH, a Unix
socket in a 0700 directory), so the agent (which waits for that socket) phones home only when
the program is really ready; each connection there is relayed to the program's port (after
checking that this user owns the listener).  Exits with COMMAND's exit status.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import socket
import subprocess
import sys
import threading
import time

from paraconnect.servers._kinds_tie import pump_both, tie_to_parent


def _relay(client: socket.socket, port: int) -> None:
    from paraconnect.tunnel import peer_uid

    try:
        inner = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as exc:
        print(f"paraconnect-probe: program unreachable: {exc}", file=sys.stderr, flush=True)
        client.close()
        return
    inner.settimeout(None)
    if peer_uid(inner) != os.getuid():
        # Another user's program took the port after ours left it: never forward there.
        print("paraconnect-probe: the port belongs to another user; refused", file=sys.stderr)
        inner.close()
        client.close()
        return
    pump_both(client, inner)
    inner.close()
    client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _http_ok(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status < 500
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m paraconnect.servers._kinds_probe")
    ap.add_argument("--unix", required=True)
    probe = ap.add_mutually_exclusive_group(required=True)
    probe.add_argument("--log", metavar="REGEX")
    probe.add_argument("--http", metavar="PATH")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("command", nargs="+")
    args = ap.parse_args(argv)
    tie_to_parent()  # end with the agent, whatever kills it
    port = _free_port()
    command = [a.replace("{inner_port}", str(port)) for a in args.command]
    pattern = re.compile(args.log) if args.log else None
    matched = threading.Event()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=tie_to_parent
    )

    def watch() -> None:
        assert proc.stdout is not None  # noqa: S101 - piped above
        for raw in proc.stdout:
            sys.stderr.buffer.write(raw)
            sys.stderr.flush()
            if pattern is not None and pattern.search(raw.decode(errors="replace")):
                matched.set()

    threading.Thread(target=watch, daemon=True).start()
    deadline = time.monotonic() + args.timeout
    while True:
        if proc.poll() is not None:
            return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        if pattern is not None and matched.is_set():
            break
        if args.http and _port_open(port) and _http_ok(port, args.http):
            break
        if time.monotonic() > deadline:
            what = f"log line /{args.log}/" if args.log else f"HTTP GET {args.http}"
            print(
                f"paraconnect-probe: no {what} within {args.timeout:g} s; stopping the program",
                file=sys.stderr,
                flush=True,
            )
            proc.terminate()
            proc.wait()
            return 1
        time.sleep(0.05)
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(args.unix)
    lsock.listen(64)
    print("paraconnect-probe: program ready; serving its leg", file=sys.stderr, flush=True)

    def accept() -> None:
        while True:
            client, _ = lsock.accept()
            threading.Thread(target=_relay, args=(client, port), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    code = proc.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
