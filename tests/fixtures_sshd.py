"""A real OpenSSH server (Debian openssh-server) on loopback, for tests that need an ssh peer.

Use it from a test module (let pytest import it: a plain import before pytest_plugins makes
pytest warn that it cannot rewrite the module, an error under this project's settings)::

    if TYPE_CHECKING:
        from tests.fixtures_sshd import Sshd

    pytest_plugins = ["tests.fixtures_sshd"]

    def test_x(sshd: Sshd) -> None:  # the session-scoped fixture
        subprocess.run(sshd.ssh_argv("true"), check=True)

or, to run one elsewhere (inside a network namespace: ``exec_prefix=["nsenter",
"--net=/run/netns/cluster"]``, ``address="10.0.0.2"``), call :func:`start_sshd` as a context
manager.  The server has its own host key, accepts only a client key made here, and the client
config pins the host key in a known_hosts file written here (``StrictHostKeyChecking yes``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Sshd:
    """A running sshd and what a client needs to reach it."""

    alias: str  # the Host alias in `config_file`
    address: str
    port: int
    user: str
    dir: Path
    config_file: Path  # client ssh config: alias, port, key, known_hosts, StrictHostKeyChecking yes
    client_key: Path  # private key accepted by the server (0600)
    known_hosts: Path
    host_public_key: str  # "ssh-ed25519 AAAA..."
    log_file: Path

    def client_config(
        self,
        name: str,
        *,
        identity_file: Path | None = None,
        known_hosts: Path | None = None,
        port: int | None = None,
    ) -> Path:
        """Write another client config for the same alias (a wrong key, an empty known_hosts,
        another port) and return its path."""
        path = self.dir / f"ssh_config.{name}"
        path.write_text(
            _client_config(
                self.alias,
                self.address,
                port or self.port,
                self.user,
                identity_file or self.client_key,
                known_hosts or self.known_hosts,
            )
        )
        return path

    def ssh_argv(self, *command: str) -> list[str]:
        return ["ssh", "-F", str(self.config_file), self.alias, *command]


def _client_config(
    alias: str, address: str, port: int, user: str, key: Path, known_hosts: Path
) -> str:
    return (
        f"Host {alias}\n"
        f"  HostName {address}\n"
        f"  Port {port}\n"
        f"  User {user}\n"
        f"  IdentityFile {key}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known_hosts}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
        "  CheckHostIP no\n"
        "  BatchMode yes\n"
        "  LogLevel ERROR\n"
        "  ConnectTimeout 10\n"
        "  ControlMaster no\n"
        "  ControlPath none\n"
    )


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def have_sshd() -> bool:
    return Path(SSHD).exists() and shutil.which("ssh") is not None


@contextlib.contextmanager
def start_sshd(
    workdir: Path,
    *,
    address: str = "127.0.0.1",
    alias: str = "paraconnect-test",
    exec_prefix: Sequence[str] = (),
    port: int | None = None,
    start_timeout: float = 15.0,
) -> Iterator[Sshd]:
    """Start sshd in `workdir` (created 0700) and stop it on exit.

    The port defaults to a free one of `address` here (retried if taken meanwhile); give it when
    sshd runs in another network namespace (`exec_prefix`).
    """
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    user = (
        os.environ.get("USER")
        or subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    )
    host_key = workdir / "ssh_host_ed25519_key"
    client_key = workdir / "client_ed25519"
    if not host_key.exists():
        _keygen(host_key, "paraconnect-test-host")
        _keygen(client_key, "paraconnect-test-client")
    host_public = host_key.with_suffix(".pub").read_text().split()
    host_public_key = f"{host_public[0]} {host_public[1]}"
    authorized = workdir / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    # sshd's privilege separation directory; Debian's service script normally makes it.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log_file = workdir / "sshd.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        fixed_port = port
        for _attempt in range(5 if fixed_port is None else 1):
            port = fixed_port or _free_port(address)
            config = workdir / "sshd_config"
            config.write_text(
                f"Port {port}\n"
                f"ListenAddress {address}\n"
                f"HostKey {host_key}\n"
                f"PidFile {workdir / 'sshd.pid'}\n"
                f"AuthorizedKeysFile {authorized}\n"
                "PubkeyAuthentication yes\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "UsePAM no\n"
                # Tests run as root here; keys only.
                "PermitRootLogin prohibit-password\n"
                # The temp dir's parents (/tmp) are world-writable.
                "StrictModes no\n"
                "AllowTcpForwarding no\n"
                "X11Forwarding no\n"
                "PrintMotd no\n"
                "LogLevel VERBOSE\n"
            )
            log_file.write_bytes(b"")
            proc = subprocess.Popen(
                [*exec_prefix, SSHD, "-f", str(config), "-D", "-e", "-E", str(log_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + start_timeout
            while time.monotonic() < deadline:
                text = log_file.read_text(errors="replace")
                if f"Server listening on {address} port {port}" in text:
                    break
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
            else:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"sshd did not start within {start_timeout} s: {text[-2000:]}")
            if proc.poll() is None:
                break
            proc.wait()
            proc = None
            if "Address already in use" not in text:
                raise RuntimeError(f"sshd failed to start: {text[-2000:]}")
        else:
            raise RuntimeError("sshd found no free port in 5 tries")
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(f"[{address}]:{port} {host_public_key}\n")
        config_file = workdir / "ssh_config"
        config_file.write_text(_client_config(alias, address, port, user, client_key, known_hosts))
        yield Sshd(
            alias=alias,
            address=address,
            port=port,
            user=user,
            dir=workdir,
            config_file=config_file,
            client_key=client_key,
            known_hosts=known_hosts,
            host_public_key=host_public_key,
            log_file=log_file,
        )
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A session-wide sshd on 127.0.0.1 (skips when openssh-server is not installed)."""
    if not have_sshd():
        pytest.skip("openssh-server is not installed; run scripts/system-deps.sh")
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
