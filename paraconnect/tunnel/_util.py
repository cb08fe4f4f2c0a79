"""Small helpers shared by the agent and the client side."""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import logging
import os
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import anyio
import anyio.abc

from .._accept import MAX_IN_HAND
from ..errors import ParaconnectError

__all__ = [
    "MAX_HANDSHAKES",
    "Handler",
    "accept_loop",
    "describe_addr",
    "guard",
    "handshake_done",
    "loop_options",
    "single_error",
    "tls_accept_loop",
]

Handler = Callable[[socket.socket, str], Coroutine[Any, Any, None]]

log = logging.getLogger("paraconnect.tunnel")

# TLS handshakes (and hellos) in progress per listener (the same cap as the hub's enrolment
# endpoint).  Each holds a descriptor until it ends or times out; beyond this many the listener
# stops accepting, so a flood of half-open connections waits in the kernel's backlog and leaves
# descriptors for the program's leg and the relays of connected peers.
MAX_HANDSHAKES = MAX_IN_HAND


def loop_options() -> dict[str, Any]:
    """``anyio.run``'s backend options for a command that relays: uvloop where it is installed.

    A relayed message costs two loop wakeups per process, and asyncio's selector loop spends
    more on a wakeup (select, key lookups, handle) than the splice callback itself: with
    uvloop's loop the 64-byte round trip through connect and serve drops by a fifth.  The
    callbacks, TLS and every check are the same code on either loop.
    ``PARACONNECT_LOOP=asyncio`` keeps the standard library's loop."""
    if os.environ.get("PARACONNECT_LOOP", "") == "asyncio":
        return {}
    if importlib.util.find_spec("uvloop") is None:
        return {}
    return {"use_uvloop": True}


# The accepting task's "my handshake is over" callback (see accept_loop and Side.establish).
_SLOT: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "paraconnect_handshake_slot", default=None
)


def handshake_done() -> None:
    """Give back this task's handshake slot, if it holds one (once the hello is over)."""
    release = _SLOT.get()
    if release is not None:
        _SLOT.set(None)
        release()


def describe_addr(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr) or "a local socket"


def peer_addr(sock: socket.socket) -> str:
    try:
        return describe_addr(sock.getpeername())
    except OSError:
        return "an unknown address"


@contextlib.contextmanager
def guard(where: str) -> Iterator[None]:
    """Contain one connection's failure: a listener survives any one bad peer.  Paraconnect
    errors are logged in one line; anything else is a bug, logged with its traceback."""
    try:
        yield
    except ParaconnectError as exc:
        log.warning("connection with %s failed: %s", where, exc)
    except Exception:
        log.exception("connection with %s failed unexpectedly (a bug: please report it)", where)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for sub in exc.exceptions:
            out += _leaves(sub)
        return out
    return [exc]


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one paraconnect error inside a task group's exception group, when there is exactly
    one; else the group itself.  Lets callers catch ParaconnectError as documented."""
    leaves = _leaves(group)
    ours = [e for e in leaves if isinstance(e, ParaconnectError)]
    if len(ours) == 1 and all(isinstance(e, ParaconnectError | KeyboardInterrupt) for e in leaves):
        return ours[0]
    if len(leaves) == 1:
        return leaves[0]
    return group


async def accept_loop(
    lsock: socket.socket,
    tg: anyio.abc.TaskGroup,
    handle: Handler,
    where: str,
    check: Callable[[socket.socket], object] | None = None,
    *,
    handshakes: int | None = None,
) -> None:
    """Accept connections for ever, each handled in its own task of `tg`, one bad peer never
    stopping the loop.  `check` may refuse a connection (raise a ParaconnectError) before any
    task is spent on it.  A task cancelled before it ever ran never sees its socket: those are
    closed here, so no descriptor is left behind when the listener stops.

    With `handshakes`, at most that many accepted connections are still in their handshake
    (the handler's `Side.establish` calls `handshake_done`); beyond it nothing is accepted."""
    from ._leg import accept

    unclaimed: set[socket.socket] = set()
    slots = anyio.Semaphore(handshakes) if handshakes else None

    def one_release() -> Callable[[], None]:
        done = False

        def release() -> None:
            nonlocal done
            if not done and slots is not None:
                done = True
                slots.release()

        return release

    async def claim(sock: socket.socket, peer: str, release: Callable[[], None]) -> None:
        unclaimed.discard(sock)
        _SLOT.set(release)
        try:
            with guard(peer):
                await handle(sock, peer)
        finally:
            release()

    try:
        while True:
            if slots is not None:
                await slots.acquire()
            release = one_release()
            try:
                sock, addr = await accept(lsock)
            except OSError as exc:
                release()
                # Out of file descriptors and the like: say so, breathe, keep serving.
                log.warning("accepting on %s failed: %s; retrying", where, exc)
                await anyio.sleep(0.1)
                continue
            if check is not None:
                try:
                    check(sock)
                except ParaconnectError as exc:
                    log.warning("%s", exc)
                    sock.close()
                    release()
                    continue
            unclaimed.add(sock)
            tg.start_soon(claim, sock, describe_addr(addr), release)
    finally:
        for sock in unclaimed:
            sock.close()


async def tls_accept_loop(
    lsock: socket.socket, tg: anyio.abc.TaskGroup, handle: Handler, where: str
) -> None:
    """`accept_loop` for a TLS listener: at most MAX_HANDSHAKES handshakes in progress."""
    await accept_loop(lsock, tg, handle, where, handshakes=MAX_HANDSHAKES)
