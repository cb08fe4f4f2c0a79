"""Wall time: when a batch job's time limit ends its server, the warnings before that, and
resubmission.

The scheduler says when a running job ends (Slurm: ``squeue -o %e``, read with every status
poll into ``BatchJob.ends_at``).  The hub shows the time left in the server's info, and warns
once per job and threshold (default 10 minutes and 1 minute before the end) with a ``walltime``
event, which the panel shows as a notification.  ``resubmit`` submits a new job for the same
server: it enrols anew (a fresh key, the old job's certificate revoked as superseded) and phones
home for the same server id, so the hub's local endpoint, its port and whatever view is
pointed at it stay; the old job is stopped once the new one has phoned home.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from ..errors import ConfigError, NotFoundError, ParaconnectError
from ..servers import Job, Launcher, LaunchSpec, ServerRegistry, Supervisor
from ..vocab import ServerState
from ._info import ServerInfo

__all__ = ["WalltimeMixin"]

log = logging.getLogger("paraconnect.hub")

CHECK_INTERVAL = 1.0


class WalltimeMixin:
    """The hub's wall-time part (mixed into `Hub`, which provides what is declared here)."""

    registry: ServerRegistry
    supervisor: Supervisor
    walltime_warnings: tuple[float, ...]
    _launchers: dict[str, Launcher]
    _specs: dict[str, LaunchSpec]
    _relaunch: Callable[[str], Awaitable[Job]]
    publish: Callable[[dict[str, Any]], None]
    server: Callable[[str], ServerInfo]
    start_task: Callable[..., Awaitable[Any]]

    def ends_at(self, server_id: str) -> float | None:
        """When the scheduler's time limit ends the server's job, where it says."""
        job = self.supervisor.jobs.get(server_id)
        ends = getattr(job, "ends_at", None)
        return float(ends) if ends is not None else None

    def time_left(self, server_id: str) -> float | None:
        ends = self.ends_at(server_id)
        return max(ends - time.time(), 0.0) if ends is not None else None

    async def watch_walltime(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Warn once per job and threshold as the end of its time limit comes near."""
        warned: set[tuple[str, str, float]] = set()
        task_status.started()
        while True:
            now = time.time()
            for server_id, job in list(self.supervisor.jobs.items()):
                ends = self.ends_at(server_id)
                rec = self.registry.get(server_id)
                if ends is None or rec is None or rec.final:
                    continue
                left = ends - now
                crossed = [t for t in self.walltime_warnings if left <= t]
                fresh = [t for t in crossed if (server_id, job.id, t) not in warned]
                if not fresh or left <= 0:
                    continue
                warned.update((server_id, job.id, t) for t in crossed)
                # A hub that comes late warns once, for the nearest threshold passed.
                threshold = min(fresh)
                log.warning(
                    "hub: %s's job %s reaches its time limit in %.0f s", server_id, job.id, left
                )
                self.publish({
                    "event": "walltime", "server_id": server_id, "session": rec.session,
                    "job_id": job.id, "ends_at": ends, "left": left, "threshold": threshold,
                    "at": now,
                })  # fmt: skip
            await anyio.sleep(CHECK_INTERVAL)

    async def resubmit(self, server_id: str) -> ServerInfo:
        """Submit a new job for `server_id`; it re-attaches to the same server id and local
        endpoint when its agent phones home, and the old job is stopped then."""
        rec = self.registry.get(server_id)
        if rec is None:
            raise NotFoundError(f"no server {server_id!r}; see 'paraconnect servers list'")
        if rec.final:
            raise ConfigError(f"server {server_id} is {rec.state}; launch a new one instead")
        if rec.mode != "reverse":
            raise ConfigError(
                f"server {server_id} is a forward server: only a server that phones home can "
                "re-attach to its local endpoint; launch a new one instead"
            )
        if server_id not in self._launchers:
            raise ConfigError(f"server {server_id} was launched by another hub; launch it anew")
        old = self.supervisor.jobs.get(server_id)
        job = await self._relaunch(server_id)
        self.supervisor.supervise(server_id, job)
        serving = f"; job {old.id} serves until it phones home" if old is not None else ""
        self.supervisor.transition(
            server_id, ServerState.SUBMITTED, f"resubmitted as job {job.id}{serving}"
        )
        self.publish({
            "event": "resubmitted", "server_id": server_id, "session": rec.session,
            "job_id": job.id, "previous_job_id": old.id if old is not None else None,
            "at": time.time(),
        })  # fmt: skip
        if old is not None:
            await self.start_task(self._retire_job, server_id, old, job)
        return self.server(server_id)

    async def _retire_job(
        self,
        server_id: str,
        old: Job,
        new: Job,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Stop the job a resubmission replaced, once the new one has phoned home (or the
        server ended, or a newer job replaced this one too)."""
        task_status.started()
        while self.supervisor.jobs.get(server_id) is new:
            rec = self.registry.get(server_id)
            if rec is None or rec.final or rec.state == ServerState.CONNECTED:
                break
            await anyio.sleep(CHECK_INTERVAL)
        try:
            await old.stop(grace=10.0)
        except ParaconnectError as exc:
            log.warning("hub: cannot stop %s's previous job %s: %s", server_id, old.id, exc)
        else:
            log.info("hub: stopped %s's previous job %s", server_id, old.id)
