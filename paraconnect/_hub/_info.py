"""What the hub tells about a server (:class:`ServerInfo`).  Launchers by name
(``make_launcher``) come from the one list in ``paraconnect.servers`` (``register_launcher``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..servers import make_launcher
from ..vocab import FINAL_STATES

__all__ = ["ServerInfo", "make_launcher"]


@dataclass(frozen=True)
class ServerInfo:
    """What a client needs to use a server, and where it stands."""

    id: str
    kind: str
    session: str
    mode: str
    launcher: str
    state: str
    reason: str
    local: str | None  # 127.0.0.1:PORT: point pvpython / RenderClient here
    connect_id: int | None  # pvserver's --connect-id, for the client
    host: str | None
    job_id: str | None
    note: str
    last_phone_home: float | None
    restarts: int
    created: float
    updated: float
    attempts: int  # phone-home connections taken since this hub started
    peer: str | None  # the identity its agent proved
    where: str | None  # the address its agent phoned home from
    streams: int  # data connections open through the hub now
    ends_at: float | None = None  # when its batch job's time limit ends it (epoch s)
    time_left: float | None = None  # seconds until then, as the hub last heard
    program_version: str | None = None  # pvserver's version, as its agent reported it
    version_check: str | None = None  # one line when it cannot talk to this host's pvpython

    @property
    def final(self) -> bool:
        """Stopped or failed: it will not come back by itself."""
        return self.state in FINAL_STATES

    @property
    def local_port(self) -> int | None:
        return int(self.local.rsplit(":", 1)[1]) if self.local else None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}
