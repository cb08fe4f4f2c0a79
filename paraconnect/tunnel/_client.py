"""The client side, forward: a local plaintext endpoint that only this user can reach,
tunnelled to an agent's ``--listen`` over mutual TLS (``paraconnect connect``).

`Connector` keeps a control channel to the agent (opened first, so a refusal is reported before
anything listens locally) and dials one TLS data connection per local connection.  When it
leaves, it can tell the agent where to phone next (`request_phone_home`).

It holds the session (its revocation list): when the list changes, it pushes it to the agent
on the control channel (`Crl`), and at every new control channel too, so an agent on another
host learns of a revocation without a restart.  The reverse side is `_reverse.ReverseListener`.
"""

from __future__ import annotations

import functools
import logging
import random
import socket
from collections.abc import Callable
from typing import Unpack

import anyio
import anyio.abc

from .._notes import clear_refusal, write_refusal
from ..errors import ConfigError, NetworkError, ParaconnectError, TrustError
from ..pki import Credentials, Role
from ..tls import PeerIdentity
from ._agent import check_insecure
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
from ._messages import PhoneHome
from ._options import SideOptions
from ._phonehome import Home
from ._relay import relay_tracked
from ._secure import Side
from ._stream import ByteStream
from ._util import accept_loop, single_error

__all__ = ["Connector"]

log = logging.getLogger("paraconnect.tunnel")

REDIAL_MAX = 30.0  # the longest pause between attempts to reopen a lost control channel
# At most this much of what a local program sent before its tunnel was up goes with the hello.
_LEAD_MAX = 64 * 1024


def _ep(value: Endpoint | str, option: str) -> Endpoint:
    return value if isinstance(value, Endpoint) else parse_endpoint(value, option)


def local_endpoint(value: Endpoint | str) -> Endpoint:
    """A --local endpoint: loopback or a Unix path only."""
    ep = _ep(value, "--local")
    if not ep.is_loopback:
        raise ConfigError(
            f"--local {ep} is not a loopback address: the plaintext endpoint must stay on this "
            "machine (use 127.0.0.1:PORT, [::1]:PORT or unix:PATH)"
        )
    return ep


class Connector:
    """Forward: a local endpoint whose connections are tunnelled to an agent's --listen."""

    def __init__(
        self,
        creds: Credentials,
        remote: Endpoint | str,
        local: Endpoint | str,
        *,
        server_id: str = "",
        insecure: bool = False,
        on_control: Callable[[bool, str], None] | None = None,
        **side: Unpack[SideOptions],
    ) -> None:
        """`on_control(up, why)` hears when the agent's control channel is lost (the agent
        stopped, restarted, or the network broke) and when it is reopened."""
        self.on_control = on_control
        self.side = Side(creds, Role.CLIENT, **side)
        self.remote = _ep(remote, "HOST:PORT")
        self.local = local_endpoint(local)
        self.expect_server_id = server_id or None
        self.insecure = insecure
        self.address: Endpoint | None = None
        self.agent: Hello | None = None
        self.connect_id: int | None = None  # the program's --connect-id, if it takes one
        self.version: str | None = None  # the program's version, if the agent reports it
        self._control: Control | None = None
        # A refusal note for our local endpoint may be on disk (ours, or a predecessor's on the
        # same address): cleared at the first tunnel that gets through, not stat'ed at each.
        self._refusal_noted = True

    @property
    def agent_peer(self) -> PeerIdentity | None:
        """What the agent proved on the control channel, while that channel is open."""
        control = self._control
        if control is None or control.closed.is_set():
            return None
        return control.conn.peer

    async def _dial(
        self, purpose: Purpose, lead: Callable[[], bytes] | None = None
    ) -> tuple[ByteStream, Hello]:
        sock = await connect_endpoint(self.remote)
        return await self.side.establish(
            sock, server_side=False, purpose=purpose, expect_server_id=self.expect_server_id,
            lead=lead,
        )  # fmt: skip

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
            info = await read_info(conn, self.side.hello_timeout)
            self.connect_id, self.version = info.connect_id, info.version
        except BaseException:
            await conn.aclose()
            raise
        self._control = Control(conn, hello)
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

    async def _watch_control(self, control: Control) -> None:
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

    async def _redial(self) -> Control:
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
                info = await read_info(conn, self.side.hello_timeout)
                self.connect_id, self.version = info.connect_id, info.version
            except ParaconnectError as exc:
                await conn.aclose()
                log.debug("the agent at %s sent no info: %s", self.remote, exc)
                continue
            self.agent = hello
            return Control(conn, hello)

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
        led = 0

        def lead() -> bytes:
            """What the local program sent already: it goes out with our hello."""
            nonlocal led
            try:
                data = local.recv(_LEAD_MAX, socket.MSG_DONTWAIT)
            except OSError:  # nothing yet (EAGAIN), or a reset the relay reports
                return b""
            led = len(data)
            return data

        try:
            conn, hello = await self._dial(Purpose.DATA, lead)
        except ParaconnectError as exc:
            log.warning("local connection from %s: cannot reach %s: %s", where, self.remote, exc)
            if isinstance(exc, TrustError) and self.address is not None:
                # Before the close: the program on the local port reads why (revoked, denied).
                write_refusal(str(self.address), f"the agent at {self.remote}: {exc}")
                self._refusal_noted = True
            local.close()
            return
        if self._refusal_noted and self.address is not None:
            self._refusal_noted = False
            clear_refusal(str(self.address))
        label = conn.peer.label
        log.info("local connection from %s tunnelled to %s at %s", where, label, self.remote)
        await relay_tracked(self.side, conn, hello, local, str(self.remote), sent=led)

    async def request_phone_home(self, home: Home) -> None:
        """Ask the agent to phone `home` from now on (we are leaving); waits for its ok."""
        if self._control is None or self._control.closed.is_set():
            raise NetworkError(f"no control channel to the agent at {self.remote}")
        check_insecure(self.side.level, [home.endpoint], self.insecure)
        await self._control.request(PhoneHome(home))
        log.info("asked %s to phone home to %s", self._control.conn.peer.label, home.endpoint)
