"""Shared fixtures: a private PARACONNECT_HOME per test, a store, a session, and a runner for the
real `paraconnect` command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from paraconnect.pki import Role, Session, Store, load_credentials
from paraconnect.servers import EnrollServer, ServerRecord, ServerRegistry

from .helpers_tunnel import Pki, make_pki

REPO = Path(__file__).resolve().parent.parent
PARACONNECT = str(Path(sys.executable).with_name("paraconnect"))


def _orphans() -> dict[int, str]:
    """Processes whose parent is init (pid 1): what a test left behind ends up there."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        if ppid == 1 and cmdline:  # kernel threads have no command line
            found[int(stat.parent.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """The suite checks that no test leaves a process running (STYLE: no process left behind).
    Set up first, so it is torn down last, after every other fixture stopped its daemons."""
    before = set(_orphans())
    yield
    deadline = time.monotonic() + 15  # a process told to stop may take a moment to exit
    while True:
        left = {pid: cmd for pid, cmd in _orphans().items() if pid not in before}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, "processes left behind by the tests:\n" + "\n".join(
        f"  {pid}: {cmd[:200]}" for pid, cmd in sorted(left.items())
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("PARACONNECT_HOME", str(path))
    monkeypatch.delenv("PARACONNECT_UNIQUE_ID", raising=False)
    return path


@pytest.fixture
def store(home: Path) -> Store:
    return Store(home)


@pytest.fixture
def session(store: Store) -> Session:
    return store.create_session("lab")


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (pytest.mark.anyio) run on asyncio, as paraconnect does."""
    return "asyncio"


@pytest.fixture
def pki(home: Path) -> Pki:
    """A session with node-bound server and client certificates (helpers_tunnel.make_pki)."""
    return make_pki(home)


@pytest.fixture
def registry(home: Path) -> ServerRegistry:
    """A server registry with two servers waiting to enrol (srv-a, srv-b) in session 'lab'."""
    reg = ServerRegistry(home / "servers.sqlite3")
    now = time.time()
    for sid in ("srv-a", "srv-b"):
        reg.add(
            ServerRecord(sid, "builtin", "lab", "reverse", "local", "submitted", "test", now, now)
        )
    return reg


@pytest.fixture
async def hub_addr(store: Store, session: Session, registry: ServerRegistry) -> AsyncIterator[str]:
    """The real enrolment endpoint, run as the hub runs it: with the hub's node-bound client
    certificate in the session; its HOST:PORT."""
    uid = store.unique_id().value
    session.issue(Role.CLIENT, "hub", unique_id=uid)
    creds = load_credentials("lab", role=Role.CLIENT, store=store, unique_id=uid)
    server = EnrollServer(registry, {"lab": (session, creds)})
    async with anyio.create_task_group() as tg:
        host, port = await tg.start(server.run)
        yield f"{host}:{port}"
        tg.cancel_scope.cancel()


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def __repr__(self) -> str:
        return f"Result(rc={self.returncode}, stdout={self.stdout!r}, stderr={self.stderr!r})"


@pytest.fixture
def cli(home: Path) -> Iterator[object]:
    """Run the installed `paraconnect` command as a real subprocess against `home`."""

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        full_env = {**os.environ, "PARACONNECT_HOME": str(home), **(env or {})}
        proc = subprocess.run(
            [PARACONNECT, *args],
            capture_output=True,
            text=True,
            input=input,
            env=full_env,
            timeout=60,
            check=False,
        )
        return Result(proc)

    yield run


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run Debian's openssl as the independent checker; never raises on failure."""
    return subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=60, check=False,
        input=input.decode() if input else None,
    )  # fmt: skip
