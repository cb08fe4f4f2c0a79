"""The render frame protocol's parser: framing limits and request validation (no VTK needed)."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paraconnect.errors import ProtocolError
from paraconnect.render import _protocol as P

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
headers = st.dictionaries(st.text(max_size=12), json_values, max_size=6)


def frame(header: bytes, payload: bytes = b"") -> bytes:
    return P.PREFIX.pack(len(header), len(payload)) + header + payload


@settings(deadline=None)
@given(headers, st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=20))
def test_any_chunking_decodes_the_same_messages(
    header: dict[str, object], payload: bytes, cuts: list[int]
) -> None:
    data = P.encode_message(header, payload) * 2
    decoder = P.FrameDecoder()
    got: list[P.Message] = []
    pos = 0
    for cut in [*cuts, len(data)]:
        decoder.feed(data[pos : pos + cut])
        pos += cut
        while (msg := decoder.next_message()) is not None:
            got.append(msg)
    decoder.feed(data[pos:])
    while (msg := decoder.next_message()) is not None:
        got.append(msg)
    assert got == [P.Message(header, payload)] * 2
    decoder.eof()


@settings(deadline=None)
@given(headers, st.binary(max_size=100), st.data())
def test_truncated_stream_is_a_clear_fatal_error(
    header: dict[str, object], payload: bytes, data: st.DataObject
) -> None:
    whole = P.encode_message(header, payload)
    cut = data.draw(st.integers(1, len(whole) - 1))
    decoder = P.FrameDecoder()
    decoder.feed(whole[:cut])
    assert decoder.next_message() is None
    assert decoder.need() >= 1
    with pytest.raises(ProtocolError, match="closed in the middle of a frame"):
        decoder.eof()


@settings(deadline=None)
@given(st.integers(P.MAX_HEADER + 1, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_oversized_header_is_fatal(hlen: int, plen: int) -> None:
    decoder = P.FrameDecoder()
    decoder.feed(struct.pack(">II", hlen, plen))
    with pytest.raises(ProtocolError, match="over the 65536-byte limit"):
        decoder.next_message()
    with pytest.raises(ProtocolError, match="broken"):
        decoder.next_message()


@settings(deadline=None)
@given(st.integers(1, 2**32 - 1))
def test_a_client_payload_is_fatal_on_the_server(plen: int) -> None:
    decoder = P.FrameDecoder(max_payload=0)
    decoder.feed(struct.pack(">II", 12, plen) + b'{"op":"bye"}')
    with pytest.raises(ProtocolError, match="payload"):
        decoder.next_message()


def test_http_on_the_port_is_refused_clearly() -> None:
    decoder = P.FrameDecoder(max_payload=0)
    decoder.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ProtocolError, match="does not speak paraconnect's render protocol"):
        decoder.next_message()


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_garbage_headers_are_non_fatal_bad_requests(raw: bytes) -> None:
    decoder = P.FrameDecoder(max_payload=0)
    decoder.feed(frame(raw) + frame(b'{"op":"bye"}'))
    try:
        msg = decoder.next_message()
    except P.BadRequest as exc:
        assert "\n" not in str(exc)
    else:
        assert msg is not None
        assert isinstance(msg.header, dict)
    # The stream keeps its place: the next message decodes.
    assert decoder.next_message() == P.Message({"op": "bye"})


@settings(deadline=None)
@given(headers)
def test_parse_request_never_crashes(header: dict[str, object]) -> None:
    try:
        req = P.parse_request(header)
    except P.BadRequest as exc:
        assert str(exc) and "\n" not in str(exc)
        assert exc.kind in ("protocol", "config")
    else:
        assert type(req).__name__.lower() == header["op"]


@settings(deadline=None)
@given(st.text(min_size=1, max_size=60).filter(lambda s: s not in P._FIELDS))
def test_unknown_op(op: str) -> None:
    with pytest.raises(P.BadRequest, match="unknown op") as info:
        P.parse_request({"op": op, "id": 7})
    assert info.value.request_id == 7


@settings(max_examples=50, deadline=None)
@given(st.integers().filter(lambda v: v != 1))
def test_hello_parses_any_integer_version(v: int) -> None:
    # The server, not the parser, refuses versions it does not speak (a fatal error).
    assert P.parse_request({"op": "hello", "v": v}) == P.Hello(v=v)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"op": "hello", "v": "1"}, "integer protocol version"),
        ({"op": "resize", "w": 0, "h": 10}, "bad size 0x10"),
        ({"op": "resize", "w": 9000, "h": 10}, "from 1 to 8192"),
        ({"op": "resize", "w": True, "h": 10}, "bad size"),
        ({"op": "load"}, "exactly one of"),
        ({"op": "load", "dataset": "teapot"}, "unknown dataset 'teapot'"),
        ({"op": "load", "dataset": "sphere", "triangles": -1}, "'triangles' is -1"),
        ({"op": "camera", "zoom": 0}, "'zoom' is 0"),
        ({"op": "camera", "azimuth": "x"}, "finite number"),
        ({"op": "render", "format": "gif"}, "unknown image format 'gif'"),
        ({"op": "render", "quality": 101}, "'quality' is 101"),
        ({"op": "stream", "fps": -1}, "'fps' is -1"),
        ({"op": "render", "optimize": 1}, "'optimize' must be true or false"),
        ({"op": "stop", "now": True}, "does not take 'now'"),
        ({"id": 1.5, "op": "bye"}, "'id' must be"),
        ({"v": 1}, "no 'op'"),
        ({"op": "camera", "preset": "x"}, "unknown preset 'x'; use one of \\+x"),
        ({"op": "camera", "pan": [1]}, "'pan' must be a list of 2 finite numbers"),
        ({"op": "load", "path": "a.vtu", "reader": 7}, "'reader' must be a reader's name"),
        ({"op": "color"}, "'color' needs 'array'"),
        ({"op": "color", "array": "p", "component": "x"}, "whole number or 'magnitude'"),
        ({"op": "color", "array": "p", "range": [2, 1]}, "lo < hi"),
        ({"op": "color", "array": "p", "association": "edge"}, "unknown association 'edge'"),
        ({"op": "display", "axes": 1}, "'axes' must be true or false"),
        ({"op": "filter"}, "needs an 'action'"),
        ({"op": "filter", "action": "melt"}, "unknown action 'melt'"),
        ({"op": "filter", "action": "slice", "normal": [0, 1]}, "'normal' must be a list of 3"),
        ({"op": "filter", "action": "contour", "values": ["a"]}, "'values' must be a list"),
        ({"op": "time", "index": -1}, "'index' is -1"),
        ({"op": "blocks", "select": []}, "non-empty list of block indices"),
        ({"op": "files", "path": 3}, "'path' must be a string"),
        ({"op": "state", "all": True}, "does not take 'all'"),
    ],
)
def test_bad_requests_say_what_is_wrong(header: dict[str, object], message: str) -> None:
    with pytest.raises(P.BadRequest, match=message):
        P.parse_request(header)


def test_good_requests() -> None:
    assert P.parse_request({"op": "camera", "azimuth": 10, "reset": True, "id": "a"}) == P.Camera(
        azimuth=10.0, reset=True, id="a"
    )
    assert P.parse_request({"op": "stream", "fps": 0, "spin": 2}) == P.Stream(fps=0.0, spin=2.0)
    load = P.parse_request({"op": "load", "dataset": "sphere", "triangles": 1000})
    assert isinstance(load, P.Load) and load.options == {"triangles": 1000}


def test_good_scene_requests() -> None:
    color = P.parse_request({"op": "color", "array": "p", "component": "magnitude", "id": 3})
    assert color == P.Color(array="p", component="magnitude", id=3)
    solid = P.parse_request({"op": "color", "array": None, "range": "auto"})
    assert solid == P.Color(array=None, range="auto")
    cut = P.parse_request({"op": "filter", "action": "clip", "normal": [0, 0, 1], "invert": True})
    assert cut == P.Filter(action="clip", spec={"normal": (0.0, 0.0, 1.0), "invert": True})
    cam = P.parse_request({"op": "camera", "preset": "-y", "pan": [0.5, -0.25]})
    assert isinstance(cam, P.Camera) and (cam.preset, cam.pan) == ("-y", (0.5, -0.25))
    assert P.parse_request({"op": "time", "index": 4}) == P.Time(index=4)
    assert P.parse_request({"op": "blocks", "select": [0, 2]}) == P.Blocks(select=(0, 2))


@settings(deadline=None)
@given(
    st.sampled_from(sorted(set(P._FIELDS) - {"hello"})).flatmap(
        lambda op: st.fixed_dictionaries(
            {"op": st.just(op)},
            optional={key: json_values for key in P._FIELDS[op]},
        )
    )
)
def test_every_op_with_any_field_values_parses_or_says_why(header: dict[str, object]) -> None:
    try:
        req = P.parse_request(header)
    except P.BadRequest as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert type(req).__name__.lower() == header["op"]


def test_encode_message_refuses_a_huge_header_and_non_json() -> None:
    with pytest.raises(ProtocolError, match="over the 65536-byte limit"):
        P.encode_message({"op": "x" * P.MAX_HEADER})
    with pytest.raises(ProtocolError, match="not plain JSON"):
        P.encode_message({"zoom": float("inf")})


def test_nan_is_not_json() -> None:
    decoder = P.FrameDecoder()
    decoder.feed(frame(json.dumps({"op": "camera", "zoom": float("nan")}).encode()))
    msg = decoder.next_message()
    assert msg is not None
    with pytest.raises(P.BadRequest, match="finite"):
        P.parse_request(msg.header)
