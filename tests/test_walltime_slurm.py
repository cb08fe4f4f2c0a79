"""Issue 16, sessions that last: a Slurm server's wall time.  A real job with Slurm's shortest
time limit (``--time=1``: one minute) and the hub's warnings at 50 s and 20 s before its end:
the hub learns the end from squeue, shows the time left, warns with both events in order, and
``resubmit`` gives a new job for the same server id that re-attaches to the same local
endpoint: the RemoteView opened before goes on through the same port with the new job's
renderer, and the old job is gone from the queue.  The notebook's PhoneHomeWatcher (on the
hub's control socket and events, as a kernel's) shows the time left and the warning, and its
resubmit is the one used here."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import paraconnect as pc
from paraconnect.hub import serve_control
from paraconnect.pki import Session
from paraconnect.render import RemoteView
from paraconnect.servers import SlurmLauncher

from .helpers_hub import running_hub

if TYPE_CHECKING:
    from tests.fixtures_slurm import SlurmCluster

pytest_plugins = ["tests.fixtures_slurm"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _until(condition: object, what: str, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"no {what} within {limit:g} s"
        time.sleep(0.2)


def test_walltime_warnings_and_resubmit(
    home: Path, session: Session, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    launcher = SlurmLauncher(tmp_path / "jobs", {"time": "1"}, slurm_conf=slurm_cluster.conf)
    from paraconnect.widgets import PhoneHomeWatcher

    with running_hub(home, walltime_warnings=(50, 20)) as (hub, events):
        hub.call(hub.start_task, serve_control, hub)  # what kernels reach, as under Jupyter
        watcher = PhoneHomeWatcher("lab", hub=pc.connect_hub(home))
        info = hub.call(hub.launch, "builtin", launcher, "lab", "reverse", {})
        info = hub.call(hub.wait, info.id, "connected", 90.0)
        assert info.state == "connected", info
        first_job, port = info.job_id, info.local_port
        assert first_job and port
        end = slurm_cluster.run("squeue", "-h", "-j", first_job, "-o", "%e").stdout.strip()
        # The hub's end is squeue's, and the time left is within the one-minute limit.
        assert info.ends_at == time.mktime(time.strptime(end, "%Y-%m-%dT%H:%M:%S"))
        assert info.time_left is not None and 0 < info.time_left <= 60
        view = RemoteView(port=port, dataset="wavelet", width=160, height=120)
        assert view.last_frame is not None and view.dataset

        def warnings() -> list[dict[str, object]]:
            return [e for e in list(events.all) if e["event"] == "walltime"]

        _until(lambda: len(warnings()) >= 2, "two walltime warnings", limit=70)
        first, second = warnings()[:2]
        assert (first["threshold"], second["threshold"]) == (50, 20)
        for warning in (first, second):
            assert warning["server_id"] == info.id and warning["job_id"] == first_job
            assert 0 < float(warning["left"]) <= float(warning["threshold"])  # type: ignore[arg-type]

        # The widget: the time left in its row, the warning under its table.
        assert watcher.wait_for(lambda: "reaches its time limit" in watcher.message.value, 30)
        cells = [getattr(c, "value", "") for c in watcher.table.children]
        assert "time left" in cells[7] and re.fullmatch(r"0m \d\ds", cells[-1]), cells
        # Resubmit from the widget: the `resubmit` operation over the control socket.
        watcher.resubmit(info.id)
        assert "resubmitted" in watcher.message.value, watcher.message.value
        _until(
            lambda: (
                hub.call(hub.server, info.id).job_id != first_job
                and hub.call(hub.server, info.id).state == "connected"
            ),
            "the new job phoning home",
            limit=60,
        )
        now = hub.call(hub.server, info.id)
        assert now.job_id and now.job_id != first_job
        assert now.local_port == port
        assert any(
            e["event"] == "resubmitted" and e["previous_job_id"] == first_job for e in events.all
        )
        # The old job is stopped once the new one phoned home (or its limit ended it).
        _until(
            lambda: (
                slurm_cluster.run("squeue", "-h", "-j", first_job, "-o", "%T").stdout.strip()
                in ("", "CANCELLED", "COMPLETED", "TIMEOUT")
            ),
            "the old job leaving the queue",
            limit=30,
        )
        # The view re-attaches through the same port, to the new job's renderer.
        frame = view.rotate(30)
        assert (frame.width, frame.height) == (160, 120) and view.dataset
        view.close()
        watcher.close()


def test_the_end_is_the_sooner_of_slurms_limit_and_the_wrappers_walltime() -> None:
    """squeue's END and START (local time): with a walltime the wrapper ends the job at START
    plus it, before Slurm's backstop limit (walltime + grace + a minute); words are no end."""
    from paraconnect.servers import JobState, JobStatus, LaunchSpec, SlurmJob
    from paraconnect.servers._batch import Clients
    from paraconnect.servers._local import LocalShell

    def job(walltime: float | None) -> SlurmJob:
        spec = LaunchSpec(["true"], walltime=walltime)
        return SlurmJob(
            clients=Clients(LocalShell(), SlurmJob.scheduler, None), job_dir="/tmp/x",
            **spec.job_fields("42", "slurm", JobStatus(JobState.RUNNING, "running")),
        )  # fmt: skip

    def local(text: str) -> float:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))

    line = "RUNNING|None|node7|2026-12-06T10:03:00|2026-12-06T10:00:00\n"
    assert job(None).parse_status(line).ends_at == local("2026-12-06T10:03:00")  # type: ignore[union-attr]
    assert job(90).parse_status(line).ends_at == local("2026-12-06T10:01:30")  # type: ignore[union-attr]
    pending = job(None).parse_status("PENDING|Priority||Unknown|N/A\n")
    assert pending is not None and pending.ends_at is None
