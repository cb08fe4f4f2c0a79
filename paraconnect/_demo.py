"""`paraconnect demo`: a session, its certificates, and a real TLS peer that nobody here wrote.

Until the tunnel and the Jupyter layers land, the demo walks the credential path: create a
session, issue a server and a client certificate, let Debian's `openssl s_server` require and
verify the client certificate against the session CA and its CRL, connect with paraconnect's own
TLS client, then revoke the client and show the same connection refused.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from .errors import ConfigError, NetworkError, ParaconnectError

__all__ = ["run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_s_server(out: Path, port: int) -> subprocess.Popen[bytes]:
    if shutil.which("openssl") is None:
        raise ConfigError("the demo needs the openssl command; run 'make system-deps'")
    # fmt: off
    cmd = [
        "openssl", "s_server", "-quiet", "-www", "-tls1_3", "-no_ticket",
        "-accept", f"127.0.0.1:{port}",
        "-cert", str(out / "render-node.crt"), "-key", str(out / "render-node.key"),
        "-CAfile", str(out / "ca.crt"), "-Verify", "1", "-verify_return_error",
        "-crl_check", "-CRL", str(out / "crl.pem"),
    ]
    # fmt: on
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise NetworkError(f"openssl s_server exited at start: {err.splitlines()[:1]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise NetworkError("openssl s_server did not start listening within 10 s")


def _fetch(client_dir: Path, port: int) -> str:
    from .pki import load_credentials
    from .tls import client_context, peer_identity

    ctx = client_context(load_credentials(client_dir))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        peer = peer_identity(tls)
        print(f"   TLS {peer.tls_version} {peer.cipher}; the server proved: {peer.label}")
        tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def run(keep: bool = False) -> int:
    from .pki import Store

    home = Path(tempfile.mkdtemp(prefix="paraconnect-demo-"))
    os.chmod(home, 0o700)
    store = Store(home)
    proc: subprocess.Popen[bytes] | None = None
    try:
        print(f"1. paraconnect session create demo        (data in {home})")
        session = store.create_session("demo")
        print(f"   session CA sha256 {session.ca_fingerprint[:47]}…")
        print("2. paraconnect issue server render-node --out …; issue client scientist --out …")
        server_dir, client_dir = home / "server", home / "client"
        session.issue("server", "render-node", out=server_dir)
        session.issue("client", "scientist", out=client_dir)
        port = _free_port()
        print(f"3. openssl s_server on 127.0.0.1:{port}: requires a client certificate of the")
        print("   session, checks it against the session CA and its revocation list")
        proc = _start_s_server(server_dir, port)
        page = _fetch(client_dir, port)
        seen = [ln for ln in page.splitlines() if "subject=" in ln or "Protocol" in ln]
        print("   openssl s_server verified the client: " + "; ".join(s.strip() for s in seen[:3]))
        print("4. paraconnect revoke scientist --session demo")
        session.revoke("scientist", reason="key-compromise")
        proc.terminate()
        proc.wait()
        shutil.copy(session.crl_path, server_dir / "crl.pem")
        proc = _start_s_server(server_dir, port)
        try:
            _fetch(client_dir, port)
        except ssl.SSLError as exc:
            alert = (exc.reason or str(exc)).lower().replace("sslv3_alert_", "").replace("_", " ")
            print(f"   the same client is now refused by openssl: TLS alert '{alert}'")
        except (OSError, ParaconnectError) as exc:
            print(f"   the same client is now refused by openssl: {exc}")
        else:
            print("   UNEXPECTED: the revoked client was accepted")
            return 1
        print("done: a per-session CA, certificates verified by an independent TLS peer,")
        print("      and revocation enforced. Next: 'paraconnect serve' / 'connect' (tunnel).")
        return 0
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        if keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
