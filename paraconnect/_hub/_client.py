"""Clients of a running hub: its control socket (ops of docs/hub-api.md) and its event feed.

- :class:`AsyncHubClient`: one anyio Unix-socket stream to the control socket, the framing of
  :mod:`._control` (4-byte length + JSON); a failed op raises the ``paraconnect.errors`` class
  its reply names.
- :class:`HubClient`: the blocking facade of the async client (anyio's blocking portal), for the
  CLI and scripts; no second copy of the protocol.
- :class:`HubEvents`: a ZeroMQ SUB on the hub's PUB address; a background thread blocks in
  ``poll``/``recv`` and calls the callbacks with ``(topic, event)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread

from .. import _wire, errors
from .._fs import read_public
from .._portal import PortalThread
from ..errors import ConfigError, NetworkError, ParaconnectError, ProtocolError

__all__ = [
    "AsyncHubClient",
    "AsyncHubEvents",
    "EventCallback",
    "HubClient",
    "HubEvents",
    "decode_event",
    "encode_control",
    "find_hub",
    "read_control",
    "runtime_dir",
]

log = logging.getLogger("paraconnect.hub.client")

EventCallback = Callable[[str, dict[str, Any]], None]

# -- the control socket's wire and where to find it: the server (_control) uses these too, so
# that the two sides share one definition and _control imports this module, not the reverse.

MAX_REQUEST = 1 << 20


def runtime_dir(home: Path | None = None) -> Path:
    """Where a running hub keeps its control socket and runtime file (0700)."""
    if home is None:
        from ..pki import default_home  # the store module, only when no home is given

        home = default_home()
    return home / "run"


async def read_control(stream: anyio.abc.ByteStream) -> dict[str, Any] | None:
    """One request (or reply); None when the peer closed between them."""
    return await _wire.read_anyio(stream, limit=MAX_REQUEST, what="a control message", eof_ok=True)


def encode_control(obj: dict[str, Any]) -> bytes:
    return _wire.encode(obj, limit=MAX_REQUEST, what="a control message")


def find_hub(home: Path | None = None) -> Path:
    """The control socket of the hub running for `home`; a ConfigError says how to start one."""
    rdir = runtime_dir(home)
    info_path = rdir / "hub.json"
    try:
        info = json.loads(read_public(info_path, "hub runtime file"))
        pid = int(info["pid"])
        os.kill(pid, 0)
        return Path(info["control"])
    except (ParaconnectError, OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"no hub runs for {rdir.parent}; start one with 'paraconnect hub' (or in Jupyter)"
        ) from None


def _error(reply: dict[str, Any]) -> ParaconnectError:
    cls = getattr(errors, str(reply.get("category")), ParaconnectError)
    if not (isinstance(cls, type) and issubclass(cls, ParaconnectError)):
        cls = ParaconnectError
    return cls(str(reply.get("error") or "the hub reported an error without a message"))


class AsyncHubClient:
    """``async with AsyncHubClient(home) as hub: await hub.request("servers")``.

    Requests on one client are serialised (one stream, replies in order); open another client
    for a long ``wait`` beside other requests.
    """

    def __init__(
        self, home: Path | None = None, timeout: float = 120.0, *, control: Path | None = None
    ) -> None:
        self.home, self.timeout, self.control = home, timeout, control
        self._stream: anyio.abc.ByteStream | None = None
        self._lock = anyio.Lock()
        self.broken = False  # the connection failed (not an op): connect again to go on

    async def __aenter__(self) -> AsyncHubClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        path = self.control or find_hub(self.home)
        try:
            self._stream = await anyio.connect_unix(path)
        except OSError as exc:
            raise NetworkError(
                f"cannot reach the hub's control socket {path}: {exc.strerror or exc}; "
                "is 'paraconnect hub' still running?"
            ) from exc
        self.control = path

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

    async def request(self, op: str, **fields: Any) -> Any:
        """Run one op; its result, or the hub's error raised as its ParaconnectError class."""
        if self._stream is None:
            raise NetworkError("the hub client is closed; connect() first")
        try:
            async with self._lock:
                with anyio.fail_after(self.timeout):
                    await self._stream.send(encode_control({"op": op, **fields}))
                    reply = await read_control(self._stream)
        except TimeoutError:
            # A late reply would be read as the answer to the next request: start afresh.
            self.broken = True
            raise NetworkError(
                f"the hub did not answer {op!r} within {self.timeout:g} s; is it overloaded?"
            ) from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self.broken = True
            raise NetworkError(f"the hub's control socket failed during {op!r}: {exc}") from exc
        except (ProtocolError, NetworkError) as exc:
            self.broken = True
            raise type(exc)(f"the hub's reply to {op!r}: {exc}") from exc
        if reply is None:
            self.broken = True
            raise NetworkError(f"the hub closed its control socket during {op!r}")
        if not reply.get("ok"):
            raise _error(reply)
        return reply.get("result")


class HubClient:
    """A blocking client of a running hub's control socket (for the CLI and scripts)."""

    def __init__(self, home: Path | None = None, timeout: float = 120.0) -> None:
        self._client = AsyncHubClient(home, timeout)
        self._portal = PortalThread("the hub client is closed")
        self._portal.open()
        try:
            self._call(self._client.connect)
        except BaseException:
            self.close()
            raise

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._portal.call(fn, *args)

    def close(self) -> None:
        self._portal.close(self._client.aclose)

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, op: str, **fields: Any) -> Any:
        async def go() -> Any:
            return await self._client.request(op, **fields)

        return self._call(go)


def decode_event(frames: list[bytes]) -> tuple[str, dict[str, Any]] | None:
    """``[topic, JSON]`` as the hub publishes it; None for anything else (logged)."""
    if len(frames) != 2:
        log.warning("ignored a hub event of %d frames (expected topic and JSON)", len(frames))
        return None
    try:
        event = json.loads(frames[1])
    except ValueError:
        log.warning("ignored a hub event that is not JSON")
        return None
    if not isinstance(event, dict):
        return None
    return frames[0].decode(errors="replace"), event


class HubEvents:
    """The hub's events on a thread of their own: ``HubEvents(address).subscribe(cb).start()``.

    The thread blocks in ``zmq.Poller.poll()`` on the SUB socket and an inproc wake-up pair
    (closed by :meth:`close`), so it costs nothing while the hub is quiet.  Callbacks run on
    that thread; an exception in one is logged and the others still run.
    """

    def __init__(self, address: str, topics: tuple[str, ...] = ("",)) -> None:
        import zmq

        self.address = address
        self._callbacks: list[EventCallback] = []
        self._lock = threading.Lock()
        self._ctx = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._wake_addr = f"inproc://paraconnect-events-{id(self)}"
        self._wake_rx = self._ctx.socket(zmq.PAIR)
        self._wake_rx.bind(self._wake_addr)
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def subscribe(self, callback: EventCallback) -> HubEvents:
        with self._lock:
            self._callbacks.append(callback)
        return self

    def unsubscribe(self, callback: EventCallback) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def start(self, timeout: float = 10.0) -> HubEvents:
        """Connect and start the thread; waits (up to `timeout`) until the ZMQ handshake with
        the hub is done, so that events from then on are not lost to a slow joiner."""
        import zmq

        monitor = self._sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            self._sub.connect(self.address)
            if monitor.poll(int(timeout * 1000)):
                monitor.recv_multipart()
                self.connected.set()
            else:
                log.warning("no handshake with the hub's events at %s yet", self.address)
        finally:
            self._sub.disable_monitor()
            monitor.close(0)
        self._thread = threading.Thread(target=self._run, name="paraconnect-events", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(self._sub, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())  # blocks: no timeout, no busy loop
                if self._wake_rx in ready:
                    return
                if self._sub in ready:
                    got = decode_event(self._sub.recv_multipart())
                    if got is not None:
                        self._deliver(*got)
        except zmq.ZMQError as exc:
            log.warning("the hub event feed stopped: %s", exc)
        finally:
            self._sub.close(0)
            self._wake_rx.close(0)

    def _deliver(self, topic: str, event: dict[str, Any]) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(topic, event)
            except Exception:
                log.exception("a hub event callback failed on %s", topic)

    def close(self) -> None:
        """Stop the thread and close the sockets (safe to call twice)."""
        import zmq

        thread, self._thread = self._thread, None
        if thread is not None:
            wake = self._ctx.socket(zmq.PAIR)
            wake.connect(self._wake_addr)
            wake.send(b"")
            if thread is threading.current_thread():
                wake.close()  # lingers until the wake-up is delivered
                return  # closed from a callback: the thread closes its sockets as it ends
            thread.join()
            wake.close(0)
        else:
            self._sub.close(0)
            self._wake_rx.close(0)
        self._ctx.term()

    def __enter__(self) -> HubEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncHubEvents:
    """``async with AsyncHubEvents(address) as events: async for topic, event in events:`` —
    the same feed as :class:`HubEvents`, for code on an asyncio loop (zmq.asyncio)."""

    def __init__(self, address: str, topics: tuple[str, ...] = ("",)) -> None:
        self.address, self.topics = address, topics
        self._ctx: Any = None
        self._sub: Any = None

    async def __aenter__(self) -> AsyncHubEvents:
        import zmq
        import zmq.asyncio

        self._ctx = zmq.asyncio.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        for topic in self.topics:
            self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._sub.connect(self.address)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            self._sub.close(0)
            self._ctx.term()
            self._sub = self._ctx = None

    def __aiter__(self) -> AsyncHubEvents:
        return self

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        if self._sub is None:
            raise StopAsyncIteration
        while True:
            got = decode_event(await self._sub.recv_multipart())
            if got is not None:
                return got
