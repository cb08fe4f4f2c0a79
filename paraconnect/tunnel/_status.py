"""Status metrics of the tunnels in this process: connections open, handshakes by outcome,
bytes each way, servers by state; rendered as JSON and as Prometheus text exposition.

One process-wide registry (`METRICS`), fed by every `Side`; the hub serves `render_json()` and
`render_prometheus()`.  Nothing here runs per chunk: open connections report their byte counts
(the relay's live `SpliceResult`) only when the metrics are rendered.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Protocol

import anyio
import anyio.abc

from ..errors import NetworkError, ProtocolError, TrustError

__all__ = [
    "METRICS",
    "Metrics",
    "classify_failure",
    "render_json",
    "render_prometheus",
    "serve_status",
]


class _Open(Protocol):
    kind: str

    def byte_counts(self) -> tuple[int, int]: ...


def classify_failure(exc: BaseException) -> str:
    """A small, fixed set of label values for failed handshakes (bounded cardinality)."""
    text = str(exc).lower()
    if isinstance(exc, TrustError):
        if "revoked" in text:
            return "revoked"
        if "policy" in text:
            return "policy"
        if "refused this side" in text or "refused our certificate" in text:
            return "refused_by_peer"
        if "unknown ca" in text or "not issued" in text or "another session" in text:
            return "unknown_ca"
        if "session" in text:
            return "wrong_session"
        return "identity"
    if isinstance(exc, NetworkError):
        return "timeout" if ("within" in text or "timed out" in text) else "network"
    if isinstance(exc, ProtocolError):
        return "protocol"
    return "other"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Counters and gauges; safe to render from another thread (the hub's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.handshakes_ok = 0
        self.handshakes_failed: Counter[str] = Counter()
        self.connections_total: Counter[str] = Counter()
        self.closed_bytes_in = 0
        self.closed_bytes_out = 0
        self._open: set[_Open] = set()
        self._servers: Callable[[], Mapping[str, int]] | None = None
        self._leg: Callable[[], str] | None = None

    # -- fed by the tunnel ---------------------------------------------------------------

    def handshake_ok(self) -> None:
        with self._lock:
            self.handshakes_ok += 1

    def handshake_failed(self, reason: str) -> None:
        with self._lock:
            self.handshakes_failed[reason] += 1

    def opened(self, conn: _Open) -> None:
        with self._lock:
            self._open.add(conn)
            self.connections_total[conn.kind] += 1

    def closed(self, conn: _Open) -> None:
        bytes_in, bytes_out = conn.byte_counts()
        with self._lock:
            if conn in self._open:
                self._open.discard(conn)
                self.closed_bytes_in += bytes_in
                self.closed_bytes_out += bytes_out

    def servers_from(
        self,
        provider: Callable[[], Mapping[str, int]] | None,
        *,
        only_if: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        """Where the count of servers by state comes from (the supervisor's registry).
        With `only_if`, change it only while that one is in place (a stopping hub removes
        its own provider, not a newer hub's)."""
        if only_if is None or self._servers == only_if:
            self._servers = provider

    def leg_from(self, provider: Callable[[], str] | None) -> None:
        """How the agent in this process keeps its program's leg private, in words."""
        self._leg = provider

    # -- rendered ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            open_conns = list(self._open)
            bytes_in, bytes_out = self.closed_bytes_in, self.closed_bytes_out
            failed = dict(self.handshakes_failed)
            ok = self.handshakes_ok
            total = dict(self.connections_total)
        by_kind: Counter[str] = Counter()
        for conn in open_conns:
            by_kind[conn.kind] += 1
            i, o = conn.byte_counts()
            bytes_in += i
            bytes_out += o
        servers: dict[str, int] = {}
        if self._servers is not None:
            servers = {str(k): int(v) for k, v in self._servers().items()}
        leg = {"leg": self._leg()} if self._leg is not None else {}
        return {
            **leg,
            "connections_open": {"control": by_kind["control"], "data": by_kind["data"]},
            "connections_total": {"control": total.get("control", 0), "data": total.get("data", 0)},
            "handshakes": {"ok": ok, "failed": failed},
            "bytes": {"in": bytes_in, "out": bytes_out},
            "servers": servers,
        }

    def render_json(self) -> str:
        return json.dumps(self.snapshot(), sort_keys=True)

    def render_prometheus(self) -> str:
        snap = self.snapshot()
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, object]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{labels} {int(str(value))}")

        def lab(**labels: str) -> str:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            return "{" + inner + "}"

        def table(key: str, sub: str | None = None) -> dict[str, object]:
            value = snap[key]
            if sub is not None:
                value = value[sub] if isinstance(value, dict) else {}
            return dict(value) if isinstance(value, dict) else {}

        metric(
            "paraconnect_connections_open",
            "gauge",
            "Tunnel connections open now, by kind.",
            [(lab(kind=k), v) for k, v in sorted(table("connections_open").items())],
        )
        metric(
            "paraconnect_connections_total",
            "counter",
            "Tunnel connections established since start, by kind.",
            [(lab(kind=k), v) for k, v in sorted(table("connections_total").items())],
        )
        metric(
            "paraconnect_handshakes_total",
            "counter",
            "TLS handshakes and hellos, by outcome and failure reason.",
            [(lab(outcome="ok", reason=""), table("handshakes")["ok"])]
            + [
                (lab(outcome="failed", reason=r), n)
                for r, n in sorted(table("handshakes", "failed").items())
            ],
        )
        data = table("bytes")
        metric(
            "paraconnect_bytes_total",
            "counter",
            "Bytes relayed, by direction (in: from the TLS peer; out: to it).",
            [(lab(direction="in"), data["in"]), (lab(direction="out"), data["out"])],
        )
        metric(
            "paraconnect_servers",
            "gauge",
            "Servers known to the supervisor, by state.",
            [(lab(state=s), n) for s, n in sorted(table("servers").items())],
        )
        return "\n".join(lines) + "\n"


METRICS = Metrics()


def render_json() -> str:
    """The process-wide tunnel metrics as a JSON document."""
    return METRICS.render_json()


def render_prometheus() -> str:
    """The process-wide tunnel metrics in Prometheus text exposition format (version 0.0.4)."""
    return METRICS.render_prometheus()


# -- a tiny read-only HTTP endpoint (``paraconnect serve --status``) -------------------------

_MAX_REQUEST = 8192
_REQUEST_TIMEOUT = 5.0


def _response(status: str, content_type: str, body: str) -> bytes:
    data = body.encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


def answer(request_line: str, metrics: Metrics | None = None) -> bytes:
    """The response to one request line: GET /metrics (Prometheus), GET / or /status (JSON)."""
    metrics = metrics or METRICS
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return _response("400 Bad Request", "text/plain", "bad request\n")
    method, target = parts[0], parts[1].split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", "text/plain", "GET only\n")
    if target == "/metrics":
        return _response(
            "200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render_prometheus()
        )
    if target in ("/", "/status"):
        return _response("200 OK", "application/json", metrics.render_json() + "\n")
    return _response("404 Not Found", "text/plain", "try /metrics or /status\n")


async def serve_status(
    host: str,
    port: int,
    *,
    metrics: Metrics | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the metrics over plain HTTP on a loopback address (they name peers: never on the
    network).  Reports the bound port through `task_status`."""
    import ipaddress

    from .._accept import serve_listener
    from ..errors import ConfigError

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"--status {host}:{port} is not a loopback address: the status page names peers, so "
            "it is served on 127.0.0.1 or [::1] only (reach it through your own tunnel)"
        )

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            with anyio.move_on_after(_REQUEST_TIMEOUT):
                try:
                    while b"\r\n\r\n" not in data and len(data) < _MAX_REQUEST:
                        data += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    return
            line = data.split(b"\r\n", 1)[0].decode("latin-1")
            reply = answer(line, metrics)
            if line.startswith("HEAD "):
                reply = reply.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                await stream.send(reply)

    bind = "127.0.0.1" if host == "localhost" else host.strip("[]")
    listener = await anyio.create_tcp_listener(local_host=bind, local_port=port)
    async with listener:
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - not Django
        task_status.started(int(bound))
        await serve_listener(listener, handle, f"status page on {bind}:{bound}")
