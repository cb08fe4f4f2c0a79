"""RADIUS on the wire, for the authorisation hook (`_radius.py`) and the accounting
(`_radius_acct.py`): the options, the shared secret, the dictionary paraconnect ships, and one
request/reply exchange over UDP on the event loop (a non-blocking socket waited on with anyio,
`timeout` per try, `tries` tries: no thread, and nothing blocks the loop).  Replies are
verified (the Response Authenticator; a Message-Authenticator where present) before they count
as answers."""

from __future__ import annotations

import functools
import logging
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from socket import SOCK_DGRAM
from typing import Any

import anyio

from .._wire import hostport
from ..errors import ConfigError, CredentialError
from ..tls import PeerIdentity
from ._hello import Hello

__all__ = [
    "CACHE_SECONDS",
    "FAIL_MODES",
    "INTERIM_SECONDS",
    "MAX_TEXT",
    "RadiusConfig",
    "dictionary",
    "exchange",
    "fit",
    "peer_attributes",
    "read_secret",
    "reply_text",
]

log = logging.getLogger("paraconnect.tunnel")

DICTIONARY = Path(__file__).parent / "radius" / "dictionary"
FAIL_MODES = ("closed", "open")
CACHE_SECONDS = 60.0
INTERIM_SECONDS = 300.0
MAX_TEXT = 253  # the most bytes an attribute's value holds


def fit(value: str) -> str:
    """`value` cut to what one attribute holds (in UTF-8 bytes, never mid-character)."""
    return value.encode()[:MAX_TEXT].decode(errors="ignore")


@functools.cache
def dictionary() -> Any:
    try:
        from pyrad.dictionary import Dictionary
    except ImportError:
        raise ConfigError(
            "RADIUS needs the pyrad package: pip install 'paraconnect[radius]'"
        ) from None
    return Dictionary(str(DICTIONARY))


def read_secret(path: str | Path) -> bytes:
    """The shared secret in `path`: a file of ours that no one else may read (0600)."""
    path = Path(path)
    try:
        st = path.stat()
        data = path.read_bytes().strip()
    except OSError as exc:
        raise CredentialError(
            f"cannot read the RADIUS secret file {path}: {exc.strerror}; give "
            "--radius-secret-file FILE (mode 0600) holding the shared secret"
        ) from None
    if st.st_mode & 0o077 or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        raise CredentialError(
            f"the RADIUS secret file {path} has mode {stat.S_IMODE(st.st_mode):04o} (owner uid "
            f"{st.st_uid}); it must be yours and private: chmod 600 {path}"
        )
    if not data:
        raise CredentialError(f"the RADIUS secret file {path} is empty; write the shared secret")
    return data


@dataclass(frozen=True, slots=True)
class RadiusConfig:
    """Where a side asks, with what secret, and what it does when no answer comes."""

    host: str
    port: int
    secret: bytes = field(repr=False)
    fail: str = "closed"  # "closed": refuse when unanswered; "open": admit
    cache: float = CACHE_SECONDS  # how long a recent answer stands in for an unanswered one
    interim: float = INTERIM_SECONDS  # seconds between Interim-Updates of an open connection
    timeout: float = 1.0  # per try
    tries: int = 3

    @classmethod
    def load(
        cls,
        address: str,
        secret_file: str | Path | None,
        *,
        fail: str = "closed",
        cache: float = CACHE_SECONDS,
        interim: float = INTERIM_SECONDS,
        timeout: float = 1.0,
        tries: int = 3,
    ) -> RadiusConfig:
        """From the options (`--radius HOST:PORT --radius-secret-file F --radius-fail ...`),
        checking each, with one line naming the one at fault."""
        host, sep, port_text = address.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65535:
            raise ConfigError(f"--radius {address!r}: give HOST:PORT, e.g. radius.example:1812")
        if not secret_file:
            raise ConfigError("--radius needs --radius-secret-file FILE (mode 0600)")
        if fail not in FAIL_MODES:
            raise ConfigError(f"--radius-fail {fail!r}: choose closed or open")
        if cache < 0 or interim <= 0:
            raise ConfigError("--radius-cache must be >= 0 and --radius-interim > 0 (seconds)")
        dictionary()  # pyrad missing: say so now, not at the first peer
        return cls(
            host, int(port_text), read_secret(secret_file), fail=fail, cache=cache,
            interim=interim, timeout=timeout, tries=max(1, tries),
        )  # fmt: skip

    @property
    def address(self) -> str:
        return hostport(self.host, self.port)

    @property
    def acct_port(self) -> int:
        return self.port + 1


def peer_attributes(peer: PeerIdentity, hello: Hello, where: str) -> dict[str, str]:
    """What a request says of the peer (User-Name and the vendor attributes)."""
    ident = peer.identity
    attrs = {"User-Name": peer.label, "Calling-Station-Id": where}
    if ident is not None:
        attrs |= {
            "Paraconnect-Role": ident.role.value,
            "Paraconnect-Name": ident.name,
            "Paraconnect-Session": ident.session_id,
        }
        if ident.unique_id:
            attrs["Paraconnect-Unique-Id"] = ident.unique_id
    else:
        attrs["Paraconnect-Role"] = hello.role.value  # level none: what it claims
    if peer.serial is not None:
        attrs["Paraconnect-Serial"] = format(peer.serial, "x")
    if hello.server_id:
        attrs["Paraconnect-Server-Id"] = hello.server_id
    return {k: fit(v) for k, v in attrs.items()}


async def exchange(config: RadiusConfig, packet: Any, port: int) -> Any | None:
    """Send `packet` to the server (`config.tries` tries, `config.timeout` each) and return
    its verified reply, or None when none came (no server, a wrong secret, a lost network)."""
    try:
        family, _, _, _, addr = (await anyio.getaddrinfo(config.host, port, type=SOCK_DGRAM))[0]
        sock = socket.socket(family, SOCK_DGRAM)
    except OSError as exc:
        log.debug("RADIUS %s:%d: %s", config.host, port, exc)
        return None
    with sock:
        sock.setblocking(False)
        # Connected, so that only the server's datagrams arrive and an ICMP "port
        # unreachable" (nothing listens) ends a try at once instead of after its timeout.
        try:
            sock.connect(addr)
        except OSError as exc:
            log.debug("RADIUS %s:%d: %s", config.host, port, exc)
            return None
        for attempt in range(config.tries):
            if attempt and "Acct-Delay-Time" in packet:
                packet["Acct-Delay-Time"] = packet["Acct-Delay-Time"][0] + int(config.timeout)
            try:
                sock.send(packet.RequestPacket())
                with anyio.move_on_after(config.timeout):
                    while True:
                        await anyio.wait_readable(sock)
                        try:
                            data = sock.recv(4096)
                        except BlockingIOError:
                            continue
                        reply = _verified(packet, data)
                        if reply is not None:
                            return reply
            except OSError as exc:  # ECONNREFUSED: the host says nothing listens there
                log.debug("RADIUS %s:%d: %s", config.host, port, exc)
                await anyio.sleep(min(config.timeout, 0.05))
    return None


def _verified(packet: Any, data: bytes) -> Any | None:
    from pyrad.packet import PacketError

    try:
        reply = packet.CreateReply(packet=data)
    except (PacketError, KeyError, ValueError, IndexError):
        log.debug("RADIUS: a malformed reply ignored")
        return None
    # A reply whose authenticator does not match (another request's, a wrong secret, a forger)
    # is not an answer.
    return reply if packet.VerifyReply(reply, data) else None


def reply_text(reply: Any, name: str) -> str:
    try:
        values = reply[name]
    except KeyError:
        return ""
    return " ".join(v if isinstance(v, str) else v.decode(errors="replace") for v in values)
