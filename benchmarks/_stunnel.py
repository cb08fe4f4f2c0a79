"""A Debian stunnel4 pair for benchmarks/tunnel.py: client stunnel -> server stunnel -> backend,
with the certificates of a paraconnect session, TLS 1.3 only, mutual TLS, no resumption (our
contexts issue no tickets: every handshake is a full one on both sides)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

SERVER_CONF = """\
foreground = yes
pid =
debug = 3
[srv]
accept = 127.0.0.1:{port}
connect = 127.0.0.1:{backend}
cert = {dir}/srv.crt
key = {dir}/srv.key
CAfile = {dir}/ca.crt
{crl}
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
sslVersionMax = TLSv1.3
options = NO_TICKET
sessionCacheSize = 1
sessionCacheTimeout = 1
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
"""

CLIENT_CONF = """\
foreground = yes
pid =
debug = 3
[cli]
client = yes
accept = 127.0.0.1:{port}
connect = 127.0.0.1:{server}
cert = {dir}/cli.crt
key = {dir}/cli.key
CAfile = {dir}/ca.crt
{crl}
verifyChain = yes
sslVersionMin = TLSv1.3
sslVersionMax = TLSv1.3
sessionResume = no
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
"""


def binary() -> str | None:
    return shutil.which("stunnel4") or shutil.which("stunnel")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stunnel exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"stunnel did not listen on {port}: {log.read_text()[-2000:]}")


class StunnelPair:
    """Start with `start(pem_dir, backend_port)`; `entry` is the plain port to connect to;
    `server_pid` is the stunnel that accepts TLS and talks to the backend."""

    def __init__(self, workdir: Path, *, nodelay: bool = True) -> None:
        self.dir = workdir
        # stunnel as shipped sets no socket options; TCP_NODELAY on all four sockets is its
        # best case for small messages here. Benchmarks show both.
        self.nodelay = nodelay
        self.procs: list[subprocess.Popen[bytes]] = []
        self.entry = 0
        self.server_pid = 0
        self.client_pid = 0

    def start(self, pem_dir: Path, backend: int) -> None:
        exe = binary()
        if exe is None:
            raise RuntimeError("stunnel4 is not installed (scripts/system-deps.sh installs it)")
        crl = f"CRLfile = {pem_dir}/crl.pem" if (pem_dir / "crl.pem").exists() else ""
        server_port, client_port = free_port(), free_port()
        for name, conf, port in (
            ("server", SERVER_CONF.format(port=server_port, backend=backend, dir=pem_dir,
                                          crl=crl), server_port),
            ("client", CLIENT_CONF.format(port=client_port, server=server_port, dir=pem_dir,
                                          crl=crl), client_port),
        ):  # fmt: skip
            if not self.nodelay:
                conf = "".join(x for x in conf.splitlines(True) if "TCP_NODELAY" not in x)
            path = self.dir / f"stunnel-{name}.conf"
            path.write_text(conf)
            log = self.dir / f"stunnel-{name}.log"
            with log.open("wb") as fh:
                proc = subprocess.Popen([exe, str(path)], stdout=fh, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            wait_listening(port, proc, log)
            if name == "server":
                self.server_pid = proc.pid
            else:
                self.client_pid = proc.pid
        self.entry = client_port

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
