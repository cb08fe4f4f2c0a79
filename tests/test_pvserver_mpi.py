"""pvserver with MPI ranks behind the agent, locally and as a Slurm job: as root (as CI runs)
too, the client sees every rank as a data partition, and no rank listens anywhere another user
or host could reach: rank 0's port and Open MPI's own sockets live in the agent's private
network namespace."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from paraconnect.hub import Hub, ServerInfo
from paraconnect.pki import Session
from paraconnect.servers import SlurmLauncher

from .helpers_hub import running_hub
from .helpers_leg import descendants
from .helpers_peers import require_programs
from .helpers_tunnel import free_port
from .test_tunnel_pvserver import PV_CLIENT, _xvfb

if TYPE_CHECKING:
    from tests.fixtures_slurm import SlurmCluster

pytest_plugins = ["tests.fixtures_slurm"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
]
require_programs("pvserver", "pvpython", "mpiexec")
PARTITIONS = str(Path(__file__).with_name("paraview") / "pv_partitions.py")


def _agent_pid(server_id: str) -> int:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and server_id.encode() in argv:
            return int(pid)
    raise AssertionError(f"no agent process for {server_id}")


def _host_listening_inodes() -> set[str]:
    """Sockets listening in the test's own network namespace (the host's)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def _ranks_and_host_listeners(server_id: str) -> tuple[list[int], list[int]]:
    """(pids of the pvserver ranks under the agent, those of them listening on the host)."""
    host = _host_listening_inodes()
    ranks, listening = [], []
    for pid in descendants(_agent_pid(server_id)):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            if not argv0.endswith(b"pvserver"):
                continue
            ranks.append(pid)
            fds = os.listdir(f"/proc/{pid}/fd")
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds}
        except OSError:
            continue
        if any(link.startswith("socket:[") and link[8:-1] in host for link in links):
            listening.append(pid)
    return ranks, listening


def _partitions(port: int) -> str:
    proc = subprocess.run(
        [*_xvfb(), "pvpython", PARTITIONS, str(port)],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    return proc.stdout + proc.stderr


def _check_two_ranks(hub: Hub, info: ServerInfo) -> None:
    ranks, listening = _ranks_and_host_listeners(info.id)
    assert len(ranks) == 2 and listening == [], (ranks, listening)
    assert info.local_port is not None
    output = _partitions(info.local_port)
    logs = hub.call(hub.logs, info.id, 300)
    assert "partitions 2" in output, output[-3000:] + logs
    if os.geteuid() == 0:
        # Root gets a working server and one line saying what was allowed, not a failure.
        assert logs.count("setting OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1") >= 1, logs


def test_two_ranks_locally(home: Path, session: Session) -> None:
    with running_hub(home) as (hub, _events):
        info = hub.call(hub.launch, "pvserver", "local", "lab", "reverse",
                        {"xvfb": "always", "ranks": 2})  # fmt: skip
        info = hub.call(hub.wait, info.id, "connected", 90.0)
        assert info.state == "connected", info
        _check_two_ranks(hub, info)
        assert hub.call(hub.stop, info.id, 5.0).state == "stopped"


def test_two_ranks_as_a_slurm_job(
    home: Path, session: Session, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    launcher = SlurmLauncher(tmp_path / "jobs", slurm_conf=slurm_cluster.conf)
    with running_hub(home) as (hub, _events):
        info = hub.call(hub.launch, "pvserver", launcher, "lab", "reverse",
                        {"xvfb": "always", "ranks": 2})  # fmt: skip
        info = hub.call(hub.wait, info.id, "connected", 90.0)
        assert info.state == "connected", info
        assert info.job_id and info.job_id.isdigit()
        # The job asked Slurm for the ranks' tasks, and runs one agent (no srun around it).
        shown = slurm_cluster.run("scontrol", "show", "job", info.job_id).stdout
        assert "NumTasks=2" in shown, shown
        # On one node: mpiexec in the agent's namespace reaches no other.
        [script] = (tmp_path / "jobs").glob("*/job.sh")
        assert "#SBATCH --nodes=1\n" in script.read_text()
        _check_two_ranks(hub, info)
        assert hub.call(hub.stop, info.id, 5.0).state == "stopped"


def test_two_ranks_behind_the_reverse_bridge_listen_nowhere(home: Path, session: Session) -> None:
    """--pv-reverse with ranks: rank 0 dials the loopback bridge, no rank listens anywhere."""
    opts = {"pv_reverse": True, "xvfb": "always", "ranks": 2}
    with running_hub(home) as (hub, _events):
        info = hub.call(hub.launch, "pvserver", "local", "lab", "reverse", opts)
        info = hub.call(hub.wait, info.id, "connected", 90.0)
        assert info.state == "connected", info
        port = free_port()
        out = home.parent / "pv-reverse-ranks.png"
        client = subprocess.Popen(
            [*_xvfb(), "pvpython", PV_CLIENT, "accept", str(port), str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            hub.call(hub.dial_client, info.id, port)
            seen: tuple[list[int], list[int]] = ([], [])
            argvs: list[bytes] = []
            while client.poll() is None and len(seen[0]) < 2:
                seen = _ranks_and_host_listeners(info.id)
                argvs = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in seen[0]]
                time.sleep(0.05)
            output, _ = client.communicate(timeout=120)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        logs = hub.call(hub.logs, info.id, 300)
        assert "partitions 2" in output and f"rendered {out}" in output, output[-3000:] + logs
        assert len(seen[0]) == 2 and seen[1] == [], seen  # both ranks ran, listening on nothing
        assert all(b"--rc" in argv for argv in argvs)  # they dialled out, as asked
        assert hub.call(hub.stop, info.id, 5.0).state == "stopped"
