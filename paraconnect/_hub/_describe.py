"""How the hub describes its servers (mixed into `Hub`, which provides what is declared here):
one ServerInfo a server, from the registry, the agents' control channels and the streams."""

from __future__ import annotations

from collections import Counter

from ..errors import NotFoundError
from ..servers import ServerRecord, ServerRegistry, build_kind
from ..tunnel import AgentLink, ReverseListener, identity_label, local_paraview, paraview_mismatch
from ._forward import ForwardLinks
from ._info import ServerInfo

__all__ = ["DescribeMixin"]


class DescribeMixin:
    registry: ServerRegistry
    forward: ForwardLinks
    _sessions: dict[str, ReverseListener]
    _locals: dict[str, str]
    _connect_ids: dict[str, int | None]
    _links: dict[str, AgentLink]
    _attempts: Counter[str]

    def ends_at(self, server_id: str) -> float | None:
        raise NotImplementedError

    def time_left(self, server_id: str) -> float | None:
        raise NotImplementedError

    def server(self, server_id: str) -> ServerInfo:
        rec = self.registry.get(server_id)
        if rec is None:
            raise NotFoundError(f"no server {server_id!r}; see 'paraconnect servers list'")
        return self._info(rec, self._stream_counts())

    def _info(self, rec: ServerRecord, streams: Counter[str]) -> ServerInfo:
        job = rec.job or {}
        kind = build_kind(rec.kind, rec.options, ["x", "{port}"]) if rec.kind != "command" else None
        peer, where = self._agent_of(rec.id)
        link = self._links.get(rec.id)
        version = link.version if link is not None else None
        return ServerInfo(
            id=rec.id, kind=rec.kind, session=rec.session, mode=rec.mode,
            launcher=rec.launcher, state=rec.state, reason=rec.reason,
            local=self._locals.get(rec.id) if not rec.final else None,
            connect_id=self._connect_ids.get(rec.id), host=job.get("host"),
            job_id=job.get("id"), note=kind.note if kind else "",
            last_phone_home=rec.last_phone_home, restarts=rec.restarts,
            created=rec.created, updated=rec.updated, attempts=self._attempts[rec.id],
            peer=peer, where=where, streams=streams[rec.id],
            ends_at=self.ends_at(rec.id), time_left=self.time_left(rec.id), program_version=version,
            version_check=paraview_mismatch(version, local_paraview(wait=False), rec.id),
        )  # fmt: skip

    def _stream_counts(self) -> Counter[str]:
        """Data connections open through the hub now, by server id (one pass over them)."""
        counts = Counter(
            t.hello.server_id for a in self._sessions.values() for t in a.side.open
            if t.kind == "data"
        )  # fmt: skip
        counts.update(self.forward.stream_counts())
        return counts

    def _agent_of(self, server_id: str) -> tuple[str | None, str | None]:
        """The identity its agent proved and where it is, while its control channel is open:
        a reverse agent phoned home from there; a forward one was dialled there."""
        link = self._links.get(server_id)
        if link is not None:
            return identity_label(link.peer.identity), link.where
        return self.forward.agent_of(server_id)

    def _servers_by_state(self) -> dict[str, int]:
        return dict(Counter(str(rec.state) for rec in self.registry.all()))

    async def servers(self) -> list[ServerInfo]:
        counts = self._stream_counts()
        return [self._info(rec, counts) for rec in self.registry.all()]

    async def info(self, server_id: str) -> ServerInfo:
        return self.server(server_id)
