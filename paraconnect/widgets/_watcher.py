"""PhoneHomeWatcher: a live table of the servers that phone home, with accept and reject.

Driven by the hub's ZeroMQ events on the subscriber's thread: a ``server``, ``phone_home`` or
``hung_up`` event re-reads that one server (the ``server`` op) and redraws; nothing polls.
Accept adds an ``allow`` policy rule for the server's certificate name at the top of the
session's policy; reject adds a ``deny`` rule there (the listener closes what it now refuses,
and refuses its next phone-home) and stops the server.

A server whose batch job has a time limit shows the time left; the hub's ``walltime`` warning
is said under the table, and ``resubmit`` gives the server a new job that re-attaches to the
same local endpoint.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import threading
import time
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..api import Hub, Session
from ..errors import ParaconnectError
from ..vocab import FINAL_STATES
from ._common import Panel, attempt, button, error_html, session_and_hub

__all__ = ["PhoneHomeWatcher"]

COLUMNS = ("", "id", "identity", "remote address", "state", "attempts", "last seen", "time left")
_NODE_ID = re.compile(r"\b([0-9a-f]{8})[0-9a-f]{24}\b")


def _clock(stamp: float | None) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%H:%M:%SZ") if stamp else "-"


def _left(ends_at: float | None) -> str:
    """What is left of a job's time limit: ``1h 05m``, ``12m 03s``, or ``-`` for none."""
    if not ends_at:
        return "-"
    left = max(int(ends_at - time.time()), 0)
    hours, rest = divmod(left, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def _shorten_ids(text: str) -> str:
    """Node unique IDs (32 hex digits) cut to 8, so the table fits beside a notebook."""
    return _NODE_ID.sub(r"\1…", text)


class PhoneHomeWatcher(Panel):
    """``PhoneHomeWatcher(session="cfd-run")`` (every session when None); ``.servers`` holds
    the rows as ServerInfo dicts, ``.verdicts`` what accept/reject decided."""

    def __init__(
        self,
        session: Session | str | None = None,
        *,
        hub: Hub | None = None,
        home: Path | str | None = None,
        show_final: bool = False,
    ) -> None:
        self.session, self.hub = session_and_hub(session, hub, home)
        self.show_final = show_final
        self.servers: dict[str, dict[str, Any]] = {}
        self.verdicts: dict[str, str] = {}
        self.buttons: dict[str, tuple[w.Button, w.Button]] = {}
        self._lock = threading.RLock()
        self.table = w.GridBox(
            layout=w.Layout(grid_template_columns="repeat(8, max-content)", grid_gap="2px 12px")
        )
        self.message = w.HTML()
        title = f"servers phoning home{f' to {self.session}' if self.session else ''}"
        self._open(
            [w.HTML(f"<b>{html.escape(title)}</b>"), self.table, self.message],
            ("server", "phone_home", "hung_up", "walltime", "resubmitted"),
        )

    def refresh(self) -> None:
        """Read every server again (at start; events keep the table current after)."""
        try:
            infos = self.hub.request("servers")
        except ParaconnectError as exc:
            self.message.value = error_html(exc)
            return
        with self._lock:
            self.servers = {i["id"]: i for i in infos if self._wanted(i)}
            self._draw()

    def _wanted(self, info: dict[str, Any]) -> bool:
        if self.session is not None and info.get("session") != self.session:
            return False
        return self.show_final or info.get("state") not in FINAL_STATES

    def _on_event(self, topic: str, event: dict[str, Any]) -> None:
        sid = event.get("server_id")
        if not sid:
            return
        if topic == "walltime" and self._wanted({"session": event.get("session")}):
            left = max(float(event.get("left") or 0), 0)
            self.message.value = (
                f"<b>{html.escape(str(sid))}</b>: its job {html.escape(str(event.get('job_id')))} "
                f"reaches its time limit in {left:.0f} s; <code>resubmit</code> gives it a new "
                "job on the same local endpoint"
            )
        try:
            info = self.hub.request("server", id=sid)
        except ParaconnectError:
            return
        with self._lock:
            if self._wanted(info):
                self.servers[sid] = info
            elif self.session is None or info.get("session") == self.session:
                self.servers.pop(sid, None)
            self._draw()

    def _draw(self) -> None:
        cells: list[w.Widget] = [w.HTML(f"<b>{c}</b>") for c in COLUMNS]
        buttons = {}
        for sid, info in sorted(self.servers.items(), key=lambda kv: kv[1].get("created") or 0):
            verdict = self.verdicts.get(sid)
            if info.get("state") in FINAL_STATES:
                # It will not phone home again: nothing is left to accept or reject (rows of
                # ended servers show with show_final=True).
                done = {"allow": "accepted", "deny": "rejected"}.get(verdict or "", "ended")
                cells.append(w.Label(done))
            else:
                accept = button("accept", "success", f"allow {sid} in the session's policy")
                reject = button("reject", "danger", f"deny {sid} and stop it")
                accept.on_click(lambda _b, s=sid: self.accept(s))
                reject.on_click(lambda _b, s=sid: self.reject(s))
                accept.disabled = verdict == "allow"
                reject.disabled = verdict == "deny"
                buttons[sid] = (accept, reject)
                actions = [accept, reject]
                if info.get("ends_at") and info.get("mode") == "reverse":
                    again = button(
                        "resubmit", "warning", f"a new job for {sid}, same local endpoint"
                    )
                    again.on_click(lambda _b, s=sid: self.resubmit(s))
                    actions.append(again)
                cells.append(w.HBox(actions))
            peer = str(info.get("peer") or "-")
            row = (
                sid, _shorten_ids(peer), info.get("where") or "-", info.get("state"),
                info.get("attempts", 0), _clock(info.get("last_phone_home")),
                _left(info.get("ends_at")),
            )  # fmt: skip
            cells += [w.Label(str(v), tooltip=peer if i == 1 else None) for i, v in enumerate(row)]
        self.buttons = buttons
        self.table.children = cells
        self._changed()

    def _rule(self, server_id: str, action: str) -> None:
        session = self.servers.get(server_id, {}).get("session") or self.session or "default"
        self.hub.request(
            "policy_rule", session=session, action=action, position=1, role="server",
            name=server_id,
        )  # fmt: skip
        self.verdicts[server_id] = action

    def accept(self, server_id: str) -> None:
        """Allow this server's certificate in its session's policy (a rule on top)."""
        done = f"accepted {html.escape(server_id)}"
        if attempt(self.message, lambda: self._rule(server_id, "allow"), done):
            with self._lock:
                self._draw()

    def reject(self, server_id: str) -> None:
        """Deny this server's certificate (a rule on top) and stop the server."""

        def go() -> None:
            self._rule(server_id, "deny")
            self.hub.request("stop", id=server_id, grace=5)

        if attempt(self.message, go, f"rejected {html.escape(server_id)}: denied and stopped"):
            self.refresh()

    def resubmit(self, server_id: str) -> None:
        """A new job for this server (its job's time limit nears its end): it phones home to
        the same local endpoint."""

        def go() -> None:
            self.hub.request("resubmit", id=server_id)

        attempt(self.message, go, f"resubmitted {html.escape(server_id)}")
