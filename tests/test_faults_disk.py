"""Disk full for the data directory of the host running the agent (a small tmpfs, filled):
importing credentials fails with a clear error and leaves nothing half-written; the agent
keeps serving (its accounting says it cannot write), and recovers once space is freed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fixtures_netns import Hosts, NsProc

pytest_plugins = ["tests.fixtures_netns"]
pytestmark = pytest.mark.timeout(90)

FULL = r"disk (is )?full|NOT being accounted"
ECHO = [sys.executable, "tests/helpers_echo.py", "--port", "{port}"]


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, 0700, unmounted at the end (also on failure)."""
    path = tmp_path / "full"
    path.mkdir(mode=0o700)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


def fill(path: Path) -> Path:
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(1 << 16):  # bounded: 256 MiB at most, the tmpfs is far smaller
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    else:
        raise AssertionError("the tmpfs never filled up")
    finally:
        os.close(fd)
    return filler


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_import_into_a_full_home_fails_cleanly(hosts: Hosts, full_dir: Path) -> None:
    hosts.pki()
    bundle = hosts.friend_bundle("bob")  # also imported into the friend's normal home
    fill(full_dir)
    before = listing(full_dir)
    env = {"PARACONNECT_HOME": str(full_dir)}
    out = hosts.cli("cluster", "import", str(bundle), "--passphrase-file",
                    str(hosts.root / "friend.pass"), "--as", "lab", env=env)  # fmt: skip
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("paraconnect: error: disk full while writing ")
    assert "free some space and retry (nothing was changed)" in line
    after = listing(full_dir)
    assert set(after) - set(before) <= {"sessions"}, after  # no temp or half-imported files
    sessions = full_dir / "sessions"
    assert not sessions.exists() or not any(sessions.iterdir())
    (full_dir / "filler").unlink()
    out = hosts.cli("cluster", "import", str(bundle), "--passphrase-file",
                    str(hosts.root / "friend.pass"), "--as", "lab", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_agent_on_a_full_disk_keeps_serving_then_recovers(hosts: Hosts, full_dir: Path) -> None:
    pki = hosts.pki()
    creds = full_dir / "creds"
    shutil.copytree(pki.cluster_creds, creds)
    creds.chmod(0o700)
    filler = fill(full_dir)
    listen = hosts.start(
        "laptop", "listen", f"{hosts.addr('laptop')}:0", "--creds", "lab",
        "--local", "127.0.0.1:0", "--json",
    )  # fmt: skip
    ready = listen.ready()
    local = str(ready["local"]).rsplit(":", 1)[1]
    env = {"PARACONNECT_HOME": str(full_dir)}

    def serve() -> NsProc:
        agent = hosts.start(
            "cluster", "serve", "--creds", str(creds), "--phone-home", str(ready["listen"]),
            "--interval", "0.2", "--json", "--", *ECHO, env=env,
        )  # fmt: skip
        agent.ready()
        listen.wait_event("server")
        assert hosts.client("laptop", "sha", "127.0.0.1", local, "--size", "1000000")["ok"]
        assert agent.stop() == 0
        return agent

    agent = serve()
    text = agent.text()
    assert re.search(FULL, text), text
    assert "Traceback" not in text
    # Nothing half-written: no temporary files; what exists is a valid (empty) database.
    assert not [p for p in listing(full_dir) if ".tmp" in p or p.endswith("-journal")]
    filler.unlink()
    agent = serve()
    assert not re.search(FULL, agent.text()), agent.text()
    assert "Traceback" not in agent.text()
    # The empty database left by the full disk was taken up again: accounting resumed.
    assert (full_dir / "accounting.sqlite3").stat().st_size > 0
