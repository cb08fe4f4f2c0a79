"""The one framing of paraconnect's small protocols: a 4-byte big-endian length, then a JSON
object of at most a caller-given size.

The hello and control channel (``tunnel._hello``), the hub's control socket (``_hub._control``)
and enrolment (``servers._enroll``) all speak it, each with its own limit.  Whatever the peer
sends, decoding raises ProtocolError and nothing else: in particular ``json.loads`` of deeply
nested arrays raises RecursionError in CPython, so nesting is counted before json sees the
text.  Stream adapters for both kinds of stream paraconnect has are here too, so that no caller
loops over ``receive`` by hand.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import anyio
import anyio.abc

from .errors import NetworkError, ProtocolError

__all__ = [
    "HEADER_SIZE",
    "MAX_DEPTH",
    "address_label",
    "anyio_receive",
    "decode",
    "encode",
    "header",
    "hostport",
    "nesting",
    "payload_length",
    "read_anyio",
    "read_frame",
    "record",
]

HEADER_SIZE = 4
# Paraconnect's own messages nest a few levels (a hub reply with a server's job options, five
# or six); 32 leaves room and keeps json's recursion far from Python's limit.
MAX_DEPTH = 32

# Strings may hold brackets: each is dropped whole before counting.  Possessive, and an
# unterminated string runs to the end, so that no input makes the scan quadratic.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)
_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def header(length: int) -> bytes:
    return length.to_bytes(HEADER_SIZE, "big")


def encode(obj: Mapping[str, Any], *, limit: int, what: str = "a frame") -> bytes:
    """`obj` as one frame; ProtocolError when it would exceed `limit` bytes."""
    payload = json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()
    if len(payload) > limit:
        raise ProtocolError(f"{what} of {len(payload)} bytes exceeds the {limit}-byte limit")
    return header(len(payload)) + payload


def payload_length(head: bytes, *, limit: int, what: str = "a frame") -> int:
    """The length a header announces; ProtocolError when truncated or over `limit`."""
    if len(head) != HEADER_SIZE:
        raise ProtocolError(f"truncated frame header ({len(head)} of {HEADER_SIZE} bytes)")
    length = int.from_bytes(head, "big")
    if length > limit:
        raise ProtocolError(
            f"the peer announced {what} of {length} bytes, over the {limit}-byte limit: "
            "it does not speak paraconnect's protocol"
        )
    return length


def nesting(payload: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (outside strings)."""
    brackets = _STRING.sub(b"", payload).translate(None, delete=_BRACKETS)
    steps = (1 if byte in b"[{" else -1 for byte in brackets)
    return max(itertools.accumulate(steps, initial=0))


def decode(payload: bytes, *, what: str = "a frame", max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """A frame's JSON object; ProtocolError for anything else, whatever the bytes."""
    if nesting(payload) > max_depth:
        raise ProtocolError(f"the peer sent {what} nested deeper than {max_depth} levels")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError(f"the peer sent {what} that is not JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"the peer sent {what} that is not a JSON object")
    return obj


Receive = Callable[[int], Awaitable[bytes]]


async def read_frame(
    receive: Receive, *, limit: int, what: str = "a frame", eof_ok: bool = False
) -> dict[str, Any] | None:
    """One frame from `receive(n)` (at most n bytes; b"" at the end of the stream).

    None when the stream ends before the first byte and `eof_ok`; a stream that ends anywhere
    else is a ProtocolError ("the connection ended in the middle of …")."""
    head = b""
    while len(head) < HEADER_SIZE:
        chunk = await receive(HEADER_SIZE - len(head))
        if not chunk:
            if not head and eof_ok:
                return None
            raise ProtocolError(
                f"the connection ended in the middle of {what} "
                f"({len(head)} of {HEADER_SIZE} header bytes)"
            )
        head += chunk
    size = payload_length(head, limit=limit, what=what)
    payload = bytearray()
    while len(payload) < size:
        chunk = await receive(size - len(payload))
        if not chunk:
            raise ProtocolError(
                f"the connection ended in the middle of {what} ({len(payload)} of {size} bytes)"
            )
        payload += chunk
    return decode(bytes(payload), what=what)


def anyio_receive(stream: anyio.abc.ByteReceiveStream) -> Receive:
    """`receive(n)` over an anyio stream: its end, or a reset, reads as b"" (the end)."""

    async def receive(n: int) -> bytes:
        try:
            return await stream.receive(n)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return b""
        except OSError as exc:
            raise NetworkError(f"the connection failed: {exc.strerror or exc}") from exc

    return receive


async def read_anyio(
    stream: anyio.abc.ByteReceiveStream,
    *,
    limit: int,
    what: str = "a frame",
    eof_ok: bool = False,
) -> dict[str, Any] | None:
    """`read_frame` over an anyio byte stream (the control socket, enrolment)."""
    return await read_frame(anyio_receive(stream), limit=limit, what=what, eof_ok=eof_ok)


# -- addresses in messages -----------------------------------------------------------------


def hostport(host: object, port: object) -> str:
    """``host:port``, an IPv6 address in brackets (``[::1]:8443``), as parse_endpoint reads it."""
    text = str(host)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def address_label(addr: object, unix: str = "a local socket") -> str:
    """A socket address (``getpeername``, anyio's remote_address) for a message: host:port for
    an IP address, the path (or `unix` when unnamed) for a Unix socket."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return hostport(addr[0], addr[1])
    return str(addr) or unix


def record(obj: Any, names: Iterable[str] | None = None) -> dict[str, Any]:
    """`obj`'s attributes as a JSON object, in order: the named ones, else every field of the
    dataclass.  Tuples become lists (JSON has no tuple); other values go as they are."""
    if names is None:
        names = [f.name for f in dataclasses.fields(obj)]
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(obj, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out
