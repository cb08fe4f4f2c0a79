"""The hello: a short, versioned exchange right after the TLS handshake.

Each frame is a 4-byte big-endian length and a JSON object of at most 16 KiB.  Both sides send
their hello, both check the other's against what TLS proved (`check_peer`), and both answer
``{"v": 1, "ok": true}`` or ``{"v": 1, "ok": false, "reason": ...}``.  Under TLS 1.3 a refused
client learns of it only on its first read; the round trip makes that read happen here, so a
dialler reports success only once the other side has said yes.  A dialler about to relay leads:
its hello, its yes and its first bytes go in one write (`exchange_hello`'s `lead`).

The same framing carries control messages (phone home, open a data channel) afterwards.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import anyio

from .. import _wire
from ..errors import NetworkError, ProtocolError, TrustError
from ..pki import Role, SecurityLevel
from ..tls import PeerIdentity, check_peer
from ._stream import ByteStream

__all__ = [
    "HELLO_TIMEOUT",
    "MAX_FRAME",
    "VERSION",
    "Hello",
    "Purpose",
    "decode_payload",
    "encode_frame",
    "exchange_hello",
    "frame_length",
    "parse_frame",
    "read_frame",
    "read_message",
    "write_frame",
]

VERSION = 1
MAX_FRAME = 16 * 1024
HELLO_TIMEOUT = 10.0
_MAX_TEXT = 256


class Purpose(enum.StrEnum):
    CONTROL = "control"
    DATA = "data"


def encode_frame(obj: Mapping[str, Any]) -> bytes:
    return _wire.encode(obj, limit=MAX_FRAME)


def frame_length(header: bytes) -> int:
    return _wire.payload_length(header, limit=MAX_FRAME)


def decode_payload(payload: bytes) -> dict[str, Any]:
    return _versioned(_wire.decode(payload))


def _versioned(obj: dict[str, Any]) -> dict[str, Any]:
    version = obj.get("v")
    if type(version) is not int:
        raise ProtocolError("the peer's frame carries no protocol version")
    if version != VERSION:
        raise ProtocolError(
            f"the peer speaks protocol version {version}, this side speaks {VERSION}; "
            "run the same paraconnect release on both ends"
        )
    return obj


def parse_frame(data: bytes) -> dict[str, Any]:
    """Parse exactly one whole frame (for tests and for buffers already read)."""
    length = frame_length(data[: _wire.HEADER_SIZE])
    payload = data[_wire.HEADER_SIZE :]
    if len(payload) != length:
        raise ProtocolError(
            f"frame length mismatch: header says {length} bytes, {len(payload)} followed"
        )
    return decode_payload(payload)


async def _read(conn: ByteStream, what: str, *, eof_ok: bool) -> dict[str, Any] | None:
    try:
        obj = await _wire.read_frame(conn.recv, limit=MAX_FRAME, what=what, eof_ok=eof_ok)
    except NetworkError as exc:
        if eof_ok:  # a control channel that fails is a network matter, as it always was
            raise
        raise ProtocolError(f"the connection ended in the middle of {what} ({exc})") from exc
    return None if obj is None else _versioned(obj)


async def read_frame(conn: ByteStream) -> dict[str, Any]:
    obj = await _read(conn, "a frame", eof_ok=False)
    assert obj is not None  # noqa: S101 - eof_ok=False never gives None
    return obj


async def read_message(conn: ByteStream) -> dict[str, Any] | None:
    """A control message, or None when the peer closed cleanly between messages."""
    return await _read(conn, "a message", eof_ok=True)


async def write_frame(conn: ByteStream, obj: Mapping[str, Any]) -> None:
    await conn.send(encode_frame({"v": VERSION, **obj}))


def _text(obj: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise ProtocolError(f"the peer's hello has no valid {key!r}")
    return value


@dataclass(frozen=True, slots=True)
class Hello:
    session: str
    role: Role
    server_id: str
    purpose: Purpose
    unique_id: str | None = None
    channel: str | None = None  # which pending data channel this connection answers (reverse)
    # A pipelining dialler's demand: the acceptor must be this server, or refuse (see below).
    expect_server: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "v": VERSION,
            "session": self.session,
            "role": self.role.value,
            "server_id": self.server_id,
            "purpose": self.purpose.value,
        }
        if self.unique_id is not None:
            out["unique_id"] = self.unique_id
        if self.channel is not None:
            out["channel"] = self.channel
        if self.expect_server is not None:
            out["expect_server"] = self.expect_server
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Hello:
        if obj.get("v") != VERSION:
            raise ProtocolError(f"unsupported hello version {obj.get('v')!r}")
        try:
            role = Role(_text(obj, "role") or "")
            purpose = Purpose(_text(obj, "purpose") or "")
        except ValueError:
            raise ProtocolError("the peer's hello names an unknown role or purpose") from None
        return cls(
            session=_text(obj, "session") or "",
            role=role,
            server_id=_text(obj, "server_id") or "",
            purpose=purpose,
            unique_id=_text(obj, "unique_id", optional=True),
            channel=_text(obj, "channel", optional=True),
            expect_server=_text(obj, "expect_server", optional=True),
        )


def _check(
    conn: ByteStream, theirs: Hello, *, level: SecurityLevel, session_id: str, our_role: Role
) -> None:
    if level is SecurityLevel.NONE:
        return  # no TLS, no certificate: nothing to hold the hello to
    if theirs.session != session_id:
        raise TrustError(f"the peer's hello names session {theirs.session[:8]}…, not ours")
    # Roles at every level with TLS: the levels differ only in node binding.
    ident = conn.peer.identity
    if ident is not None and ident.role is not Role.NODE and ident.role is not theirs.role:
        raise TrustError(
            f"the peer acts as {theirs.role.value} with a {ident.role.value} certificate "
            f"({ident.name!r}); a certificate acts only in its own role"
        )
    # Without a claimed node the copied-certificate check below would have nothing to hold
    # the certificate to.
    if level is SecurityLevel.MUTUAL and theirs.unique_id is None:
        raise TrustError("the peer's hello carries no unique ID (level mutual needs one)")
    check_peer(
        conn.peer,
        level=level,
        session_id=session_id,
        our_role=our_role,
        claimed_unique_id=theirs.unique_id if level is SecurityLevel.MUTUAL else None,
    )


async def _linger(conn: ByteStream) -> None:
    """Let the refusal reach the peer before the caller closes: closing with unread data
    resets the connection, and a reset can discard the refusal before the peer reads it."""
    with anyio.move_on_after(1.0):
        try:
            await conn.send_eof()
            while await conn.recv():
                pass
        except NetworkError:
            pass


async def exchange_hello(
    conn: ByteStream,
    ours: Hello,
    *,
    initiator: bool,
    level: SecurityLevel,
    session_id: str,
    expect_server_id: str | None = None,
    timeout: float = HELLO_TIMEOUT,  # noqa: ASYNC109 - one budget for the whole exchange
    check: Callable[[PeerIdentity, Hello], None] | None = None,
    authorize: Callable[[PeerIdentity, Hello], Awaitable[str | None]] | None = None,
    lead: Callable[[], bytes] | None = None,
) -> Hello:
    """The dialler (`initiator`) speaks first; the acceptor answers with its own hello, for the
    same purpose and channel.  Then both check and exchange verdicts.  Returns the peer's
    hello, or raises TrustError (either side refused), ProtocolError or NetworkError.
    `check` (the policy) may refuse the peer with a TrustError; its reason goes to the peer.
    `authorize` (an acceptor's RADIUS) is asked last, once every other check passed, and its
    refusal (a reason) goes to the peer the same way.

    `lead` (a dialler about to relay): the first bytes of what it relays, if there are any
    yet.  Such a dialler does not wait for the acceptor's hello to say yes: it judges the
    acceptor by its certificate alone (session, role, node binding, revocation, policy) and
    sends its hello, its yes and those bytes in one write, so the acceptor relays them a round
    trip sooner.  What the acceptor's hello would still tell (which server it is) becomes a
    demand in ours (`expect_server`) that the acceptor checks itself before relaying anything;
    its claimed node needs no demand, since an agent never runs with a certificate bound to
    another node (`Side`).  The acceptor's hello and verdict are then read and checked as
    usual, before anything is relayed back."""
    where = conn.peer.label
    try:
        # asyncio's own timeout: a third of the cost of an anyio scope, on every connection.
        async with asyncio.timeout(timeout):
            if initiator and lead is not None:
                ours = replace(ours, expect_server=expect_server_id or None)
                await _lead(conn, ours, lead, level=level, session_id=session_id, check=check)
            elif initiator:
                await write_frame(conn, ours.to_dict())
            theirs = Hello.from_dict(await read_frame(conn))
            if not initiator:
                ours = replace(ours, purpose=theirs.purpose, channel=theirs.channel)
            refusal: str | None = None
            try:
                _check(conn, theirs, level=level, session_id=session_id, our_role=ours.role)
                if expect_server_id and theirs.server_id != expect_server_id:
                    raise TrustError(
                        f"the peer is server {theirs.server_id!r}, not {expect_server_id!r}"
                    )
                if not initiator and theirs.expect_server not in (None, ours.server_id):
                    raise TrustError(
                        f"the peer wants server {theirs.expect_server!r}; this is "
                        f"{ours.server_id!r}"
                    )
                if check is not None and lead is None:  # a leading dialler's ran in _lead
                    check(conn.peer, theirs)
            except TrustError as exc:
                refusal = str(exc)
            if refusal is None and authorize is not None:
                refusal = await authorize(conn.peer, theirs)
            verdict_out: dict[str, Any] = (
                {"ok": True} if refusal is None else {"ok": False, "reason": refusal}
            )
            if initiator and lead is not None:
                # Our yes is gone already: a peer that fails now is closed on, not answered.
                # The acceptor's refusal first: when it refused, that is why.
                theirs = _accepted(where, await read_frame(conn), theirs)
                if refusal is not None:
                    raise TrustError(f"refused {where}: {refusal}")
                return theirs
            if initiator:
                await write_frame(conn, verdict_out)
            else:
                # The acceptor's hello and its verdict, the same frames in the same order, in
                # one write: one TLS record and one segment, where two cost a send and a
                # wakeup of the peer each.
                await conn.send(
                    encode_frame({"v": VERSION, **ours.to_dict()})
                    + encode_frame({"v": VERSION, **verdict_out})
                )
            if refusal is not None:
                await _linger(conn)
                raise TrustError(f"refused {where}: {refusal}")
            verdict = await read_frame(conn)
    except TimeoutError:
        raise NetworkError(
            f"{where} did not complete the hello within {timeout:g} s; is it a paraconnect "
            "peer of the same release?"
        ) from None
    return _accepted(where, verdict, theirs)


def _accepted(where: str, verdict: Mapping[str, Any], theirs: Hello) -> Hello:
    if verdict.get("ok") is not True:
        reason = verdict.get("reason")
        raise TrustError(
            f"{where} refused this side: {reason if isinstance(reason, str) else 'no reason'}"
        )
    return theirs


async def _lead(
    conn: ByteStream,
    ours: Hello,
    lead: Callable[[], bytes],
    *,
    level: SecurityLevel,
    session_id: str,
    check: Callable[[PeerIdentity, Hello], None] | None,
) -> None:
    """A pipelining dialler's first write: its hello and its verdict on the acceptor's
    certificate, and with a yes the first bytes it relays, all in one write."""
    refusal: str | None = None
    try:
        check_peer(conn.peer, level=level, session_id=session_id, our_role=ours.role)
        if check is not None:
            check(conn.peer, ours)  # the policy judges the certificate; no hello of theirs yet
    except TrustError as exc:
        refusal = str(exc)
    verdict = {"v": VERSION, "ok": True} if refusal is None else {
        "v": VERSION, "ok": False, "reason": refusal,
    }  # fmt: skip
    first = lead() if refusal is None else b""
    await conn.send(encode_frame(ours.to_dict()) + encode_frame(verdict) + first)
    if refusal is not None:
        await _linger(conn)
        raise TrustError(f"refused {conn.peer.label}: {refusal}")
