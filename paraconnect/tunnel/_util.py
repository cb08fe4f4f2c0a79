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
# endpoint).  Each holds a descriptor until it ends or times out.
MAX_HANDSHAKES = MAX_IN_HAND
# Accepted connections that have sent nothing yet, per listener.  A TLS client speaks first (its
# ClientHello is on its way with the handshake's first packet): a connection that stays silent
# holds a descriptor for nothing.  When this many are silent the oldest is closed to make room,
# so a flood of half-open connections neither exhausts descriptors nor keeps a real client
# waiting behind it in the kernel's backlog.
MAX_SILENT = 32
FIRST_BYTE_TIMEOUT = 10.0
_EVICTION_LOG_EVERY = 10.0  # seconds between the warnings that count closed silent peers


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


async def _accept_next(lsock: socket.socket, where: str) -> tuple[socket.socket, Any]:
    """The next accepted connection.  A failure (out of descriptors and the like) is said, a
    breath taken, and accepting goes on: a listener never stops for one."""
    from ._leg import accept

    while True:
        try:
            return await accept(lsock)
        except OSError as exc:
            log.warning("accepting on %s failed: %s; retrying", where, exc)
            await anyio.sleep(0.1)


async def accept_loop(
    lsock: socket.socket,
    tg: anyio.abc.TaskGroup,
    handle: Handler,
    where: str,
    check: Callable[[socket.socket], object] | None = None,
) -> None:
    """Accept connections for ever, each handled in its own task of `tg`, one bad peer never
    stopping the loop.  `check` may refuse a connection (raise a ParaconnectError) before any
    task is spent on it.  A task cancelled before it ever ran never sees its socket: those are
    closed here, so no descriptor is left behind when the listener stops."""

    unclaimed: set[socket.socket] = set()

    async def claim(sock: socket.socket, peer: str) -> None:
        unclaimed.discard(sock)
        with guard(peer):
            await handle(sock, peer)

    try:
        while True:
            sock, addr = await _accept_next(lsock, where)
            if check is not None:
                try:
                    check(sock)
                except ParaconnectError as exc:
                    log.warning("%s", exc)
                    sock.close()
                    continue
            unclaimed.add(sock)
            tg.start_soon(claim, sock, describe_addr(addr))
    finally:
        for sock in unclaimed:
            sock.close()


def _readable_now(sock: socket.socket) -> bool:
    """Whether a read would not block: bytes (or an end, or an error) are there already."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # the handshake reports it
    return True


async def tls_accept_loop(
    lsock: socket.socket,
    tg: anyio.abc.TaskGroup,
    handle: Handler,
    where: str,
    *,
    first_byte_timeout: float = FIRST_BYTE_TIMEOUT,
) -> None:
    """`accept_loop` for a TLS listener.  A connection waits silent (at most MAX_SILENT of
    them; the oldest is closed to make room) until its first bytes arrive or
    `first_byte_timeout` passes, then for one of MAX_HANDSHAKES handshake slots, which the
    handler's `Side.establish` gives back with `handshake_done` once the hello is over (a peer
    silent that long then meets the handler's own handshake timeout, which reports it).
    Descriptors in hand stay bounded whatever arrives, and accepting never stops, so a real
    client is not queued behind a flood."""

    slots = anyio.Semaphore(MAX_HANDSHAKES)
    silent: dict[socket.socket, anyio.CancelScope] = {}  # oldest first
    unclaimed: set[socket.socket] = set()
    evicted = 0
    logged_at = -_EVICTION_LOG_EVERY

    async def gate(sock: socket.socket, peer: str, scope: anyio.CancelScope) -> None:
        unclaimed.discard(sock)
        slot = False
        try:
            if _readable_now(sock) and not scope.cancel_called:
                # The usual case: the ClientHello came with the connection.  No waiting, so
                # none of the cancel scopes and selector calls that waiting costs.
                try:
                    slots.acquire_nowait()
                    slot = True
                except anyio.WouldBlock:
                    pass
            if not slot:
                with scope:
                    with anyio.move_on_after(first_byte_timeout):
                        await anyio.wait_readable(sock)
                    await slots.acquire()
                    slot = True
        finally:
            silent.pop(sock, None)
            if not slot:  # closed to make room, or the listener stops: never handed over
                sock.close()
        if not slot:
            return
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                slots.release()

        _SLOT.set(release)
        try:
            with guard(peer):
                await handle(sock, peer)
        finally:
            release()

    try:
        while True:
            sock, addr = await _accept_next(lsock, where)
            if len(silent) >= MAX_SILENT:
                oldest = next(iter(silent))
                silent.pop(oldest).cancel()  # its gate closes it
                evicted += 1
                now = anyio.current_time()
                if now - logged_at >= _EVICTION_LOG_EVERY:
                    log.warning(
                        "%s: closed %d connection(s) that sent nothing while others waited "
                        "(a flood of half-open connections?)", where, evicted,
                    )  # fmt: skip
                    logged_at, evicted = now, 0
            scope = anyio.CancelScope()
            silent[sock] = scope
            unclaimed.add(sock)
            tg.start_soon(gate, sock, describe_addr(addr), scope)
    finally:
        for sock in unclaimed:
            sock.close()
