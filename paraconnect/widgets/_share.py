"""ShareWidget: issue a friend's bundle, download it, list friends, revoke with one click."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..api import Hub, Session
from ..errors import ConfigError, ParaconnectError
from ._common import Panel, attempt, button, error_html, session_and_hub, when

__all__ = ["ShareWidget"]


class ShareWidget(Panel):
    """Friends of one session.  Revoking takes effect live: the hub closes what the friend
    has open and refuses the next handshake."""

    def __init__(
        self,
        session: Session | str = "default",
        *,
        hub: Hub | None = None,
        home: Path | str | None = None,
    ) -> None:
        name, self.hub = session_and_hub(session, hub, home)
        self.session = name or "default"
        self.friend = w.Text(description="friend", placeholder="alice")
        self.passphrase = w.Password(description="passphrase")
        self.days = w.BoundedFloatText(value=7, min=0.01, max=397, description="days")
        self.unique_id = w.Text(
            description="node ID", placeholder="the friend's 'paraconnect unique-id'"
        )
        self.issue_button = button("issue bundle", "primary", "a client certificate for a friend")
        self.issue_button.on_click(self._on_issue)
        self.download = w.HTML()
        self.message = w.HTML()
        self.friends = w.VBox()
        self.revoke_buttons: dict[str, w.Button] = {}
        self.last_bundle: dict[str, Any] | None = None
        self._open(
            [
                w.HTML(f"<b>share session {html.escape(self.session)}</b>"),
                w.HBox([self.friend, self.passphrase]),
                w.HBox([self.days, self.unique_id, self.issue_button]),
                self.message,
                self.download,
                self.friends,
            ],
            ("credentials",),
        )

    def _on_issue(self, _button: Any = None) -> None:
        try:
            name, passphrase = self.friend.value.strip(), self.passphrase.value
            if not name or len(passphrase) < 8:
                raise ConfigError("give the friend's name and a passphrase of 8 characters or more")
            issued = self.hub.request(
                "friend_issue", session=self.session, name=name, passphrase=passphrase,
                days=self.days.value, unique_id=self.unique_id.value.strip() or None,
            )  # fmt: skip
            serial = issued["certificate"]["serial"]
            bundle = self.hub.request("friend_bundle", session=self.session, serial=serial)
        except ParaconnectError as exc:
            self.message.value = error_html(exc)
            return
        self.passphrase.value = ""  # it is the friend's secret: do not keep it on screen
        self.last_bundle = {
            **bundle,
            "serial": serial,
            "data": base64.b64decode(bundle["data_b64"]),
        }
        filename = html.escape(bundle["filename"])
        self.download.value = (
            f"<a download='{filename}' href='data:application/x-pkcs12;base64,"
            f"{bundle['data_b64']}'>download {filename}</a> — send the passphrase another way"
        )
        self.message.value = f"issued {html.escape(name)} serial {serial[:12]}"
        self.refresh()

    def revoke(self, serial: str) -> None:
        def go() -> None:
            self.hub.request("revoke", session=self.session, target=serial)

        if attempt(self.message, go, f"revoked {serial[:12]}"):
            self.refresh()

    def refresh(self) -> None:
        try:
            friends = self.hub.request("friends", session=self.session)
        except ParaconnectError as exc:
            self.message.value = error_html(exc)
            return
        rows, buttons = [], {}
        for cert in friends:
            serial = cert["serial"]
            label = w.HTML(
                f"{html.escape(cert['for_friend'] or cert['name'])} · {cert['status']} · until "
                f"{when(cert['not_after'])} · serial {serial[:12]}"
            )
            revoke = button("revoke", "danger", f"revoke {serial}")
            revoke.disabled = cert["status"] == "revoked"
            revoke.on_click(lambda _b, s=serial: self.revoke(s))
            buttons[serial] = revoke
            rows.append(w.HBox([revoke, label]))
        self.revoke_buttons = buttons
        self.friends.children = rows
        self._changed()

    def _on_event(self, topic: str, event: dict[str, Any]) -> None:
        if event.get("session") == self.session:
            self.refresh()
