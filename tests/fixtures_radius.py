"""A real FreeRADIUS (Debian's ``freeradius``) on loopback, configured by the test: its own
radiusd.conf in a temporary directory (no copy of /etc, no privilege drop), a ``users`` file the
test writes, one client (127.0.0.1, a secret), the ``detail`` module writing every
Accounting-Request to one file, authentication on PORT and accounting on PORT+1 (the 1812/1813
convention paraconnect follows).  Started as a child in the foreground; stopped by the fixture.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import paraconnect.tunnel

FREERADIUS = shutil.which("freeradius") or "/usr/sbin/freeradius"
DICTIONARY = Path(paraconnect.tunnel.__file__).parent / "radius" / "dictionary.paraconnect"
SECRET = "test-radius-secret"


def _two_free_udp_ports() -> int:
    """A port P with P and P+1 both free on 127.0.0.1 (auth and accounting)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no two adjacent free UDP ports on 127.0.0.1")


_CONF = """\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {dir}/log
raddbdir = {dir}
radacctdir = {dir}/acct
name = freeradius
confdir = {dir}
modconfdir = {dir}
run_dir = {dir}/run
db_dir = {dir}
libdir = /usr/lib/freeradius
pidfile = {dir}/run/freeradius.pid
max_request_time = 30
cleanup_delay = 0
max_requests = 4096
hostname_lookups = no
log {{
    destination = stdout
    auth = yes
    auth_badpass = no
    auth_goodpass = no
}}
security {{
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 0
    status_server = yes
}}
thread pool {{
    start_servers = 2
    max_servers = 4
    min_spare_servers = 1
    max_spare_servers = 2
}}
client local {{
    ipaddr = 127.0.0.1
    secret = {secret}
}}
modules {{
    files {{
        filename = {dir}/users
        acctusersfile = {dir}/acct_users
    }}
    detail {{
        filename = {dir}/acct/detail
        permissions = 0600
        header = "%t"
    }}
}}
server paraconnect {{
    listen {{
        type = auth
        ipaddr = 127.0.0.1
        port = {port}
    }}
    listen {{
        type = acct
        ipaddr = 127.0.0.1
        port = {acct_port}
    }}
    authorize {{
        files
    }}
    authenticate {{
    }}
    preacct {{
    }}
    accounting {{
        detail
    }}
    post-auth {{
    }}
}}
"""


class FreeRadius:
    """One FreeRADIUS child: `start()`, `stop()`, and its accounting `detail` records."""

    def __init__(self, root: Path, users: str) -> None:
        self.dir = root
        self.port = _two_free_udp_ports()
        self.secret = SECRET
        for sub in ("log", "acct", "run"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "radiusd.conf").write_text(
            _CONF.format(dir=root, secret=SECRET, port=self.port, acct_port=self.port + 1)
        )
        # The vendor attributes as paraconnect ships them, so that the users file can match
        # them and the detail file names them.
        shutil.copy(DICTIONARY, root / "dictionary.paraconnect")
        (root / "dictionary").write_text("$INCLUDE dictionary.paraconnect\n")
        (root / "users").write_text(users)
        (root / "acct_users").write_text("")
        self.secret_file = root / "radius.secret"
        self.secret_file.write_text(SECRET + "\n")
        os.chmod(self.secret_file, 0o600)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "log" / "stdout.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [FREERADIUS, "-f", "-d", str(self.dir), "-l", "stdout"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # Ready when it answers: a Status-Server would need a client of its own; its log line
        # is what it prints once every listener is open.
        deadline = time.monotonic() + 30
        while "Ready to process requests" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"freeradius did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def detail(self) -> list[dict[str, str]]:
        """Every Accounting-Request the detail module wrote, as attribute -> value."""
        path = self.dir / "acct" / "detail"
        if not path.exists():
            return []
        records = []
        for block in path.read_text().split("\n\n"):
            attrs = dict(re.findall(r"^\s+([\w-]+) = (.*)$", block, re.MULTILINE))
            if attrs:
                records.append({k: v.strip('"') for k, v in attrs.items()})
        return records

    def find(self, match: dict[str, str]) -> dict[str, str] | None:
        return next(
            (r for r in self.detail() if all(r.get(k) == v for k, v in match.items())), None
        )

    async def wait_detail(self, match: dict[str, str], bound: float = 30.0) -> dict[str, str]:
        """The first accounting record holding every `match` item, polled (on the event loop,
        which the side under test shares) until `bound` stops the test."""
        with anyio.fail_after(bound):
            while True:
                found = self.find(match)
                if found is not None:
                    return found
                await anyio.sleep(0.05)


@pytest.fixture
def freeradius_factory(tmp_path: Path) -> Iterator[type[FreeRadius]]:
    started: list[FreeRadius] = []

    class Started(FreeRadius):
        def __init__(self, users: str) -> None:
            super().__init__(tmp_path / f"radius{len(started)}", users)
            started.append(self)
            self.start()

    try:
        yield Started  # type: ignore[misc]
    finally:
        for server in started:
            server.stop()
