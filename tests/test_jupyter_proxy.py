"""Issue 15: a web app behind /paraconnect/proxy/<id>/, through a real ``jupyter server``, the
hub's tunnel and a real app (tests/helpers_webapp.py) launched as a ``web`` server; Jupyter runs
under a base URL as JupyterHub gives one (``/user/alice/``).

The app tells what reached it, so the tests see that no Jupyter credential did (token in the
header or the query, Jupyter's cookies and XSRF header) and that it was told where it is mounted.
Jupyter's rules hold (403 without credentials, XSRF for a cookie's POST); a 256 MiB answer goes
through without the Jupyter server holding it (its peak RSS); a websocket outlives many of the
pings we configure (the one timing on it) and still echoes, text and binary."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from .helpers_jupyter import JupyterServer, start_jupyter
from .helpers_leg import (  # noqa: F401
    descendants,
    host_addresses,
    host_netns,
    other_connects,
    other_user_fixture,
    program_listeners,
)
from .helpers_webapp import MARKER

pytestmark = pytest.mark.timeout(120)

APP = str(Path(__file__).with_name("helpers_webapp.py"))
PING = 0.5  # seconds: Paraconnect.proxy_ping_interval in these tests
BASE = "/user/alice/"  # Jupyter's base_url, as JupyterHub gives a user's server


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    tmp = tmp_path_factory.mktemp("jupyter-proxy")
    args = [f"--Paraconnect.proxy_ping_interval={PING}"]
    with start_jupyter(tmp, extra_args=args, prefix=BASE) as server:
        yield server


@pytest.fixture(scope="module")
def app(lab: JupyterServer) -> str:
    """The id of a `web` server running the test app (stopped with the Jupyter server)."""
    info = lab.ok(
        "POST",
        "servers",
        {"kind": "web", "command": [sys.executable, APP, "{port}"], "options": {}},
    )
    info = lab.wait_state(info["id"], {"connected"})
    assert info["state"] == "connected", info
    return str(info["id"])


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def read(self) -> bytes:
        return self.body


@contextlib.contextmanager
def _open(
    lab: JupyterServer,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> Iterator[http.client.HTTPResponse]:
    """One request, redirects NOT followed; the response open for reading in the block."""
    conn = http.client.HTTPConnection("127.0.0.1", _port(lab), timeout=60)
    try:
        conn.request(method, BASE + path.lstrip("/"), body=body, headers=headers or {})
        yield conn.getresponse()
    finally:
        conn.close()


def _port(lab: JupyterServer) -> int:
    return int(lab.base_url.split("/")[2].rsplit(":", 1)[1])


def _get(
    lab: JupyterServer,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> Reply:
    with _open(lab, path, headers, method, body) as resp:
        return Reply(resp.status, resp.headers, resp.read())


def _login_cookies(lab: JupyterServer) -> dict[str, str]:
    """Jupyter's own cookies, as a browser holds them after opening Lab with ?token=."""
    resp = _get(lab, f"api/status?token={lab.token}")
    cookies = {}
    for value in resp.headers.get_all("Set-Cookie") or []:
        name, _, rest = value.partition("=")
        cookies[name] = rest.split(";")[0]
    assert any(n.startswith("username-") for n in cookies), cookies
    return cookies


def _seen(resp: Reply) -> dict[str, Any]:
    assert resp.status == 200, (resp.status, resp.read()[:300])
    got = json.loads(resp.read())
    return {"headers": [(k.lower(), v) for k, v in got["headers"]], "uri": got["uri"]}


def test_the_app_sees_no_jupyter_credential_and_where_it_is_mounted(
    lab: JupyterServer, app: str
) -> None:
    cookies = _login_cookies(lab)
    jar = "; ".join(f"{k}={v}" for k, v in cookies.items())
    headers = {
        "Authorization": f"token {lab.token}",
        "Cookie": f"{jar}; appside=1",
        "X-XSRFToken": cookies.get("_xsrf", "x"),
    }
    seen = _seen(_get(lab, f"paraconnect/proxy/{app}/headers/x?a=1&token={lab.token}&b=2", headers))
    names = dict(seen["headers"])
    text = json.dumps(seen)
    assert lab.token not in text and all(v not in text for v in cookies.values()), text
    assert "authorization" not in names and "x-xsrftoken" not in names, names
    assert names["cookie"] == "appside=1"
    assert seen["uri"] == "/headers/x?a=1&b=2"
    assert names["x-forwarded-prefix"] == f"{BASE}paraconnect/proxy/{app}/"
    assert names["x-forwarded-host"] == f"127.0.0.1:{_port(lab)}"
    assert names["x-forwarded-proto"] == "http"
    assert names["x-forwarded-for"] == "127.0.0.1"
    # The login cookie alone authenticates a GET (a browser tab), and is not passed on either.
    seen = _seen(_get(lab, f"paraconnect/proxy/{app}/headers", {"Cookie": jar}))
    assert "cookie" not in dict(seen["headers"]), seen


def test_refused_without_jupyter_credentials(lab: JupyterServer, app: str) -> None:
    import websocket

    for headers in ({}, {"Authorization": "token not-the-token"}):
        for method in ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"):
            resp = _get(lab, f"paraconnect/proxy/{app}/", headers, method)
            assert resp.status == 403 and MARKER.encode() not in resp.read(), method
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(lab.ws_base + f"paraconnect/proxy/{app}/ws", timeout=30)
    assert refused.value.status_code == 403
    # A cookie's POST needs Jupyter's XSRF token too; with it, the body goes to the app.
    cookies = _login_cookies(lab)
    jar = "; ".join(f"{k}={v}" for k, v in cookies.items())
    resp = _get(lab, f"paraconnect/proxy/{app}/echo", {"Cookie": jar}, "POST", b"hello")
    assert resp.status == 403, resp.status
    token = secrets.token_hex(16)  # tornado's rule: the _xsrf cookie and header agree
    xsrf = {"Cookie": f"{jar}; _xsrf={token}", "X-XSRFToken": token}
    resp = _get(lab, f"paraconnect/proxy/{app}/echo", xsrf, "POST", b"hello")
    assert (resp.status, resp.read()) == (200, b"hello")
    # The app's own pages cannot send the token (the app never sees it): what the browser
    # says comes from a page of this app (same origin, Referer under its prefix) needs none.
    host = lab.base_url.split("/")[2]
    own = f"http://{host}{lab.url(f'paraconnect/proxy/{app}/page.html').split(host, 1)[1]}"
    for referer, site, status in (
        (own, "same-origin", 200),
        (own, "cross-site", 403),  # a form of another site, whatever Referer it claims
        (own.replace(f"/proxy/{app}/", "/proxy/another-server/"), "same-origin", 403),
        (lab.url("lab"), "same-origin", 403),  # any other page of this Jupyter
    ):
        headers = {"Cookie": jar, "Sec-Fetch-Site": site, "Referer": referer}
        resp = _get(lab, f"paraconnect/proxy/{app}/echo", headers, "POST", b"hello")
        assert resp.status == status, (referer, site, resp.status)
    # Only this hub's servers: an unknown id is no way to another port.
    auth = {"Authorization": f"token {lab.token}"}
    assert _get(lab, "paraconnect/proxy/no-such-server/", auth).status == 404


def test_redirects_stay_under_the_prefix_and_the_apps_cookies_pass(
    lab: JupyterServer, app: str
) -> None:
    auth = {"Authorization": f"token {lab.token}"}
    resp = _get(lab, f"paraconnect/proxy/{app}/go", auth)
    assert resp.status == 302
    assert resp.headers["Location"] == f"{BASE}paraconnect/proxy/{app}/headers?from=go"
    resp = _get(lab, f"paraconnect/proxy/{app}?x=1", auth)
    assert resp.status == 302
    assert resp.headers["Location"] == f"{BASE}paraconnect/proxy/{app}/?x=1"
    resp = _get(lab, f"paraconnect/proxy/{app}/cookie", auth)
    set_cookies = resp.headers.get_all("Set-Cookie") or []
    assert any(c.startswith("appcookie=42") for c in set_cookies), set_cookies
    # An app must not overwrite the user's Jupyter cookies.
    assert not any(c.startswith("_xsrf=") for c in set_cookies), set_cookies
    cookie = {**auth, "Cookie": "appcookie=42"}
    assert (
        dict(_seen(_get(lab, f"paraconnect/proxy/{app}/headers", cookie))["headers"])["cookie"]
        == "appcookie=42"
    )
    # The id as the browser wrote it (escaped): the app's path is cut after it all the same.
    escaped = app.replace("-", "%2D")
    assert _seen(_get(lab, f"paraconnect/proxy/{escaped}/headers/y", auth))["uri"] == "/headers/y"
    # A streamed request body of any method reaches the app whole.
    body = os.urandom(3 << 20)
    resp = _get(lab, f"paraconnect/proxy/{app}/echo", auth, "PUT", body)
    assert (resp.status, resp.read() == body) == (200, True)


def _peak_rss(pid: int) -> int:
    """The process's highest resident set so far, in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_256_mib_answer_streams_through_without_being_held(lab: JupyterServer, app: str) -> None:
    size = 256 << 20
    auth = {"Authorization": f"token {lab.token}"}
    _get(lab, f"paraconnect/proxy/{app}/big?n={1 << 20}", auth).read()  # warm: code paths loaded
    before = _peak_rss(lab.process.pid)
    got = 0
    with _open(lab, f"paraconnect/proxy/{app}/big?n={size}", auth) as resp:
        assert resp.status == 200 and int(resp.headers["Content-Length"]) == size
        while piece := resp.read(1 << 20):
            assert piece.count(b"x") == len(piece)
            got += len(piece)
    assert got == size
    # And an answer the app sends chunked (no length known ahead).
    got = 0
    with _open(lab, f"paraconnect/proxy/{app}/big?n={size >> 2}&chunked=1", auth) as resp:
        assert resp.status == 200 and resp.headers["Transfer-Encoding"] == "chunked"
        while piece := resp.read(1 << 20):
            assert piece.count(b"x") == len(piece)
            got += len(piece)
    assert got == size >> 2
    grew = _peak_rss(lab.process.pid) - before
    print(f"peak RSS of the Jupyter server grew by {grew / (1 << 20):.1f} MiB")
    assert grew < 48 << 20, f"the Jupyter server's peak RSS grew by {grew >> 20} MiB"


def test_a_websocket_outlives_the_configured_timings_both_ways(
    lab: JupyterServer, app: str
) -> None:
    import websocket

    ws = websocket.create_connection(
        lab.ws_base + f"paraconnect/proxy/{app}/ws",
        header=[f"Authorization: token {lab.token}"],
        timeout=30,
    )
    try:
        ws.send("hello")
        assert ws.recv() == "hello"
        # Idle on the app's side for many ping intervals (each ping answered, as a browser
        # does): the pings are the only timing on this websocket.
        pings = 0
        while pings < 5:
            opcode, frame = ws.recv_data_frame(control_frame=True)
            assert opcode == websocket.ABNF.OPCODE_PING, (opcode, frame.data)
            pings += 1
        blob = os.urandom(1 << 20)
        ws.send_binary(blob)
        assert ws.recv() == blob
        ws.send("still here")
        assert ws.recv() == "still here"
    finally:
        ws.close()


def _agent_of(server_id: str) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                line = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in line and APP.encode() in line and b"--" in line:
                return int(entry)
    raise AssertionError(f"no agent for {server_id}")


def test_another_user_cannot_reach_the_apps_port(
    lab: JupyterServer, app: str, other_user: str
) -> None:
    agent = _agent_of(app)
    found = program_listeners(agent)
    assert found and any(pid in descendants(agent) for pid, _, _ in found), found
    assert all(netns != host_netns() for _pid, _port, netns in found), found
    targets = [(addr, port) for _pid, port, _ns in found for addr in host_addresses()]
    seen = other_connects(other_user, targets)
    assert not {k: v for k, v in seen.items() if MARKER in v}, seen
    # The session itself still gets there, through the proxy.
    auth = {"Authorization": f"token {lab.token}"}
    resp = _get(lab, f"paraconnect/proxy/{app}/", auth)
    assert (resp.status, resp.read()) == (200, MARKER.encode())


def test_a_web_app_started_by_hand_is_proxied(lab: JupyterServer, tmp_path: Path) -> None:
    """The manual launcher: the agent command of a web server, run as a user would on a remote
    host, phones home and its app answers through the proxy."""
    got = lab.ok(
        "POST", "servers/agent-command", {"kind": "web", "command": [sys.executable, APP, "{port}"]}
    )
    sid = got["server"]["id"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    agent = subprocess.Popen(
        ["bash", "-c", got["command"]], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        info = lab.wait_state(sid, {"connected"})
        assert info["state"] == "connected", lab.ok("GET", f"servers/{sid}/logs")
        auth = {"Authorization": f"token {lab.token}"}
        resp = _get(lab, f"paraconnect/proxy/{sid}/", auth)
        assert (resp.status, resp.read()) == (200, MARKER.encode())
        assert lab.ok("DELETE", f"servers/{sid}?grace=5")["state"] == "stopped"
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGTERM)
        agent.wait(30)
