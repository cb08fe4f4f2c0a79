"""Name resolution, address classes, TCP connect and bind, each failure in plain words."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
from dataclasses import dataclass

from .._wire import hostport
from ._explain import bind_words, connect_words
from ._report import Report

__all__ = ["Address", "address_class", "bind_once", "connect_tcp", "resolve"]


@dataclass(frozen=True, slots=True)
class Address:
    family: int
    sockaddr: tuple[object, ...]

    @property
    def host(self) -> str:
        return str(self.sockaddr[0])

    @property
    def label(self) -> str:
        return hostport(self.host, self.sockaddr[1])

    @property
    def version(self) -> str:
        return "IPv6" if self.family == socket.AF_INET6 else "IPv4"


def address_class(host: str) -> str:
    """loopback, private, link-local, unspecified, multicast or public."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT):
        return "private"
    return "public"


_CGNAT = ipaddress.ip_network("100.64.0.0/10")


async def resolve(report: Report, host: str, port: int, *, passive: bool = False) -> list[Address]:
    """The `resolve` and `address` steps; [] when the name does not resolve."""
    loop = asyncio.get_running_loop()
    flags = socket.AI_PASSIVE if passive else 0
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    except socket.gaierror as exc:
        report.fail(
            "resolve",
            f"the name {host!r} does not resolve: {exc.strerror}",
            "check the spelling, this machine's DNS (/etc/resolv.conf, /etc/hosts) and VPN; "
            "or give the address itself",
        )
        return []
    seen: list[Address] = []
    for family, _type, _proto, _name, sockaddr in infos:
        addr = Address(family, tuple(sockaddr))
        if addr not in seen:
            seen.append(addr)
    classes = {a.host: address_class(a.host) for a in seen}
    listed = ", ".join(f"{a.host} ({classes[a.host]} {a.version})" for a in seen)
    if host.strip("[]") in classes:
        a = seen[0]
        text = f"{host} is an address ({classes[a.host]} {a.version}): nothing to resolve"
    else:
        text = f"{host} resolves to {listed}"
    report.ok(
        "resolve",
        text,
        addresses=[
            {"address": a.host, "class": classes[a.host], "family": a.version} for a in seen
        ],
    )
    kinds = set(classes.values())
    if passive:
        _listen_address_note(report, host, kinds)
    else:
        _dial_address_note(report, host, kinds, seen)
    return seen


def _dial_address_note(report: Report, host: str, kinds: set[str], seen: list[Address]) -> None:
    if kinds == {"loopback"}:
        report.warn(
            "address",
            f"{host} is a loopback address: it reaches only an agent on THIS machine",
            "fine if the agent runs here; from another machine dial the agent's own address "
            "(and the agent must listen on it, not on 127.0.0.1)",
        )
    elif "unspecified" in kinds:
        report.warn(
            "address",
            f"{host} is the wildcard address: it means 'any address' for a listener, and "
            "dialling it reaches this machine only",
            "dial the agent's real address",
        )
    elif any(
        address_class(a.host) == "link-local" and a.sockaddr[3:4] == (0,)
        for a in seen
        if a.family == socket.AF_INET6
    ):
        report.warn(
            "address",
            f"{host} is link-local: it needs an interface (e.g. fe80::1%eth0) and reaches only "
            "the same network segment",
            "add %INTERFACE, or use a routable address",
        )
    elif "private" in kinds:
        report.ok(
            "address",
            f"{host} is a private address: reachable from the same site network or VPN only",
        )
    else:
        report.ok("address", f"{host} is a public address")


def _listen_address_note(report: Report, host: str, kinds: set[str]) -> None:
    if kinds == {"loopback"}:
        report.warn(
            "address",
            f"listening on {host} (loopback): only programs on THIS machine can connect",
            "to accept agents phoning home from other machines, listen on an address they "
            "can reach (or 0.0.0.0), or let them reach it through an ssh tunnel",
        )
    elif "unspecified" in kinds:
        report.ok("address", f"listening on {host}: every address of this machine")
    else:
        report.ok("address", f"listening on {host} ({', '.join(sorted(kinds))})")


async def connect_tcp(
    report: Report,
    addresses: list[Address],
    timeout: float,  # noqa: ASYNC109 - one budget per address, applied inside
) -> tuple[socket.socket, Address] | None:
    """The `tcp` step: the first address that accepts, else the failure of each, explained."""
    loop = asyncio.get_running_loop()
    failures: list[tuple[Address, int | None]] = []
    for addr in addresses:
        sock = socket.socket(addr.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, addr.sockaddr)
        except TimeoutError:
            sock.close()
            failures.append((addr, errno.ETIMEDOUT))
            continue
        except OSError as exc:
            sock.close()
            failures.append((addr, exc.errno))
            continue
        except BaseException:
            sock.close()
            raise
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tried = f" (after {len(failures)} other address(es) failed)" if failures else ""
        report.ok("tcp", f"TCP connection to {addr.label} established{tried}", address=addr.label)
        return sock, addr
    first_addr, code = failures[0]
    reason, fix = connect_words(code, first_addr.label)
    if code == errno.ETIMEDOUT:
        reason += f" (no answer within {timeout:g} s)"
    if len(failures) > 1:
        others = "; ".join(
            f"{a.label}: {errno.errorcode.get(c or 0, 'timeout').lower()}" for a, c in failures[1:]
        )
        reason += f"; the other addresses failed too ({others})"
    kind = {
        errno.ECONNREFUSED: "refused",
        errno.ETIMEDOUT: "timeout",
        errno.ENETUNREACH: "unreachable",
        errno.EHOSTUNREACH: "unreachable",
    }.get(code or 0, "error")
    report.fail("tcp", reason, fix, kind=kind, errno=errno.errorcode.get(code or 0))
    return None


def bind_once(report: Report, addresses: list[Address]) -> socket.socket | None:
    """The `bind` step of `debug server`: a listening socket on the first address, or why not."""
    addr = addresses[0]
    sock = socket.socket(addr.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if addr.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr.sockaddr)
        sock.listen(8)
    except OSError as exc:
        sock.close()
        reason, fix = bind_words(exc.errno, addr.label)
        kind = {errno.EADDRINUSE: "in-use", errno.EADDRNOTAVAIL: "not-local"}.get(
            exc.errno or 0, "error"
        )
        report.fail("bind", reason, fix, kind=kind)
        return None
    sock.setblocking(False)
    host, port = sock.getsockname()[:2]
    bound = hostport(host, port)
    report.ok("bind", f"listening on {bound}", address=bound, port=port)
    return sock
