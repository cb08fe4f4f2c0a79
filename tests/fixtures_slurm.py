"""A real single-node Slurm (Debian slurmctld, slurmd, slurm-client, munge) for tests.

Use it from a test module (see fixtures_sshd.py for why through pytest_plugins)::

    if TYPE_CHECKING:
        from tests.fixtures_slurm import SlurmCluster

    pytest_plugins = ["tests.fixtures_slurm"]

    def test_x(slurm_cluster: SlurmCluster) -> None:   # the session-scoped fixture
        slurm_cluster.run("sinfo")                      # a client with SLURM_CONF set
        SlurmLauncher(tmp, slurm_conf=slurm_cluster.conf)

Everything lives in one temp directory: its own munge key and socket, slurm.conf, state, spool,
pid and log files, on free ports, so it can run beside another Slurm.  To run one elsewhere
(inside a network namespace), call :func:`start_slurm` with ``exec_prefix=["nsenter",
"--net=/run/netns/cluster"]`` and the addresses there; FACTS.md: use nsenter, not ``ip netns
exec``, which remounts /sys and hides the cgroup tree slurmd wants.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scancel", "mungekey")


@dataclass(frozen=True)
class SlurmCluster:
    """A running single-node Slurm and what its clients need."""

    dir: Path
    conf: Path
    cluster_name: str
    partition: str
    node_name: str
    cpus: int
    ctld_port: int
    slurmd_port: int
    munge_socket: Path
    env: dict[str, str] = field(default_factory=dict)  # SLURM_CONF for clients

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client (sinfo, squeue, scontrol, ...) against this cluster."""
        return subprocess.run(
            list(argv),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.dir / "log" / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


def have_slurm() -> bool:
    return all(shutil.which(name) or Path(f"/usr/sbin/{name}").exists() for name in DAEMONS)


def _free_ports(address: str, count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((address, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def start_slurm(
    workdir: Path,
    *,
    node_name: str = "localhost",
    node_addr: str = "127.0.0.1",
    ctld_name: str = "localhost",
    ctld_addr: str = "127.0.0.1",
    cpus: int = 4,
    cluster_name: str = "pctest",
    partition: str = "debug",
    exec_prefix: Sequence[str] = (),
    ports: tuple[int, int] | None = None,
    extra_conf: str = "",
    start_timeout: float = 30.0,
) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd for one node in `workdir`; stop them on exit.

    `cpus` may exceed the machine's (``SlurmdParameters=config_overrides``), so that a few jobs
    can run at once on a small machine.  `ports` (slurmctld, slurmd) default to free ports of
    `ctld_addr` here; give them when the daemons run in another network namespace.  `extra_conf`
    is appended to slurm.conf.  The munge socket path must stay under 108 bytes: keep `workdir`
    short.
    """
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    munge_dir = workdir / "munge"  # key, pid and seed: 0700
    sock_dir = workdir / "munge-socket"  # munged wants 0755 here for non-root clients
    for sub, mode in ((munge_dir, 0o700), (sock_dir, 0o755)):
        sub.mkdir(exist_ok=True)
        os.chmod(sub, mode)
    for name in ("state", "spool", "log"):
        (workdir / name).mkdir(mode=0o700, exist_ok=True)
    key = munge_dir / "munge.key"
    if not key.exists():
        subprocess.run(
            ["mungekey", "--create", "--bits=1024", f"--keyfile={key}"],
            check=True,
            capture_output=True,
            timeout=30,
        )
    key.chmod(0o600)
    munge_socket = sock_dir / "munge.socket"
    log = workdir / "log"
    ctld_port, slurmd_port = ports or _free_ports(ctld_addr, 2)
    conf = workdir / "slurm.conf"
    conf.write_text(
        f"ClusterName={cluster_name}\n"
        f"SlurmctldHost={ctld_name}({ctld_addr})\n"
        f"SlurmctldPort={ctld_port}\n"
        f"SlurmdPort={slurmd_port}\n"
        "SlurmUser=root\n"
        "SlurmdUser=root\n"
        "AuthType=auth/munge\n"
        "CredType=cred/munge\n"
        f"AuthInfo=socket={munge_socket}\n"
        f"StateSaveLocation={workdir / 'state'}\n"
        f"SlurmdSpoolDir={workdir / 'spool'}\n"
        f"SlurmctldPidFile={workdir / 'slurmctld.pid'}\n"
        f"SlurmdPidFile={workdir / 'slurmd.pid'}\n"
        f"SlurmctldLogFile={log / 'slurmctld.log'}\n"
        f"SlurmdLogFile={log / 'slurmd.log'}\n"
        "ProctrackType=proctrack/linuxproc\n"
        "TaskPlugin=task/none\n"
        "SelectType=select/cons_tres\n"
        "SelectTypeParameters=CR_Core\n"
        "SchedulerType=sched/builtin\n"
        "SchedulerParameters=batch_sched_delay=0\n"
        "AccountingStorageType=accounting_storage/none\n"
        "JobAcctGatherType=jobacct_gather/none\n"
        "JobCompType=jobcomp/none\n"
        "MpiDefault=none\n"
        "SwitchType=switch/none\n"
        "ReturnToService=2\n"
        "KillWait=2\n"
        "MinJobAge=600\n"
        "SlurmdParameters=config_overrides\n"
        f"NodeName={node_name} NodeAddr={node_addr} CPUs={cpus} State=UNKNOWN\n"
        f"PartitionName={partition} Nodes={node_name} Default=YES MaxTime=INFINITE State=UP\n"
        + extra_conf
    )
    env = {"SLURM_CONF": str(conf)}
    daemon_env = {**os.environ, **env}
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(*argv: str | Path, out: str) -> subprocess.Popen[bytes]:
        with open(log / out, "ab") as sink:
            proc = subprocess.Popen(
                [*exec_prefix, *map(str, argv)],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=daemon_env,
            )
        procs.append(proc)
        return proc

    cluster = SlurmCluster(
        dir=workdir,
        conf=conf,
        cluster_name=cluster_name,
        partition=partition,
        node_name=node_name,
        cpus=cpus,
        ctld_port=ctld_port,
        slurmd_port=slurmd_port,
        munge_socket=munge_socket,
        env=env,
    )
    try:
        spawn(
            "munged", "--foreground", "--force", f"--socket={munge_socket}",
            f"--key-file={key}", f"--log-file={log / 'munged.log'}",
            f"--pid-file={munge_dir / 'munged.pid'}", f"--seed-file={munge_dir / 'seed'}",
            out="munged.out",
        )  # fmt: skip
        deadline = time.monotonic() + start_timeout
        while not munge_socket.exists():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("munged did not start:\n" + cluster.logs())
            time.sleep(0.05)
        spawn("slurmctld", "-D", "-i", "-f", conf, out="slurmctld.out")
        spawn("slurmd", "-D", "-N", node_name, "-f", conf, out="slurmd.out")
        while True:
            probe = subprocess.run(
                [*exec_prefix, "sinfo", "-h", "-n", node_name, "-o", "%T"],
                env=daemon_env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if probe.stdout.strip() in ("idle", "mixed", "allocated"):
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(
                    f"Slurm did not come up within {start_timeout} s "
                    f"(sinfo: {probe.stdout.strip() or probe.stderr.strip()}):\n" + cluster.logs()
                )
            time.sleep(0.1)
        yield cluster
    finally:
        if len(procs) == 3 and all(p.poll() is None for p in procs):
            _cancel_all(cluster, exec_prefix)
        for proc in reversed(procs):
            _stop(proc)


def _cancel_all(cluster: SlurmCluster, exec_prefix: Sequence[str]) -> None:
    """Cancel every job and wait (bounded) until none runs, so no slurmstepd outlives us."""
    env = {**os.environ, **cluster.env}

    def client(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*exec_prefix, *argv], env=env, capture_output=True, text=True, timeout=30, check=False
        )

    jobs = client("squeue", "-h", "-o", "%i").stdout.split()
    if jobs:
        client("scancel", *jobs)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not client("squeue", "-h", "-t", "PD,R,CG,CF,S,ST,SO", "-o", "%i").stdout.strip():
            return
        time.sleep(0.2)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A session-wide single-node Slurm on 127.0.0.1 (skips when Slurm is not installed)."""
    if not have_slurm():
        pytest.skip("Slurm/munge are not installed; run scripts/system-deps.sh")
    with start_slurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
