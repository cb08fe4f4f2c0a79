"""The hub: sessions, the agents' phone-home ports, per-server local endpoints, launchers, the
supervisor and its registry, on one event loop of its own.

Async API (on the hub's loop): :meth:`Hub.launch`, :meth:`Hub.servers`, :meth:`Hub.server`,
:meth:`Hub.logs`, :meth:`Hub.stop`, :meth:`Hub.events`.  From other threads (Jupyter, a
notebook): :meth:`Hub.start_in_thread` then :meth:`Hub.call` (anyio's blocking portal; the same
code, no second copy), :meth:`Hub.subscribe` for events, :meth:`Hub.stop_thread`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import secrets
import shlex
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread

from .._fs import ensure_private_dir
from ..errors import ConfigError, NotFoundError, ParaconnectError
from ..pki import Credentials, Role, SecurityLevel, Session, Store, session_credentials
from ..servers import (
    DEFAULT_TOKEN_TTL,
    HUB_IDENTITY,
    EnrollServer,
    Job,
    Launcher,
    LaunchSpec,
    ServerEvent,
    ServerKind,
    ServerRecord,
    ServerRegistry,
    Supervisor,
    build_kind,
    cert_lifetime_days,
    issue_token,
    retire,
)
from ..tls import PeerIdentity
from ..tunnel import (
    METRICS,
    AgentLink,
    ByServerId,
    Endpoint,
    RadiusConfig,
    ReverseListener,
    identity_label,
    local_paraview,
    parse_endpoint,
)
from ..vocab import FINAL_STATES, Mode, ServerState
from ._describe import DescribeMixin
from ._events import EventBus
from ._forward import ForwardLinks
from ._info import ServerInfo, make_launcher
from ._manual import remote_warnings
from ._renew import Renewals
from ._rules import DEFAULT_WARNINGS, LaunchRules, check_warnings
from ._thread import ThreadedHub
from ._walltime import WalltimeMixin

__all__ = ["Hub", "ServerInfo", "make_launcher"]

log = logging.getLogger("paraconnect.hub")

TOKEN_ENV = "PARACONNECT_ENROLL_TOKEN"  # noqa: S105 - the name of a variable
MANUAL = "manual"  # the launcher name of agents started by hand (Hub.agent_command)


class Hub(WalltimeMixin, DescribeMixin, ThreadedHub):
    """One hub per user data directory."""

    def __init__(
        self,
        home: Path | str | None = None,
        *,
        listen: str = "127.0.0.1:0",
        advertise: str | None = None,
        connect_timeout: float = 300.0,
        readopt_grace: float = 120.0,
        poll: float = 0.5,
        enroll_listen: str | None = None,
        rules: LaunchRules | None = None,
        radius: RadiusConfig | None = None,
        walltime_warnings: Sequence[float] = DEFAULT_WARNINGS,
    ) -> None:
        """`radius`: every phone-home listener asks this RADIUS server who may connect, and
        accounts there (`tunnel.RadiusConfig`)."""
        self.radius = radius
        self.store = Store(Path(home) if home is not None else None)
        self.home = self.store.home
        self.listen_host, _, port = listen.rpartition(":")
        self.listen_port = int(port)
        self.advertise = advertise
        self.rules = rules or LaunchRules()
        self.walltime_warnings = check_warnings(walltime_warnings)
        self.registry = ServerRegistry(self.home / "servers.sqlite3")
        # The status endpoint's "servers by state" comes from the registry.
        METRICS.servers_from(self._servers_by_state)
        self.supervisor = Supervisor(
            self.registry,
            poll=poll,
            connect_timeout=connect_timeout,
            readopt_grace=readopt_grace,
            relaunch=self._relaunch,
            on_ready=self._on_ready,
        )
        ehost, _, eport = (enroll_listen or f"{self.listen_host}:0").rpartition(":")
        self._enroll_sessions: dict[str, tuple[Session, Credentials]] = {}
        self.enroller = EnrollServer(self.registry, self._enroll_sessions, (ehost, int(eport)))
        self.enroller.on_enrolled = self.supervisor.enrolled
        self.enroller.on_report = self.supervisor.unreachable
        self._sessions: dict[str, ReverseListener] = {}
        self._session_lock = anyio.Lock()
        self._locals: dict[str, str] = {}
        self._connect_ids: dict[str, int | None] = {}
        self.forward = ForwardLinks(
            lambda fn: self._running().start(fn), self._forward_up, self._forward_down,
            self._observe,
        )  # fmt: skip
        self._launchers: dict[str, Launcher] = {}
        self._specs: dict[str, LaunchSpec] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self.started = anyio.Event()
        self.bus = EventBus()
        self.renewals = Renewals(self)
        self._links: dict[str, AgentLink] = {}
        self._attempts: Counter[str] = Counter()
        self.supervisor.subscribe(self._server_event)

    # -- running --------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[Hub] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled.  Servers left running by a previous hub are re-adopted."""
        rdir = ensure_private_dir(self.home / "run")
        self.bus.open(rdir / "events.ipc")
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(self.supervisor.run)
                await tg.start(self.enroller.run)
                await tg.start(self.watch_walltime)
                sessions = {rec.session for rec in self.registry.live()}
                for name in sorted(sessions):
                    await self._session(name)
                for rec in self.registry.live():
                    await self._readopt(rec)
                self.started.set()
                task_status.started(self)
        finally:
            self._tg = None
            self.bus.close()
            METRICS.servers_from(None, only_if=self._servers_by_state)
            self.registry.close()

    def _running(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise ConfigError(
                "the hub is not running; start it with Hub.run() or start_in_thread()"
            )
        return self._tg

    async def start_task(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a long-lived task (``fn(*args, task_status=...)``) in the hub's own task group,
        so that it ends with the hub; returns what it reports as started."""
        return await self._running().start(fn, *args)

    async def _cancel(self) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    # -- sessions ---------------------------------------------------------------------------

    def _creds(self, session: str) -> Credentials:
        uid = self.store.unique_id().value
        sess = self.store.open_session(session)
        if sess.credentials_record(Role.CLIENT, uid) is None:
            sess.issue(Role.CLIENT, "hub", unique_id=uid)
        return session_credentials(session, role=Role.CLIENT, store=self.store, unique_id=uid)

    async def _session(self, session: str) -> ReverseListener:
        async with self._session_lock:
            agents = self._sessions.get(session)
            if agents is not None:
                return agents
            saved = self.registry.listener(session)
            host, port = saved if saved else (self.listen_host, self.listen_port)
            creds = self._creds(session)
            agents = ReverseListener(
                creds,
                Endpoint(host, port),
                rule=ByServerId(self._admit),
                on_agent=self._agent_came,
                on_gone=self._agent_left,
                on_renew=functools.partial(self.renewals.renew, session),
                handshake_timeout=10.0,
                # The hub binds where it is told, as it always did; level none warns in its log.
                insecure=True,
                radius=self.radius,
            )
            agents.side.observers.append(self._observe)
            address, _local = await self._running().start(agents.run)
            self.registry.set_listener(session, address.host, address.port)
            self._sessions[session] = agents
            self._enroll_sessions[session] = (self.store.open_session(session), creds)
            return agents

    def session_agents(self, session: str) -> ReverseListener:
        agents = self._sessions.get(session)
        if agents is None:
            raise ConfigError(f"session {session!r} has no phone-home listener in this hub")
        return agents

    @property
    def sessions(self) -> list[str]:
        """Sessions with a phone-home listener in this hub."""
        return sorted(self._sessions)

    async def open_session(self, session: str) -> str:
        """Start the phone-home listener of `session` now; returns the address agents dial."""
        await self._session(session)
        return self.phone_home_address(session)

    def phone_home_address(self, session: str) -> str:
        agents = self._sessions.get(session)
        if agents is None or agents.address is None:
            raise ConfigError(f"session {session!r} has no phone-home listener in this hub")
        host = self.advertise or agents.address.host
        if host in ("0.0.0.0", "::"):  # noqa: S104 - a bind address, not one to dial
            host = socket.getfqdn()
        return f"{host}:{agents.address.port}"

    def enroll_address(self, session: str) -> str:
        """Where agents of `session` enrol (the phone-home host, the enrolment port)."""
        if self.enroller.address is None:
            raise ConfigError("the hub's enrolment endpoint is not running")
        host = self.phone_home_address(session).rpartition(":")[0]
        return f"{host}:{self.enroller.address[1]}"

    def _admit(self, server_id: str, peer: PeerIdentity) -> str | None:
        rec = self.registry.get(server_id)
        if rec is None:
            return f"server id {server_id!r} was not launched by this hub"
        if rec.final:
            return f"server {server_id} is {rec.state} ({rec.reason})"
        ident = peer.identity
        if ident is not None:
            if ident.role is not Role.SERVER or ident.name != server_id:
                return f"its certificate names {ident.role.value} {ident.name!r}, not {server_id}"
            if not self.renewals.in_force(server_id, rec.cert_sha256, peer.sha256):
                return f"its certificate is not the one issued for {server_id}"
        return None

    def _agent_came(self, link: AgentLink) -> None:
        self._connect_ids[link.server_id] = link.connect_id
        self._links[link.server_id] = link
        if link.version:
            self._running().start_soon(self._version_known, link)
        self._attempts[link.server_id] += 1
        rec = self.registry.get(link.server_id)
        self.publish({
            "event": "phone_home", "server_id": link.server_id,
            "session": rec.session if rec else None, "where": link.where,
            "peer": identity_label(link.peer.identity),
            "attempts": self._attempts[link.server_id], "at": time.time(),
        })  # fmt: skip
        self.supervisor.phoned_home(link.server_id, f"phoned home from {link.where}")

    async def _version_known(self, link: AgentLink) -> None:
        """Announce a ParaView version mismatch once this host's pvpython has answered (asked
        once, off the loop): a panel that read the server before then reads it again."""
        # Abandoned, not awaited, when the hub stops: the ask is only a subprocess run once.
        await anyio.to_thread.run_sync(local_paraview, abandon_on_cancel=True)
        with contextlib.suppress(NotFoundError):
            info = self.server(link.server_id)
            if info.version_check and self._links.get(link.server_id) is link:
                self.publish({
                    "event": "version_check", "server_id": info.id, "session": info.session,
                    "version": info.program_version, "version_check": info.version_check,
                    "at": time.time(),
                })  # fmt: skip

    def _agent_left(self, link: AgentLink) -> None:
        if self._links.get(link.server_id) is link:
            del self._links[link.server_id]
        rec = self.registry.get(link.server_id)
        self.publish({
            "event": "hung_up", "server_id": link.server_id,
            "session": rec.session if rec else None, "where": link.where, "at": time.time(),
        })  # fmt: skip
        self.supervisor.hung_up(link.server_id, "control channel closed; it phones home again")

    # -- events ---------------------------------------------------------------------------

    def publish(self, event: dict[str, Any]) -> None:
        """Tell every subscriber, and the ZeroMQ socket, of `event` (on the hub's loop)."""
        self.bus.publish(event)

    def _server_event(self, event: ServerEvent) -> None:
        if event.state in FINAL_STATES:
            # Nothing to dial any more: a forward server's connector would redial for ever.
            self.forward.cancel(event.server_id)
            retire(self.store, self.registry, event.server_id)
        self.publish(event.as_dict())

    def _observe(self, event: dict[str, Any], exc: BaseException | None) -> None:
        # The tunnel knows sessions by id; every hub event names them as users do.
        session_id = str(event.get("session"))
        name = next((n for n, a in self._sessions.items() if a.side.session_id == session_id),
                    None)  # fmt: skip
        event = {**event, "session": name or session_id, "session_id": session_id}
        if exc is not None:
            from ..debug import explain  # the debugger's one line for a refusal

            event = {**event, "explain": explain(exc)}
        self.publish(event)

    async def _readopt(self, rec: ServerRecord) -> None:
        agents = self._sessions[rec.session]
        if rec.mode == "reverse":
            self._locals[rec.id] = str(agents.open_local(Endpoint("127.0.0.1", 0), rec.id))
        if rec.launcher == MANUAL:
            # Started by hand: no job to re-attach; it is awaited until it phones home.
            self.supervisor.transition(
                rec.id, ServerState.IDLE, "hub restarted; waiting for it to phone home again"
            )
            return
        self.supervisor.adopt(rec)

    # -- launching ------------------------------------------------------------------------

    def _agent_argv(
        self, server_id: str, kind: ServerKind, mode: str, session: str, creds: list[str],
        options: Mapping[str, Any],
    ) -> list[str]:  # fmt: skip
        python = str(options.get("python") or sys.executable)
        argv = [python, "-m", "paraconnect.cli", "serve", *creds, "--json"]
        argv += ["--server-id", server_id, "--restart", kind.restart]
        argv += ["--ready-timeout", f"{kind.ready_timeout:g}", *kind.agent_args]
        if mode == "reverse":
            argv += ["--phone-home", self.phone_home_address(session)]
            argv += ["--interval", f"{float(options.get('interval', 1.0)):g}"]
        else:
            argv += ["--listen", str(options.get("forward_listen", "127.0.0.1:0"))]
        return [*argv, "--", *kind.program]

    async def launch(
        self,
        kind: str,
        launcher: Launcher | str = "local",
        session: str = "default",
        mode: str = "reverse",
        options: Mapping[str, Any] | None = None,
        command: Sequence[str] = (),
        launcher_options: Mapping[str, Any] | None = None,
    ) -> ServerInfo:
        """Launch a `kind` server with `launcher` in `session`; returns at once (state
        ``submitted``): follow it with :meth:`events` or :meth:`wait`."""
        opts = dict(options or {})
        if isinstance(launcher, str):
            launcher = make_launcher(launcher, launcher_options)
        server_id, the_kind, creds, env = await self._new_server(
            kind, launcher.name, session, mode, opts, command
        )
        rec = self.registry.get(server_id)
        assert rec is not None  # noqa: S101 - just added
        walltime = opts.get("walltime")
        spec_options = dict(opts.get("launcher_spec_options", {}))
        if the_kind.ranks and launcher.name == "slurm":
            # One agent and N tasks: mpiexec, inside the agent's namespace, places the ranks in
            # the allocation (servers/_mpi.py says why not srun).  On one node unless told:
            # from a namespace with only its own loopback, mpiexec reaches no other node.
            spec_options.setdefault("ntasks", the_kind.ranks)
            spec_options.setdefault("nodes", 1)
            spec_options.setdefault("srun", False)
        spec = LaunchSpec(
            self._agent_argv(server_id, the_kind, mode, rec.session, creds, opts),
            env=env,
            name=kind,
            walltime=float(walltime) if walltime else None,
            grace=float(opts.get("grace", 10.0)),
            options=spec_options,
        )
        self._launchers[server_id] = launcher
        self._specs[server_id] = spec
        try:
            job = await launcher.submit(spec)
        except ParaconnectError as exc:
            self.supervisor.transition(server_id, ServerState.FAILED, f"launch failed: {exc}")
            raise
        self.supervisor.transition(
            server_id, ServerState.SUBMITTED, f"job {job.id} submitted to {launcher.name}"
        )
        self.supervisor.supervise(server_id, job)
        return self.server(server_id)

    async def agent_command(
        self,
        kind: str,
        session: str = "default",
        options: Mapping[str, Any] | None = None,
        command: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Register a reverse `kind` server that someone starts by hand on a remote host, and
        return the shell line that does it: the agent makes its key there, enrols with a
        one-time token (valid `token_ttl` seconds, default 15 minutes) and phones home."""
        opts = dict(options or {})
        opts["credentials"] = "enroll"
        server_id, the_kind, creds, env = await self._new_server(
            kind, MANUAL, session, "reverse", opts, command
        )
        rec = self.registry.get(server_id)
        assert rec is not None  # noqa: S101 - just added
        argv = self._agent_argv(server_id, the_kind, "reverse", rec.session, creds, opts)
        # On the remote host: paraconnect from PATH, the program as the kind names it.
        argv = ["paraconnect", *argv[argv.index("serve") :]]
        line = f"{TOKEN_ENV}={shlex.quote(env[TOKEN_ENV])} {shlex.join(argv)}"
        self.supervisor.transition(
            server_id, ServerState.SUBMITTED, "waiting for it to be started by hand and phone home"
        )
        ttl = float(opts.get("token_ttl", DEFAULT_TOKEN_TTL))
        return {"server": self.server(server_id).as_dict(), "command": line,
                "expires": time.time() + ttl, "warnings": remote_warnings(argv)}  # fmt: skip

    async def _new_server(
        self, kind: str, launcher: str, session: str, mode: str, opts: dict[str, Any],
        command: Sequence[str],
    ) -> tuple[str, ServerKind, list[str], dict[str, str]]:  # fmt: skip
        """Record a new server: its id, kind, credentials arguments for the agent and the
        environment (the enrolment token) it needs; its local endpoint opens now."""
        Mode.parse(mode)
        the_kind = build_kind(kind, opts, command)
        try:
            sess = self.store.open_session(session)
        except ParaconnectError:
            if session != "default":
                raise
            sess = self.store.create_session(session)
        agents = await self._session(sess.name)
        server_id = f"{kind}-{secrets.token_hex(4)}"
        how = opts.get("credentials", "enroll")
        if how not in ("enroll", "bundle"):
            raise ConfigError(f"option credentials {how!r}: choose enroll or bundle")
        cert_lifetime_days(opts)  # a bad cert_lifetime fails the launch, not the enrolment
        env: dict[str, str] = {}
        cert_sha256 = None
        if how == "bundle":
            # Shipped credentials: the key is made here and must reach the agent's host (a
            # shared file system); enrolment is what keeps keys on their hosts.
            creds_dir = ensure_private_dir(self.home / "servers" / server_id)
            issued = sess.issue(
                Role.SERVER, server_id, unique_id=self.store.unique_id().value,
                days=float(opts.get("days", 7)), out=creds_dir,
            )  # fmt: skip
            cert_sha256 = issued.record.sha256
            creds = ["--creds", str(creds_dir)]
        else:
            creds = [
                "--enroll", self.enroll_address(sess.name), "--ca-sha256", sess.ca_fingerprint,
                "--hub-identity", HUB_IDENTITY, "--token-env", TOKEN_ENV,
                "--creds-dir", str(opts.get("creds_dir", "creds")),
            ]  # fmt: skip
        now = time.time()
        self.supervisor.add(
            ServerRecord(
                id=server_id, kind=kind, session=sess.name, mode=mode,
                launcher=launcher, state=ServerState.SUBMITTED,
                reason=f"launching with the {launcher} launcher",
                created=now, updated=now, cert_sha256=cert_sha256, options=opts,
            )
        )  # fmt: skip
        if how == "enroll":
            ttl = float(opts.get("token_ttl", DEFAULT_TOKEN_TTL))
            env[TOKEN_ENV] = issue_token(self.registry, server_id, sess.name, ttl)
        if mode == "reverse":
            self._locals[server_id] = str(agents.open_local(Endpoint("127.0.0.1", 0), server_id))
        return server_id, the_kind, creds, env

    async def _relaunch(self, server_id: str) -> Job:
        launcher, spec = self._launchers.get(server_id), self._specs.get(server_id)
        if launcher is None or spec is None:
            raise ConfigError(f"server {server_id} was launched by another hub; launch it anew")
        rec = self.registry.get(server_id)
        if TOKEN_ENV in spec.env and rec is not None:
            # A new job enrols again (its key is made in its own job directory): the first
            # token was used up by the first job.
            ttl = float(rec.options.get("token_ttl", DEFAULT_TOKEN_TTL))
            token = issue_token(self.registry, server_id, rec.session, ttl)
            spec = dataclasses.replace(spec, env={**spec.env, TOKEN_ENV: token})
            self._specs[server_id] = spec
        return await launcher.submit(spec)

    async def _on_ready(self, server_id: str, ready: dict[str, Any]) -> None:
        rec = self.registry.get(server_id)
        if rec is None or rec.mode != "forward":
            return
        listen = ready.get("listen") or []
        if not listen:
            raise ConfigError(f"the agent of {server_id} reported no --listen address")
        remote = parse_endpoint(str(listen[0]), "listen")
        job = self.supervisor.jobs.get(server_id)
        host = str(rec.options.get("forward_host") or remote.host)
        if host in ("0.0.0.0", "::") and job is not None:  # noqa: S104
            host = job.host

        creds = self._creds(rec.session)
        local = await self.forward.dial(
            server_id, creds, Endpoint(host, remote.port), self.store.unique_id().value
        )
        self._locals[server_id] = str(local)
        self._forward_up(server_id, f"connected to its agent at {host}:{remote.port}")

    def _forward_up(self, server_id: str, why: str) -> None:
        self._connect_ids[server_id] = self.forward.connect_id(server_id)
        self._attempts[server_id] += 1
        self.supervisor.phoned_home(server_id, why)

    def _forward_down(self, server_id: str, why: str) -> None:
        self.supervisor.hung_up(server_id, f"{why}; dialling it again")

    # -- queries and control --------------------------------------------------------------

    async def dial_client(self, server_id: str, port: int, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Connect a local client that ACCEPTS (pvpython's ReverseConnect on 127.0.0.1:port)
        to the server: for pvserver --pv-reverse, whose handshake needs the client to be the
        accepting end.  Retries until the client listens; returns once connected."""
        rec = self.registry.get(server_id)
        if rec is None:
            raise NotFoundError(f"no server {server_id!r}; see 'paraconnect servers list'")
        agents = self._sessions.get(rec.session)
        if agents is None or rec.mode != "reverse":
            raise ConfigError(f"server {server_id} is not a reverse server of this hub")
        await agents.dial_local(server_id, port, timeout)

    async def logs(self, server_id: str, tail: int | None = 100) -> str:
        return await self.supervisor.logs(server_id, tail)

    async def stop(self, server_id: str, grace: float = 10.0) -> ServerInfo:
        rec = await self.supervisor.stop(server_id, grace)
        self.forward.cancel(server_id)
        agents = self._sessions.get(rec.session)
        if agents is not None:
            agents.close_local(server_id)
        return self.server(server_id)

    async def wait(
        self,
        server_id: str,
        state: str = ServerState.CONNECTED,
        timeout: float | None = 60.0,  # noqa: ASYNC109
    ) -> ServerInfo:
        """Wait for `state` (or a final state); TimeoutError after `timeout` seconds."""
        await self.supervisor.wait_for(server_id, {state}, timeout)
        return self.server(server_id)

    @contextlib.asynccontextmanager
    async def events(self) -> AsyncIterator[AsyncIterator[ServerEvent]]:
        """``async with hub.events() as stream: async for event in stream: ...``"""
        async with self.supervisor.events() as stream:
            yield stream

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `callback` on the hub's loop thread with every event (a JSON-able dict, see
        docs/hub-api.md: server, phone_home, hung_up, connection, refused, credentials);
        returns the unsubscribe function."""
        return self.bus.subscribe(callback)

    def session_level(self, session: str) -> SecurityLevel:
        return self.store.open_session(session).level
