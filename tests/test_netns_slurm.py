"""An agent launched by a real Slurm running inside `cluster` (behind its firewall) phones home
to `paraconnect listen` on `laptop`; data and a rendered frame come through."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fixtures_netns import Hosts, Net
    from tests.fixtures_slurm import SlurmCluster

# Imported by pytest (not above) so that it can rewrite their asserts.
pytest_plugins = ["tests.fixtures_netns", "tests.fixtures_slurm"]
REPO = Path(__file__).resolve().parent.parent
PARACONNECT = str(Path(sys.executable).with_name("paraconnect"))
pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]

ECHO = [sys.executable, str(REPO / "tests" / "helpers_echo.py"), "--port", "{port}"]
RENDERER = [sys.executable, "-m", "paraconnect.render", "--port", "{port}", "--size", "320x240"]


@pytest.fixture(scope="module")
def cluster_slurm(
    netns_net: Net, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SlurmCluster]:
    """munged, slurmctld and slurmd inside the cluster namespace (nsenter: slurmd needs the
    real /sys), on the cluster's loopback, which its firewall lets through."""
    from tests.fixtures_slurm import have_slurm, start_slurm

    if not have_slurm():
        pytest.skip("Slurm/munge are not installed; run scripts/system-deps.sh")
    with start_slurm(
        tmp_path_factory.mktemp("sl"),
        node_name="cluster",
        exec_prefix=netns_net.nsenter("cluster"),
        cpus=4,
    ) as slurm:
        yield slurm


def _submit(hosts: Hosts, slurm: SlurmCluster, home: str, program: list[str]) -> str:
    creds = hosts.home("cluster") / "creds"
    command = [
        PARACONNECT, "serve", "--creds", str(creds), "--phone-home", home,
        "--interval", "0.2", "--json", "--", *program,
    ]  # fmt: skip
    out = hosts.run(
        "cluster",
        ["sbatch", "--parsable", "--job-name", "pc-agent", "--chdir", str(REPO),
         "--output", str(hosts.root / "job-%j.out"), "--wrap", f"exec {shlex.join(command)}"],
        env=slurm.env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def _job_running_in_cluster(hosts: Hosts, slurm: SlurmCluster, job: str) -> None:
    """The job is Slurm's, on the cluster's node (bounded wait for RUNNING)."""
    deadline = time.monotonic() + 30
    while True:
        out = hosts.run("cluster", ["squeue", "-h", "-j", job, "-o", "%T %N"], env=slurm.env)
        if out.stdout.split() == ["RUNNING", "cluster"]:
            return
        assert time.monotonic() < deadline, out.stdout + out.stderr + slurm.logs()
        time.sleep(0.1)


@pytest.mark.parametrize("what", ["sha256", "frame"])
def test_slurm_agent_phones_home_through_the_firewall(
    hosts: Hosts, cluster_slurm: SlurmCluster, what: str
) -> None:
    hosts.pki()
    listen = hosts.start(
        "laptop", "listen", f"{hosts.addr('laptop')}:0", "--creds", "lab",
        "--local", "127.0.0.1:0", "--json",
    )  # fmt: skip
    ready = listen.ready()
    local = str(ready["local"]).rsplit(":", 1)[1]
    job = _submit(hosts, cluster_slurm, str(ready["listen"]),
                  ECHO if what == "sha256" else RENDERER)  # fmt: skip
    try:
        _job_running_in_cluster(hosts, cluster_slurm, job)
        server = listen.wait_event("server", timeout=60)
        assert server["server_id"] == "srv"
        assert str(server["address"]).startswith(hosts.addr("cluster") + ":")
        if what == "sha256":
            result = hosts.client("laptop", "sha", "127.0.0.1", local, "--size", "2000000",
                                  "--streams", "3")  # fmt: skip
            assert result["ok"], result
        else:
            out = hosts.root / "frame.png"
            result = hosts.client("laptop", "render", "127.0.0.1", local, str(out))
            assert result["ok"] and result["width"] == 320, result
            assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    finally:
        hosts.run("cluster", ["scancel", job], env=cluster_slurm.env)
    log = Path(hosts.root / f"job-{job}.out")
    assert '"event": "ready"' in log.read_text(errors="replace")


def test_slurm_job_started_by_hand_phones_home_to_the_hub(
    hosts: Hosts, cluster_slurm: SlurmCluster
) -> None:
    """The hub on the laptop; on the cluster someone submits the line that
    `paraconnect launch --launcher manual` printed as a Slurm job (the cluster's firewall lets
    nothing in, and no launcher of the laptop reaches its scheduler): the job's agent enrols,
    phones home, and a frame rendered in the cluster comes through the hub."""
    from tests.test_netns_hub import PATH, _hub, _op, _wait_connected

    for host in ("laptop", "cluster"):
        hosts.home(host).mkdir(mode=0o700, parents=True, exist_ok=True)
    assert hosts.cli("laptop", "session", "create", "lab").returncode == 0
    _hub(hosts, "hub", f"{hosts.addr('laptop')}:0")
    out = hosts.cli("laptop", "launch", "builtin", "--launcher", "manual", "--session", "lab",
                    "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    script = f"export PATH={PATH}\ncd {hosts.home('cluster')}\n{got['command']}\n"
    job = hosts.run(
        "cluster",
        ["sbatch", "--parsable", "--job-name", "pc-manual", "--output",
         str(hosts.root / "job-%j.out"), "--wrap", script],
        env=cluster_slurm.env,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip().split(";")[0]
    try:
        _job_running_in_cluster(hosts, cluster_slurm, job_id)
        info = _wait_connected(hosts, got["server"]["id"])
        assert info["where"].startswith(hosts.addr("cluster") + ":")
        frame = hosts.root / "frame.png"
        port = info["local"].rsplit(":", 1)[1]
        result = hosts.client("laptop", "render", "127.0.0.1", port, str(frame))
        assert result["ok"] and frame.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), result
        assert _op(hosts, "server", id=info["id"])["state"] == "connected"
    finally:
        hosts.run("cluster", ["scancel", job_id], env=cluster_slurm.env)
