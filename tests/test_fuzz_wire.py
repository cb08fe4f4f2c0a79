"""Property tests of the one framing codec (paraconnect._wire) and of each parser built on it:
the hello and control channel, the hub's control socket and enrolment.  Whatever the bytes —
random, truncated, oversized, nested far deeper than Python's recursion limit — the only error
is ProtocolError (json.loads of ``[[[[…`` raised RecursionError, which nobody caught)."""

from __future__ import annotations

import contextlib
import json

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paraconnect import _wire
from paraconnect._hub._control import MAX_REQUEST
from paraconnect._hub._control import _read as control_read
from paraconnect.debug._probe import classify
from paraconnect.errors import ProtocolError
from paraconnect.servers._enroll_dial import MAX_MESSAGE
from paraconnect.servers._enroll_dial import _recv as enrol_recv
from paraconnect.tunnel._hello import MAX_FRAME, decode_payload, parse_frame

from .helpers_robust import frame, hostile_frames, json_values, nested_json

FAST = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)

LIMITS = {"hello": MAX_FRAME, "control": MAX_REQUEST, "enrol": MAX_MESSAGE}


@FAST
@given(nested_json())
def test_nesting_is_a_protocol_error_in_every_decoder(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"nested deeper|not JSON"):
        decode_payload(payload)
    with pytest.raises(ProtocolError, match=r"nested deeper|not JSON"):
        _wire.decode(payload)


@FAST
@given(st.binary(max_size=400))
def test_random_bytes_are_only_ever_a_protocol_error(blob: bytes) -> None:
    for parse in (parse_frame, decode_payload, _wire.decode):
        with contextlib.suppress(ProtocolError):
            parse(blob)


@FAST
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_what_encodes_decodes(obj: dict[str, object]) -> None:
    data = _wire.encode(obj, limit=MAX_REQUEST)
    assert _wire.payload_length(data[:4], limit=MAX_REQUEST) == len(data) - 4
    assert json.dumps(_wire.decode(data[4:]), sort_keys=True) == json.dumps(obj, sort_keys=True)


@FAST
@given(st.integers(min_value=1, max_value=100), st.text(alphabet='[]{}"\\ab,:', max_size=60))
def test_brackets_inside_strings_do_not_count(depth: int, text: str) -> None:
    inner = json.dumps(text)
    payload = ("[" * min(depth, 32) + inner + "]" * min(depth, 32)).encode()
    assert _wire.nesting(payload) == min(depth, 32)


def test_the_depth_limit_is_exact() -> None:
    assert _wire.decode(b'{"a":' + b"[" * 31 + b"]" * 31 + b"}") == {"a": _nest(31)}
    with pytest.raises(ProtocolError, match="nested deeper than 32"):
        _wire.decode(b'{"a":' + b"[" * 32 + b"]" * 32 + b"}")


def _nest(depth: int) -> object:
    out: list[object] = []
    for _ in range(depth - 1):
        out = [out]
    return out


class _Bytes:
    """An anyio receive stream over fixed bytes, in chunks; then the end of the stream."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.chunk = data, chunk

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self.data:
            raise anyio.EndOfStream
        n = min(max_bytes, self.chunk)
        out, self.data = self.data[:n], self.data[n:]
        return out


@FAST
@given(st.sampled_from(sorted(LIMITS)), st.data(), st.integers(min_value=1, max_value=64))
def test_stream_readers_raise_only_protocol_errors(
    which: str, data: st.DataObject, chunk: int
) -> None:
    blob = data.draw(hostile_frames(LIMITS[which]))

    async def read() -> None:
        stream = _Bytes(blob, chunk)
        try:
            if which == "control":
                await control_read(stream)  # type: ignore[arg-type]
            elif which == "enrol":
                await enrol_recv(stream, "the fuzzer")  # type: ignore[arg-type]
            else:
                await _wire.read_anyio(stream, limit=MAX_FRAME)  # type: ignore[arg-type]
        except ProtocolError:
            pass

    anyio.run(read)


def test_a_truncated_control_request_is_a_protocol_error() -> None:
    """It raised anyio.EndOfStream out of the hub's control handler."""

    async def read() -> None:
        with pytest.raises(ProtocolError, match="ended in the middle"):
            await control_read(_Bytes(frame(b'{"op": "servers"}')[:10], 4))  # type: ignore[arg-type]

    anyio.run(read)


@FAST
@given(st.integers(min_value=33, max_value=3000), st.binary(max_size=50))
def test_the_debugger_classifies_any_first_bytes(depth: int, tail: bytes) -> None:
    """`paraconnect debug` looks at what a peer sent first; a nested JSON frame raised
    RecursionError out of it."""
    kind, what = classify(frame(b'{"v":1,"x":' + b"[" * depth + b"]" * depth + b"}") + tail)
    assert kind and what
