"""The hub's live events for kernels: a ZeroMQ PUB socket on an ``ipc://`` path in the 0700
runtime directory (so only this user can subscribe), two frames per event: the topic (the
event's ``event`` field) and the JSON object.

pyzmq comes with the ``jupyter`` extra; without it the hub runs and simply publishes nothing
here (its callbacks, the websocket and the control API still carry every event).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("paraconnect.hub")

__all__ = ["EventBus", "EventPublisher"]

Subscriber = Callable[[dict[str, Any]], None]


class EventPublisher:
    """Publish event dicts; used only from the hub's loop thread (ZeroMQ sockets are not
    thread-safe).  `address` is None when pyzmq is missing."""

    def __init__(self, path: Path) -> None:
        self.address: str | None = None
        self._sock: Any = None
        self._ctx: Any = None
        self._path: Path | None = None
        try:
            import zmq
        except ImportError:
            log.info("hub: pyzmq is not installed; no ZeroMQ events for kernels")
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a socket left by a hub that was killed
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        # A slow subscriber loses events past this many, rather than growing the hub.
        sock.setsockopt(zmq.SNDHWM, 10_000)
        try:
            sock.bind(f"ipc://{path}")
        except zmq.ZMQError as exc:
            sock.close()
            self._ctx.term()
            self._ctx = None
            log.warning("hub: no ZeroMQ events: cannot bind ipc://%s: %s", path, exc)
            return
        path.chmod(0o600)
        self._sock = sock
        self._path = path
        self.address = f"ipc://{path}"

    def publish(self, event: dict[str, Any]) -> None:
        if self._sock is None:
            return
        import zmq

        topic = str(event.get("event", "event")).encode()
        with contextlib.suppress(zmq.Again):  # no room: that subscriber is too slow
            self._sock.send_multipart([topic, json.dumps(event).encode()], flags=zmq.NOBLOCK)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            self._path = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None


class EventBus:
    """Every hub event to its subscribers (callbacks, on the hub's loop) and, while the hub
    runs, to the ZeroMQ socket (:meth:`open`)."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._zmq: EventPublisher | None = None

    @property
    def address(self) -> str | None:
        """The ZeroMQ address kernels subscribe to, while there is one."""
        return self._zmq.address if self._zmq is not None else None

    def open(self, path: Path) -> None:
        self._zmq = EventPublisher(path)

    def close(self) -> None:
        if self._zmq is not None:
            self._zmq.close()
            self._zmq = None

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def publish(self, event: dict[str, Any]) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken subscriber never stops the hub
                log.exception("a hub event subscriber failed")
        if self._zmq is not None:
            self._zmq.publish(event)
