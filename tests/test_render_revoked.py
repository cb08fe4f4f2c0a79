"""A friend's render client after the owner revoked her: it says revoked, not "lost the render
server at …: " with nothing after the colon.  The friend runs the real `paraconnect connect`
(her own data directory) to a builtin server the hub launched; the owner revokes with the API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import paraconnect as pc
from paraconnect.api import Hub
from paraconnect.errors import ParaconnectError, TrustError
from paraconnect.pki import Session
from paraconnect.render import RenderClient

pytest_plugins = ["tests.helpers_api"]
pytestmark = pytest.mark.timeout(110)


def test_a_revoked_friend_is_told_revoked(session: Session, api_hub: Hub, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = pc.connect_forward(f"127.0.0.1:{port}", kind="builtin", session=session.name)
    srv.wait_connected(timeout=60, quiet=True)
    alice_env = {**os.environ, "PARACONNECT_HOME": str(tmp_path / "alice")}
    node = subprocess.run(
        [sys.executable, "-m", "paraconnect.cli", "unique-id"],
        env=alice_env, check=True, capture_output=True, text=True, timeout=60,
    ).stdout.split()[-1]  # fmt: skip
    bundle = pc.share(
        session.name, "alice", passphrase="correct horse battery", unique_id=node, out=tmp_path
    )
    subprocess.run(
        [sys.executable, "-m", "paraconnect.cli", "import", str(bundle.path),
         "--passphrase-file", "-"],
        env=alice_env, input="correct horse battery\n", check=True, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    log = (tmp_path / "connect.log").open("w")
    tunnel = subprocess.Popen(
        [sys.executable, "-m", "paraconnect.cli", "connect", f"127.0.0.1:{port}",
         "--creds", session.name, "--local", "127.0.0.1:0", "--json"],
        env=alice_env, stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    try:
        assert tunnel.stdout is not None
        first = tunnel.stdout.readline()
        assert first, (tmp_path / "connect.log").read_text()
        alice_port = int(json.loads(first)["local"].rsplit(":", 1)[1])
        with RenderClient(port=alice_port, timeout=60) as client:
            client.load("sphere")  # she renders through her tunnel before the revocation
        pc.Session(session.name).revoke("alice")
        # The agent applies the new list within about a second: poll until she is refused.
        deadline = time.monotonic() + 60
        while True:
            try:
                with RenderClient(port=alice_port, timeout=60) as client:
                    client.load("sphere")
            except TrustError as exc:
                refused = exc
                break
            except ParaconnectError as exc:
                # While the agent takes the new list, a connection may end with no reason
                # (it is dropped, not refused); the next one must say why.
                refused = exc
            else:
                refused = None
            assert time.monotonic() < deadline, f"alice is not told revoked: {refused!r}"
            time.sleep(0.2)
        assert isinstance(refused, TrustError), repr(refused)
        message = str(refused)
        assert "revoked" in message and f"127.0.0.1:{alice_port}" in message, message
        assert not message.rstrip().endswith(":"), message
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=30)
        if tunnel.stdout is not None:
            tunnel.stdout.close()
        log.close()
        srv.stop(grace=2)
