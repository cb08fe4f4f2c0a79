"""The supervisor: one state machine per server, every transition an event with a reason.

::

    submitted → starting → waiting (for phone-home) → connected ⇄ idle (client gone, phoning)
                                                             → stopped | failed

``submitted``: the launcher took the job (queued under Slurm).  ``starting``: the job runs, the
agent is not serving yet.  ``waiting``: the agent printed its ready line; the hub waits for it to
phone home (reverse) or dials it (forward).  ``connected``: the hub holds its control channel.
``idle``: that channel closed while the job still runs (the agent phones home again).

The supervisor polls each job through its launcher (``Job.state()``, ``Job.logs()``), applies
the restart policy (``never`` / ``on-failure`` with a limit) and the wall-time limit, stops jobs
(graceful, then kill; ``scancel`` under Slurm) and keeps everything in the registry.  The hub
tells it about phone-homes (:meth:`Supervisor.phoned_home`, :meth:`Supervisor.hung_up`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectSendStream

from ..errors import ConfigError, NotFoundError, ParaconnectError
from ._launch import Job, JobState, exit_reason
from ._launchers import reattach
from ._registry import FINAL_STATES, ServerRecord, ServerRegistry, ServerState

__all__ = ["RestartPolicy", "ServerEvent", "Supervisor"]

log = logging.getLogger("paraconnect.servers")

S = ServerState
READY_MARK = '"event": "ready"'


@dataclass(frozen=True)
class ServerEvent:
    """A state change of one server, and why."""

    server_id: str
    state: str
    previous: str | None
    reason: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "event": "server",
            "server_id": self.server_id,
            "state": self.state,
            "previous": self.previous,
            "reason": self.reason,
            "at": self.at,
        }


@dataclass(frozen=True)
class RestartPolicy:
    """``never``, or ``on-failure`` up to `limit` times."""

    mode: str = "never"
    limit: int = 3

    def __post_init__(self) -> None:
        if self.mode not in ("never", "on-failure"):
            raise ConfigError(f"restart policy {self.mode!r}: choose never or on-failure")
        if self.limit < 0:
            raise ConfigError(f"restart limit {self.limit} must be zero or more")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RestartPolicy:
        return cls(
            str(options.get("restart_policy", "never")), int(options.get("restart_limit", 3))
        )


Relaunch = Callable[[str], Awaitable[Job]]
OnReady = Callable[[str, dict[str, Any]], Awaitable[None]]


def parse_ready(text: str) -> dict[str, Any] | None:
    """The agent's ``{"event": "ready", ...}`` line (``serve --json``) in its log, if any."""
    for line in reversed(text.splitlines()):
        start = line.find("{")
        if READY_MARK in line and start >= 0:
            try:
                obj = json.loads(line[start:])
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


@dataclass(eq=False)
class Supervisor:
    """Watches servers; owns their state in the registry."""

    registry: ServerRegistry
    _: KW_ONLY
    poll: float = 0.5
    connect_timeout: float = 300.0
    readopt_grace: float = 120.0
    relaunch: Relaunch | None = None
    on_ready: OnReady | None = None
    jobs: dict[str, Job] = field(default_factory=dict, init=False, repr=False)
    _scopes: dict[str, anyio.CancelScope] = field(default_factory=dict, init=False, repr=False)
    _stopping: set[str] = field(default_factory=set, init=False, repr=False)
    _subscribers: list[Callable[[ServerEvent], None]] = field(
        default_factory=list, init=False, repr=False
    )
    _streams: list[MemoryObjectSendStream[ServerEvent]] = field(
        default_factory=list, init=False, repr=False
    )
    _tg: anyio.abc.TaskGroup | None = field(default=None, init=False, repr=False)
    _changed: anyio.Event = field(default_factory=anyio.Event, init=False, repr=False)

    # -- events ---------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Call `callback` (on the supervisor's loop) for every event; returns unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    @contextlib.asynccontextmanager
    async def events(self, backlog: int = 1000) -> AsyncIterator[AsyncIterator[ServerEvent]]:
        """``async with sup.events() as stream: async for ev in stream: ...``"""
        send, receive = anyio.create_memory_object_stream[ServerEvent](backlog)
        self._streams.append(send)
        try:
            async with receive:
                yield receive
        finally:
            self._streams.remove(send)
            send.close()

    def _emit(self, event: ServerEvent) -> None:
        log.info("server %s: %s (%s)", event.server_id, event.state, event.reason)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken subscriber never stops the supervisor
                log.exception("an event subscriber failed")
        for stream in list(self._streams):
            with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError):
                stream.send_nowait(event)
        self._changed.set()
        self._changed = anyio.Event()

    def transition(self, server_id: str, state: str, reason: str, **fields: Any) -> bool:
        """Move a server to `state` (recorded, then announced).  A final state is final."""
        rec = self.registry.get(server_id)
        if rec is None or rec.final:
            return False
        if rec.state == state and rec.reason == reason and not fields:
            return False
        self.registry.update(server_id, state=state, reason=reason, **fields)
        self._emit(ServerEvent(server_id, state, rec.state, reason, time.time()))
        return True

    async def wait_for(
        self,
        server_id: str,
        states: set[str] | frozenset[str],
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> ServerRecord:
        """Wait until the server is in one of `states` (or final); TimeoutError after timeout."""
        with anyio.fail_after(timeout):
            while True:
                rec = self.registry.get(server_id)
                if rec is None:
                    raise NotFoundError(f"no server {server_id!r}; see 'paraconnect servers list'")
                if rec.state in states or rec.final:
                    return rec
                await self._changed.wait()

    # -- running -------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None

    def _spawn(self, server_id: str, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        if self._tg is None:
            raise RuntimeError("the supervisor is not running")
        old = self._scopes.pop(server_id, None)
        if old is not None:
            old.cancel()
        scope = anyio.CancelScope()
        self._scopes[server_id] = scope

        async def body() -> None:
            with scope:
                await fn(*args)

        self._tg.start_soon(body)

    def supervise(self, server_id: str, job: Job) -> None:
        """Watch a freshly launched job."""
        self.jobs[server_id] = job
        self.registry.update(server_id, job=job.describe())
        self._spawn(server_id, self._watch, server_id, job, False)

    def adopt(self, rec: ServerRecord) -> None:
        """After a hub restart: re-attach the job and wait for its agent to phone home again."""
        if rec.job is None:
            self.transition(rec.id, S.FAILED, "no job was recorded for it before the hub stopped")
            return
        try:
            job = reattach(rec.job)
        except ParaconnectError as exc:
            self.transition(rec.id, S.FAILED, f"cannot re-attach its job: {exc}")
            return
        self.jobs[rec.id] = job
        self.transition(rec.id, S.IDLE, "hub restarted; waiting for it to phone home again")
        self._spawn(rec.id, self._watch, rec.id, job, True)

    # -- phone home (told by the hub) -------------------------------------------------------

    def add(self, rec: ServerRecord) -> None:
        """Record a new server (state ``submitted``) and announce it."""
        self.registry.add(rec)
        self._emit(ServerEvent(rec.id, rec.state, None, rec.reason, rec.created))

    def phoned_home(self, server_id: str, reason: str) -> None:
        rec = self.registry.get(server_id)
        if rec is not None and rec.state in (S.SUBMITTED, S.STARTING):
            # It phoned home before the poll saw its ready line: it is ready, say so in order.
            self.transition(server_id, S.WAITING, "agent ready (it phoned home)")
        self.transition(server_id, S.CONNECTED, reason, last_phone_home=time.time())

    def enrolled(self, server_id: str) -> None:
        """Its agent got its certificate: it runs (for a server started by hand, the first
        sign of it), and phones home next."""
        rec = self.registry.get(server_id)
        if rec is not None and rec.state == S.SUBMITTED:
            self.transition(server_id, S.STARTING, "enrolled; waiting for it to phone home")

    def unreachable(self, server_id: str, address: str, reason: str) -> None:
        """Its agent enrolled but reports that it cannot dial the phone-home `address`."""
        rec = self.registry.get(server_id)
        if rec is None or rec.final or rec.state in (S.CONNECTED, S.IDLE):
            return
        why = reason.removeprefix(f"cannot connect to {address}: ")
        self.transition(
            server_id, S.UNREACHABLE,
            f"enrolled, cannot reach the hub at {address}: {why[:1].lower()}{why[1:]} "
            "(it keeps trying; check that its host can reach that address)",
        )  # fmt: skip

    def hung_up(self, server_id: str, reason: str) -> None:
        rec = self.registry.get(server_id)
        if rec is not None and rec.state == S.CONNECTED and server_id not in self._stopping:
            self.transition(server_id, S.IDLE, reason)

    # -- the watch loop --------------------------------------------------------------------

    async def _watch(self, server_id: str, job: Job, adopted: bool) -> None:
        since = anyio.current_time()
        running_since: float | None = None
        rec0 = self.registry.get(server_id)
        # A re-adopted forward server cannot phone home: the hub dials it again from its
        # ready line; a reverse one is awaited.
        ready_seen = adopted and rec0 is not None and rec0.mode == "reverse"
        while True:
            rec = self.registry.get(server_id)
            if rec is None or rec.final:
                return
            if adopted and rec.state == S.CONNECTED:
                adopted = False  # re-adopted: from now on a server like any other
            status = await job.state()
            if server_id in self._stopping:
                return
            if status.finished:
                await self._finished(server_id, job, status.state, status.exit_code, status.reason)
                return
            if status.state is JobState.RUNNING:
                if running_since is None:
                    running_since = anyio.current_time()
                if (rec.job or {}).get("host") != job.host:
                    # Its host is now where the job runs (a compute node), not where it was
                    # submitted: keep that in the record, which ServerInfo.host reads (also
                    # when the agent phoned home before this poll saw the job running).
                    self.registry.update(server_id, job=job.describe())
                if rec.state == S.SUBMITTED:
                    self.transition(server_id, S.STARTING, f"job {job.id} runs on {job.host}")
                if not ready_seen:
                    ready = parse_ready(await job.logs(tail=200))
                    if ready is not None:
                        ready_seen = True
                        rec = self.registry.get(server_id) or rec
                    if ready is not None and rec.state in (S.SUBMITTED, S.STARTING):
                        self.transition(
                            server_id,
                            S.WAITING,
                            "agent ready; waiting for it to phone home"
                            if rec.mode == "reverse"
                            else f"agent listening on {', '.join(ready.get('listen', []))}",
                        )
                    if ready is not None and self.on_ready is not None:
                        await self._call_ready(server_id, ready)
            now = anyio.current_time()
            if adopted and rec.state == S.IDLE and now - since > self.readopt_grace:
                await self._give_up(server_id, job, "never phoned home after hub restart")
                return
            if (
                not adopted
                and rec.state in (S.STARTING, S.WAITING, S.UNREACHABLE)
                and running_since is not None
                and now - running_since > self.connect_timeout
            ):
                why = f" ({rec.reason})" if rec.state == S.UNREACHABLE else ""
                await self._give_up(
                    server_id,
                    job,
                    f"did not phone home within {self.connect_timeout:g} s of starting{why}; "
                    f"see 'paraconnect servers logs {server_id}'",
                )
                return
            await anyio.sleep(self.poll)

    async def _call_ready(self, server_id: str, ready: dict[str, Any]) -> None:
        if self.on_ready is None:
            return
        try:
            await self.on_ready(server_id, ready)
        except ParaconnectError as exc:
            self.transition(server_id, S.FAILED, f"cannot reach its agent: {exc}")

    async def _give_up(self, server_id: str, job: Job, reason: str) -> None:
        self._stopping.add(server_id)
        try:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(ParaconnectError):
                    await job.stop(grace=5)
            self.transition(server_id, S.FAILED, reason)
        finally:
            self._stopping.discard(server_id)

    async def _finished(
        self, server_id: str, job: Job, state: JobState, code: int | None, why: str
    ) -> None:
        rec = self.registry.get(server_id)
        if rec is None:
            return
        self.registry.update(server_id, job=job.describe())
        if why.startswith("wall-time limit"):
            # Our limit, not a failure: never restarted.
            self.transition(server_id, S.STOPPED, why)
            return
        if state is JobState.COMPLETED:
            self.transition(server_id, S.STOPPED, f"its job {job.id} ended ({why or 'exit 0'})")
            return
        reason = why or (exit_reason(code) if code is not None else state.value)
        policy = RestartPolicy.from_options(rec.options)
        if policy.mode == "on-failure" and rec.restarts < policy.limit and self.relaunch:
            try:
                new = await self.relaunch(server_id)
            except ParaconnectError as exc:
                self.transition(server_id, S.FAILED, f"{reason}; restarting failed: {exc}")
                return
            self.jobs[server_id] = new
            self.registry.update(server_id, job=new.describe(), restarts=rec.restarts + 1)
            self.transition(
                server_id,
                S.SUBMITTED,
                f"restarted after failure ({rec.restarts + 1}/{policy.limit}): {reason}",
            )
            self._spawn(server_id, self._watch, server_id, new, False)
            return
        # The cause leads: a reason is read from its start, and may be cut at its end.
        self.transition(server_id, S.FAILED, f"{reason}; its job {job.id} {state.value}")

    # -- stop --------------------------------------------------------------------------------

    async def stop(self, server_id: str, grace: float = 10.0) -> ServerRecord:
        """Stop the server: SIGTERM then SIGKILL after `grace` (scancel under Slurm)."""
        rec = self.registry.get(server_id)
        if rec is None:
            raise NotFoundError(f"no server {server_id!r}; see 'paraconnect servers list'")
        if rec.final:
            return rec
        self._stopping.add(server_id)
        try:
            scope = self._scopes.pop(server_id, None)
            if scope is not None:
                scope.cancel()
            job = self.jobs.get(server_id)
            if job is None and rec.job is not None:
                job = reattach(rec.job)
            reason = "stopped on request"
            if job is not None:
                status = await job.stop(grace=grace)
                self.registry.update(server_id, job=job.describe())
                reason += f" (job {job.id}: {status.state.value})"
            self.transition(server_id, S.STOPPED, reason)
        finally:
            self._stopping.discard(server_id)
        return self.registry.get(server_id) or rec

    async def logs(self, server_id: str, tail: int | None = 100) -> str:
        rec = self.registry.get(server_id)
        if rec is None:
            raise NotFoundError(f"no server {server_id!r}; see 'paraconnect servers list'")
        job = self.jobs.get(server_id)
        if job is None and rec.job is not None:
            job = reattach(rec.job)
        return await job.logs(tail=tail) if job is not None else ""


__all__ += ["FINAL_STATES", "parse_ready"]
