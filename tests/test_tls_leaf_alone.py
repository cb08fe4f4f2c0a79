"""Each end sends its certificate alone, never the session CA: every peer of a session holds the
CA already, and OpenSSL would otherwise rebuild the chain from the trust store and verify it on
every handshake.  OpenSSL's own peers (s_client, s_server with -trace, programs nobody here
wrote) print the certificate list they received and verify it against the session CA."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from paraconnect.pki import Credentials, Store, load_credentials
from paraconnect.tls import client_context, server_context

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Credentials]:
    home = tmp_path_factory.mktemp("home")
    store = Store(home)
    session = store.create_session("t")
    session.issue("server", "srv")
    session.issue("client", "cli")
    return {role: load_credentials("t", role=role, store=store) for role in ("server", "client")}


def _pem(tmp: Path, creds: Credentials) -> list[str]:
    """openssl's -cert/-key/-CAfile arguments for `creds`."""
    cert, key, ca = tmp / "peer.crt", tmp / "peer.key", tmp / "ca.crt"
    cert.write_bytes(creds.cert_pem())
    key.write_bytes(creds.key_pem())
    key.chmod(0o600)
    ca.write_bytes(creds.ca_pem())
    return ["-cert", str(cert), "-key", str(key), "-CAfile", str(ca)]


def _received_certificates(trace: str) -> list[int]:
    """The number of certificates in each Certificate message openssl -trace received."""
    counts = []
    for record in re.split(r"(?m)^(?=Received Record|Sent Record)", trace):
        if record.startswith("Received Record") and "    Certificate, Length=" in record:
            counts.append(len(re.findall(r"(?m)^\s+ASN\.1Cert, length=", record)))
    return counts


def _s_client(
    creds: Credentials, args: list[str]
) -> tuple[subprocess.CompletedProcess[bytes], list[bytes | BaseException | None]]:
    """openssl s_client with `args` against one TLS server of ours (in a thread): its result,
    and what our server saw of the client (its certificate, or why the handshake failed)."""
    ctx = server_context(creds)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes | BaseException | None] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                seen.append(tls.getpeercert(binary_form=True))
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            seen.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        out = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{listener.getsockname()[1]}",
             "-tls1_3", "-verify_return_error", *args],
            input=b"", capture_output=True, timeout=30, check=False,
        )  # fmt: skip
    finally:
        thread.join(timeout=30)
        listener.close()
    return out, seen


def test_the_server_sends_its_certificate_alone(
    creds: dict[str, Credentials], tmp_path: Path
) -> None:
    result, seen = _s_client(creds["server"], ["-trace", *_pem(tmp_path, creds["client"])])
    out = result.stdout.decode()
    assert "Verify return code: 0 (ok)" in out, out[-2000:]
    assert seen == [creds["client"].cert.public_bytes(Encoding.DER)]  # verified by our server
    # One Certificate message from the server, holding one certificate: its own.
    assert _received_certificates(out) == [1], out[-4000:]


def test_the_client_sends_its_certificate_alone(
    creds: dict[str, Credentials], tmp_path: Path
) -> None:
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", "127.0.0.1:0", "-tls1_3", "-trace", "-naccept", "1",
         "-Verify", "2", "-verify_return_error", *_pem(tmp_path, creds["server"])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdin is not None
        port = 0
        for line in server.stdout:
            if line.startswith("ACCEPT"):
                port = int(line.rsplit(":", 1)[1])
                break
        assert port, "openssl s_server did not start"
        ctx = client_context(creds["client"])
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as tls:
            assert tls.getpeercert(binary_form=True)
            assert tls.version() == "TLSv1.3"
        server.stdin.close()
        out = server.stdout.read()
        assert server.wait(timeout=30) == 0, out[-2000:]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        assert server.stdout is not None
        server.stdout.close()
    # s_server verified our certificate against the session CA it was given, and took it.
    assert re.search(r"depth=0 CN = cli, .*\nverify return:1", out), out[-4000:]
    # One Certificate message from the client, holding one certificate: its own.
    assert _received_certificates(out) == [1], out[-4000:]


def test_verification_still_needs_the_session_ca(
    creds: dict[str, Credentials], tmp_path: Path
) -> None:
    """Sending the leaf alone does not make the CA optional: a peer without it refuses (and
    says why: the issuer, which only the CA file can give, is not there)."""
    args = _pem(tmp_path, creds["client"])
    wrong_ca = tmp_path / "other.crt"
    wrong_ca.write_bytes(creds["client"].cert_pem())  # a certificate, but not the CA
    args[args.index("-CAfile") + 1] = str(wrong_ca)
    result, seen = _s_client(creds["server"], args)
    assert result.returncode != 0
    assert b"unable to get local issuer certificate" in result.stdout + result.stderr
    assert len(seen) == 1 and isinstance(seen[0], BaseException)  # no connection was made
