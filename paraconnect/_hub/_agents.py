"""The hub's side of the tunnel: one TLS port per session where agents phone home, routed by
server id, and one local plaintext endpoint per server (127.0.0.1, same user only).

Unlike ``paraconnect listen`` (which exposes the newest agent on one local endpoint), the hub
knows which servers it launched: an agent is taken only if its certificate names a server of
the registry that is not finished (and, where recorded, has the very certificate issued or
signed for it); each local endpoint leads to its own server.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.abc

from ..errors import NetworkError, ParaconnectError
from ..pki import Credentials, Role, SecurityLevel
from ..tls import PeerIdentity

# The tunnel's building blocks; they are not in paraconnect.tunnel's __all__ yet (see the
# hub's notes): the control channel, the info read, the listener helpers and the relay.
from ..tunnel._channels import DataChannels
from ..tunnel._client import _Control, _read_info, _relay_tracked
from ..tunnel._hello import Hello, Purpose
from ..tunnel._leg import (
    Endpoint,
    bind_listener,
    bound_endpoint,
    check_same_user,
    connect_endpoint,
)
from ..tunnel._secure import Side
from ..tunnel._stream import ByteStream
from ..tunnel._util import accept_loop, tls_accept_loop

__all__ = ["AgentAccepted", "SessionAgents"]

log = logging.getLogger("paraconnect.hub")

# (server_id, peer) -> None to take the agent, or the reason to refuse it.
Admit = Callable[[str, PeerIdentity], str | None]


@dataclass(eq=False)
class AgentAccepted:
    server_id: str
    peer: PeerIdentity
    where: str
    control: _Control
    connect_id: int | None


class SessionAgents:
    """Accept agents of one session on `listen`; open per-server local endpoints."""

    def __init__(
        self,
        creds: Credentials,
        listen: Endpoint,
        *,
        admit: Admit,
        on_agent: Callable[[AgentAccepted], None],
        on_gone: Callable[[AgentAccepted], None],
        handshake_timeout: float = 10.0,
    ) -> None:
        self.side = Side(creds, Role.CLIENT, handshake_timeout=handshake_timeout)
        self.listen = listen
        self.admit = admit
        self.on_agent = on_agent
        self.on_gone = on_gone
        self.address: Endpoint | None = None
        self.agents: dict[str, AgentAccepted] = {}
        self._changed = anyio.Event()
        self.channels = DataChannels()
        self._tg: anyio.abc.TaskGroup | None = None
        self._locals: dict[str, tuple[socket.socket, anyio.CancelScope]] = {}

    @property
    def level(self) -> SecurityLevel:
        return self.side.level

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[Endpoint] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        sock = bind_listener(self.listen)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self.address = bound_endpoint(sock, self.listen)
                log.info(
                    "hub: agents of session %s… phone home to %s",
                    self.side.session_id[:8],
                    self.address,
                )
                tg.start_soon(tls_accept_loop, sock, tg, self._incoming, str(self.address))
                # A changed CRL or policy closes refused connections and reaches the agents.
                tg.start_soon(self.side.watch, self._push_trust)
                task_status.started(self.address)
        finally:
            self._tg = None
            sock.close()
            for lsock, _scope in self._locals.values():
                lsock.close()
            self.side.close()

    async def _push_trust(self) -> None:
        for link in list(self.agents.values()):
            await link.control.push_trust(self.side)

    # -- agents ---------------------------------------------------------------------------

    async def _incoming(self, sock: socket.socket, where: str) -> None:
        try:
            conn, hello = await self.side.establish(sock, server_side=True)
        except ParaconnectError as exc:
            log.warning("hub: refused connection from %s: %s", where, exc)
            return
        if hello.purpose is Purpose.DATA:
            await self._data(conn, hello, where)
        else:
            await self._agent(conn, hello, where)

    async def _data(self, conn: ByteStream, hello: Hello, where: str) -> None:
        if not self.channels.arrived(conn, hello, where):
            log.warning("hub: data connection from %s at %s for no open channel", where, where)
            await conn.aclose()

    async def _agent(self, conn: ByteStream, hello: Hello, where: str) -> None:
        server_id = hello.server_id
        refusal = self.admit(server_id, conn.peer)
        if refusal is not None:
            log.warning("hub: refused %s at %s: %s", conn.peer.label, where, refusal)
            # Accounted and announced ("refused" event), as a refused handshake is.
            self.side.refuse(conn, hello, where, refusal)
            await conn.aclose()
            return
        try:
            connect_id = await _read_info(conn, self.side.hello_timeout)
        except BaseException:
            await conn.aclose()
            raise
        link = AgentAccepted(server_id, conn.peer, where, _Control(conn, hello), connect_id)
        old = self.agents.get(server_id)
        self.agents[server_id] = link
        self._changed.set()
        self._changed = anyio.Event()
        if old is not None:
            await old.control.aclose()
        self.on_agent(link)
        try:
            with self.side.track(conn, hello, where):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(link.control.push_trust, self.side)
                    await link.control.read_loop()
        finally:
            if self.agents.get(server_id) is link:
                del self.agents[server_id]
                self.on_gone(link)

    # -- local endpoints ------------------------------------------------------------------

    def open_local(self, server_id: str, local: Endpoint) -> Endpoint:
        """Bind `local` (loopback) for `server_id`; each connection is tunnelled to it."""
        if self._tg is None:
            raise RuntimeError("the hub's agent listener is not running")
        lsock = bind_listener(local)
        address = bound_endpoint(lsock, local)
        scope = anyio.CancelScope()
        self._locals[server_id] = (lsock, scope)
        tg = self._tg
        same_user = functools.partial(check_same_user, where=str(address))
        handler = functools.partial(self.forward, server_id)

        async def serve() -> None:
            with scope:
                async with anyio.create_task_group() as inner:
                    await accept_loop(lsock, inner, handler, str(address), same_user)

        tg.start_soon(serve)
        return address

    def close_local(self, server_id: str) -> None:
        entry = self._locals.pop(server_id, None)
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
        except ParaconnectError:
            sock.close()
            raise
        if self._tg is None:
            sock.close()
            raise RuntimeError("the hub's agent listener is not running")
        self._tg.start_soon(self.forward, server_id, sock, where)

    async def wait_agent(self, server_id: str, timeout: float) -> AgentAccepted | None:  # noqa: ASYNC109
        with anyio.move_on_after(timeout):
            while server_id not in self.agents:
                await self._changed.wait()
        return self.agents.get(server_id)

    async def forward(self, server_id: str, local: socket.socket, where: str) -> None:
        """Tunnel one local socket (accepted here, or dialled by the hub) to `server_id`."""
        try:
            link = await self.wait_agent(server_id, 30.0)
            if link is None:
                log.warning("hub: %s: server %s has not phoned home; closed", where, server_id)
                return
            async with self.channels.request(link.control, server_id) as (conn, hello, agent):
                await _relay_tracked(self.side, conn, hello, local, agent)
        except ParaconnectError as exc:
            log.warning("hub: local connection from %s: %s", where, exc)
        finally:
            local.close()
