"""The client side: a local plaintext endpoint that only this user can reach, tunnelled to an
agent over mutual TLS.

`Connector` (``paraconnect connect``, forward): keeps a control channel to the agent (opened
first, so a refusal is reported before anything listens locally) and dials one TLS data
connection per local connection.

`ReverseListener` (``paraconnect listen``, reverse): accepts agents phoning home; each local
connection asks the newest agent, over its control channel, to dial back a data connection
for a random channel token.

Both can, when they leave, tell the agent where to phone next (`request_phone_home`).

Both hold the session (its revocation list): when the list changes, they push it to their
agents on the control channels (``crl {pem}``), and at every new control channel too, so an
agent on another host learns of a revocation without a restart.
"""

from __future__ import annotations

import functools
import logging
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.abc

from ..errors import ConfigError, NetworkError, ParaconnectError, ProtocolError
from ..pki import Credentials, Role, SecurityLevel, Store
from ..tls import PeerIdentity
from ._accounting import Accounting
from ._agent import check_insecure
from ._channels import DataChannels
from ._hello import Hello, Purpose, read_message, write_frame
from ._leg import (
    Endpoint,
    bind_listener,
    bound_endpoint,
    check_same_user,
    connect_endpoint,
    parse_endpoint,
)
from ._phonehome import Home
from ._relay import relay
from ._secure import HANDSHAKE_TIMEOUT, Side
from ._stream import ByteStream
from ._util import accept_loop, single_error, tls_accept_loop

__all__ = ["AgentLink", "Connector", "ReverseListener"]

log = logging.getLogger("paraconnect.tunnel")

AGENT_WAIT = 30.0
CRL_PART = 12 * 1024  # characters of PEM per control frame
REDIAL_MAX = 30.0  # the longest pause between attempts to reopen a lost control channel


def _ep(value: Endpoint | str, option: str) -> Endpoint:
    return value if isinstance(value, Endpoint) else parse_endpoint(value, option)


def _local_ep(value: Endpoint | str) -> Endpoint:
    ep = _ep(value, "--local")
    if not ep.is_loopback:
        raise ConfigError(
            f"--local {ep} is not a loopback address: the plaintext endpoint must stay on this "
            "machine (use 127.0.0.1:PORT, [::1]:PORT or unix:PATH)"
        )
    return ep


class _Control:
    """One control channel: a single reader task hands replies to whoever waits for them."""

    def __init__(self, conn: ByteStream, hello: Hello) -> None:
        self.conn = conn
        self.hello = hello
        self.closed = anyio.Event()
        self._lock = anyio.Lock()
        self._replies: list[dict[str, object]] = []
        self._reply = anyio.Event()

    async def read_loop(
        self, on_message: Callable[[dict[str, object]], None] | None = None
    ) -> None:
        try:
            while True:
                msg = await read_message(self.conn)
                if msg is None:
                    return
                if msg.get("type") in ("ok", "error", "pong"):
                    self._replies.append(msg)
                    self._reply.set()
                elif on_message is not None:
                    on_message(msg)
        except ParaconnectError as exc:
            log.warning("control channel with %s failed: %s", self.conn.peer.label, exc)
        finally:
            self.closed.set()
            self._reply.set()
            with anyio.CancelScope(shield=True):
                await self.conn.aclose()

    async def send(self, msg: dict[str, object]) -> None:
        async with self._lock:
            await write_frame(self.conn, msg)

    async def request(self, msg: dict[str, object], timeout: float = 10.0) -> dict[str, object]:  # noqa: ASYNC109
        async with self._lock:
            self._replies.clear()
            self._reply = anyio.Event()
            await write_frame(self.conn, msg)
            with anyio.move_on_after(timeout):
                await self._reply.wait()
        if not self._replies:
            raise NetworkError(
                f"{self.conn.peer.label} did not answer a {msg.get('type')!r} request"
            )
        reply = self._replies.pop(0)
        if reply.get("type") == "error":
            raise ProtocolError(
                f"{self.conn.peer.label} refused the request: {reply.get('reason')}"
            )
        return reply

    async def aclose(self) -> None:
        await self.conn.aclose()

    async def push_trust(self, side: Side) -> None:
        """Send our revocation list, and our policy where we own the session, to the agent on
        this channel (it checks both signatures, and never goes back to an older one)."""
        if self.closed.is_set():
            return
        policy = side.signed_policy()
        pem = side.crl_pem()
        if pem is None:
            await self._push_policy(policy)
            return
        # A long list spans several frames (each at most MAX_FRAME), sent back to back.
        parts = [pem[i : i + CRL_PART] for i in range(0, len(pem), CRL_PART)]
        try:
            async with self._lock:
                for index, part in enumerate(parts):
                    await write_frame(
                        self.conn,
                        {"type": "crl", "pem": part, "part": index, "parts": len(parts)},
                    )
        except ParaconnectError as exc:
            log.warning("could not send the revocation list to %s: %s", self.conn.peer.label, exc)
            return
        log.debug("revocation list sent to %s", self.conn.peer.label)
        await self._push_policy(policy)

    async def _push_policy(self, policy: str | None) -> None:
        if policy is None or self.closed.is_set():
            return
        try:
            await self.send({"type": "policy", "signed": policy})
        except ParaconnectError as exc:
            log.warning("could not send the policy to %s: %s", self.conn.peer.label, exc)


async def _relay_tracked(
    side: Side, conn: ByteStream, hello: Hello, local: socket.socket, where: str
) -> None:
    """Relay a data connection under the side's registry and accounting."""
    from ._splice import SpliceResult

    label = conn.peer.label
    with side.track(conn, hello, where) as tracked:
        tracked.live = SpliceResult()
        try:
            result = await relay(conn, local, live=tracked.live)
        except ParaconnectError as exc:
            tracked.reason = f"failed: {exc}"
            log.warning("tunnel to %s for %s failed: %s", label, where, exc)
            return
        tracked.reason = result.reason
        log.info(
            "tunnel to %s for %s closed: %d bytes in, %d out (%s)",
            label,
            where,
            result.bytes_to_plain,
            result.bytes_to_peer,
            result.reason,
        )


async def _read_info(conn: ByteStream, timeout: float) -> int | None:  # noqa: ASYNC109
    """The agent's first control message: its server id and the program's connect id."""
    try:
        with anyio.fail_after(timeout):
            msg = await read_message(conn)
    except TimeoutError:
        raise NetworkError(f"{conn.peer.label} sent no server info after the hello") from None
    if msg is None or msg.get("type") != "info":
        raise ProtocolError(f"{conn.peer.label} did not start the control channel with its info")
    connect_id = msg.get("connect_id")
    if connect_id is not None and type(connect_id) is not int:
        raise ProtocolError(f"{conn.peer.label} sent a bad connect id")
    return connect_id


class Connector:
    """Forward: a local endpoint whose connections are tunnelled to an agent's --listen."""

    def __init__(
        self,
        creds: Credentials,
        remote: Endpoint | str,
        local: Endpoint | str,
        *,
        server_id: str = "",
        level: SecurityLevel | str | None = None,
        insecure: bool = False,
        unique_id: str | None = None,
        store: Store | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        accounting: Accounting | bool = True,
        on_control: Callable[[bool, str], None] | None = None,
    ) -> None:
        """`on_control(up, why)` hears when the agent's control channel is lost (the agent
        stopped, restarted, or the network broke) and when it is reopened."""
        self.on_control = on_control
        self.side = Side(
            creds,
            Role.CLIENT,
            level=level,
            unique_id=unique_id,
            store=store,
            handshake_timeout=handshake_timeout,
            accounting=accounting,
        )
        self.remote = _ep(remote, "HOST:PORT")
        self.local = _local_ep(local)
        self.expect_server_id = server_id or None
        self.insecure = insecure
        self.address: Endpoint | None = None
        self.agent: Hello | None = None
        self.connect_id: int | None = None  # the program's --connect-id, if it takes one
        self._control: _Control | None = None

    @property
    def agent_peer(self) -> PeerIdentity | None:
        """What the agent proved on the control channel, while that channel is open."""
        control = self._control
        if control is None or control.closed.is_set():
            return None
        return control.conn.peer

    async def _dial(self, purpose: Purpose) -> tuple[ByteStream, Hello]:
        sock = await connect_endpoint(self.remote)
        return await self.side.establish(
            sock, server_side=False, purpose=purpose, expect_server_id=self.expect_server_id
        )

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[Endpoint] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self._run(task_status)
        finally:
            self.side.close()  # the accounting database, also after a refusal

    async def _run(self, task_status: anyio.abc.TaskStatus[Endpoint]) -> None:
        check_insecure(self.side.level, [self.remote], self.insecure)
        self.side.open_accounting()
        conn, hello = await self._dial(Purpose.CONTROL)
        self.agent = hello
        try:
            self.connect_id = await _read_info(conn, self.side.hello_timeout)
        except BaseException:
            await conn.aclose()
            raise
        self._control = _Control(conn, hello)
        log.info("connected to %s at %s", conn.peer.label, self.remote)
        lsock: socket.socket | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_control, self._control)
                tg.start_soon(self.side.watch, self._push_trust)
                lsock = bind_listener(self.local)
                self.address = bound_endpoint(lsock, self.local)
                log.info("local endpoint %s leads to %s", self.address, self.remote)
                same_user = functools.partial(check_same_user, where=str(self.address))
                tg.start_soon(accept_loop, lsock, tg, self._forward, str(self.address), same_user)
                task_status.started(self.address)
        except BaseExceptionGroup as group:
            raise single_error(group) from None
        finally:
            if lsock is not None:
                lsock.close()

    async def _push_trust(self) -> None:
        if self._control is not None:
            await self._control.push_trust(self.side)

    async def _watch_control(self, control: _Control) -> None:
        """Hold the control channel; when it is lost, dial again (backing off) until the
        agent answers, so that a restarted agent is followed and can be asked to phone home."""
        while True:
            with self.side.track(control.conn, control.hello, str(self.remote)):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(control.push_trust, self.side)
                    await control.read_loop()
            why = f"the agent at {self.remote} closed the control channel (stopped or restarted?)"
            log.warning("%s; dialling it again", why)
            self._tell(False, why)
            control = await self._redial()
            self._control = control
            log.info("control channel to %s at %s reopened", control.conn.peer.label, self.remote)
            self._tell(True, f"control channel to {self.remote} reopened")

    async def _redial(self) -> _Control:
        pause = 0.5
        while True:
            await anyio.sleep(pause * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
            try:
                conn, hello = await self._dial(Purpose.CONTROL)
            except ParaconnectError as exc:
                log.debug("the agent at %s does not answer yet: %s", self.remote, exc)
                pause = min(pause * 2, REDIAL_MAX)
                continue
            try:
                self.connect_id = await _read_info(conn, self.side.hello_timeout)
            except ParaconnectError as exc:
                await conn.aclose()
                log.debug("the agent at %s sent no info: %s", self.remote, exc)
                continue
            self.agent = hello
            return _Control(conn, hello)

    def _tell(self, up: bool, why: str) -> None:
        if self.on_control is not None:
            try:
                self.on_control(up, why)
            except Exception:  # the owner's bug never stops the tunnel
                log.exception("a control-channel observer failed")

    async def _forward(self, local: socket.socket, where: str) -> None:
        try:
            await self._tunnel(local, where)
        finally:
            local.close()  # idempotent: the relay closes both ends itself

    async def _tunnel(self, local: socket.socket, where: str) -> None:
        try:
            conn, hello = await self._dial(Purpose.DATA)
        except ParaconnectError as exc:
            log.warning("local connection from %s: cannot reach %s: %s", where, self.remote, exc)
            local.close()
            return
        label = conn.peer.label
        log.info("local connection from %s tunnelled to %s at %s", where, label, self.remote)
        await _relay_tracked(self.side, conn, hello, local, str(self.remote))

    async def request_phone_home(self, home: Home) -> None:
        """Ask the agent to phone `home` from now on (we are leaving); waits for its ok."""
        if self._control is None or self._control.closed.is_set():
            raise NetworkError(f"no control channel to the agent at {self.remote}")
        check_insecure(self.side.level, [home.endpoint], self.insecure)
        await self._control.request(home.to_message())
        log.info("asked %s to phone home to %s", self._control.conn.peer.label, home.endpoint)


def _server_name(conn: ByteStream, hello: Hello) -> str:
    """The server's name as its certificate proves it (its claimed id at level none)."""
    ident = conn.peer.identity
    return ident.name if ident is not None else hello.server_id


@dataclass(eq=False)
class AgentLink:
    """An agent that phoned home and holds a control channel here."""

    peer_label: str
    hello: Hello
    where: str
    control: _Control
    connect_id: int | None = None
    since: float = field(default_factory=anyio.current_time)


class ReverseListener:
    """Reverse: accept agents phoning home on `listen`, expose the newest on `local`.

    Only the servers named in `servers` (their certificates' names) are taken; any other
    server of the session that dials is refused, logged and accounted.  With no `servers`,
    the first server taken is pinned for the listener's life: a second certificate of the
    session can never take over the owner's local endpoint by phoning home later."""

    def __init__(
        self,
        creds: Credentials,
        listen: Endpoint | str,
        local: Endpoint | str,
        *,
        level: SecurityLevel | str | None = None,
        insecure: bool = False,
        unique_id: str | None = None,
        store: Store | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        accounting: Accounting | bool = True,
        agent_wait: float = AGENT_WAIT,
        on_agent: Callable[[AgentLink], None] | None = None,
        servers: Sequence[str] = (),
        on_refused: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.servers: frozenset[str] | None = frozenset(servers) or None
        self.on_refused = on_refused
        self.side = Side(
            creds,
            Role.CLIENT,
            level=level,
            unique_id=unique_id,
            store=store,
            handshake_timeout=handshake_timeout,
            accounting=accounting,
        )
        self.listen = _ep(listen, "HOST:PORT")
        self.local = _local_ep(local)
        self.insecure = insecure
        self.agent_wait = agent_wait
        self.on_agent = on_agent
        self.address: Endpoint | None = None
        self.local_address: Endpoint | None = None
        self.agents: list[AgentLink] = []
        self._agent_changed = anyio.Event()
        self.channels = DataChannels()
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(
        self,
        *,
        task_status: anyio.abc.TaskStatus[tuple[Endpoint, Endpoint]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        check_insecure(self.side.level, [self.listen], self.insecure)
        sockets: list[socket.socket] = []
        try:
            self.side.open_accounting()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tls_sock = bind_listener(self.listen)
                sockets.append(tls_sock)
                self.address = bound_endpoint(tls_sock, self.listen)
                local_sock = bind_listener(self.local)
                sockets.append(local_sock)
                self.local_address = bound_endpoint(local_sock, self.local)
                log.info(
                    "listening for servers phoning home on %s (session %s…, level %s); "
                    "local endpoint %s",
                    self.address,
                    self.side.session_id[:8],
                    self.side.level.value,
                    self.local_address,
                )
                tg.start_soon(tls_accept_loop, tls_sock, tg, self._incoming, str(self.address))
                where = str(self.local_address)
                same_user = functools.partial(check_same_user, where=where)
                tg.start_soon(accept_loop, local_sock, tg, self._forward, where, same_user)
                tg.start_soon(self.side.watch, self._push_trust)
                task_status.started((self.address, self.local_address))
        except BaseExceptionGroup as group:
            raise single_error(group) from None
        finally:
            self._tg = None
            for sock in sockets:
                sock.close()
            self.side.close()

    async def _push_trust(self) -> None:
        for link in list(self.agents):
            await link.control.push_trust(self.side)

    async def wait_for_agent(self, timeout: float | None = None) -> AgentLink:  # noqa: ASYNC109
        with anyio.fail_after(timeout):
            while not self.agents:
                await self._agent_changed.wait()
        return self.agents[-1]

    async def _incoming(self, sock: socket.socket, where: str) -> None:
        try:
            conn, hello = await self.side.establish(sock, server_side=True)
        except ParaconnectError as exc:
            log.warning("refused connection from %s: %s", where, exc)
            return
        why = self._admission(conn, hello)
        if why is not None:
            name = _server_name(conn, hello)
            log.warning("refused server %r at %s: %s", name, where, why)
            self.side.refuse(conn, hello, where, why)
            if self.on_refused is not None:
                self.on_refused(name, where, why)
            await conn.aclose()
            return
        if hello.purpose is Purpose.DATA:
            if not self.channels.arrived(conn, hello, where):
                log.warning(
                    "data connection from %s at %s for no open channel", conn.peer.label, where
                )
                await conn.aclose()
            return
        await self._agent(conn, hello, where)

    def _admission(self, conn: ByteStream, hello: Hello) -> str | None:
        """None to take this server, else why not."""
        name = _server_name(conn, hello)
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

    def _changed(self) -> None:
        self._agent_changed.set()
        self._agent_changed = anyio.Event()

    async def _agent(self, conn: ByteStream, hello: Hello, where: str) -> None:
        try:
            connect_id = await _read_info(conn, self.side.hello_timeout)
        except BaseException:
            await conn.aclose()
            raise
        link = AgentLink(conn.peer.label, hello, where, _Control(conn, hello), connect_id)
        log.info("%s (id %r) phoned home from %s", link.peer_label, hello.server_id, where)
        self.agents.append(link)
        self._changed()
        if self.on_agent is not None:
            self.on_agent(link)
        try:
            with self.side.track(conn, hello, where):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(link.control.push_trust, self.side)
                    await link.control.read_loop()
        finally:
            self.agents.remove(link)
            self._changed()
            log.info("%s (id %r) at %s disconnected", link.peer_label, hello.server_id, where)

    async def _forward(self, local: socket.socket, where: str) -> None:
        try:
            try:
                link = await self.wait_for_agent(self.agent_wait)
            except TimeoutError:
                log.warning(
                    "local connection from %s: no server phoned home within %g s; closed",
                    where,
                    self.agent_wait,
                )
                return
            server_id = link.hello.server_id
            async with self.channels.request(link.control, server_id) as (conn, hello, _where):
                log.info("local connection from %s tunnelled to %s", where, link.peer_label)
                await _relay_tracked(self.side, conn, hello, local, link.where)
        except ParaconnectError as exc:
            log.warning("local connection from %s: %s; closed", where, exc)
        finally:
            local.close()  # idempotent: the relay closes both ends itself

    async def request_phone_home(
        self, home: Home, agents: Sequence[AgentLink] | None = None
    ) -> None:
        """Send every connected agent (or those given) to phone `home` instead of here."""
        check_insecure(self.side.level, [home.endpoint], self.insecure)
        for link in list(agents if agents is not None else self.agents):
            await link.control.request(home.to_message())
            log.info("asked %s to phone home to %s", link.peer_label, home.endpoint)
