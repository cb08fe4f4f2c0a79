"""Issue 12 item 10: stopping a server revokes the certificate it enrolled
(``cessationOfOperation``).  Its key stays in the job's directory on the "remote host"; after the
stop, a real TLS dial with that certificate and key (Debian's openssl) is refused by the hub as
revoked, and the session's CRL (read by openssl) and ``paraconnect inspect`` say why."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from paraconnect.pki import Session
from paraconnect.servers import LocalLauncher

from .conftest import openssl
from .helpers_hub import running_hub
from .test_supervisor_policy import ECHO, echo

pytestmark = pytest.mark.timeout(120)


def _dial(address: str, creds: Path, server_id: str) -> str:
    """One TLS 1.3 dial of the hub's phone-home port as the stopped server, reading until the
    hub answers or closes (under TLS 1.3 a refused client certificate shows on the first
    read)."""
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", address, "-tls1_3", "-ign_eof", "-noservername",
         "-cert", str(creds / f"{server_id}.crt"), "-key", str(creds / f"{server_id}.key"),
         "-CAfile", str(creds / "ca.crt")],
        input=b"", capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def test_stopping_a_server_revokes_its_enrolled_certificate(
    home: Path, session: Session, tmp_path: Path, cli: object
) -> None:
    remote = LocalLauncher(tmp_path / "remote")  # the "remote host": outside the hub's home
    with running_hub(home, connect_timeout=60.0) as (hub, _events):
        info = hub.call(hub.launch, "command", remote, "lab", "reverse", {}, ECHO)
        info = hub.call(hub.wait, info.id)
        assert info.state == "connected", info
        assert echo(info.local_port, b"through") == b"through"
        [live] = [r for r in session.records() if r.name == info.id]
        assert not live.revoked and live.key_type == "enrolled"
        assert hub.call(hub.stop, info.id, 5.0).state == "stopped"
        [rec] = [r for r in session.records() if r.name == info.id]
        assert (rec.revoked, rec.revoked_reason) == (True, "cessation_of_operation")
        # The key left behind in the job's directory is worth nothing now: the hub refuses a
        # dial with it as revoked (its listener reloads the CRL it watches; poll, bounded).
        [creds] = (tmp_path / "remote").glob("*/creds")
        address = hub.phone_home_address("lab")
        deadline = time.monotonic() + 30
        while "revoked" not in (text := _dial(address, creds, info.id)):
            assert time.monotonic() < deadline, text
        assert "certificate revoked" in text, text
    # The session's CRL, read by openssl, lists it with its reason...
    crl = openssl("crl", "-in", str(session.crl_path), "-noout", "-text")
    assert crl.returncode == 0, crl.stderr
    # openssl prints a serial as whole bytes (a leading 0 when its first nibble is 0): compare
    # the numbers, not the text.
    entries = {
        int(block.split(maxsplit=1)[0], 16): block
        for block in crl.stdout.split("Serial Number: ")[1:]
    }
    assert int(rec.serial, 16) in entries, crl.stdout
    assert "Cessation Of Operation" in entries[int(rec.serial, 16)]
    # ...and so does 'paraconnect inspect' on the certificate the agent still holds.
    r = cli("inspect", str(creds / f"{info.id}.crt"), "--json")  # type: ignore[operator]
    assert r.returncode == 0, r.stderr
    [described] = json.loads(r.stdout)["certificates"]
    assert "(cessation_of_operation)" in described["revoked"]


def test_a_server_that_ends_by_itself_is_revoked_too(
    home: Path, session: Session, tmp_path: Path
) -> None:
    """Its program dies, the agent ends with it, the supervisor marks it failed (no restart
    policy): the key left behind is worth nothing either."""
    remote = LocalLauncher(tmp_path / "remote")
    with running_hub(home, connect_timeout=60.0) as (hub, _events):
        info = hub.call(hub.launch, "command", remote, "lab", "reverse", {}, ECHO)
        info = hub.call(hub.wait, info.id)
        assert info.state == "connected", info
        with socket.create_connection(("127.0.0.1", info.local_port), timeout=30) as s:
            s.sendall(b"die 3\n")
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):
                pass
        final = hub.call(hub.wait, info.id, "failed")
        assert final.state == "failed", final
        [rec] = [r for r in session.records() if r.name == info.id]
        assert (rec.revoked, rec.revoked_reason) == (True, "cessation_of_operation")
        [creds] = (tmp_path / "remote").glob("*/creds")
        address = hub.phone_home_address("lab")
        deadline = time.monotonic() + 30
        while "revoked" not in (text := _dial(address, creds, info.id)):
            assert time.monotonic() < deadline, text
        assert "certificate revoked" in text, text
