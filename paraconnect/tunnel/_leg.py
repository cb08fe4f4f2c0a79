"""The private leg: the only clear text, reachable by this user alone.

Preference order (ARCHITECTURE.md): an inherited socket the program takes (``{fd}``), else a
Unix socket in a fresh 0700 directory (``{unix}``), else TCP (``{port}``), which the program
gets inside a network namespace of its own (`_netns`: nobody else can reach it there).  Loopback
TCP in the host's network is open to every local user, so where it is used (``serve
--shared-leg``, ``--target``, the client's ``--local``) it is checked both ways:

* where we listen (the client's ``--local`` endpoint), each connecting socket's owner is looked
  up (``SO_PEERCRED`` for Unix sockets; for TCP the kernel's sock_diag by address pair, else
  ``/proc/net/tcp{,6}``) and any other user is refused;
* where the program listens, the listening socket on that port must belong to this user, so
  another user who grabbed the port first is never handed our clients' data.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import shutil
import socket
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, NetworkError, TrustError
from ._netns import tcp_sockets

__all__ = [
    "Endpoint",
    "check_same_user",
    "connect_endpoint",
    "free_loopback_port",
    "listening_uid",
    "parse_endpoint",
    "peer_uid",
    "private_dir",
]

log = logging.getLogger("paraconnect.tunnel")

_TCP_LISTEN = 0x0A


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A TCP host/port, or a Unix socket path (``unix:/path``)."""

    host: str
    port: int
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.path is not None:
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_endpoint(text: str, option: str = "address") -> Endpoint:
    """``HOST:PORT``, ``[v6]:PORT`` or ``unix:PATH``."""
    if text.startswith("unix:"):
        if len(text) == 5:
            raise ConfigError(f"{option} {text!r} names no socket path")
        return Endpoint("", 0, text[5:])
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{option} {text!r}: write IPv6 addresses in brackets, e.g. [::1]:8443")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{option} {text!r} is not HOST:PORT (or [IPv6]:PORT, unix:PATH)")
    return Endpoint(host, int(port_text))


def private_dir() -> Path:
    """A fresh 0700 directory for Unix sockets (mkdtemp creates it 0700)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.path.isdir(base):
        base = None
    return Path(tempfile.mkdtemp(prefix="paraconnect-leg-", dir=base))


def remove_private_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def free_loopback_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


# -- who owns a socket ---------------------------------------------------------------------


def _proc_addr(text: str) -> tuple[bytes, int]:
    """Decode ``0100007F:1F90`` (IPv4) or the 32-hex-digit IPv6 form into (packed ip, port).
    The kernel prints each 32-bit word of the address in host byte order."""
    addr_hex, port_hex = text.split(":")
    raw = bytes.fromhex(addr_hex)
    words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
    packed = b"".join(struct.pack("=I", struct.unpack(">I", w)[0]) for w in words)
    return packed, int(port_hex, 16)


def _packed(host: str) -> bytes:
    ip = ipaddress.ip_address(host.split("%")[0])
    return ip.packed


def _proc_entries() -> list[tuple[bytes, int, bytes, int, int, int]]:
    """(local ip, local port, remote ip, remote port, state, uid) for every TCP socket."""
    out = []
    for fields in tcp_sockets():
        if len(fields) < 8:
            continue
        lip, lport = _proc_addr(fields[1])
        rip, rport = _proc_addr(fields[2])
        out.append((lip, lport, rip, rport, int(fields[3], 16), int(fields[7])))
    return out


def _same_ip(a: bytes, b: bytes) -> bool:
    mapped = b"\x00" * 10 + b"\xff\xff"
    if len(a) == 16 and a.startswith(mapped):
        a = a[12:]
    if len(b) == 16 and b.startswith(mapped):
        b = b[12:]
    return a == b


_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NETLINK_SOCK_DIAG = 4
_NO_COOKIE = 0xFFFFFFFF


def _diag_uid(family: int, src: bytes, sport: int, dst: bytes, dport: int) -> int | None:
    """Ask the kernel (netlink sock_diag) for the owner of the one TCP socket with this address
    pair: a direct lookup, where /proc/net/tcp lists every socket of the machine (slow when
    there are thousands).  None when the kernel cannot say."""
    sockid = (
        struct.pack(">HH", sport, dport)
        + src.ljust(16, b"\0")
        + dst.ljust(16, b"\0")
        + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)
    )
    req = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + sockid
    msg = struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0) + req
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            nl.send(msg)
            reply = nl.recv(8192)
    except (OSError, AttributeError):
        return None
    if len(reply) < 16 + 72:
        return None
    _length, kind = struct.unpack_from("=IH", reply)
    if kind != _SOCK_DIAG_BY_FAMILY:
        return None
    (uid,) = struct.unpack_from("=I", reply, 16 + 64)
    return int(uid)


def peer_uid(sock: socket.socket, *, use_netlink: bool = True) -> int | None:
    """The uid owning the other end of a connected local socket, or None if unknown."""
    if sock.family == socket.AF_UNIX:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[1])
    ours = sock.getsockname()
    theirs = sock.getpeername()
    our_ip, their_ip = _packed(ours[0]), _packed(theirs[0])
    if use_netlink:
        found = _diag_uid(sock.family, their_ip, theirs[1], our_ip, ours[1])
        if found is not None:
            return found
    for lip, lport, rip, rport, _state, uid in _proc_entries():
        # The peer's socket has its local address = our remote one, and vice versa.
        if (
            lport == theirs[1]
            and rport == ours[1]
            and _same_ip(lip, their_ip)
            and _same_ip(rip, our_ip)
        ):
            return uid
    return None


_NLM_F_DUMP = 0x300
_NLMSG_DONE = 3


def _diag_listeners() -> list[tuple[bytes, int, int]] | None:
    """(local ip, port, uid) of every listening TCP socket, from netlink sock_diag (the kernel
    filters by state, so this stays cheap on a node with thousands of connections)."""
    out: list[tuple[bytes, int, int]] = []
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
                req = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, 1 << _TCP_LISTEN)
                req += b"\0" * 48
                flags = _NLM_F_REQUEST | _NLM_F_DUMP
                nl.send(
                    struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, flags, seq, 0) + req
                )
                done = False
                while not done:
                    data = nl.recv(65536)
                    pos = 0
                    while pos + 16 <= len(data):
                        length, kind = struct.unpack_from("=IH", data, pos)
                        if kind == _NLMSG_DONE:
                            done = True
                            break
                        if kind != _SOCK_DIAG_BY_FAMILY or length < 16 + 72:
                            return None
                        msg = pos + 16
                        (sport,) = struct.unpack_from(">H", data, msg + 4)
                        size = 4 if family == socket.AF_INET else 16
                        ip = bytes(data[msg + 8 : msg + 8 + size])
                        (uid,) = struct.unpack_from("=I", data, msg + 64)
                        out.append((ip, sport, uid))
                        pos += (length + 3) & ~3
    except (OSError, AttributeError):
        return None
    return out


def listening_uid(host: str, port: int, *, use_netlink: bool = True) -> int | None:
    """The uid owning the TCP socket listening on host:port (or on a wildcard), or None."""
    want = _packed(host)
    wild = {b"\x00" * 4, b"\x00" * 16}
    listeners = _diag_listeners() if use_netlink else None
    if listeners is None:
        listeners = [
            (lip, lport, uid)
            for lip, lport, _rip, _rport, state, uid in _proc_entries()
            if state == _TCP_LISTEN
        ]
    for lip, lport, uid in listeners:
        if lport == port and (lip in wild or _same_ip(lip, want)):
            return uid
    return None


def check_same_user(sock: socket.socket, where: str) -> int:
    """Refuse a local connection from any other user; returns the peer's uid."""
    try:
        uid = peer_uid(sock)
    except OSError as exc:
        raise NetworkError(
            f"a connection to {where} ended before its user could be checked ({exc.strerror})"
        ) from None
    if uid is None:
        raise TrustError(
            f"cannot tell which user connected to {where} (no /proc/net/tcp entry); refused"
        )
    if uid != os.getuid():
        raise TrustError(
            f"user {uid} connected to {where}, which only user {os.getuid()} may use; refused"
        )
    return uid


def _literal(host: str, port: int) -> tuple[int, object]:
    """(family, sockaddr) when `host` is an IP address, else (0, None)."""
    if "%" in host:  # a scoped IPv6 address: getaddrinfo fills in the scope
        return 0, None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return 0, None
    if ip.version == 4:
        return socket.AF_INET, (host, port)
    return socket.AF_INET6, (host, port, 0, 0)


async def _connect_ip(loop: asyncio.AbstractEventLoop, sock: socket.socket, target: object) -> None:
    """A non-blocking connect to an address, done here: uvloop's sock_connect resolves even an
    address in its thread pool, a thread hop (two wake-ups) per connection."""
    err = sock.connect_ex(target)  # type: ignore[arg-type]
    if err == errno.EINPROGRESS:
        # On loopback the handshake is over when connect returns: no turn of the loop.
        with contextlib.suppress(OSError):
            sock.getpeername()
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
        fut = loop.create_future()
        fd = sock.fileno()
        loop.add_writer(fd, _wake, fut)
        try:
            await fut
        finally:
            loop.remove_writer(fd)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def connect_endpoint(
    ep: Endpoint,
    timeout: float = 10.0,  # noqa: ASYNC109
    *,
    sock: socket.socket | None = None,
) -> socket.socket:
    """Connect a non-blocking socket to a TCP endpoint or a Unix socket path.  `sock`: an
    unconnected TCP socket to use (one made in another network namespace), for an address;
    closed on failure like our own."""
    loop = asyncio.get_running_loop()
    target: object
    if sock is not None:
        family, target = _literal(ep.host, ep.port)
        if family != sock.family:
            sock.close()
            raise NetworkError(f"cannot connect to {ep}: not an address of the socket's family")
    elif ep.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = ep.path
    else:
        family, target = _literal(ep.host, ep.port)
        if not family:
            # A name: resolved in asyncio's thread pool.  An address (the usual case, and every
            # data connection of a tunnel) skips that thread hop.
            try:
                infos = await loop.getaddrinfo(ep.host, ep.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise NetworkError(f"cannot resolve {ep}: {exc}") from exc
            family, _type, _proto, _name, target = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            if sock.family == socket.AF_UNIX:
                await loop.sock_connect(sock, target)  # type: ignore[arg-type]
            else:
                await _connect_ip(loop, sock, target)
    except TimeoutError:
        sock.close()
        raise NetworkError(f"connecting to {ep} timed out after {timeout:g} s") from None
    except OSError as exc:
        sock.close()
        # asyncio's connect error carries "Connect call failed (...)" as its text: name the
        # errno itself ("Connection refused") so that users and `debug` can tell causes apart.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise NetworkError(f"cannot connect to {ep}: {reason}") from exc
    except BaseException:
        sock.close()  # cancelled
        raise
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def accept(lsock: socket.socket) -> tuple[socket.socket, object]:
    """Accept one connection, ready for small interactive writes (hello, control)."""
    sock, addr = await asyncio.get_running_loop().sock_accept(lsock)
    if sock.family != socket.AF_UNIX:
        # Without this, the hello's small writes meet Nagle and delayed ACKs: 40 ms each.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, addr


def bind_listener(ep: Endpoint, backlog: int = 128) -> socket.socket:
    """A non-blocking listening socket on a TCP endpoint or Unix path (created 0600)."""
    if ep.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            if Path(ep.path).is_socket():
                os.unlink(ep.path)
        old = os.umask(0o177)
        try:
            sock.bind(ep.path)
        except OSError as exc:
            sock.close()
            raise NetworkError(f"cannot listen on {ep}: {exc.strerror or exc}") from exc
        finally:
            os.umask(old)
    else:
        try:
            infos = socket.getaddrinfo(
                ep.host, ep.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except OSError as exc:
            raise ConfigError(f"cannot resolve listen address {ep}: {exc}") from exc
        family, _type, proto, _name, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise NetworkError(f"cannot listen on {ep}: {exc.strerror or exc}") from exc
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def bound_endpoint(sock: socket.socket, requested: Endpoint) -> Endpoint:
    if requested.path is not None:
        return requested
    host, port = sock.getsockname()[:2]
    return Endpoint(str(host), int(port))
