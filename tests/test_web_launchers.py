"""Issue 15: the web kinds are launched like every kind.  A ``web`` app in a job of a real
single-node Slurm phones home (reverse); a real ``trame`` app started over a real sshd is
dialled by the hub (forward); each answers through the hub's local endpoint, from its private
leg."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from paraconnect.pki import Session
from paraconnect.servers import SlurmLauncher, SshLauncher

from .helpers_hub import running_hub
from .helpers_webapp import MARKER
from .test_proxy_trame import APP as TRAME_APP

if TYPE_CHECKING:
    from tests.fixtures_slurm import SlurmCluster
    from tests.fixtures_sshd import Sshd

pytest_plugins = ["tests.fixtures_slurm", "tests.fixtures_sshd"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
WEBAPP = [sys.executable, str(Path(__file__).with_name("helpers_webapp.py")), "{port}"]


def _get(port: int, path: str = "/") -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}{path}"
    with urllib.request.urlopen(url, timeout=60) as reply:
        return reply.status, reply.read().decode()


def test_a_web_app_in_a_slurm_job_phones_home(
    home: Path, session: Session, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    launcher = SlurmLauncher(tmp_path / "jobs", slurm_conf=slurm_cluster.conf)
    with running_hub(home) as (hub, _events):
        info = hub.call(hub.launch, "web", launcher, "lab", "reverse", {}, WEBAPP)
        info = hub.call(hub.wait, info.id, "connected", 90.0)
        assert info.state == "connected" and info.launcher == "slurm", info
        assert info.job_id and info.job_id.isdigit()
        assert _get(info.local_port) == (200, MARKER)
        assert hub.call(hub.stop, info.id, 5.0).state == "stopped"


def test_a_trame_app_over_ssh_is_dialled_forward(
    home: Path, session: Session, sshd: Sshd, tmp_path: Path
) -> None:
    app = tmp_path / "cone.py"
    app.write_text(TRAME_APP)
    launcher = SshLauncher(
        sshd.alias, config_file=sshd.config_file, remote_root=str(tmp_path / "r")
    )
    with running_hub(home) as (hub, _events):
        info = hub.call(hub.launch, "trame", launcher, "lab", "forward", {"app": str(app)})
        info = hub.call(hub.wait, info.id, "connected", 90.0)
        assert info.state == "connected" and info.mode == "forward", info
        status, page = _get(info.local_port, "/index.html")
        assert status == 200 and "trame" in page
        assert hub.call(hub.stop, info.id, 5.0).state == "stopped"
