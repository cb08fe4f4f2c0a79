"""The namespace broker: the program's leg in a network of its own.

``python -I .../_netns.py --sock FD --parent PID --mode port|exec -- COMMAND ...`` (the agent
starts it so; standard library only, so that it starts in a few milliseconds).  It

1. makes an unprivileged user + network namespace (``unshare(CLONE_NEWUSER|CLONE_NEWNET)``),
   mapping this user's uid/gid to themselves (root: 0 to 0; mpiexec refuses to run as root),
   or, where user namespaces are disabled, a network namespace alone if it may (root);
2. brings ``lo`` up while it still holds its capabilities in the new namespace;
3. starts COMMAND there (its capabilities drop at exec: it is not uid 0 inside), tied to the
   broker by a parent-death signal, the broker itself tied to the agent;
4. ``--mode port``: replaces ``{port}`` by a port of the namespace's own loopback, waits until
   the program listens there, then, for each request of the agent, connects to it *inside* the
   namespace and hands the connected socket to the agent (SCM_RIGHTS).  ``--mode exec``: the
   program's leg is a Unix socket path the agent reaches itself; the namespace only hides the
   TCP ports the program opens inside (the probe and reverse-bridge wrappers).

Nothing but that namespace's loopback can reach what the program listens on, whatever address it
binds: no other user (their processes live in the host's network namespace and cannot enter
ours without privileges over our user namespace), no other host.  The agent and the broker talk
over a SOCK_SEQPACKET socket pair the broker inherits: no path anyone else could try.

Messages, broker to agent: ``ready HOW [PORT]``, or ``none REASON`` (no namespace can be made
here; the broker exits 3); agent to broker: ``sN`` (N spares, at most 16), answered ``ok``
with N unconnected TCP sockets made in the namespace, or ``err TEXT``.  A socket belongs to the
network namespace it was made in, so the agent connects them to the program's port itself, on
the namespace's loopback (`_spares`): a data connection costs no round trip to the broker.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
NO_NAMESPACE = 3  # the broker's exit status when it could not make a namespace

_libc = ctypes.CDLL(None, use_errno=True)


_WHY = {
    errno.ENOSPC: "sysctl user.max_user_namespaces is 0 (or its limit is reached)",
    errno.EPERM: "unprivileged user namespaces are not permitted",
    errno.EINVAL: "the kernel has no user namespaces",
    errno.EUSERS: "too many nested user namespaces",
}


class Unavailable(Exception):
    """No namespace can be made here (the reason is the message)."""


def _unshare(flags: int) -> int:
    if _libc.unshare(flags) != 0:
        return ctypes.get_errno()
    return 0


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def enter_namespace() -> str:
    """Move this (single-threaded) process into a fresh network namespace; say which kind."""
    if not hasattr(_libc, "unshare") or not os.path.exists("/proc/self/uid_map"):
        raise Unavailable("network namespaces are a Linux feature")
    uid, gid = os.geteuid(), os.getegid()
    err = _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    if err == 0:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
        _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
        how = "user+net"
    else:
        why = _WHY.get(err, os.strerror(err))
        # Root (CAP_SYS_ADMIN) needs no user namespace for a network namespace of its own.
        if _unshare(CLONE_NEWNET) != 0:
            raise Unavailable(f"user namespaces are not available here: {why}")
        how = "net"
    _loopback_up()
    return how


def _loopback_up() -> None:
    """``ip link set lo up``, by ioctl: a fresh namespace's loopback starts down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tcp_sockets() -> list[list[str]]:
    """The fields of every TCP socket of this process's network namespace (its
    /proc/self/net/tcp and tcp6 lines: local and remote address, state, ..., uid).  Also the
    agent's reader (`_leg`): one parser of that table."""
    out: list[list[str]] = []
    for name in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(name) as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        out.extend(line.split() for line in lines)
    return out


def _listening(port: int) -> bool:
    """Does a socket of this namespace listen on `port` (any address)?"""
    want = f":{port:04X}"
    return any(len(f) > 3 and f[1].endswith(want) and f[3] == "0A" for f in tcp_sockets())


def _tie(parent: int) -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the tie took effect
        sys.exit(1)


def _tie_child() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _exit_like(proc: subprocess.Popen[bytes]) -> None:
    code = proc.wait()
    if code < 0:  # end the way the program ended, so that the agent can say so
        with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


SPARES = 16  # the most unconnected sockets handed over at once


def _spares(chan: socket.socket, count: int) -> None:
    socks: list[socket.socket] = []
    try:
        try:
            for _ in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # e.g. out of descriptors: what was made still goes
            if not socks:
                chan.send(f"err {exc.strerror or exc}".encode())
                return
        socket.send_fds(chan, [b"ok"], [sock.fileno() for sock in socks])
    finally:
        for sock in socks:
            sock.close()  # the agent holds its copies now


def _serve(chan: socket.socket) -> None:
    while True:
        try:
            req = chan.recv(16)
        except OSError:
            return
        if not req:
            return  # the agent is gone
        try:
            count = int(req[1:]) if req[:1] == b"s" else 0
        except ValueError:
            count = 0
        try:
            if 1 <= count <= SPARES:
                _spares(chan, count)
            else:
                chan.send(f"err unknown request {req[:8]!r}".encode())
        except OSError:
            return  # the agent went away mid-answer


def main(argv: list[str]) -> int:
    try:
        at = argv.index("--")
    except ValueError:
        at = -1
    opts, command = argv[:at], argv[at + 1 :]
    if at < 0 or not command or len(opts) != 6 or opts[0::2] != ["--sock", "--parent", "--mode"]:
        print(
            "usage: _netns.py --sock FD --parent PID --mode port|exec -- COMMAND",
            file=sys.stderr,
        )
        return 2
    chan = socket.socket(fileno=int(opts[1]))
    _tie(int(opts[3]))
    mode = opts[5]
    try:
        how = enter_namespace()
    except Unavailable as exc:
        chan.send(f"none {exc}".encode())
        return NO_NAMESPACE
    except OSError as exc:  # e.g. an LSM (AppArmor) that lets unshare pass but not the maps
        chan.send(f"none a user namespace was made but cannot be set up here ({exc})".encode())
        return NO_NAMESPACE
    port = _free_port() if mode == "port" else 0
    if port:
        command = [a.replace("{port}", str(port)) for a in command]
        os.environ["PARACONNECT_LEG"] = f"127.0.0.1:{port}"
    try:
        proc = subprocess.Popen(command, preexec_fn=_tie_child)
    except OSError as exc:
        print(f"paraconnect: cannot start program {command[0]!r}: {exc}", file=sys.stderr)
        return 127
    # A stop for the broker alone (the agent died: parent-death signal) is passed on; the
    # broker then ends when the program does, with its status, having reaped it.
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    while port and not _listening(port):
        if proc.poll() is not None:
            _exit_like(proc)
        time.sleep(0.01)  # the agent bounds the wait (--ready-timeout)
    chan.send(f"ready {how} {port}".encode())
    threading.Thread(target=_serve_then_stop, args=(chan, port, proc), daemon=True).start()
    _exit_like(proc)  # the main thread: only it may take the program's way out (its signal)
    return 0


def _serve_then_stop(chan: socket.socket, port: int, proc: subprocess.Popen[bytes]) -> None:
    if port:
        _serve(chan)
    else:
        with contextlib.suppress(OSError):
            while chan.recv(16):
                pass
    proc.terminate()  # the agent is gone


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            sys.exit(1)
        raise
