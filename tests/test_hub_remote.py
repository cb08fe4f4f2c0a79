"""The hub with the Slurm and ssh launchers: a real single-node Slurm runs the agent, which
phones home to the hub; stop is an scancel.  A real sshd runs an echo server's agent."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from paraconnect.pki import Session
from paraconnect.servers import SlurmLauncher, SshLauncher

from .helpers_hub import check_frame, running_hub
from .test_supervisor_policy import echo

if TYPE_CHECKING:
    from tests.fixtures_slurm import SlurmCluster
    from tests.fixtures_sshd import Sshd

pytest_plugins = ["tests.fixtures_slurm", "tests.fixtures_sshd"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
ECHO = [sys.executable, str(Path(__file__).with_name("helpers_echo.py")), "--port", "{port}"]


def test_builtin_on_slurm_phones_home_and_stops_with_scancel(
    home: Path, session: Session, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    pytest.importorskip("vtk")
    launcher = SlurmLauncher(tmp_path / "jobs", slurm_conf=slurm_cluster.conf)
    with running_hub(home) as (hub, events):
        info = hub.call(hub.launch, "builtin", launcher, "lab", "reverse", {"walltime": 600})
        info = hub.call(hub.wait, info.id, "connected", 90.0)
        assert info.state == "connected", info
        assert info.launcher == "slurm" and info.job_id and info.job_id.isdigit()
        check_frame(info.local_port)
        queued = slurm_cluster.run("squeue", "-h", "-j", info.job_id, "-o", "%i").stdout.split()
        assert queued == [info.job_id]
        stopped = hub.call(hub.stop, info.id, 5.0)
        assert stopped.state == "stopped" and "cancelled" in stopped.reason
        assert slurm_cluster.run("squeue", "-h", "-j", info.job_id).stdout.strip() == ""
        assert events.states(info.id) == [
            "submitted",
            "starting",
            "waiting",
            "connected",
            "stopped",
        ]


def test_command_over_ssh_phones_home(
    home: Path, session: Session, sshd: Sshd, tmp_path: Path
) -> None:
    launcher = SshLauncher(
        sshd.alias, config_file=sshd.config_file, remote_root=str(tmp_path / "r")
    )
    with running_hub(home) as (hub, _events):
        info = hub.call(hub.launch, "command", launcher, "lab", "reverse", {}, ECHO)
        info = hub.call(hub.wait, info.id, "connected", 60.0)
        assert info.state == "connected" and info.launcher == "ssh", info
        assert echo(info.local_port, b"over ssh") == b"over ssh"
        assert hub.call(hub.stop, info.id, 5.0).state == "stopped"


def test_connect_forward_over_ssh_from_the_notebook_api(
    home: Path, session: Session, sshd: Sshd, tmp_path: Path
) -> None:
    """`pc.connect_forward` with the ssh launcher: the agent, started over ssh, listens where
    it is told on its host, the hub dials it there, and data comes through."""
    import paraconnect as pc
    from paraconnect._runtime import runtime

    rt = runtime(home)
    try:
        srv = pc.connect_forward(
            "127.0.0.1:0", kind="command", session="lab", launcher="ssh", command=ECHO,
            host=sshd.alias, config_file=str(sshd.config_file), remote_root=str(tmp_path / "r"),
        )  # fmt: skip
        srv.wait_connected(timeout=60, quiet=True)
        info = srv.info
        assert info["mode"] == "forward" and info["launcher"] == "ssh", info
        assert info["peer"].startswith(f"server '{srv.id}'") and info["where"], info
        assert echo(srv.port, b"forward over ssh") == b"forward over ssh"  # type: ignore[arg-type]
        assert srv.stop(grace=5)["state"] == "stopped"
    finally:
        rt.close()
