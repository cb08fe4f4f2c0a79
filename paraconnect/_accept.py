"""Serving an anyio listener so that no peer can stop it: the enrolment endpoint, the hub's
control socket and the status page.

anyio's ``Listener.serve`` lets an accept error (EMFILE when a flood used up the descriptors)
or a handler's exception end the task group, and with it the process.  Here an accept error
is logged and retried after a breath, each handler's failure costs its connection and a log
line, and at most `cap` connections are in hand at once: beyond that the next connection is not
accepted (it waits in the kernel's backlog, holding no descriptor of ours) until one ends.
Cancellation still ends everything.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.abc
from anyio.streams.stapled import MultiListener

from .errors import ParaconnectError

__all__ = ["MAX_IN_HAND", "serve_listener"]

log = logging.getLogger("paraconnect")

# Connections a listener has accepted and not finished with (handshakes in progress, for the
# endpoints that use this).  Enough for a burst of agents; few enough descriptors for a flood.
MAX_IN_HAND = 64

T = TypeVar("T", bound=anyio.abc.AsyncResource)


async def serve_listener(
    listener: anyio.abc.Listener[T],
    handle: Callable[[T], Awaitable[None]],
    where: str,
    *,
    cap: int | None = MAX_IN_HAND,
) -> None:
    """Accept on `listener` until cancelled, each connection handled in a task of its own."""
    slots = anyio.Semaphore(cap) if cap else None
    # A TCP listener on a name is a MultiListener (one per address): serve each, one cap.
    singles = list(listener.listeners) if isinstance(listener, MultiListener) else [listener]

    async def one(conn: T) -> None:
        try:
            await handle(conn)
        except ParaconnectError as exc:
            log.warning("%s: a connection failed: %s", where, exc)
        except Exception:
            log.exception("%s: a connection failed (a bug: please report it)", where)
        finally:
            try:
                await anyio.aclose_forcefully(conn)
            finally:
                if slots is not None:
                    slots.release()

    async def accept_loop(single: Any, tg: anyio.abc.TaskGroup) -> None:
        while True:
            if slots is not None:
                await slots.acquire()
            try:
                conn: T = await single.accept()
            except (OSError, anyio.BrokenResourceError) as exc:
                if slots is not None:
                    slots.release()
                # Out of descriptors and the like: say so, breathe, keep serving.
                log.warning("%s: accepting failed: %s; retrying", where, exc)
                await anyio.sleep(0.1)
                continue
            tg.start_soon(one, conn)

    async with anyio.create_task_group() as tg:
        for single in singles:
            tg.start_soon(accept_loop, single, tg)
