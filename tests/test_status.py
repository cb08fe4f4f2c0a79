"""Status metrics: connections open, handshakes by outcome and reason, bytes, servers by state,
as JSON and as Prometheus text exposition (every line checked against the format)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from paraconnect.errors import NetworkError, ProtocolError, TrustError
from paraconnect.tunnel import (
    METRICS,
    Agent,
    Connector,
    Metrics,
    Program,
    render_json,
    render_prometheus,
)
from paraconnect.tunnel._status import classify_failure

from .helpers_cli import procs_fixture  # noqa: F401 - the fixture `procs`
from .helpers_tunnel import Pki, echo_command, make_pki, sha_check

pytestmark = [pytest.mark.timeout(60)]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_VALUE = r'"(?:[^"\\\n]|\\\\|\\"|\\n)*"'
_LABELS = (
    rf"\{{(?:[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE})(?:,[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE})*\}}"
)
_SAMPLE = re.compile(
    rf"^({_NAME})({_LABELS})? (-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?|NaN|[+-]Inf)$"
)
_HELP = re.compile(rf"^# HELP ({_NAME}) \S.*$")
_TYPE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")


def parse_prometheus(text: str) -> dict[str, float]:
    """Check every line of a text exposition; returns {'name{labels}': value}."""
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    helped: set[str] = set()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if m := _HELP.match(line):
            assert m.group(1) not in helped, f"second HELP for {m.group(1)}"
            helped.add(m.group(1))
        elif m := _TYPE.match(line):
            assert m.group(1) not in typed, f"second TYPE for {m.group(1)}"
            typed[m.group(1)] = m.group(2)
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a valid exposition line: {line!r}"
            name = m.group(1)
            assert name in typed and name in helped, f"sample {name} before its HELP/TYPE"
            key = name + (m.group(2) or "")
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = float(m.group(3))
    return samples


@dataclass(eq=False)
class _FakeConn:
    kind: str
    counts: tuple[int, int]

    def byte_counts(self) -> tuple[int, int]:
        return self.counts


def test_metrics_render_as_json_and_prometheus() -> None:
    metrics = Metrics()
    metrics.handshake_ok()
    metrics.handshake_ok()
    metrics.handshake_failed("revoked")
    metrics.handshake_failed('we"ird\\reason\n')
    done, live = _FakeConn("data", (100, 5)), _FakeConn("control", (7, 9))
    metrics.opened(done)
    metrics.opened(live)
    metrics.closed(done)
    metrics.closed(done)  # twice: counted once
    metrics.servers_from(lambda: {"running": 2, "lost": 1})
    snap = json.loads(metrics.render_json())
    assert snap["connections_open"] == {"control": 1, "data": 0}
    assert snap["connections_total"] == {"control": 1, "data": 1}
    assert snap["handshakes"]["ok"] == 2 and snap["handshakes"]["failed"]["revoked"] == 1
    assert snap["bytes"] == {"in": 107, "out": 14}
    assert snap["servers"] == {"running": 2, "lost": 1}
    samples = parse_prometheus(metrics.render_prometheus())
    assert samples['paraconnect_connections_open{kind="control"}'] == 1
    assert samples['paraconnect_handshakes_total{outcome="ok",reason=""}'] == 2
    assert samples['paraconnect_handshakes_total{outcome="failed",reason="revoked"}'] == 1
    assert samples['paraconnect_bytes_total{direction="in"}'] == 107
    assert samples['paraconnect_servers{state="running"}'] == 2
    weird = [k for k in samples if "we" in k]
    assert weird == [
        'paraconnect_handshakes_total{outcome="failed",reason="we\\"ird\\\\reason\\n"}'
    ]


def test_failure_reasons_are_a_small_fixed_set() -> None:
    assert classify_failure(TrustError("peer certificate was revoked")) == "revoked"
    assert classify_failure(TrustError("x is denied by the policy p")) == "policy"
    assert classify_failure(NetworkError("did not complete the hello within 10 s")) == "timeout"
    assert classify_failure(NetworkError("connection refused")) == "network"
    assert classify_failure(ProtocolError("not TLS")) == "protocol"
    assert classify_failure(RuntimeError("boom")) == "other"


def _snap() -> dict[str, dict[str, object]]:
    return dict(json.loads(render_json()))


@pytest.mark.anyio
async def test_live_tunnels_feed_the_process_metrics(pki: Pki, tmp_path: Path) -> None:
    before = _snap()
    other = make_pki(tmp_path / "elsewhere", "other")
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(
            Agent(pki.server, program=Program(echo_command()), listen=["127.0.0.1:0"]).run
        )
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        stream = await anyio.connect_tcp(local.host, local.port)
        await stream.send(b"echo\n" + b"y" * 5000)
        got = 0
        with anyio.fail_after(10):
            while got < 5000:
                got += len(await stream.receive())
        during = _snap()
        # Both ends of the data connection and of the control channel live in this process.
        assert during["connections_open"]["data"] == 2
        assert during["connections_open"]["control"] == 2
        assert int(during["bytes"]["in"]) - int(before["bytes"]["in"]) >= 2 * 5000  # type: ignore[call-overload]
        await stream.aclose()
        await sha_check(local, 10_000)
        with anyio.fail_after(20), pytest.raises(TrustError):
            await Connector(other.client, addr, "127.0.0.1:0", unique_id=other.uid).run()
        tg.cancel_scope.cancel()
    after = _snap()
    assert after["connections_open"] == before["connections_open"]
    hs_before, hs_after = before["handshakes"], after["handshakes"]
    assert int(hs_after["ok"]) - int(hs_before["ok"]) >= 6  # type: ignore[call-overload]
    failed_before = dict(hs_before["failed"])  # type: ignore[call-overload]
    failed_after = dict(hs_after["failed"])  # type: ignore[call-overload]
    assert sum(failed_after.values()) > sum(failed_before.values())
    assert int(after["bytes"]["out"]) - int(before["bytes"]["out"]) >= 2 * 10_000  # type: ignore[call-overload]
    assert render_prometheus() == METRICS.render_prometheus()
    samples = parse_prometheus(render_prometheus())
    assert samples['paraconnect_connections_total{kind="data"}'] >= 4


async def _get(port: int, target: str) -> tuple[str, str]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        with anyio.fail_after(10):
            try:
                while True:
                    data += await stream.receive()
            except anyio.EndOfStream:
                pass
    head, _, body = data.decode().partition("\r\n\r\n")
    return head, body


@pytest.mark.anyio
async def test_serve_status_over_http_on_loopback(pki: Pki, procs: object) -> None:
    import sys

    from paraconnect.tunnel import parse_endpoint

    from .helpers_tunnel import ECHO

    agent = procs(  # type: ignore[operator]
        "serve", "--creds", "lab", "--listen", "127.0.0.1:0", "--status", "127.0.0.1:0",
        "--json", "--", sys.executable, ECHO, "--port", "{port}",
    )  # fmt: skip
    ready = agent.ready()
    [addr] = ready["listen"]
    port = int(str(ready["status"]).rsplit(":", 1)[1].split("/")[0])
    async with anyio.create_task_group() as tg:
        local = await tg.start(Connector(pki.client, parse_endpoint(str(addr)), "127.0.0.1:0").run)
        await sha_check(local, 20_000)
        head, body = await _get(port, "/metrics")
        assert head.startswith("HTTP/1.1 200") and "version=0.0.4" in head
        samples = parse_prometheus(body)
        assert samples['paraconnect_connections_open{kind="control"}'] == 1
        assert samples['paraconnect_handshakes_total{outcome="ok",reason=""}'] >= 2
        head, body = await _get(port, "/status")
        assert head.startswith("HTTP/1.1 200") and json.loads(body)["bytes"]["in"] >= 20_000
        head, _ = await _get(port, "/nothing")
        assert head.startswith("HTTP/1.1 404")
        tg.cancel_scope.cancel()
    refused = procs(  # type: ignore[operator]
        "serve", "--creds", "lab", "--listen", "127.0.0.1:0", "--status", "0.0.0.0:0",
        "--", sys.executable, ECHO, "--port", "{port}",
    )  # fmt: skip
    assert refused.wait() == 1
    assert any("not a loopback address" in line for line in refused.errors())
