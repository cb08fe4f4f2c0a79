"""CredentialsWidget: create or open a session, see its CA and what it issued."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..api import Hub, Session
from ..errors import ParaconnectError
from ..vocab import KeyType, SecurityLevel, choices
from ._common import Panel, button, error_html, session_and_hub, table_html, when

__all__ = ["CredentialsWidget"]


class CredentialsWidget(Panel):
    """A session form (name, key type, CA lifetime, level) and the session's certificates;
    refreshed live when the hub announces a change of credentials."""

    def __init__(
        self,
        session: Session | str = "default",
        *,
        hub: Hub | None = None,
        home: Path | str | None = None,
    ) -> None:
        name, self.hub = session_and_hub(session, hub, home)
        self.name = w.Text(value=name or "default", description="session")
        self.key_type = w.Dropdown(
            options=choices(KeyType), value=KeyType.EC_P256.value, description="key type"
        )
        self.days = w.BoundedIntText(value=90, min=1, max=3650, description="CA days")
        self.level = w.Dropdown(
            options=choices(SecurityLevel)[::-1],
            value=SecurityLevel.MUTUAL.value,
            description="level",
        )
        self.open_button = button("create / open", "primary", "create the session if needed")
        self.open_button.on_click(self._on_open)
        self.summary = w.HTML()
        self.certs = w.HTML()
        self.message = w.HTML()
        self.info: dict[str, Any] = {}
        self._open(
            [
                w.HBox([self.name, self.key_type]),
                w.HBox([self.days, self.level, self.open_button]),
                self.message,
                self.summary,
                self.certs,
            ],
            ("credentials",),
        )

    def _on_open(self, _button: Any = None) -> None:
        name = self.name.value.strip()
        try:
            names = {s["name"] for s in self.hub.request("sessions")}
            if name not in names:
                self.hub.request(
                    "session_create", name=name, key_type=self.key_type.value,
                    days=self.days.value, level=self.level.value,
                )  # fmt: skip
                self.message.value = f"created session {html.escape(name)}"
            else:
                self.message.value = f"opened session {html.escape(name)}"
            self.hub.request("session_open", session=name)
        except ParaconnectError as exc:
            self.message.value = error_html(exc)
            return
        self.refresh()

    def refresh(self) -> None:
        name = self.name.value.strip()
        try:
            info = self.hub.request("session", session=name)
        except ParaconnectError:
            self.info = {}
            self.summary.value = f"no session {html.escape(name)} yet: create it"
            self.certs.value = ""
            self._changed()
            return
        self.info = info
        self.summary.value = (
            f"<b>{html.escape(info['name'])}</b>: level {info['level']}, key {info['key_type']}"
            f"<br>CA sha256 <code>{html.escape(info['ca_sha256'])}</code>"
            f"<br>CA valid until {when(info['ca_not_after'])}; phone home at "
            f"{html.escape(str(info.get('phone_home') or 'not listening'))}"
        )
        rows = [
            (c["serial"][:12], c["name"], c["role"], c["status"], when(c["not_before"]),
             when(c["not_after"]), c.get("for_friend") or "")
            for c in info.get("certificates", [])
        ]  # fmt: skip
        self.certs.value = table_html(
            ("serial", "name", "role", "status", "valid from", "valid until", "friend"), rows
        )
        self._changed()

    def _on_event(self, topic: str, event: dict[str, Any]) -> None:
        if event.get("session") == self.name.value.strip():
            self.refresh()
