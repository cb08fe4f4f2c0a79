"""A relay's steady state off the event loop: the C relay thread (`_crelay.c`), where it runs.

`_splice` relays on the event loop.  A relay whose both sides only wait for bytes, with nothing
pending and no end of stream seen, is in its steady state, which is where nearly all of its life
is spent; there it starts a thread of its own (`_crelay.Relay`) that polls its two sockets and
moves the bytes through the connection's own OpenSSL objects, as stunnel relays every
connection.  Anything else ends the thread at a clean point and the loop takes the relay back.

Why: a 64-byte round trip crosses four relays, and on the event loop each one costs the loop's
turn and the interpreter's on top of the bytes' work; the thread costs a poll and a few system
calls.  A thread per connection, not one for all: the scheduler places each new thread on its
own, beside the process that talks to it, as it does stunnel's (one shared thread keeps
whatever placement it had, and on two CPUs it ends beside the other relay, a cross-CPU wakeup
more each way).  Each connection's relay also gets a core of its own.

Where the C part was not built (no C compiler when the package was installed; `hatch_build.py`
says so), does not fit this Python's ssl, or ``PARACONNECT_RELAY=loop`` is set, relays run on
the loop only, in Python, which does the same steps (the tests run both ways).
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._crelay import Relay

__all__ = [
    "DECRYPTED",
    "FAILED",
    "PLAIN_FIN",
    "PLAIN_RESET",
    "STOPPED",
    "TLS_ERROR",
    "TLS_FIN",
    "TLS_RESET",
    "available",
    "relay_for",
    "tls_error",
]

log = logging.getLogger("paraconnect.tunnel")

# Why a relay thread ended: the first item of Relay.stop()'s tuple (_crelay.c's enum).
STOPPED, TLS_FIN, PLAIN_FIN, DECRYPTED, TLS_ERROR, TLS_RESET, PLAIN_RESET, FAILED = range(8)

ENV = "PARACONNECT_RELAY"


def _load() -> type[Relay] | None:
    if os.environ.get(ENV, "") == "loop" or sys.implementation.name != "cpython":
        return None
    try:
        from ._crelay import Relay
    except ImportError as exc:
        log.debug("relay: no C relay thread (%s); relaying on the event loop", exc)
        return None
    return Relay


_RELAY = _load()
_refused = False  # said once that this _ssl does not fit


def available() -> bool:
    """Whether relays here run their steady state on C threads."""
    return _RELAY is not None and not _refused


def relay_for(
    sslobj: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
    fds: tuple[int, int],
    sizes: tuple[int, int, int],
    notify: Callable[[], object],
) -> Relay | None:
    """A C relay on this connection's OpenSSL objects, not started; None: relay on the loop.
    `fds`: the TLS socket's and the plain one's; `sizes`: each buffer, what goes into a BIO at
    a time, the room one record needs; `notify`: called on the thread when it ends by itself."""
    global _refused
    raw = getattr(sslobj, "_sslobj", None)
    if _RELAY is None or _refused or raw is None:
        return None
    try:
        return _RELAY(raw, sslobj.context, incoming, outgoing, *fds, *sizes, notify)
    except ValueError as exc:
        _refused = True
        log.warning("relay: %s; relaying on the event loop", exc)
        return None


def tls_error(library: str, reason: str, eof: bool) -> ssl.SSLError:
    """The ssl exception Python's own read or write would have raised."""
    if eof:
        return ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")
    exc = ssl.SSLError(ssl.SSL_ERROR_SSL, f"[{library}: {reason}]")
    exc.library = library
    exc.reason = reason
    return exc
