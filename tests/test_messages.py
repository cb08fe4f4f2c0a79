"""Typed control messages: each round-trips through its frame, a malformed field is refused
naming that field, an unknown type is refused, and decode raises nothing but ProtocolError
whatever object a peer sends (hypothesis)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paraconnect.errors import ProtocolError
from paraconnect.tunnel import Endpoint, Home
from paraconnect.tunnel._hello import decode_payload, encode_frame
from paraconnect.tunnel._messages import (
    MAX_CRL_PARTS,
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
    decode,
)

EVERY: list[Message] = [
    Info("srv", 11111),
    Info("srv", None),
    PhoneHome(Home(Endpoint("laptop.example", 7000), interval=2.5, deadline=60.0)),
    PhoneHome(Home(Endpoint("::1", 7000))),
    Open("a" * 32),
    Crl("-----BEGIN X509 CRL-----", 1, 3),
    Policy("signed policy text"),
    Ping(),
    Pong(),
    Ok(),
    Error("no such thing"),
]


@pytest.mark.parametrize("msg", EVERY, ids=lambda m: type(m).__name__)
def test_each_message_round_trips_through_its_frame(msg: Message) -> None:
    obj = decode_payload(encode_frame({"v": 1, **msg.to_dict()})[4:])
    assert obj["type"] == msg.type
    assert decode(obj) == msg


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"type": "info", "server_id": 5}, "server_id"),
        ({"type": "info", "server_id": "srv", "connect_id": "7"}, "connect_id"),
        ({"type": "info", "server_id": "srv", "connect_id": True}, "connect_id"),
        ({"type": "open"}, "channel"),
        ({"type": "open", "channel": ""}, "channel"),
        ({"type": "open", "channel": "x" * 65}, "channel"),
        ({"type": "crl", "pem": 1}, "pem"),
        ({"type": "crl", "pem": "p", "part": "0"}, "part"),
        ({"type": "crl", "pem": "p", "parts": 1.0}, "parts"),
        ({"type": "crl", "pem": "p", "part": 2, "parts": 2}, "part"),
        ({"type": "crl", "pem": "p", "part": 0, "parts": MAX_CRL_PARTS + 1}, "parts"),
        ({"type": "policy"}, "signed"),
        ({"type": "phone_home", "port": 7000}, "host"),
        ({"type": "phone_home", "host": "h", "port": "7000"}, "port"),
        ({"type": "phone_home", "host": "h", "port": 7000, "interval": "5"}, "interval"),
        ({"type": "phone_home", "host": "h", "port": 7000, "interval": 0}, "interval"),
        ({"type": "phone_home", "host": "h", "port": 7000, "deadline": -1}, "deadline"),
    ],
)
def test_a_malformed_field_is_refused_naming_it(obj: dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError, match=field) as info:
        decode(obj)
    assert obj["type"] in str(info.value)


@pytest.mark.parametrize("obj", [{"type": "reboot"}, {"type": 3}, {}, [], "open", None])
def test_an_unknown_or_untyped_message_is_refused(obj: object) -> None:
    with pytest.raises(ProtocolError, match=r"unknown control message type|JSON object"):
        decode(obj)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
_types = st.sampled_from(
    ["info", "phone_home", "open", "crl", "policy", "ping", "pong", "ok", "error", "x"]
)
_fields = st.sampled_from(
    ["server_id", "connect_id", "host", "port", "interval", "deadline", "channel", "pem",
     "part", "parts", "signed", "reason"]
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(
        _json,
        st.builds(
            lambda kind, fields: {"type": kind, **fields},
            _types,
            st.dictionaries(_fields, _json | st.integers(min_value=-(2**70), max_value=2**70)),
        ),
    )
)
def test_decode_raises_nothing_but_protocol_error(obj: object) -> None:
    try:
        msg = decode(obj)
    except ProtocolError:
        return
    # Whatever it took, it can say again, and reads back the same.
    assert decode(msg.to_dict()) == msg
