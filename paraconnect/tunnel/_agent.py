"""The agent (``paraconnect serve``): a program on a private leg, exposed over mutual TLS.

Forward: the agent listens; each TLS connection is handshaken, hello'd, and either relayed to
the program (purpose ``data``) or kept as a control channel (purpose ``control``) on which a
client may ask the agent to phone home somewhere when it leaves.

Reverse (phone home): the agent dials a listener until one takes it, keeps a control channel
there, and opens one data connection per ``{"type": "open", "channel": ...}`` request.  A
``phone_home`` message on that channel moves it to another listener (phone a friend).

Control messages (`_messages`; each answered by ``ok``/``error`` where noted):

* agent → peer, first on every control channel: `Info` (server id, connect id);
* client → agent (forward): `PhoneHome` → ok/error; `Ping` → `Pong`;
* listener → agent (reverse): `Open` (dial back a data connection whose hello carries that
  channel token); `PhoneHome` → ok/error, then the agent moves there.
* agent → hub (reverse, enrolled agents): `Renew` → `Renewed`: a key made here certified before
  the certificate in force reaches two thirds of its life (`_renewal`); the agent then dials a
  control channel with the new certificate, and the hub drops the old one.
* client or listener → agent: `Crl`, the session owner's current revocation list; `Policy`,
  the owner's policy signed with the session key (pki.sign_policy) (no answer): applied if the
  session CA signed it and it is newer, kept beside credentials that are a directory of PEM
  files, and open connections now refused are closed.

A bad peer costs only its own connection: it is logged and closed, the agent keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..errors import ConfigError, NetworkError, ParaconnectError, TrustError
from ..pki import Credentials, Role, SecurityLevel, Store
from ..tls import PeerIdentity
from ._accounting import Accounting
from ._hello import Hello, Purpose, read_message, write_frame
from ._leg import Endpoint, connect_endpoint, listening_uid, parse_endpoint
from ._listener import Established, SecureListener
from ._messages import (
    BadMessage,
    Crl,
    Error,
    Info,
    Message,
    Ok,
    Open,
    PhoneHome,
    Ping,
    Policy,
    Pong,
    Renew,
    Renewed,
    decode,
)
from ._perconn import PerConnection
from ._phonehome import Backoff, Home
from ._program import Program
from ._proxyproto import proxy_header
from ._radius_wire import RadiusConfig
from ._relay import relay_logged
from ._renewal import Renewal, due, fresh_request, install
from ._secure import HANDSHAKE_TIMEOUT, Side, Tracked
from ._stream import ByteStream
from ._util import guard, single_error

__all__ = ["Agent", "Target", "check_insecure"]

log = logging.getLogger("paraconnect.tunnel")

RENEW_REPLY_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class _Unknown:
    """A control message of a type this release does not know (`repr` of its type)."""

    shown: str


class Target(Protocol):
    """Where the agent's data connections go: a `Program` it runs, or a fixed endpoint."""

    async def connect(self, peer: PeerIdentity, where: str) -> socket.socket: ...


class _FixedTarget:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def connect(self, peer: PeerIdentity, where: str) -> socket.socket:
        ep = self.endpoint
        if ep.path is None and ep.is_loopback:
            # Loopback is shared by every local user: forward only to a program of ours.
            owner = listening_uid(ep.host if ep.host != "localhost" else "127.0.0.1", ep.port)
            if owner is not None and owner != os.getuid():
                raise TrustError(
                    f"--target {ep} is a program of user {owner}, not of this user "
                    f"({os.getuid()}); refusing to forward clients' data there"
                )
        return await connect_endpoint(ep)


def check_insecure(level: SecurityLevel, endpoints: Sequence[Endpoint], insecure: bool) -> None:
    """Level `none` is clear text: say so on every start, and keep it on loopback unless the
    user insists with --insecure."""
    if level is not SecurityLevel.NONE:
        return
    log.warning(
        "security level none: traffic is CLEAR TEXT and peers are NOT authenticated; "
        "use level encrypt or mutual for anything but a local test"
    )
    remote = [str(ep) for ep in endpoints if not ep.is_loopback]
    if remote and not insecure:
        raise ConfigError(
            f"security level none refuses non-loopback address {remote[0]}: clear text would "
            "cross the network; give --insecure if that is really meant"
        )


def _ep(value: Endpoint | str, option: str) -> Endpoint:
    return value if isinstance(value, Endpoint) else parse_endpoint(value, option)


class Agent:
    """Serve one program (or endpoint) to the clients of a session."""

    def __init__(
        self,
        creds: Credentials,
        *,
        program: Program | PerConnection | None = None,
        target: Endpoint | str | None = None,
        listen: Sequence[Endpoint | str] = (),
        phone_home: Sequence[Home] = (),
        server_id: str = "",
        level: SecurityLevel | str | None = None,
        insecure: bool = False,
        unique_id: str | None = None,
        store: Store | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        accounting: Accounting | bool = True,
        proxy_protocol: bool = False,
        radius: RadiusConfig | None = None,
        on_unreachable: Callable[[str, str], Awaitable[None]] | None = None,
        renew: bool = False,
    ) -> None:
        """`renew`: ask the hub this agent phones home to for a new certificate (a key made
        here) before the one in force reaches two thirds of its life; for credentials that
        are a directory of PEM files (what enrolment writes)."""
        if (program is None) == (target is None):
            raise ConfigError("an agent serves exactly one program or one target endpoint")
        if not listen and not phone_home:
            raise ConfigError("give --listen HOST:PORT (forward) or --phone-home HOST:PORT")
        self.side = Side(
            creds,
            Role.SERVER,
            level=level,
            server_id=server_id or creds.identity.name,
            unique_id=unique_id,
            store=store,
            handshake_timeout=handshake_timeout,
            accounting=accounting,
            radius=radius,
        )
        self.program = program
        if program is not None:
            program.extra_env.setdefault("PARACONNECT_SESSION", self.side.session_id)
            program.extra_env.setdefault("PARACONNECT_LEVEL", self.side.level.value)
        self.target: Target = (
            program if program is not None else _FixedTarget(_ep(target or "", "--target"))
        )
        self.listen = [_ep(ep, "--listen") for ep in listen]
        self.homes = list(phone_home)
        self.insecure = insecure
        self.proxy_protocol = proxy_protocol
        # Told (address, error) once, when a phone-home dial first fails for want of a network
        # path: an enrolled agent reports it to the hub, which otherwise only sees silence.
        self.on_unreachable = on_unreachable
        self.addresses: list[Endpoint] = []
        self._tg: anyio.abc.TaskGroup | None = None
        self._phone_scopes: dict[str, anyio.CancelScope] = {}
        self.renewal: Renewal | None = None
        if renew and os.path.isdir(creds.source) and self.level is not SecurityLevel.NONE:
            self.renewal = Renewal()

    @property
    def level(self) -> SecurityLevel:
        return self.side.level

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[list[Endpoint]] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled or until the program ends for good (ProgramExited)."""
        check_insecure(self.level, self.listen + [h.endpoint for h in self.homes], self.insecure)
        listener = SecureListener(self.side, self.listen, self._incoming)
        try:
            self.side.open_accounting()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self.program is not None:
                    await tg.start(self.program.run)
                for bound in listener.bind():
                    self.addresses.append(bound)
                    log.info(
                        "serving %s on %s (session %s…, level %s)",
                        self.side.server_id,
                        bound,
                        self.side.session_id[:8],
                        self.level.value,
                    )
                if self.listen:
                    tg.start_soon(listener.serve, tg)
                for home in self.homes:
                    self.phone(home)
                tg.start_soon(self.side.watch)
                task_status.started(list(self.addresses))
        except BaseExceptionGroup as group:
            raise single_error(group) from None
        finally:
            self._tg = None
            listener.close()
            self.side.close()

    def _running(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise RuntimeError("the agent is not running")
        return self._tg

    def phone(self, home: Home) -> None:
        """Start (or restart with new settings) dialling `home` until a listener takes us."""
        self._running()
        key = str(home.endpoint)
        old = self._phone_scopes.pop(key, None)
        if old is not None:
            old.cancel()
        scope = anyio.CancelScope()
        self._phone_scopes[key] = scope
        self._running().start_soon(self._phone_loop, home, scope)

    # -- forward: accept clients ---------------------------------------------------------

    async def _incoming(self, peer: Established) -> None:
        conn, hello, where = peer.conn, peer.hello, peer.where
        with self.side.track(conn, hello, where) as tracked:
            if hello.purpose is Purpose.DATA:
                await self._data(conn, where, tracked)
            else:
                await self._client_control(conn, where)

    def _crl_part(self, msg: Crl, source: str, parts: list[str]) -> None:
        """One part of the owner's revocation list; the whole list is checked and applied."""
        if msg.part != len(parts):
            parts.clear()
            log.warning("%s sent a malformed revocation list message; ignored", source)
            return
        parts.append(msg.pem)
        if len(parts) == msg.parts:
            text = "".join(parts)
            parts.clear()
            self.side.accept_crl(text, source)

    async def _asked_home(self, conn: ByteStream, msg: PhoneHome) -> Home | None:
        """A ``phone_home`` request, answered: the new home, or None (refused: error sent)."""
        try:
            check_insecure(self.level, [msg.home.endpoint], self.insecure)
        except ParaconnectError as exc:
            await write_frame(conn, Error(str(exc)).to_dict())
            return None
        await write_frame(conn, Ok().to_dict())
        return msg.home

    async def _next(
        self, conn: ByteStream, source: str, crl_parts: list[str]
    ) -> Message | _Unknown | None:
        """The next control message for this side's own `match`, with what every control
        channel may carry (ping, the owner's CRL and policy) handled here; None at the end.
        A message that does not decode is answered (a refused phone_home) or ignored."""
        while True:
            obj = await read_message(conn)
            if obj is None:
                return None
            try:
                msg = decode(obj)
            except BadMessage as exc:
                if exc.kind == PhoneHome.type:
                    await write_frame(conn, Error(str(exc)).to_dict())
                elif exc.kind in (Crl.type, Policy.type):
                    if exc.kind == Crl.type:
                        crl_parts.clear()
                    log.warning("%s sent a malformed %s message; ignored", source, exc.kind)
                else:  # unknown, or of no use malformed: the caller's to answer or not
                    return _Unknown(repr(obj.get("type")))
                continue
            match msg:
                case Ping():
                    await write_frame(conn, Pong().to_dict())
                case Crl():
                    self._crl_part(msg, source, crl_parts)
                case Policy(signed=signed):
                    self.side.accept_policy(signed, source)
                case _:
                    return msg

    async def _data(self, conn: ByteStream, where: str, tracked: Tracked) -> None:
        label = conn.peer.label
        try:
            leg = await self.target.connect(conn.peer, where)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await conn.aclose()
            if not isinstance(exc, ParaconnectError):
                raise
            # The accounting record says why this peer got nothing (a foreign-owned target
            # refused, the program gone), not just that the connection closed.
            tracked.reason = f"refused: {exc}"
            log.error("cannot reach the program for %s (%s): %s", label, where, exc)
            return
        log.info("data connection from %s at %s: relaying to the program", label, where)
        preamble = proxy_header(conn.peer, conn.sock) if self.proxy_protocol else b""
        what = f"data connection from {label} at {where}"
        await relay_logged(conn, leg, tracked, what, preamble=preamble)

    def _info(self) -> Info:
        """What a verified client learns first on a control channel."""
        connect_id = getattr(self.program, "connect_id", None)
        leg = getattr(self.program, "protection", None) or None  # `debug server` says it
        version = getattr(self.program, "version", None)  # pvserver's, for a client to compare
        return Info(self.side.server_id, connect_id, leg, version)

    async def _client_control(self, conn: ByteStream, where: str) -> None:
        label = conn.peer.label
        log.info("control connection from %s at %s", label, where)
        crl_parts: list[str] = []
        source = f"{label} at {where}"
        try:
            await write_frame(conn, self._info().to_dict())
            while (msg := await self._next(conn, source, crl_parts)) is not None:
                match msg:
                    case PhoneHome():
                        home = await self._asked_home(conn, msg)
                        if home is not None:
                            log.info(
                                "%s asks this server to phone home to %s", label, home.endpoint
                            )
                            self.phone(home)
                    case _Unknown(shown=shown):
                        await write_frame(conn, Error(f"unknown {shown}").to_dict())
                    case _:  # a message for the other direction: not taken here
                        await write_frame(conn, Error(f"unknown {msg.type!r}").to_dict())
        except ParaconnectError as exc:
            log.warning("control connection from %s at %s failed: %s", label, where, exc)
        finally:
            with anyio.CancelScope(shield=True):
                await conn.aclose()
        log.info("control connection from %s at %s closed", label, where)

    # -- reverse: phone home ------------------------------------------------------------

    async def _phone_loop(self, home: Home, scope: anyio.CancelScope) -> None:
        key = str(home.endpoint)
        gave_up = False
        with scope:
            try:
                gave_up = await self._phone(home)
            finally:
                if self._phone_scopes.get(key) is scope:
                    del self._phone_scopes[key]
        if gave_up and not self.listen and not self._phone_scopes:
            raise NetworkError(
                f"no listener at {home.endpoint} took this server within {home.deadline:g} s "
                "(--deadline); start 'paraconnect listen' there, or give a longer deadline"
            )

    async def _phone(self, home: Home) -> bool:
        """Dial `home` until a listener takes us; returns True if the deadline passed, False
        when a listener sent us elsewhere."""
        backoff = Backoff(home)
        since = anyio.current_time()
        deadline = f", for at most {home.deadline:g} s" if home.deadline else ""
        log.info("phoning home to %s every %g s%s", home.endpoint, home.interval, deadline)
        await anyio.sleep(backoff.first_delay())
        # A control channel already made with renewed credentials, to serve next.
        pending: tuple[ByteStream, Hello] | None = None
        while True:
            if home.deadline is not None and anyio.current_time() - since > home.deadline:
                log.error(
                    "no listener at %s took this server within %g s: stopped phoning there",
                    home.endpoint,
                    home.deadline,
                )
                return True
            refused = False
            try:
                if pending is None:
                    sock = await connect_endpoint(home.endpoint, timeout=max(home.interval, 5.0))
                    pending = await self.side.establish(
                        sock, server_side=False, purpose=Purpose.CONTROL
                    )
                conn, hello = pending
                pending = None
            except TrustError as exc:
                refused = True
                log.warning("the listener at %s refused this server: %s", home.endpoint, exc)
            except ParaconnectError as exc:
                log.info("phone home to %s: %s", home.endpoint, exc)
                if isinstance(exc, NetworkError) and self.on_unreachable is not None:
                    tell, self.on_unreachable = self.on_unreachable, None
                    self._running().start_soon(self._tell, tell, str(home.endpoint), str(exc))
                self._renewal_waits(home)
            else:
                backoff.reset()
                if self.renewal is not None:
                    self.renewal.said_waiting = False
                log.info("phoned home to %s: taken by %s", home.endpoint, conn.peer.label)
                # A revocation cancels the work inside `track` (its scope), leaving this.
                outcome: bool | tuple[ByteStream, Hello] = False
                with self.side.track(conn, hello, str(home.endpoint)):
                    outcome = await self._home_control(conn, home)
                if outcome is True:
                    return False
                if outcome is not False:
                    pending = outcome
                    continue
                log.warning("the listener at %s went away; phoning again", home.endpoint)
                since = anyio.current_time()
            await anyio.sleep(backoff.next_delay(refused))

    @staticmethod
    async def _tell(tell: Callable[[str, str], Awaitable[None]], where: str, why: str) -> None:
        try:
            with anyio.fail_after(30):
                await tell(where, why)
        except (ParaconnectError, TimeoutError) as exc:
            log.warning("could not tell the hub that %s is unreachable: %s", where, exc)

    def _renewal_waits(self, home: Home) -> None:
        """Say, when a renewal is due, that it waits for the hub (the certificate in force
        stays in use while it is valid)."""
        if self.renewal is None or self.renewal.said_waiting:
            return
        cert = self.side.creds.cert
        now = time.time()
        if now >= due(cert):
            self.renewal.said_waiting = True  # once per outage, not at every dial
            left = cert.not_valid_after_utc.timestamp() - now
            log.warning(
                "certificate renewal is due, but the hub at %s is unreachable; the certificate "
                "in force stays in use (valid %d s more) and renewal is asked when it answers",
                home.endpoint, max(left, 0.0),
            )  # fmt: skip

    async def _home_control(self, conn: ByteStream, home: Home) -> bool | tuple[ByteStream, Hello]:
        """Serve a listener's control channel; True when it sent us elsewhere, False when it
        ended, or the control channel made after a renewal (to serve in its place)."""
        send, receive = anyio.create_memory_object_stream[Renewed](1)
        renewed: list[tuple[ByteStream, Hello]] = []
        moved = False
        try:
            await write_frame(conn, self._info().to_dict())
            async with anyio.create_task_group() as tg, send, receive:
                if self.renewal is not None:
                    tg.start_soon(self._renew, conn, home, receive, renewed, tg.cancel_scope)
                # Caught here, inside: a task group would hand it on wrapped in a group.
                try:
                    moved = await self._home_messages(conn, home, send)
                except ParaconnectError as exc:
                    log.warning("control channel to %s failed: %s", home.endpoint, exc)
                tg.cancel_scope.cancel()
        except ParaconnectError as exc:
            log.warning("control channel to %s failed: %s", home.endpoint, exc)
        except BaseException:  # cancelled (a revocation, the agent stopping): nobody takes it
            with anyio.CancelScope(shield=True):
                for fresh, _hello in renewed:
                    await fresh.aclose()
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await conn.aclose()
        return renewed[0] if renewed else moved

    async def _home_messages(
        self, conn: ByteStream, home: Home, renewed: MemoryObjectSendStream[Renewed]
    ) -> bool:
        tg = self._running()
        crl_parts: list[str] = []
        source = f"{conn.peer.label} at {home.endpoint}"
        while (msg := await self._next(conn, source, crl_parts)) is not None:
            match msg:
                case Open(channel=channel):
                    tg.start_soon(self._open_channel, home, channel, conn.peer.label)
                case PhoneHome():
                    new = await self._asked_home(conn, msg)
                    if new is None or str(new.endpoint) == str(home.endpoint):
                        continue
                    log.info("%s sends this server to %s", conn.peer.label, new.endpoint)
                    self.phone(new)
                    return True
                case Renewed():
                    with contextlib.suppress(anyio.WouldBlock):  # unasked: nobody waits
                        renewed.send_nowait(msg)
                case _:  # unknown, or not for an agent: a listener gets no answer
                    log.debug("%s sent %s; ignored", source, msg)
        return False

    async def _renew(
        self,
        conn: ByteStream,
        home: Home,
        replies: MemoryObjectReceiveStream[Renewed],
        done: list[tuple[ByteStream, Hello]],
        scope: anyio.CancelScope,
    ) -> None:
        """Renew the certificate when due, over this control channel; then dial a control
        channel with the new one and hand it to the phone loop (the hub drops this one)."""
        assert self.renewal is not None  # noqa: S101 - started only with a renewal plan
        where = f"the hub at {home.endpoint}"
        while True:
            old = self.side.creds.cert
            await anyio.sleep(max(self.renewal.next_at(old) - time.time(), 0.0))
            request = fresh_request(self.side.server_id)
            try:
                await write_frame(conn, Renew(request.csr_pem).to_dict())
                with anyio.fail_after(RENEW_REPLY_TIMEOUT):
                    try:
                        reply = await replies.receive()
                    except (anyio.EndOfStream, anyio.ClosedResourceError):
                        return  # the channel ended: the next one asks again
                if not reply.cert:
                    raise TrustError(f"{where} refused: {reply.reason}")
                cert = install(self.side.creds, request, reply.cert, where)
            except TimeoutError:
                self.renewal.failed(old, f"{where} did not answer")
                continue
            except (ParaconnectError, OSError) as exc:
                self.renewal.failed(old, str(exc))
                continue
            if reply.crl:
                self.side.accept_crl(reply.crl, where)
            self.side.refresh()
            if self.side.creds.cert != cert:
                self.renewal.failed(old, "the renewed credentials were not taken (see above)")
                continue
            self.renewal.succeeded()
            log.info(
                "certificate renewed by %s: serial %x replaces %x; new connections use it",
                where, cert.serial_number, old.serial_number,
            )  # fmt: skip
            try:
                sock = await connect_endpoint(home.endpoint, timeout=max(home.interval, 5.0))
                fresh = await self.side.establish(sock, server_side=False, purpose=Purpose.CONTROL)
            except ParaconnectError as exc:
                # This channel goes on; the next one is made with the new certificate.
                log.info("control channel with the renewed certificate: %s", exc)
                continue
            done.append(fresh)
            scope.cancel()
            return

    async def _open_channel(self, home: Home, channel: str, label: str) -> None:
        with guard(str(home.endpoint)):
            try:
                sock = await connect_endpoint(home.endpoint)
                conn, hello = await self.side.establish(
                    sock, server_side=False, purpose=Purpose.DATA, channel=channel
                )
            except ParaconnectError as exc:
                log.warning("data channel to %s (%s) failed: %s", home.endpoint, label, exc)
                return
            where = str(home.endpoint)
            with self.side.track(conn, hello, where) as tracked:
                await self._data(conn, where, tracked)
