"""Control messages: what travels on a control channel after the hello, as typed records.

Each message is a frozen dataclass that knows its wire ``type`` and checks its own fields when
decoded (`decode`), as h11's events do: a handler matches on the record (``match msg: case
Open(channel=c): ...``) and never looks into a dict.  Adding a message means a class here and a
``case`` in the side(s) that handle it.  Framing (length prefix, JSON, version) stays
`_hello`'s, on the shared `_wire` codec.

* agent → peer, first on every control channel: `Info` (server id, the program's connect id);
* client or listener → agent: `PhoneHome` (answered `Ok` / `Error`), `Ping` (answered `Pong`),
  `Crl` (one part of the owner's revocation list), `Policy` (the owner's signed policy);
* listener → agent (reverse): `Open` (dial back a data connection for this channel token);
* agent → hub (reverse): `Renew` (a CSR for a key the agent just made on its host), answered
  `Renewed` (the certificate, or why not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar, dataclass_transform

from .._wire import record
from ..errors import ProtocolError
from ._phonehome import Home

__all__ = [
    "MAX_CHANNEL",
    "MAX_CRL_PARTS",
    "BadMessage",
    "Crl",
    "Error",
    "Info",
    "Message",
    "Ok",
    "Open",
    "PhoneHome",
    "Ping",
    "Policy",
    "Pong",
    "Renew",
    "Renewed",
    "decode",
    "encode",
]

MAX_CHANNEL = 64  # characters of a channel token
MAX_CRL_PARTS = 64  # frames of one pushed revocation list (12 KiB each: thousands of entries)


class BadMessage(ProtocolError):
    """A control message this side cannot take: unknown type, or a field missing or wrong.
    `kind` is the message's type when it named a known one (None otherwise), so that a side
    can answer or ignore it as that message's rules say."""

    def __init__(self, text: str, kind: str | None = None) -> None:
        super().__init__(text)
        self.kind = kind


def _bad(kind: str, field: str, want: str) -> BadMessage:
    return BadMessage(f"the {kind} message needs {field!r} to be {want}", kind)


def _int(obj: Mapping[str, Any], kind: str, field: str, default: object = None) -> int:
    value = obj.get(field, default)
    if type(value) is not int:
        raise _bad(kind, field, "an integer")
    return value


def _str(obj: Mapping[str, Any], kind: str, field: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str):
        raise _bad(kind, field, "a string")
    return value


def _text(obj: Mapping[str, Any], kind: str, field: str, most: int, what: str) -> str:
    """A string of 1 to `most` characters; `what` names what it should be."""
    value = obj.get(field)
    if not isinstance(value, str) or not 0 < len(value) <= most:
        raise _bad(kind, field, f"{what} of 1 to {most} characters")
    return value


def _str_or_none(obj: Mapping[str, Any], kind: str, field: str, most: int = 0) -> str | None:
    """An optional string (at most `most` characters when given)."""
    value = obj.get(field)
    if value is not None and (not isinstance(value, str) or 0 < most < len(value)):
        raise _bad(kind, field, f"a{' short' if most else ''} string or null")
    return value


_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def _message(cls: type[_T]) -> type[_T]:
    """A control message: a frozen dataclass with slots (a decoded message never changes)."""
    return dataclass(frozen=True, slots=True)(cls)


class _Message:
    type: ClassVar[str]

    def __init_subclass__(cls, wire: str | None = None) -> None:
        # A message names its wire type in its class line (``class Ok(_Message, wire="ok")``);
        # dataclass(slots=True) makes the class again, without it: the type stays.
        if wire is not None:
            cls.type = wire

    def fields(self) -> dict[str, Any]:
        """The message's own fields, in their order (the wire type is not one of them)."""
        return record(self)

    # (field, most characters, what it is): fields that are strings of 1 to that many.
    texts: ClassVar[tuple[tuple[str, int, str], ...]] = ()

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Self:
        """A message whose fields are all `texts` (none for ping, pong, ok); the others check
        theirs in their own parse."""
        return cls(*(_text(obj, cls.type, name, most, what) for name, most, what in cls.texts))

    def to_dict(self) -> dict[str, Any]:
        """The frame's object (its version is added by `write_frame`)."""
        return {"type": self.type, **self.fields()}


@_message
class Info(_Message, wire="info"):
    server_id: str
    connect_id: int | None = None
    leg: str | None = None  # how the program's leg is protected (`debug server` says it)
    version: str | None = None  # the program's version (pvserver's), for clients to compare

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Info:
        connect_id = obj.get("connect_id")
        if connect_id is not None and type(connect_id) is not int:
            raise _bad(cls.type, "connect_id", "an integer or null")
        leg = _str_or_none(obj, cls.type, "leg")
        version = _str_or_none(obj, cls.type, "version", most=64)
        return cls(_str(obj, cls.type, "server_id"), connect_id, leg, version)


@_message
class PhoneHome(_Message, wire="phone_home"):
    home: Home

    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.home.to_message().items() if k != "type"}

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> PhoneHome:
        try:
            return cls(Home.from_message(obj))
        except ProtocolError as exc:
            raise BadMessage(str(exc), cls.type) from None


@_message
class Open(_Message, wire="open"):
    texts = (("channel", MAX_CHANNEL, "a token"),)
    channel: str


@_message
class Crl(_Message, wire="crl"):
    """One part of the owner's revocation list; a long list spans several parts."""

    pem: str
    part: int = 0
    parts: int = 1

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Crl:
        pem = _str(obj, cls.type, "pem")
        part = _int(obj, cls.type, "part", 0)
        parts = _int(obj, cls.type, "parts", 1)
        if not 0 <= part < parts <= MAX_CRL_PARTS:
            raise BadMessage(
                f"the crl message needs 0 <= 'part' < 'parts' <= {MAX_CRL_PARTS}, "
                f"not part {part} of {parts}",
                cls.type,
            )
        return cls(pem, part, parts)


@_message
class Policy(_Message, wire="policy"):
    signed: str

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Policy:
        return cls(_str(obj, cls.type, "signed"))


@_message
class Ping(_Message, wire="ping"):
    """Is the agent there?  Answered `Pong`."""


@_message
class Pong(_Message, wire="pong"):
    """The answer to `Ping`."""


@_message
class Ok(_Message, wire="ok"):
    """A request done (`PhoneHome`)."""


@_message
class Error(_Message, wire="error"):
    reason: str

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Error:
        reason = obj.get("reason")
        # A refusal without a reason is still a refusal: never lose it over its wording.
        return cls(reason if isinstance(reason, str) else "no reason given")


MAX_PEM = 16 * 1024  # characters of a CSR or certificate: far above any key paraconnect uses


@_message
class Renew(_Message, wire="renew"):
    """The agent asks the hub, over its mutual-TLS control channel, to certify a fresh key."""

    texts = (("csr", MAX_PEM, "a PEM request"),)
    csr: str


@_message
class Renewed(_Message, wire="renewed"):
    """The hub's answer to `Renew`: the certificate (and its current CRL), or the reason the
    hub refused (`cert` empty)."""

    cert: str = ""
    crl: str | None = None
    reason: str = ""

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Renewed:
        cert, reason = obj.get("cert", ""), obj.get("reason", "")
        if not isinstance(cert, str) or len(cert) > MAX_PEM:
            raise _bad(cls.type, "cert", f"a PEM certificate of at most {MAX_PEM} characters")
        crl = _str_or_none(obj, cls.type, "crl")
        if not isinstance(reason, str):
            raise _bad(cls.type, "reason", "a string")
        if not cert and not reason:
            raise BadMessage("the renewed message needs a 'cert' or a 'reason'", cls.type)
        return cls(cert, crl, reason)


Message = Info | PhoneHome | Open | Crl | Policy | Ping | Pong | Ok | Error | Renew | Renewed

_TYPES: dict[str, Any] = {
    cls.type: cls
    for cls in (Info, PhoneHome, Open, Crl, Policy, Ping, Pong, Ok, Error, Renew, Renewed)
}


def decode(obj: object) -> Message:
    """The message a decoded frame carries; BadMessage (a ProtocolError) naming the type or
    field at fault for anything else."""
    if not isinstance(obj, Mapping):
        raise BadMessage("a control message must be a JSON object")
    kind = obj.get("type")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        shown = repr(kind)[:64]
        raise BadMessage(f"unknown control message type {shown}")
    message: Message = cls.parse(obj)
    return message


def encode(msg: Message) -> dict[str, Any]:
    return msg.to_dict()
