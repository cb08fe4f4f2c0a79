"""Reverse: agents phone home to a `ReverseListener`, which keeps their control channels and
exposes them on local plaintext endpoints (loopback, this user's only).

Each local connection asks an agent, over its control channel, to dial back a data connection
for a random channel token (`DataChannels`).  Which agents are taken is the listener's `Rule`:

* `Pinned` (``paraconnect listen``): the servers it was told (``--server``), or else the first
  one that phones home, pinned for the listener's life; its local endpoint leads to the newest
  agent taken;
* `ByServerId` (the hub): an admission hook decides per server id (only servers of its
  registry that are not finished, with the certificate recorded for them); one agent per server
  id, a newer one replacing the older; one local endpoint per server (`open_local`).

The listener holds the session (its revocation list and policy): when they change, it pushes
them to its agents on their control channels, and at every new control channel too.

An agent's `Renew` (a CSR for a key it just made) is answered by the `on_renew` hook (the
hub's, which certifies it) for the identity its control channel proved, once this side would
still take that identity; each answer is a row of the accounting (kind ``renewal``).
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Unpack

import anyio
import anyio.abc

from ..errors import ConfigError, NetworkError, ParaconnectError, TrustError
from ..pki import Credentials, Role, SecurityLevel
from ..tls import PeerIdentity
from ._accounting import Attempt
from ._agent import check_insecure
from ._channels import DataChannels
from ._client import local_endpoint
from ._control import Control, read_info
from ._hello import Hello, Purpose
from ._leg import (
    Endpoint,
    bind_listener,
    bound_endpoint,
    check_same_user,
    connect_endpoint,
    parse_endpoint,
)
from ._listener import Established, Refusal, SecureListener
from ._messages import PhoneHome, Renew, Renewed
from ._options import SideOptions
from ._phonehome import Home
from ._radius_wire import RadiusConfig
from ._relay import relay_tracked
from ._secure import Side, identity_label
from ._util import accept_loop, single_error

__all__ = ["AGENT_WAIT", "AgentLink", "ByServerId", "Pinned", "ReverseListener", "Rule"]

log = logging.getLogger("paraconnect.tunnel")

AGENT_WAIT = 30.0


def server_name(peer: PeerIdentity, hello: Hello) -> str:
    """The server's name as its certificate proves it (its claimed id at level none)."""
    ident = peer.identity
    return ident.name if ident is not None else hello.server_id


@dataclass(eq=False)
class AgentLink:
    """An agent that phoned home and holds a control channel here."""

    hello: Hello
    where: str  # where it phoned from
    control: Control
    connect_id: int | None = None
    since: float = field(default_factory=anyio.current_time)
    version: str | None = None  # its program's (pvserver's), as the agent reported it

    @property
    def server_id(self) -> str:
        return self.hello.server_id

    @property
    def peer(self) -> PeerIdentity:
        """What the agent proved on its control channel."""
        return self.control.conn.peer

    @property
    def peer_label(self) -> str:
        return self.peer.label


class Rule(Protocol):
    """Which agents a reverse listener takes."""

    # One agent per server id: a newer one replaces (and closes) the older.
    exclusive: bool

    def admit(self, peer: PeerIdentity, hello: Hello) -> str | None:
        """None to take this connection (control or data), else why not."""
        ...


class Pinned:
    """The servers named in `servers` (their certificates' names); with none named, the first
    server taken is pinned: a second certificate of the session can never take over the
    owner's local endpoint by phoning home later."""

    exclusive = False

    def __init__(self, servers: Sequence[str] = ()) -> None:
        self.servers: frozenset[str] | None = frozenset(servers) or None

    def admit(self, peer: PeerIdentity, hello: Hello) -> str | None:
        name = server_name(peer, hello)
        if self.servers is None:
            if hello.purpose is Purpose.DATA:
                return "no server was taken yet; data before control"
            self.servers = frozenset({name})
            log.info(
                "took server %r first: only it is taken from now on (give --server to name "
                "the servers in advance)",
                name,
            )
            return None
        if name in self.servers:
            return None
        return f"this listener takes only {', '.join(map(repr, sorted(self.servers)))}"


class ByServerId:
    """Agents taken by `admit(server_id, peer)` (None to take it, else why not).  A data
    connection is matched to its channel token, which was asked of one server only."""

    exclusive = True

    def __init__(self, admit: Callable[[str, PeerIdentity], str | None]) -> None:
        self._admit = admit

    def admit(self, peer: PeerIdentity, hello: Hello) -> str | None:
        if hello.purpose is Purpose.DATA:
            return None
        return self._admit(hello.server_id, peer)


class ReverseListener:
    """Accept agents phoning home on `listen` as `rule` says; with `local`, expose the newest
    on it (more endpoints, each for one server id, with `open_local`)."""

    def __init__(
        self,
        creds: Credentials,
        listen: Endpoint | str,
        local: Endpoint | str | None = None,
        *,
        insecure: bool = False,
        agent_wait: float = AGENT_WAIT,
        on_agent: Callable[[AgentLink], None] | None = None,
        on_gone: Callable[[AgentLink], None] | None = None,
        servers: Sequence[str] = (),
        rule: Rule | None = None,
        on_refused: Callable[[str, str, str], None] | None = None,
        radius: RadiusConfig | None = None,
        on_renew: Callable[[AgentLink, str], Awaitable[tuple[str, str | None]]] | None = None,
        **side: Unpack[SideOptions],
    ) -> None:
        """`on_refused(server, where, why)` hears of each server refused by the rule;
        `on_renew(link, csr)` certifies an agent's fresh key: (certificate, CRL) as PEM, or a
        ParaconnectError saying why not."""
        self.on_renew = on_renew
        self.rule: Rule = rule if rule is not None else Pinned(servers)
        self.on_refused = on_refused
        self.side = Side(creds, Role.CLIENT, radius=radius, **side)
        self.listen = listen if isinstance(listen, Endpoint) else parse_endpoint(listen)
        self.local = local_endpoint(local) if local is not None else None
        self.insecure = insecure
        self.agent_wait = agent_wait
        self.on_agent = on_agent
        self.on_gone = on_gone
        self.address: Endpoint | None = None
        self.local_address: Endpoint | None = None
        self.agents: list[AgentLink] = []  # oldest first
        self._agent_changed = anyio.Event()
        self.channels = DataChannels()
        self._tg: anyio.abc.TaskGroup | None = None
        self._locals: dict[str, tuple[socket.socket, anyio.CancelScope]] = {}
        self._listener = SecureListener(
            self.side, [self.listen], self._incoming, on_refused=self._refused
        )

    @property
    def level(self) -> SecurityLevel:
        return self.side.level

    async def run(
        self,
        *,
        task_status: anyio.abc.TaskStatus[tuple[Endpoint, Endpoint | None]] = (
            anyio.TASK_STATUS_IGNORED
        ),
    ) -> None:
        check_insecure(self.side.level, [self.listen], self.insecure)
        try:
            self.side.open_accounting()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self.address = self._listener.bind()[0]
                if self.local is not None:
                    self.local_address = self.open_local(self.local)
                log.info(
                    "listening for servers phoning home on %s (session %s…, level %s)%s",
                    self.address,
                    self.side.session_id[:8],
                    self.side.level.value,
                    f"; local endpoint {self.local_address}" if self.local_address else "",
                )
                tg.start_soon(self._listener.serve, tg)
                # A changed CRL or policy closes refused connections and reaches the agents.
                tg.start_soon(self.side.watch, self._push_trust)
                task_status.started((self.address, self.local_address))
        except BaseExceptionGroup as group:
            raise single_error(group) from None
        finally:
            self._tg = None
            self._listener.close()
            for lsock, _scope in self._locals.values():
                lsock.close()
            self._locals.clear()
            self.side.close()

    async def _push_trust(self) -> None:
        for link in list(self.agents):
            await link.control.push_trust(self.side)

    # -- agents ---------------------------------------------------------------------------

    def _refused(self, refusal: Refusal) -> None:
        if refusal.hello is not None and refusal.peer is not None and self.on_refused:
            self.on_refused(server_name(refusal.peer, refusal.hello), refusal.where, refusal.reason)

    async def _incoming(self, peer: Established) -> None:
        why = self.rule.admit(peer.peer, peer.hello)
        if why is not None:
            await self._listener.refuse(peer, why)
            return
        conn, hello, where = peer.conn, peer.hello, peer.where
        if hello.purpose is Purpose.DATA:
            if not self.channels.arrived(conn, hello, where):
                log.warning(
                    "data connection from %s at %s for no open channel", conn.peer.label, where
                )
                await conn.aclose()
            return
        await self._agent(peer)

    def _changed(self) -> None:
        self._agent_changed.set()
        self._agent_changed = anyio.Event()

    async def _agent(self, peer: Established) -> None:
        conn, hello, where = peer.conn, peer.hello, peer.where
        try:
            info = await read_info(conn, self.side.hello_timeout)
        except BaseException:
            await conn.aclose()
            raise
        link = AgentLink(hello, where, Control(conn, hello), info.connect_id, version=info.version)
        link.control.on_renew = functools.partial(self._renew, link)
        log.info("%s (id %r) phoned home from %s", link.peer_label, hello.server_id, where)
        same = [a for a in self.agents if a.server_id == link.server_id]
        olds = same if self.rule.exclusive else []
        for old in olds:
            self.agents.remove(old)
        self.agents.append(link)
        self._changed()
        for old in olds:
            await old.control.aclose()
        if self.on_agent is not None:
            self.on_agent(link)
        try:
            with self.side.track(conn, hello, where):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(link.control.push_trust, self.side)
                    await link.control.read_loop()
        finally:
            log.info("%s (id %r) at %s disconnected", link.peer_label, hello.server_id, where)
            if link in self.agents:  # not replaced by a newer agent of the same server
                self.agents.remove(link)
                self._changed()
                if self.on_gone is not None:
                    self.on_gone(link)

    async def _renew(self, link: AgentLink, msg: Renew) -> Renewed:
        peer = link.peer
        ident = peer.identity
        try:
            why = self.side.refusal(peer)
            if why is not None:
                raise TrustError(why)
            if self.on_renew is None:
                raise ConfigError("this listener does not renew certificates")
            cert, crl = await self.on_renew(link, msg.csr)
        except ParaconnectError as exc:
            log.warning("renewal for %s at %s refused: %s", link.peer_label, link.where, exc)
            self._account_renewal(link, "refused", str(exc))
            return Renewed(reason=str(exc))
        self._account_renewal(link, "renewed", "certificate renewed; the old one superseded")
        log.info("renewed the certificate of %s (id %r)", identity_label(ident), link.server_id)
        return Renewed(cert, crl)

    def _account_renewal(self, link: AgentLink, outcome: str, reason: str) -> None:
        acc = self.side.accounting
        if acc is None:
            return
        ident = link.peer.identity
        serial = link.peer.serial
        attempt = Attempt(
            session=self.side.session_id, server_id=link.server_id, kind="renewal",
            side=self.side.role.value, local_identity=self.side.local_identity,
            remote_address=link.where, remote_identity=identity_label(ident),
            remote_role=ident.role.value if ident else None,
            remote_name=ident.name if ident else None,
            remote_serial=format(serial, "x") if serial is not None else None,
            remote_unique_id=ident.unique_id if ident else None,
        )  # fmt: skip
        try:
            acc.note(attempt, outcome, reason)
        except Exception as exc:  # sqlite3.Error, OSError: accounting never stops a tunnel
            log.error("accounting %s failed: %s", acc.path, exc)

    def agent(self, server_id: str | None = None) -> AgentLink | None:
        """The newest agent here (of `server_id`, if given)."""
        for link in reversed(self.agents):
            if server_id is None or link.server_id == server_id:
                return link
        return None

    async def wait_for_agent(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
        server_id: str | None = None,
    ) -> AgentLink:
        """The newest agent (of `server_id`); TimeoutError if none comes within `timeout`."""
        with anyio.fail_after(timeout):
            while (link := self.agent(server_id)) is None:
                await self._agent_changed.wait()
        return link

    async def request_phone_home(
        self, home: Home, agents: Sequence[AgentLink] | None = None
    ) -> None:
        """Send every connected agent (or those given) to phone `home` instead of here."""
        check_insecure(self.side.level, [home.endpoint], self.insecure)
        for link in list(agents if agents is not None else self.agents):
            await link.control.request(PhoneHome(home))
            log.info("asked %s to phone home to %s", link.peer_label, home.endpoint)

    # -- local endpoints ------------------------------------------------------------------

    def _running(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise RuntimeError("the reverse listener is not running")
        return self._tg

    def open_local(self, local: Endpoint, server_id: str | None = None) -> Endpoint:
        """Bind `local` (loopback); each connection is tunnelled to the newest agent, or to
        `server_id`'s.  Returns the bound address."""
        tg = self._running()
        lsock = bind_listener(local_endpoint(local))
        address = bound_endpoint(lsock, local)
        scope = anyio.CancelScope()
        self.close_local(server_id or "")
        self._locals[server_id or ""] = (lsock, scope)
        same_user = functools.partial(check_same_user, where=str(address))
        handler = functools.partial(self.forward, server_id=server_id)

        async def serve() -> None:
            with scope:
                async with anyio.create_task_group() as inner:
                    await accept_loop(lsock, inner, handler, str(address), same_user)

        tg.start_soon(serve)
        return address

    def close_local(self, server_id: str | None = None) -> None:
        entry = self._locals.pop(server_id or "", None)
        if entry is not None:
            entry[1].cancel()
            entry[0].close()

    async def dial_local(self, server_id: str, port: int, timeout: float) -> None:  # noqa: ASYNC109
        """Connect a local client that ACCEPTS (pvpython's ReverseConnect on 127.0.0.1:port,
        this user's only) to `server_id`, retrying until it listens; the tunnel then runs in
        the background."""
        where = f"127.0.0.1:{port}"
        sock: socket.socket | None = None
        with anyio.move_on_after(timeout):
            while sock is None:
                try:
                    sock = await connect_endpoint(Endpoint("127.0.0.1", port), timeout=5.0)
                except ParaconnectError:
                    await anyio.sleep(0.2)
        if sock is None:
            raise NetworkError(
                f"nothing listened on {where} within {timeout:g} s; start pvpython with "
                f"simple.ReverseConnect('{port}') first"
            )
        try:
            check_same_user(sock, where)
            tg = self._running()
        except BaseException:
            sock.close()
            raise
        tg.start_soon(functools.partial(self.forward, sock, where, server_id=server_id))

    async def forward(
        self, local: socket.socket, where: str, *, server_id: str | None = None
    ) -> None:
        """Tunnel one local socket (accepted here, or dialled) to the newest agent, or to
        `server_id`'s; closes it when done."""
        try:
            try:
                link = await self.wait_for_agent(self.agent_wait, server_id)
            except TimeoutError:
                who = f"server {server_id} has not" if server_id else "no server"
                log.warning(
                    "local connection from %s: %s phoned home within %g s; closed",
                    where,
                    who,
                    self.agent_wait,
                )
                return
            async with self.channels.request(link.control, link.server_id) as arrival:
                conn, hello, agent_where = arrival
                log.info("local connection from %s tunnelled to %s", where, link.peer_label)
                await relay_tracked(self.side, conn, hello, local, agent_where)
        except ParaconnectError as exc:
            log.warning("local connection from %s: %s; closed", where, exc)
        finally:
            local.close()  # idempotent: the relay closes both ends itself
