"""What the widgets share: the hub they talk to (through its ops only), the event feed, and
small HTML pieces."""

from __future__ import annotations

import datetime as dt
import html
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..api import Hub, Session, hub
from ..errors import ParaconnectError
from ..hub import HubEvents

log = logging.getLogger("paraconnect.widgets")

__all__ = [
    "EventDriven", "Panel", "attempt", "error_html", "hub_of", "session_and_hub", "table_html",
    "when",
]  # fmt: skip


def hub_of(given: Hub | None, home: Path | str | None = None) -> Hub:
    return given if given is not None else hub(home)


def session_and_hub(
    session: Session | str | None, hub: Hub | None, home: Path | str | None = None
) -> tuple[str | None, Hub]:
    """What every widget accepts for a session: its name or a ``pc.Session`` (whose hub it
    then talks to unless `hub` or `home` says otherwise)."""
    if isinstance(session, Session):
        return session.name, hub_of(hub, home) if hub or home else session.hub
    if session is not None and not isinstance(session, str):
        raise TypeError(f"a session is given by its name or a pc.Session, not {session!r}")
    return session, hub_of(hub, home)


def when(value: Any) -> str:
    """An ISO date or epoch seconds, short and in UTC."""
    if value in (None, ""):
        return "-"
    if isinstance(value, int | float):
        stamp = dt.datetime.fromtimestamp(value, dt.UTC)
    else:
        try:
            stamp = dt.datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def table_html(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def error_html(exc: ParaconnectError) -> str:
    return f"<span style='color:#b00'>{html.escape(str(exc))}</span>"


def attempt(message: w.HTML, action: Callable[[], object], done: str) -> bool:
    """Run a button's `action` (hub requests); show its error, or `done` (HTML), in `message`.
    True when it worked."""
    try:
        action()
    except ParaconnectError as exc:
        message.value = error_html(exc)
        return False
    message.value = done
    return True


class EventDriven:
    """Mixin: call ``self._on_event(topic, event)`` for the hub's events of `topics`, from the
    subscriber's thread (no polling); ``updated`` counts the refreshes, ``wait_for`` waits on
    one (for tests and notebooks that must not race the feed)."""

    _events: HubEvents | None = None

    def _listen(self, hub: Hub, topics: tuple[str, ...]) -> None:
        self._updated = threading.Condition()
        self.updates = 0
        try:
            self._events = hub.events()
        except ParaconnectError as exc:
            log.warning("no live updates: %s", exc)
            return
        wanted = set(topics)

        def deliver(topic: str, event: dict[str, Any]) -> None:
            if topic in wanted:
                self._on_event(topic, event)

        self._events.subscribe(deliver)

    def _on_event(self, topic: str, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def _changed(self) -> None:
        with self._updated:
            self.updates += 1
            self._updated.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Block until `predicate()` holds after a refresh (or now); False after `timeout`."""
        with self._updated:
            return self._updated.wait_for(predicate, timeout)

    def _stop_listening(self) -> None:
        events, self._events = self._events, None
        if events is not None:
            events.close()


class Panel(w.VBox, EventDriven):  # type: ignore[misc]  # ipywidgets is untyped
    """A column of widgets showing the hub's data: read once at start (`refresh`), then kept
    current by the hub's events of its topics; closing it stops following them."""

    hub: Hub

    def _open(self, children: Sequence[Any], topics: tuple[str, ...]) -> None:
        super().__init__(list(children))
        self._listen(self.hub, topics)
        self.refresh()

    def refresh(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop_listening()
        super().close()


def button(description: str, style: str = "", tooltip: str = "") -> w.Button:
    return w.Button(
        description=description, button_style=style, tooltip=tooltip,
        layout=w.Layout(width="auto"),  # ipywidgets' fixed width cuts "reject" to "r…"
    )  # fmt: skip
