"""Issue 16, sessions that last: an enrolled agent renews its certificate with the hub over its
control channel before two thirds of its life (a real short lifetime: 30 s, renewed at 20 s).

* under load: a stream carrying data through the hub keeps going across the renewal and its
  sha256 matches end to end; the new certificate has a new key and serial; the renewal is an
  event and a row of the accounting; the old certificate is revoked (superseded) once that
  stream has closed, and the hub then refuses a real TLS dial (openssl) with the old key;
* with the hub down when the renewal falls due: the agent keeps its valid certificate, says it
  waits, and renews once the hub is back;
* with the hub's answer lost (the hub certified, the agent could not install it): the agent
  keeps its certificate and asks again, and each certificate it never used is revoked;
* a forward server (the hub dials its agent) does not renew: its enrolled certificate keeps
  the 7 days it had before renewal, not the 24 h that only renewal makes safe.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from paraconnect.hub import Hub
from paraconnect.pki import Session
from paraconnect.servers import LocalLauncher
from paraconnect.tunnel import Accounting

from .helpers_hub import running_hub
from .test_stop_revokes import _dial
from .test_supervisor_policy import ECHO, echo

pytestmark = pytest.mark.timeout(120)

LIFETIME = 30  # seconds: renewed 20 s after it was issued


def _cert(creds: Path, server_id: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((creds / f"{server_id}.crt").read_bytes())


def _until(condition: object, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"no {what} within {limit:g} s"
        time.sleep(0.1)


def _renewals(events: object, outcome: str) -> list[dict[str, object]]:
    return [
        e
        for e in list(events.all)  # type: ignore[attr-defined]
        if e["event"] == "renewal" and e["outcome"] == outcome
    ]


def test_renewal_under_load_keeps_the_stream_and_supersedes_the_old_certificate(
    home: Path, session: Session, tmp_path: Path
) -> None:
    remote = LocalLauncher(tmp_path / "remote")
    with running_hub(home, connect_timeout=60.0) as (hub, events):
        info = hub.call(
            hub.launch, "command", remote, "lab", "reverse", {"cert_lifetime": LIFETIME}, ECHO
        )
        info = hub.call(hub.wait, info.id)
        assert info.state == "connected", info
        [creds] = (tmp_path / "remote").glob("*/creds")
        first = _cert(creds, info.id)
        life = first.not_valid_after_utc - first.not_valid_before_utc
        assert life.total_seconds() <= LIFETIME + 5 * 60 + 1  # the option, plus the skew allowance
        old_key = (creds / f"{info.id}.key").read_bytes()
        old = tmp_path / "old"
        old.mkdir()
        for name in (f"{info.id}.crt", f"{info.id}.key", "ca.crt"):
            shutil.copy(creds / name, old / name)

        # One stream carries data through the hub while the renewal happens.
        digest, sent = hashlib.sha256(), 0
        stop = threading.Event()
        with socket.create_connection(("127.0.0.1", info.local_port), timeout=60) as s:
            s.sendall(b"sha256\n")

            def pump() -> None:
                nonlocal sent
                index = 0
                while not stop.is_set():
                    chunk = hashlib.shake_256(str(index).encode()).digest(32 * 1024)
                    s.sendall(chunk)
                    digest.update(chunk)
                    sent += len(chunk)
                    index += 1
                    time.sleep(0.005)

            pumping = threading.Thread(target=pump)
            pumping.start()
            try:
                _until(lambda: _renewals(events, "renewed"), "renewal event")
                _until(lambda: _cert(creds, info.id).serial_number != first.serial_number,
                       "renewed certificate in the agent's directory")  # fmt: skip
                sent_at_renewal = sent
                # The old certificate still carries this stream: it is not revoked yet.
                [rec] = [r for r in session.records() if int(r.serial, 16) == first.serial_number]
                assert not rec.revoked
                _until(lambda: sent > sent_at_renewal + 1024 * 1024, "data after the renewal")
            finally:
                stop.set()
                pumping.join()
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = s.recv(256)
                assert chunk, answer
                answer += chunk
        assert answer == f"{digest.hexdigest()} {sent}\n".encode()

        renewed = _cert(creds, info.id)
        assert renewed.serial_number != first.serial_number
        assert (creds / f"{info.id}.key").read_bytes() != old_key
        assert stat.S_IMODE((creds / f"{info.id}.key").stat().st_mode) == 0o600
        assert renewed.public_key() != first.public_key()
        assert renewed.subject == first.subject  # same server id, same node binding
        [event] = _renewals(events, "renewed")
        assert event["server_id"] == info.id
        assert event["old_serial"] == format(first.serial_number, "x")
        assert event["serial"] == format(renewed.serial_number, "x")

        # The stream has closed: the old certificate is revoked as superseded...
        def superseded() -> bool:
            recs = [r for r in session.records() if int(r.serial, 16) == first.serial_number]
            return bool(recs and recs[0].revoked)

        _until(superseded, "revocation of the superseded certificate")
        [rec] = [r for r in session.records() if int(r.serial, 16) == first.serial_number]
        assert rec.revoked_reason == "superseded"
        assert _renewals(events, "superseded")
        # ...and a real TLS dial with the old key is refused as revoked, while the server,
        # on its new certificate, still serves through the same local port.
        address = hub.phone_home_address("lab")
        deadline = time.monotonic() + 30
        while "revoked" not in (text := _dial(address, old, info.id)):
            assert time.monotonic() < deadline, text
        assert echo(info.local_port, b"after renewal") == b"after renewal"
        assert hub.call(hub.server, info.id).state == "connected"

    with Accounting.in_home(home) as acc:
        rows = [r for r in acc.records() if r.kind == "renewal"]
    assert [(r.server_id, r.outcome, r.remote_serial) for r in rows] == [
        (info.id, "renewed", format(first.serial_number, "x"))
    ]


def test_hub_down_at_renewal_time(home: Path, session: Session, tmp_path: Path) -> None:
    remote = LocalLauncher(tmp_path / "remote")
    hub = Hub(home, connect_timeout=60.0, readopt_grace=60.0)
    hub.start_in_thread()
    try:
        info = hub.call(
            hub.launch, "command", remote, "lab", "reverse", {"cert_lifetime": LIFETIME}, ECHO
        )
        assert hub.call(hub.wait, info.id).state == "connected"
    finally:
        hub.stop_thread()  # the hub goes away; the agent and its program stay
    waited = False
    try:
        [creds] = (tmp_path / "remote").glob("*/creds")
        [output] = (tmp_path / "remote").glob("*/output.log")
        first = _cert(creds, info.id)
        due = first.not_valid_before_utc.timestamp() + 5 * 60 + LIFETIME * 2 / 3
        _until(lambda: time.time() > due + 1, "renewal time", limit=LIFETIME)
        _until(lambda: "renewal is due, but the hub" in output.read_text(errors="replace"),
               "the agent's word that renewal waits for the hub", limit=20)  # fmt: skip
        # Still the valid certificate it had: nothing was swapped for nothing.
        assert _cert(creds, info.id).serial_number == first.serial_number
        assert time.time() < first.not_valid_after_utc.timestamp()
        waited = True
    finally:
        # The hub back (it stops the server at the end, whatever happened above).
        with running_hub(home, connect_timeout=60.0, readopt_grace=60.0) as (hub, events):
            if waited:
                _until(lambda: _renewals(events, "renewed"), "renewal once the hub is back",
                       limit=30)  # fmt: skip
                _until(lambda: _cert(creds, info.id).serial_number != first.serial_number,
                       "renewed certificate in the agent's directory")  # fmt: skip
                assert hub.call(hub.wait, info.id).state == "connected"
                assert echo(hub.call(hub.server, info.id).local_port, b"back") == b"back"


def test_a_lost_answer_is_asked_again_and_the_unused_certificate_revoked(
    home: Path, session: Session, tmp_path: Path
) -> None:
    """The agent cannot install what the hub certified: a second NAME.crt with its NAME.key in
    its directory (a real fault of the agent's side: which pair would it replace?) makes it
    refuse to write, after the hub has certified.  It keeps its certificate, asks again; the
    hub revokes what it certified before and never saw in use; once the stray pair is gone the
    renewal goes through."""
    remote = LocalLauncher(tmp_path / "remote")
    with running_hub(home, connect_timeout=60.0) as (hub, events):
        info = hub.call(
            hub.launch, "command", remote, "lab", "reverse", {"cert_lifetime": LIFETIME}, ECHO
        )
        assert hub.call(hub.wait, info.id).state == "connected"
        [creds] = (tmp_path / "remote").glob("*/creds")
        [output] = (tmp_path / "remote").glob("*/output.log")
        first = _cert(creds, info.id)
        stray = (creds / "stray.crt", creds / "stray.key")
        shutil.copy(creds / f"{info.id}.crt", stray[0])
        shutil.copy(creds / f"{info.id}.key", stray[1])
        try:
            # Two certified, neither installed: the second request revoked the first.
            _until(lambda: len(_renewals(events, "renewed")) >= 2, "a renewal asked again")
            assert "holds no single NAME.crt" in output.read_text(errors="replace")
            assert _cert(creds, info.id).serial_number == first.serial_number
        finally:
            for path in stray:
                path.unlink()
        _until(lambda: _cert(creds, info.id).serial_number != first.serial_number,
               "the renewal once the agent can install it")  # fmt: skip
        installed = _cert(creds, info.id).serial_number
        certified = [int(str(e["serial"]), 16) for e in _renewals(events, "renewed")]
        assert certified[-1] == installed and len(set(certified)) == len(certified)
        assert all(e["old_serial"] == format(first.serial_number, "x")
                   for e in _renewals(events, "renewed"))  # fmt: skip
        unused = certified[:-1]

        def reasons() -> dict[int, str | None]:
            return {int(r.serial, 16): r.revoked_reason for r in session.records()}

        # Every certificate it never used, and then the one it replaced, revoked as superseded;
        # the one in use stays valid and the server serves on it.
        _until(lambda: all(reasons()[s] == "superseded" for s in [*unused, first.serial_number]),
               "revocation of the unused and superseded certificates")  # fmt: skip
        assert reasons()[installed] is None
        superseded = {int(str(e["serial"]), 16) for e in _renewals(events, "superseded")}
        assert superseded == {*unused, first.serial_number}
        assert echo(info.local_port, b"renewed at last") == b"renewed at last"
        assert hub.call(hub.server, info.id).state == "connected"


def test_a_forward_agent_keeps_its_seven_days(home: Path, session: Session, tmp_path: Path) -> None:
    remote = LocalLauncher(tmp_path / "remote")
    with running_hub(home, connect_timeout=60.0) as (hub, _events):
        info = hub.call(hub.launch, "command", remote, "lab", "forward", {}, ECHO)
        info = hub.call(hub.wait, info.id)
        assert info.state == "connected", info
        [creds] = (tmp_path / "remote").glob("*/creds")
        cert = _cert(creds, info.id)
        life = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()
        assert 7 * 86400 <= life <= 7 * 86400 + 5 * 60 + 1, life  # plus the skew allowance
        assert echo(info.local_port, b"forward") == b"forward"


@pytest.mark.anyio
async def test_a_listener_that_does_not_renew_leaves_the_certificate_in_force(
    home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent whose 15 s certificate is due for renewal at 10 s (the clock-skew allowance is
    no part of its life) phones home to `paraconnect listen`, which certifies nothing: the
    refusal is logged with when it asks again, it asks again, and the certificate in force
    stays in use."""
    import anyio

    from paraconnect.pki import load_credentials
    from paraconnect.tunnel import Agent, Home, Program, ReverseListener

    from .helpers_tunnel import echo_command, make_pki, sha_check

    caplog.set_level(logging.INFO, "paraconnect")
    pki = make_pki(home)
    creds = tmp_path / "node"
    issued = pki.session.issue("server", "node", unique_id=pki.uid, days=15 / 86400, out=creds)
    listener = ReverseListener(pki.client, "127.0.0.1:0", "127.0.0.1:0", servers=["node"])
    async with anyio.create_task_group() as tg:
        address, local = await tg.start(listener.run)
        agent = Agent(load_credentials(creds), program=Program(echo_command()),
                      phone_home=[Home(address, interval=0.2)], renew=True)  # fmt: skip
        await tg.start(agent.run)
        await sha_check(local, 200_000)

        def refusals() -> int:
            return sum("certificate renewal failed" in r.getMessage() for r in caplog.records)

        with anyio.fail_after(60):  # a bound for the test, not a timing assertion
            while refusals() < 2:  # noqa: ASYNC110 - log records have no event to wait on
                await anyio.sleep(0.1)
        assert "does not renew certificates" in caplog.text
        assert "stays in use" in caplog.text
        assert agent.side.creds.cert.serial_number == issued.cert.serial_number
        assert _cert(creds, "node").serial_number == issued.cert.serial_number
        tg.cancel_scope.cancel()
