"""The hello protocol: the frame parser (property tests) and the exchange over real TLS."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from paraconnect.errors import CredentialError, NetworkError, ProtocolError, TrustError
from paraconnect.pki import Credentials, Role, SecurityLevel, Store, load_credentials
from paraconnect.tls import ANONYMOUS
from paraconnect.tunnel import Hello, Purpose, Side
from paraconnect.tunnel._hello import (
    MAX_FRAME,
    decode_payload,
    encode_frame,
    exchange_hello,
    frame_length,
    parse_frame,
)
from paraconnect.tunnel._stream import PlainConnection

pytestmark = pytest.mark.timeout(60)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


# -- the parser ----------------------------------------------------------------------------


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_frames_round_trip(obj: dict[str, object]) -> None:
    obj = {**obj, "v": 1}
    assert parse_frame(encode_frame(obj)) == obj


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6), st.data())
def test_truncated_frames_are_protocol_errors(obj: dict[str, object], data: st.DataObject) -> None:
    frame = encode_frame({**obj, "v": 1})
    cut = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    with pytest.raises(ProtocolError):
        parse_frame(frame[:cut])


@given(st.integers(min_value=MAX_FRAME + 1, max_value=2**32 - 1))
def test_oversized_length_is_refused_before_reading(length: int) -> None:
    with pytest.raises(ProtocolError, match="limit"):
        frame_length(struct.pack(">I", length))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_parser(blob: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_frame(blob)


@given(st.binary(min_size=1, max_size=100).filter(lambda b: not b.strip().startswith(b"{")))
def test_non_json_payload(blob: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_frame(_frame(blob))


@given(st.integers().filter(lambda v: v != 1))
def test_wrong_version(version: int) -> None:
    with pytest.raises(ProtocolError, match="version"):
        parse_frame(_frame(json.dumps({"v": version}).encode()))


@pytest.mark.parametrize("payload", [b"[1]", b'"v"', b"{}", b'{"v": "1"}', b'{"v": 1.0}', b"\xff"])
def test_not_a_versioned_object(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_payload(payload)


def test_encoder_refuses_oversized() -> None:
    with pytest.raises(ProtocolError):
        encode_frame({"v": 1, "x": "a" * MAX_FRAME})


@given(
    st.fixed_dictionaries(
        {
            "v": st.just(1),
            "session": st.text(max_size=40),
            "role": st.sampled_from(["server", "client", "node"]),
            "server_id": st.text(max_size=20),
            "purpose": st.sampled_from(["control", "data"]),
        },
        optional={
            "unique_id": st.text(max_size=20),
            "channel": st.text(max_size=20),
            "expect_server": st.text(max_size=20),
        },
    )
)
def test_hello_from_dict_round_trip(obj: dict[str, object]) -> None:
    hello = Hello.from_dict(obj)
    assert Hello.from_dict(hello.to_dict()) == hello


@pytest.mark.parametrize(
    "bad",
    [
        {"role": "admin"},
        {"purpose": "shell"},
        {"session": 7},
        {"server_id": None},
        {"unique_id": ["x"]},
        {"expect_server": 7},
        {"expect_server": "x" * 257},
        {"v": 2},
    ],
)
def test_hello_fields_are_checked(bad: dict[str, object]) -> None:
    good = {"v": 1, "session": "s", "role": "client", "server_id": "", "purpose": "data"}
    with pytest.raises(ProtocolError):
        Hello.from_dict({**good, **bad})


# -- the exchange over real TLS --------------------------------------------------------------


async def _pair(
    server: Side, client: Side, purpose: Purpose = Purpose.DATA
) -> tuple[object, object]:
    """Run both ends of one loopback connection; returns (server outcome, client outcome)."""
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.setblocking(False)
    port = lsock.getsockname()[1]
    results: dict[str, object] = {}

    async def serve() -> None:
        loop = __import__("asyncio").get_running_loop()
        sock, _ = await loop.sock_accept(lsock)
        try:
            conn, hello = await server.establish(sock, server_side=True)
            results["server"] = hello
            await conn.aclose()
        except Exception as exc:
            results["server"] = exc

    async def dial() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        try:
            conn, hello = await client.establish(sock, server_side=False, purpose=purpose)
            results["client"] = hello
            await conn.aclose()
        except Exception as exc:
            results["client"] = exc

    with lsock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            tg.start_soon(dial)
    return results["server"], results["client"]


def _sides(home: Path, level: SecurityLevel = SecurityLevel.MUTUAL) -> tuple[Side, Side, Store]:
    store = Store(home)
    uid = store.unique_id().value
    session = store.create_session("h", level=level)
    session.issue("server", "srv", unique_id=uid)
    session.issue("client", "cli", unique_id=uid)
    srv = Side(load_credentials("h", role="server", store=store), Role.SERVER, server_id="srv")
    cli = Side(load_credentials("h", role="client", store=store), Role.CLIENT)
    return srv, cli, store


@pytest.mark.anyio
async def test_exchange_mutual_both_sides_learn_the_other(home: Path) -> None:
    srv, cli, _ = _sides(home)
    s_hello, c_hello = await _pair(srv, cli, Purpose.CONTROL)
    assert isinstance(s_hello, Hello) and isinstance(c_hello, Hello)
    assert s_hello.role is Role.CLIENT and s_hello.purpose is Purpose.CONTROL
    assert c_hello.role is Role.SERVER and c_hello.server_id == "srv"
    assert c_hello.purpose is Purpose.CONTROL  # the acceptor answers for the same purpose
    assert s_hello.unique_id == c_hello.unique_id == srv.unique_id


class _Careless(Side):
    """A side that skips its own credential checks, as a modified or older peer might."""

    def _check_own(self, creds: Credentials) -> None:
        pass


@pytest.mark.anyio
async def test_copied_certificate_refused_by_the_peer_and_the_dialler_learns_why(
    home: Path,
) -> None:
    srv, _cli, store = _sides(home)
    creds = load_credentials("h", role="client", store=store)
    thief = _Careless(creds, Role.CLIENT, unique_id="another-machine")
    s_out, c_out = await _pair(srv, thief)
    assert isinstance(s_out, TrustError) and "copied certificate" in str(s_out)
    assert isinstance(c_out, TrustError) and "refused this side" in str(c_out)
    assert "copied certificate" in str(c_out)


@pytest.mark.anyio
async def test_own_copied_certificate_refused_before_use(home: Path) -> None:
    _srv, _cli, store = _sides(home)
    with pytest.raises(CredentialError, match="a copied certificate is refused at level mutual"):
        Side(load_credentials("h", role="client", store=store), Role.CLIENT, unique_id="elsewhere")


@pytest.mark.anyio
async def test_client_certificate_cannot_act_as_server(home: Path) -> None:
    _srv, cli, store = _sides(home)
    impostor = _Careless(load_credentials("h", role="client", store=store), Role.SERVER)
    s_out, c_out = await _pair(impostor, cli)
    assert isinstance(c_out, TrustError) and "client certificate" in str(c_out)
    assert str(c_out).startswith("refused client 'cli'"), c_out  # the client's own verdict
    assert "the peer acts as server with a client certificate ('cli')" in str(c_out)
    assert isinstance(s_out, TrustError)
    assert "refused this side: the peer acts as server with a client certificate" in str(s_out)
    with pytest.raises(
        CredentialError, match=r"holds a client certificate \('cli'\), which cannot act as a server"
    ):
        Side(load_credentials("h", role="client", store=store), Role.SERVER)


@pytest.mark.anyio
async def test_silent_peer_times_out_the_hello() -> None:
    a, b = socket.socketpair()
    with a, b:
        conn = PlainConnection(a, ANONYMOUS)
        ours = Hello("s", Role.CLIENT, "", Purpose.DATA)
        with pytest.raises(NetworkError, match="did not complete the hello"):
            await exchange_hello(
                conn, ours, initiator=True, level=SecurityLevel.NONE, session_id="s", timeout=0.2
            )


@pytest.mark.anyio
async def test_garbage_instead_of_hello_is_a_protocol_error() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn = PlainConnection(a, ANONYMOUS)
        ours = Hello("s", Role.SERVER, "", Purpose.DATA)
        with pytest.raises(ProtocolError):
            await exchange_hello(
                conn, ours, initiator=False, level=SecurityLevel.NONE, session_id="s"
            )
