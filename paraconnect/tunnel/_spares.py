"""Spare sockets of a program's network namespace, for the agent to connect itself.

A socket belongs to the network namespace it was made in, whoever holds it.  The namespace
broker (`_netns`) makes unconnected TCP sockets there and hands them over in batches; the agent
connects one to the program's port for each data connection, on the namespace's loopback, as
the broker would have: the private leg is the same, but a connection costs no round trip to
the broker (two wake-ups of two processes), only one in a batch does.

Requests and answers travel on the broker's SOCK_SEQPACKET channel; every answer is read by one
reader callback into the pool, so that a caller that gives up waiting loses nothing and nobody
gets another's answer.  When the pool runs low it is refilled ahead of need; after a pause it
is topped up to `SPARES`, so an idle agent holds the same descriptors whatever it carried.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import anyio

from ..errors import NetworkError
from ._netns import SPARES  # what the pool holds when full: the most the broker hands at once

__all__ = ["SPARES", "Spares"]

_LOW = 4  # refilled ahead of need at this many
_MAX_FDS = 64  # descriptors read from one answer (a request asks for at most SPARES)
_PAUSE = 0.1  # seconds without a connection before the pool is topped up
_BROKER_TIMEOUT = 15.0


class Spares:
    """The spare sockets of one broker channel (one run of the program)."""

    def __init__(self, chan: socket.socket, name: str) -> None:
        self.chan = chan
        self.name = name
        self._loop = asyncio.get_running_loop()
        self._pool: list[socket.socket] = []
        self._asked = 0  # requests sent whose answers are not read yet
        self._reading = False
        self._waiters: list[asyncio.Future[None]] = []
        self._error: str | None = None  # the broker's last refusal, or why it is gone
        self._gone = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_take = 0.0
        self._closed = False

    async def take(self) -> socket.socket:
        """An unconnected TCP socket of the program's namespace (the caller connects it)."""
        if not self._pool:
            with anyio.move_on_after(_BROKER_TIMEOUT):
                while not self._pool:
                    if self._gone or self._closed:
                        raise NetworkError(
                            f"program {self.name!r} is not running (its broker ended)"
                        )
                    if self._error is not None and not self._asked:
                        error, self._error = self._error, None
                        raise NetworkError(
                            f"cannot connect to program {self.name!r} in its network "
                            f"namespace: {error}"
                        )
                    if not self._asked:
                        self._ask(SPARES)
                    waiter = self._loop.create_future()
                    self._waiters.append(waiter)
                    await waiter
            if not self._pool:
                raise NetworkError(
                    f"the namespace broker of {self.name!r} did not answer within "
                    f"{_BROKER_TIMEOUT:g} s"
                )
        sock = self._pool.pop()
        if len(self._pool) <= _LOW and not self._asked:
            self._ask(SPARES - len(self._pool))
        self._last_take = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_later(_PAUSE, self._top_up)
        return sock

    def close(self) -> None:
        """Close the spares and stop reading the channel (the program has ended)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop_reading()
        for sock in self._pool:
            sock.close()
        self._pool.clear()
        self._wake()

    def _top_up(self) -> None:
        self._timer = None
        if self._closed or self._gone:
            return
        quiet = self._loop.time() - self._last_take
        if quiet < _PAUSE:  # connections still come: look again after a pause
            self._timer = self._loop.call_later(_PAUSE - quiet, self._top_up)
        elif len(self._pool) < SPARES and not self._asked:
            self._ask(SPARES - len(self._pool))

    def _ask(self, count: int) -> None:
        try:
            self.chan.send(b"s%d" % count)
        except BlockingIOError:
            return  # the channel is full of requests already: their answers will do
        except OSError as exc:
            self._error = exc.strerror or str(exc)
            self._gone = True
            self._wake()
            return
        self._asked += 1
        if not self._reading:
            self._loop.add_reader(self.chan.fileno(), self._collect)
            self._reading = True

    def _collect(self) -> None:
        while self._asked:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.chan, 256, _MAX_FDS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                msg, fds = f"err {exc.strerror or exc}".encode(), []
                self._gone = True
            if not msg and not fds:
                self._gone = True
            self._asked -= 1
            socks = [socket.socket(fileno=fd) for fd in fds]
            for sock in socks:
                sock.set_inheritable(False)  # SCM_RIGHTS gives them without close-on-exec
            if self._closed:
                for sock in socks:
                    sock.close()
            else:
                self._pool.extend(socks)
            if msg.startswith(b"err "):
                self._error = msg[4:].decode(errors="replace")
            if self._gone:
                self._asked = 0
            self._wake()
        self._stop_reading()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            with contextlib.suppress(ValueError, OSError):  # the channel closed already
                self._loop.remove_reader(self.chan.fileno())

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
