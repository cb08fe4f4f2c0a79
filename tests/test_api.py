"""The notebook API (paraconnect.api): sessions, servers launched reverse and forward, friend
bundles; against a hub embedded in this process and against a `paraconnect hub` process."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import paraconnect as pc
from paraconnect._runtime import runtime
from paraconnect.api import Hub
from paraconnect.errors import ConfigError, NetworkError
from paraconnect.pki import Session

from .conftest import PARACONNECT
from .helpers_hub import check_frame

pytest.importorskip("vtk")
pytest.importorskip("zmq")
pytest_plugins = ["tests.helpers_api"]
pytestmark = pytest.mark.timeout(90)


def test_session_reverse_builtin_frame_logs_stop(
    api_hub: Hub, capsys: pytest.CaptureFixture[str]
) -> None:
    s = pc.Session.create("cfd-run", key_type="ed25519")
    assert s.info["key_type"] == "ed25519" and s.info["phone_home"]
    assert pc.Session("cfd-run").ca_sha256 == s.ca_sha256  # opened, not created again
    srv = pc.connect_reverse(kind="builtin", launcher="local", session=s)
    assert srv.wait_connected(timeout=60) is srv
    printed = capsys.readouterr().out
    # Each state change came from the hub's event feed, printed in the caller's thread.
    for state in ("submitted", "starting", "connected"):
        assert f"{srv.id}: {state} (" in printed, printed
    assert srv.state == "connected" and srv.port and srv.local == f"127.0.0.1:{srv.port}"
    check_frame(srv.port)
    with pytest.raises(ConfigError, match=r"open\(\) shows a web app .*use view\(\)"):
        srv.open()
    assert "paraconnect-render listening on" in srv.logs()
    assert srv.stop(grace=5)["state"] == "stopped"
    assert srv.local is None
    with pytest.raises(NetworkError, match=f"server {srv.id} is stopped"):
        srv.view()


def test_forward_builtin_the_agent_listens_where_told(api_hub: Hub) -> None:
    pc.Session.create("lab")
    srv = pc.connect_forward("127.0.0.1:0", kind="builtin", session="lab")
    srv.wait_connected(timeout=60, quiet=True)
    info = srv.info
    assert info["mode"] == "forward" and info["state"] == "connected"
    check_frame(srv.port)  # type: ignore[arg-type]
    srv.stop(grace=5)


def test_readable_errors(api_hub: Hub) -> None:
    with pytest.raises(ConfigError, match="connect_forward needs HOST:PORT"):
        pc.connect_forward("node7", kind="builtin")
    with pytest.raises(ConfigError, match="unknown server kind 'vnc'"):
        pc.connect_reverse(kind="vnc")
    pc.Session.create("lab")
    srv = pc.connect_reverse(
        kind="command",
        command=[sys.executable, "-c", "raise SystemExit(3)", "{port}"],
        session="lab",
    )
    with pytest.raises(NetworkError, match=rf"server {srv.id} is failed: .*logs"):
        srv.wait_connected(timeout=60, quiet=True)
    with pytest.raises(ConfigError, match="view\\(\\) shows the built-in renderer"):
        srv.view()


def test_share_bundle_and_revoke(api_hub: Hub, tmp_path: Path) -> None:
    s = pc.Session.create("lab")
    bundle = pc.share(s, "alice", passphrase="correct horse battery", days=2, out=tmp_path)
    assert bundle.path == tmp_path / "lab-alice.p12" and bundle.path.read_bytes() == bundle.data
    assert "download lab-alice.p12" in bundle._repr_html_()
    shown = repr(bundle)
    for part in ("lab-alice.p12", "'alice'", "session 'lab'", bundle.serial, bundle.not_after,
                 f"saved to {bundle.path}"):  # fmt: skip
        assert part in shown, shown
    # The encrypted key material never shows: neither as bytes nor as any run of them.
    assert "data=" not in shown and "\\x" not in shown and str(bundle.data[:8]) not in shown
    [friend] = s.friends()
    assert friend["serial"] == bundle.serial and friend["status"] == "valid"
    s.revoke("alice")
    assert [f["status"] for f in s.friends()] == ["revoked"]
    # The friend's side: the bundle imports with the passphrase into a store of their own.
    env = {**os.environ, "PARACONNECT_HOME": str(tmp_path / "alice")}
    done = subprocess.run(
        [PARACONNECT, "import", str(bundle.path), "--passphrase-file", "-"],
        env=env, input="correct horse battery\n", capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_script_uses_a_running_paraconnect_hub(home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PARACONNECT_HOME": str(home)}
    hub = subprocess.Popen(
        [PARACONNECT, "hub", "--json"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert hub.stdout is not None
        assert json.loads(hub.stdout.readline())["event"] == "ready"
        script = (
            "import paraconnect as pc\n"
            "srv = pc.connect_reverse(kind='builtin', session=pc.Session('lab', create=True))\n"
            "srv.wait_connected(timeout=60, quiet=True)\n"
            "hub = pc.connect_hub()\n"
            "print('hub pid', hub.request('hub')['pid'], 'embedded', hub.embedded)\n"
            "print(srv.stop(grace=5)['state'])\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True,
            timeout=90, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"hub pid {hub.pid} embedded False" in done.stdout
        assert done.stdout.endswith("stopped\n")
        assert "started one inside this process" not in done.stderr
    finally:
        hub.terminate()
        hub.wait(30)
        if hub.stdout is not None:
            hub.stdout.close()


def test_ctrl_c_in_wait_connected_says_the_server_keeps_starting(
    session: Session, api_hub: Hub
) -> None:
    """An interrupt while waiting stops the waiting only: the message says the server goes on
    and how to stop it, and the server is indeed still there."""
    rt = runtime()
    # Started by hand and never run: it waits for its agent as long as the test needs.
    got = rt.call(
        functools.partial(rt.request, "agent_command", kind="builtin", session=session.name)
    )
    srv = pc.Server.get(got["server"]["id"])
    main = threading.main_thread().ident
    assert main is not None

    def interrupt_once_waiting() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(main)
            names = set()
            while frame is not None:
                names.add(frame.f_code.co_name)
                frame = frame.f_back
            if "wait_connected" in names:
                signal.pthread_kill(main, signal.SIGINT)
                return
            time.sleep(0.01)

    ctrl_c = threading.Thread(target=interrupt_once_waiting)
    ctrl_c.start()
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            srv.wait_connected(timeout=100, quiet=True)
    finally:
        ctrl_c.join()
    message = str(caught.value)
    assert "keeps starting" in message and f"paraconnect servers stop {srv.id}" in message
    assert ".stop()" in message, message
    assert srv.state not in ("stopped", "failed")
    assert srv.stop(grace=2)["state"] == "stopped"


def test_a_failed_launch_leads_with_its_cause(session: Session, api_hub: Hub) -> None:
    """The agent cannot listen where told: the error a notebook sees starts with that cause,
    in one line, rather than ending with it after the job's output."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        srv = pc.connect_forward(f"127.0.0.1:{port}", kind="builtin", session=session.name)
        with pytest.raises(NetworkError) as caught:
            srv.wait_connected(timeout=60, quiet=True)
    message = str(caught.value)
    cause = f"cannot listen on 127.0.0.1:{port}: address already in use"
    assert message.lower().startswith(f"server {srv.id} is failed: {cause}"), message
    assert "\n" not in message and "last output" not in message, message
