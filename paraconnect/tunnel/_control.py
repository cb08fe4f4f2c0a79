"""The peer's end of an agent's control channel (a client's or a listener's): one reader task
hands replies to whoever waits for them; requests, the trust push, and the agent's first
message (`read_info`).  Used by `Connector`, `ReverseListener` and `DataChannels`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from ..errors import NetworkError, ParaconnectError, ProtocolError
from ._hello import Hello, read_message, write_frame
from ._messages import (
    BadMessage,
    Crl,
    Error,
    Info,
    Message,
    Ok,
    Policy,
    Pong,
    Renew,
    Renewed,
    decode,
)
from ._secure import Side
from ._stream import ByteStream

__all__ = ["CRL_PART", "Control", "read_info"]

log = logging.getLogger("paraconnect.tunnel")

CRL_PART = 12 * 1024  # characters of PEM per control frame


class Control:
    """One control channel to an agent."""

    def __init__(self, conn: ByteStream, hello: Hello) -> None:
        self.conn = conn
        self.hello = hello
        self.closed = anyio.Event()
        self._lock = anyio.Lock()
        self._replies: list[Ok | Error | Pong] = []
        self._reply = anyio.Event()
        # Who answers the agent's own requests (`Renew`): the hub; None refuses them.
        self.on_renew: Callable[[Renew], Awaitable[Renewed]] | None = None

    async def read_loop(self) -> None:
        try:
            while True:
                obj = await read_message(self.conn)
                if obj is None:
                    return
                try:
                    msg = decode(obj)
                except BadMessage as exc:
                    # An agent of a newer release may say more: a message we cannot take is
                    # skipped, as an unasked one is.
                    log.debug("%s: %s; ignored", self.conn.peer.label, exc)
                    continue
                match msg:
                    case Ok() | Error() | Pong():
                        self._replies.append(msg)
                        self._reply.set()
                    case Renew():
                        if self.on_renew is None:
                            answer = Renewed(reason="this listener does not renew certificates")
                        else:
                            answer = await self.on_renew(msg)
                        await self.send(answer)
                    case _:
                        log.debug("%s sent an unasked %s; ignored", self.conn.peer.label, msg.type)
        except ParaconnectError as exc:
            log.warning("control channel with %s failed: %s", self.conn.peer.label, exc)
        finally:
            self.closed.set()
            self._reply.set()
            with anyio.CancelScope(shield=True):
                await self.conn.aclose()

    async def send(self, msg: Message) -> None:
        async with self._lock:
            await write_frame(self.conn, msg.to_dict())

    async def request(self, msg: Message, timeout: float = 10.0) -> Message:  # noqa: ASYNC109
        async with self._lock:
            self._replies.clear()
            self._reply = anyio.Event()
            await write_frame(self.conn, msg.to_dict())
            with anyio.move_on_after(timeout):
                await self._reply.wait()
        if not self._replies:
            raise NetworkError(f"{self.conn.peer.label} did not answer a {msg.type!r} request")
        reply = self._replies.pop(0)
        if isinstance(reply, Error):
            raise ProtocolError(f"{self.conn.peer.label} refused the request: {reply.reason}")
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
                    await write_frame(self.conn, Crl(part, index, len(parts)).to_dict())
        except ParaconnectError as exc:
            log.warning("could not send the revocation list to %s: %s", self.conn.peer.label, exc)
            return
        log.debug("revocation list sent to %s", self.conn.peer.label)
        await self._push_policy(policy)

    async def _push_policy(self, policy: str | None) -> None:
        if policy is None or self.closed.is_set():
            return
        try:
            await self.send(Policy(policy))
        except ParaconnectError as exc:
            log.warning("could not send the policy to %s: %s", self.conn.peer.label, exc)


async def read_info(conn: ByteStream, timeout: float) -> Info:  # noqa: ASYNC109
    """The agent's first control message: its server id and the program's connect id."""
    try:
        with anyio.fail_after(timeout):
            obj = await read_message(conn)
    except TimeoutError:
        raise NetworkError(f"{conn.peer.label} sent no server info after the hello") from None
    if obj is None or obj.get("type") != Info.type:
        raise ProtocolError(f"{conn.peer.label} did not start the control channel with its info")
    try:
        info = decode(obj)
    except BadMessage as exc:
        raise ProtocolError(f"{conn.peer.label} sent a bad info message: {exc}") from None
    assert isinstance(info, Info)  # noqa: S101 - its type was checked above
    return info
