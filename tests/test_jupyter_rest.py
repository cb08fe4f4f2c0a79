"""The server extension in a real ``jupyter server``: every route refuses a request without
Jupyter's credentials, the REST routes map onto the hub's operations (docs/hub-api.md), a
built-in renderer launched through REST comes up and its state changes reach the websocket and
the ZeroMQ socket."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web

from paraconnect.errors import ConfigError
from paraconnect.hub import HubClient
from paraconnect.jupyter._handlers import handlers
from paraconnect.jupyter._proxy import ProxyHandler
from paraconnect.jupyter._view import ViewHandler
from paraconnect.jupyter._websocket import EventsHandler

from .conftest import openssl
from .helpers_jupyter import JUPYTER, JupyterServer, start_jupyter

pytestmark = pytest.mark.timeout(120)

EXTRA_ARGS = [
    "--Paraconnect.default_level=Encrypt",  # coerced to "encrypt"
    "--Paraconnect.ssh_hosts=node7",
    "--Paraconnect.max_servers=1",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    tmp = tmp_path_factory.mktemp("jupyter")
    # Paraconnect.data_dir wins over the environment (and is exported to kernels).
    env = {"PARACONNECT_HOME": str(tmp / "not-this-one")}
    args = [*EXTRA_ARGS, f"--Paraconnect.data_dir={tmp / 'home'}"]
    with start_jupyter(tmp, env=env, extra_args=args) as s:
        yield s


# -- authentication --------------------------------------------------------------------------

_GROUP = re.compile(r"\(\?P<\w+>[^)]*\)")
_METHODS = ("get", "post", "put", "delete", "patch")


def _routes() -> list[tuple[str, str]]:
    """(path, method) for every method every handler of the extension implements."""
    out = []
    for pattern, cls in handlers:
        path = _GROUP.sub("1", pattern).lstrip("/")
        for method in _METHODS:
            if getattr(cls, method) is not getattr(web.RequestHandler, method):
                out.append((path, method.upper()))
    return out


def test_every_route_refuses_a_request_without_credentials(server: JupyterServer) -> None:
    routes = _routes()
    assert len(routes) == 31 and ("paraconnect/api/events", "GET") in routes
    assert ("paraconnect/api/servers/1/view", "GET") in routes
    # The proxy: every method a web app may be asked with (HEAD and OPTIONS, which APIHandler
    # answers itself, are tested in test_jupyter_proxy).
    proxied = {m for p, m in routes if p.startswith("paraconnect/proxy/")}
    assert proxied == {"GET", "POST", "PUT", "PATCH", "DELETE"}, proxied
    for _pattern, cls in handlers:
        assert issubclass(cls, APIHandler) or (
            cls in (EventsHandler, ViewHandler, ProxyHandler) and issubclass(cls, JupyterHandler)
        )
    # A matching XSRF cookie and header: so that it is the authentication that refuses the
    # POST, PUT and DELETE requests, not Jupyter's XSRF check.
    xsrf = {"Cookie": "_xsrf=probe", "X-XSRFToken": "probe"}
    for path, method in routes:
        body = {} if method in ("POST", "PUT") else None
        for headers in (xsrf, {**xsrf, "Authorization": "token not-the-token"}):
            resp = server.request(method, path, body, token=False, headers=headers)
            assert resp.status == 403, f"{method} {path} answered {resp.status} without a token"


def check_view_websocket(server: JupyterServer, sid: str) -> None:
    """A browser's line to a view: Jupyter's token or nothing, this hub's servers only, one
    request frame a message, frames back as binary messages."""
    import websocket

    from paraconnect.render import _protocol as P

    url = server.ws_base + f"paraconnect/api/servers/{sid}/view"
    for header in ([], ["Authorization: token not-the-token"]):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, header=header, timeout=30)
        assert refused.value.status_code == 403
    auth = [f"Authorization: token {server.token}"]
    with pytest.raises(websocket.WebSocketBadStatusException) as missing:
        websocket.create_connection(url.replace(sid, "no-such-server"), header=auth, timeout=30)
    assert missing.value.status_code == 404

    ws = websocket.create_connection(url, header=auth, timeout=60)
    try:

        def ask(header: dict[str, Any]) -> P.Message:
            ws.send_binary(P.encode_message(header))
            opcode, data = ws.recv_data()
            assert opcode == websocket.ABNF.OPCODE_BINARY
            decoder = P.FrameDecoder()
            decoder.feed(data)
            msg = decoder.next_message()
            assert msg is not None and decoder.pending == 0  # exactly one frame a message
            return msg

        assert ask({"op": "hello", "v": P.VERSION}).header["op"] == "hello"
        assert ask({"op": "load", "dataset": "sphere", "id": 1}).header["op"] == "ok"
        frame = ask({"op": "render", "format": "png", "id": 2})
        assert frame.header["op"] == "frame" and frame.payload.startswith(b"\x89PNG")
        ws.send("a text message")  # not a request frame: the line closes
        opcode, _ = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
    finally:
        ws.shutdown()  # close() skips a socket whose peer already closed the websocket
    ws = websocket.create_connection(url, header=auth, timeout=60)
    try:
        ws.send_binary(P.PREFIX.pack(2, 5) + b"{}hello")  # a payload from a client
        opcode, _ = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
    finally:
        ws.shutdown()  # close() skips a socket whose peer already closed the websocket


def test_the_events_websocket_refuses_a_handshake_without_credentials(
    server: JupyterServer,
) -> None:
    import websocket

    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(server.ws_base + "paraconnect/api/events", timeout=30)
    assert info.value.status_code == 403


def test_the_extension_is_listed_as_enabled(tmp_path: Path) -> None:
    # Enabled by the JSON file the package installs into the venv's etc/jupyter; the user's
    # own config directory (empty here) is not needed.
    env = {"JUPYTER_CONFIG_DIR": str(tmp_path), "PATH": str(Path(JUPYTER).parent)}
    proc = subprocess.run(
        [JUPYTER, "server", "extension", "list"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    assert re.search(r"paraconnect\.jupyter\s+enabled", out), out
    assert re.search(r"paraconnect\.jupyter\s+OK", out), out


# -- REST round trips ------------------------------------------------------------------------


def test_hub_info_and_config(server: JupyterServer) -> None:
    info = server.ok("GET", "hub")
    assert info["home"] == str(server.home)
    assert info["control"] == str(server.home / "run" / "hub.sock")
    assert info["events"] == f"ipc://{server.home / 'run' / 'events.ipc'}"
    assert info["jupyter"]["default_level"] == "encrypt"
    assert info["jupyter"]["ssh_hosts"] == ["node7"]
    # Kernels find this hub through the runtime file.
    runtime = json.loads((server.home / "run" / "hub.json").read_text())
    assert runtime["pid"] == server.process.pid and runtime["control"] == info["control"]


def test_launch_options_describe_kinds_launchers_and_this_hubs_rules(
    server: JupyterServer,
) -> None:
    described = server.ok("GET", "launch-options")
    kinds = {k["name"]: k for k in described["kinds"]}
    assert list(kinds) == ["builtin", "pvserver", "command", "web", "trame"]
    [ranks] = [o for o in kinds["pvserver"]["options"] if o["key"] == "ranks"]
    assert ranks["type"] == "int" and ranks["default"] is None and ranks["help"]
    [xvfb] = [o for o in kinds["pvserver"]["options"] if o["key"] == "xvfb"]
    assert xvfb["choices"] == ["auto", "always", "never"] and xvfb["default"] == "auto"
    assert kinds["command"]["needs_command"] and not kinds["builtin"]["needs_command"]
    launchers = {entry["name"]: entry for entry in described["launchers"]}
    assert launchers["ssh"]["options"][0] == {
        "key": "host", "help": "host name or ssh config alias", "required": True,
        "type": "text", "flag": "--host",
    }  # fmt: skip
    assert not launchers["manual"]["hub_runs"]
    assert described["modes"] == ["reverse", "forward"]
    # This server's launch rules (EXTRA_ARGS), so the form offers only what a launch may use.
    assert described["rules"]["ssh_hosts"] == ["node7"]
    assert described["rules"]["max_servers"] == 1


def test_sessions_friends_revocation_policy_round_trip(
    server: JupyterServer, tmp_path: Path
) -> None:
    created = server.ok("POST", "sessions", {"name": "lab"})
    assert created["name"] == "lab" and created["level"] == "encrypt"  # Paraconnect.default_level
    assert "lab" in [s["name"] for s in server.ok("GET", "sessions")]
    shown = server.ok("GET", "sessions/lab")
    assert shown["ca_sha256"] == created["ca_sha256"] and isinstance(shown["certificates"], list)
    opened = server.ok("POST", "sessions/lab/open")
    assert opened["phone_home"] and opened["enroll"]
    [listener] = [x for x in server.ok("GET", "listeners") if x["session"] == "lab"]
    assert listener["phone_home"] == opened["phone_home"]

    issued = server.ok(
        "POST", "sessions/lab/friends", {"name": "alice", "passphrase": "s3cret-pass", "days": 2}
    )
    serial = issued["certificate"]["serial"]
    assert issued["certificate"]["for_friend"] == "alice" and issued["filename"] == "lab-alice.p12"
    resp = server.api("GET", f"sessions/lab/friends/{serial}/bundle")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/x-pkcs12"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="lab-alice.p12"'
    bundle = tmp_path / "alice.p12"
    bundle.write_bytes(resp.body)
    checked = openssl(
        "pkcs12", "-info", "-noout", "-in", str(bundle), "-passin", "pass:s3cret-pass"
    )
    assert checked.returncode == 0, checked.stderr
    assert "AES-256" in checked.stderr, checked.stderr  # "PBES2, PBKDF2, AES-256-CBC"
    wrong = openssl("pkcs12", "-info", "-noout", "-in", str(bundle), "-passin", "pass:wrong")
    assert wrong.returncode != 0
    friends = server.ok("GET", "sessions/lab/friends")
    assert [(f["serial"], f["status"]) for f in friends] == [(serial, "valid")]
    certs = server.ok("GET", "sessions/lab/certificates")
    assert serial in [c["serial"] for c in certs]

    revoked = server.ok("POST", "sessions/lab/revoke", {"target": serial, "reason": "superseded"})
    assert [r["serial"] for r in revoked] == [serial] and revoked[0]["status"] == "revoked"
    assert server.ok("GET", "sessions/lab/friends")[0]["status"] == "revoked"
    gone = server.api("GET", f"sessions/lab/friends/{serial}/bundle")
    assert gone.status == 404 and gone.json()["category"] == "NotFoundError"

    policy = server.ok("GET", "sessions/lab/policy")
    assert policy["rules"] == []
    rule = {"action": "deny", "role": "client", "name": "mallory"}
    policy = server.ok("POST", "sessions/lab/policy/rules", rule)
    assert len(policy["rules"]) == 1
    policy = server.ok("PUT", "sessions/lab/policy/default", {"verdict": "deny"})
    assert policy["default"] == "deny"
    policy = server.ok("DELETE", "sessions/lab/policy/rules/1")
    assert policy["rules"] == []
    policy = server.ok("PUT", "sessions/lab/policy/default", {"verdict": "allow"})
    assert policy["default"] == "allow"

    accounting = server.ok("GET", "accounting?session=lab&since=1h&limit=10")
    assert set(accounting) == {"records", "summary"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "category"),
    [
        ("GET", "sessions/nope", None, 404, "NotFoundError"),
        ("GET", "servers/nope", None, 404, "NotFoundError"),
        ("GET", "servers/nope/logs?tail=x", None, 400, "ConfigError"),
        ("POST", "sessions", [1], 400, "ProtocolError"),
        ("POST", "sessions", {}, 400, "ConfigError"),
        ("POST", "servers", {"kind": "vnc"}, 400, "ConfigError"),
        ("POST", "servers", {"kind": "builtin", "launcher": "ssh", "launcher_options":
                             {"host": "elsewhere"}}, 400, "ConfigError"),
    ],
)  # fmt: skip
def test_errors_are_one_line_with_a_category(
    server: JupyterServer, method: str, path: str, body: Any, status: int, category: str
) -> None:
    resp = server.api(method, path, body)
    assert resp.status == status, resp.body
    answer = resp.json()
    assert answer["category"] == category and "\n" not in answer["error"], answer


# -- a launch, its events ----------------------------------------------------------------------


def _until(receive: Callable[[], dict[str, Any] | None], done: Callable[[dict[str, Any]], bool],
           seen: list[dict[str, Any]]) -> None:  # fmt: skip
    while True:
        event = receive()
        assert event is not None, f"the event stream ended; seen {seen}"
        seen.append(event)
        if done(event):
            return


def test_builtin_launch_reaches_connected_with_events_logs_and_stop(
    server: JupyterServer, tmp_path: Path
) -> None:
    pytest.importorskip("vtk")
    import websocket
    import zmq

    from .helpers_hub import check_frame

    ws = websocket.create_connection(
        server.ws_base + "paraconnect/api/events",
        header=[f"Authorization: token {server.token}"],
        timeout=90,
    )
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 90_000)
    sub.connect(server.ok("GET", "hub")["events"])

    def from_ws() -> dict[str, Any] | None:
        data = ws.recv()
        return json.loads(data) if data else None

    def from_zmq() -> dict[str, Any] | None:
        topic, data = sub.recv_multipart()
        event: dict[str, Any] = json.loads(data)
        assert topic.decode() == event["event"]
        return event

    def is_ours(sid: str, state: str) -> Callable[[dict[str, Any]], bool]:
        return lambda e: e["event"] == "server" and e["server_id"] == sid and e["state"] == state

    try:
        # ZeroMQ subscriptions take effect some time after connect: make events until one
        # arrives, so that none of the launch's is lost.
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        server.ok("POST", "sessions", {"name": "render"})
        while not poller.poll(200):
            server.ok("PUT", "sessions/render/policy/default", {"verdict": "allow"})
        while poller.poll(200):
            sub.recv_multipart()
        ws_seen: list[dict[str, Any]] = []
        _until(from_ws, lambda e: e["event"] == "credentials", ws_seen)

        launch = {
            "kind": "builtin",
            "launcher": "local",
            "session": "render",
            "launcher_options": {"run_root": str(tmp_path / "remote")},
        }
        info = server.ok("POST", "servers", launch)
        sid = info["id"]
        assert info["state"] == "submitted" and info["local"].startswith("127.0.0.1:")
        assert sid in [s["id"] for s in server.ok("GET", "servers")]
        _until(from_ws, is_ours(sid, "connected"), ws_seen)
        info = server.ok("GET", f"servers/{sid}")
        assert info["state"] == "connected", info
        check_frame(int(info["local"].rsplit(":", 1)[1]))  # a real frame through the hub
        check_view_websocket(server, sid)

        # Paraconnect.max_servers=1: a second launch is refused while this one runs.
        refused = server.api("POST", "servers", launch)
        assert refused.status == 400 and "max_servers" in refused.json()["error"]
        # The same rules hold on the control socket, the way kernels and scripts come.
        with HubClient(server.home, timeout=30) as hub:
            with pytest.raises(ConfigError, match="max_servers=1"):
                hub.request("launch", **launch)
            with pytest.raises(ConfigError, match="ssh host 'node8' is not one this hub offers"):
                hub.request(
                    "launch", kind="builtin", launcher="ssh", launcher_options={"host": "node8"}
                )

        logs = server.ok("GET", f"servers/{sid}/logs?tail=200")
        assert "paraconnect-render listening on" in logs and '"event": "ready"' in logs
        stopped = server.ok("DELETE", f"servers/{sid}?grace=5")
        assert stopped["state"] == "stopped" and stopped["local"] is None
        _until(from_ws, is_ours(sid, "stopped"), ws_seen)
        zmq_seen: list[dict[str, Any]] = []
        _until(from_zmq, is_ours(sid, "stopped"), zmq_seen)
    finally:
        ws.close()
        sub.close()
        ctx.term()

    def states(seen: list[dict[str, Any]]) -> list[str]:
        return [e["state"] for e in seen if e["event"] == "server" and e["server_id"] == sid]

    assert states(ws_seen) == states(zmq_seen)
    assert states(ws_seen)[0] == "submitted" and "connected" in states(ws_seen)
    assert states(ws_seen)[-1] == "stopped"
    assert any(e["event"] == "phone_home" and e["server_id"] == sid for e in ws_seen)


def test_a_kernel_of_this_server_finds_its_hub(server: JupyterServer) -> None:
    """Kernels inherit PARACONNECT_HOME (Paraconnect.data_dir here) and reach the hub through
    <home>/run/hub.json and its control socket."""
    from jupyter_client import BlockingKernelClient

    kernel = server.request("POST", "api/kernels", {"name": "python3"})
    assert kernel.status == 201, kernel.body
    kid = kernel.json()["id"]
    client = BlockingKernelClient()
    client.load_connection_file(server.dirs["runtime"] / f"kernel-{kid}.json")
    client.start_channels()
    out: list[str] = []

    def output(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    code = (
        "import json, os\n"
        "from paraconnect.hub import HubClient\n"
        "with HubClient() as hub:\n"
        "    print(json.dumps([os.environ['PARACONNECT_HOME'], hub.request('hub')['pid']]))\n"
    )
    try:
        client.wait_for_ready(timeout=90)
        reply = client.execute_interactive(code, timeout=90, output_hook=output)
    finally:
        client.stop_channels()
        server.request("DELETE", f"api/kernels/{kid}")
    assert reply["content"]["status"] == "ok", out
    assert json.loads("".join(out)) == [str(server.home), server.process.pid]


def test_an_agent_started_by_hand_phones_home(server: JupyterServer, tmp_path: Path) -> None:
    """POST /servers/agent-command gives a shell line for a remote host; run here, it enrols,
    phones home to this Jupyter's hub and the server is connected."""
    pytest.importorskip("vtk")
    import os
    import signal

    from .helpers_hub import check_frame

    server.ok("POST", "sessions", {"name": "byhand"})
    got = server.ok("POST", "servers/agent-command", {"kind": "builtin", "session": "byhand"})
    sid = got["server"]["id"]
    assert got["server"]["state"] == "submitted" and "paraconnect serve" in got["command"]
    env = {**os.environ, "PATH": f"{Path(JUPYTER).parent}:{os.environ['PATH']}"}
    agent = subprocess.Popen(
        ["bash", "-c", got["command"]], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        info = server.wait_state(sid, {"connected"})
        assert info["state"] == "connected", server.ok("GET", f"servers/{sid}/logs")
        check_frame(int(info["local"].rsplit(":", 1)[1]))
        assert server.ok("DELETE", f"servers/{sid}?grace=5")["state"] == "stopped"
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGTERM)
        agent.wait(30)
