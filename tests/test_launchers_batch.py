"""The BatchLauncher base is a base, not Slurm renamed: a second scheduler made of only command
lines, header lines and parse hooks (a toy one, written below as three sh programs that run
the job at once under setsid) submits, follows, stops and re-attaches through it; and Slurm's
parse hooks read the answers real Slurm clients give (slurm-wlm 22.05, as run by
tests/fixtures_slurm.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import anyio
import pytest

from paraconnect.errors import ConfigError
from paraconnect.servers import (
    BatchJob,
    BatchLauncher,
    JobState,
    JobStatus,
    LaunchSpec,
    Queued,
    Scheduler,
    SlurmJob,
    SlurmLauncher,
    reattach,
)
from paraconnect.servers._batch import Clients
from paraconnect.servers._local import LocalShell

pytestmark = pytest.mark.anyio

# The toy scheduler: tsub runs job.sh now, in a session of its own; tstat prints the job's
# state; tdel signals the job's process group (or kills it and marks it cancelled).
TSUB = r"""#!/bin/sh
set -e
id=$(cat "$TOY_STATE/next" 2>/dev/null || echo 100); echo $((id + 1)) >"$TOY_STATE/next"
echo RUNNING >"$TOY_STATE/$id"
# The session leader outlives a SIGTERM to the group (handled, not ignored, so the job can
# trap it too) and says DONE once job.sh has ended.
TOY_SUBMIT_DIR=$(pwd) setsid sh -c 'trap : TERM; sh "$1/job.sh" & c=$!
    wait $c; while kill -0 $c 2>/dev/null; do wait $c; done; echo DONE >"$2"' sh "$(pwd)" \
    "$TOY_STATE/$id" </dev/null >/dev/null 2>&1 &
echo $! >"$TOY_STATE/$id.pid"
echo "toy job $id queued"
"""
TSTAT = r"""#!/bin/sh
[ -f "$TOY_STATE/$1" ] || { echo "tstat: no such job $1"; exit 2; }
echo "$1 $(cat "$TOY_STATE/$1")"
"""
TDEL = r"""#!/bin/sh
if [ "$1" = -s ]; then sig=$2; shift 2; else sig=KILL; fi
[ -f "$TOY_STATE/$1" ] || { echo "tdel: no such job $1"; exit 2; }
grep -q DONE "$TOY_STATE/$1" && { echo "tdel: job $1 has finished"; exit 3; }
kill -s "$sig" -- "-$(cat "$TOY_STATE/$1.pid")" 2>/dev/null || true
[ "$sig" = KILL ] && echo CANCELLED >"$TOY_STATE/$1"
exit 0
"""


class ToyJob(BatchJob):
    launcher = "toy"
    scheduler = Scheduler("Toy", "toyd", "toy-clients", "TOY_CONF", "toy_conf")
    pending_states = frozenset({"QUEUED"})
    running_states = frozenset({"RUNNING"})
    final_states: ClassVar[dict[str, tuple[JobState, str]]] = {
        "CANCELLED": (JobState.CANCELLED, "cancelled in Toy")
    }
    bin: ClassVar[Path]

    def status_argv(self) -> list[str]:
        return [str(self.bin / "tstat"), self.id]

    def parse_status(self, out: str) -> Queued | None:
        _, _, state = out.strip().partition(" ")
        return Queued(state, "", "localhost") if state else None

    def forgotten(self, out: str) -> bool:
        return "no such job" in out

    def cancel_argv(self, signal: str | None) -> list[str]:
        return [str(self.bin / "tdel"), *(["-s", signal] if signal else []), self.id]

    def cancel_ended(self, out: str) -> bool:
        return "has finished" in out

    @classmethod
    def valid_id(cls, job_id: str) -> bool:
        return job_id.isdigit()


class ToyLauncher(BatchLauncher):
    name = "toy"
    job_class = ToyJob
    submit_dir = '"$TOY_SUBMIT_DIR"'

    def header(self, spec: LaunchSpec) -> list[str]:
        return [f"#TOY name={spec.name}"]

    def submit_argv(self) -> list[str]:
        return [str(ToyJob.bin / "tsub")]

    def parse_submit(self, out: str) -> str | None:
        words = out.split()
        return words[2] if len(words) == 4 and words[:2] == ["toy", "job"] else None


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ToyLauncher]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("tsub", TSUB), ("tstat", TSTAT), ("tdel", TDEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    (tmp_path / "state").mkdir()
    monkeypatch.setenv("TOY_STATE", str(tmp_path / "state"))
    monkeypatch.setattr(ToyJob, "bin", bin_dir, raising=False)
    yield ToyLauncher(tmp_path / "jobs")
    # Whatever a failed test left running goes with it.
    for pid_file in (tmp_path / "state").glob("*.pid"):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


async def test_a_toy_scheduler_runs_a_job_through_the_base(toy: ToyLauncher) -> None:
    spec = LaunchSpec(["sh", "-c", "echo hello from toy; exit 3"], name="greet")
    assert toy.script(spec).splitlines()[1] == "#TOY name=greet"
    job = await toy.submit(spec)
    assert isinstance(job, ToyJob) and job.id == "100"
    assert job.last_status.reason == "submitted to Toy as job 100"
    status = await job.wait(60)
    # The job's own files tell how it ended, as for Slurm without accounting.
    assert status.state is JobState.FAILED and status.exit_code == 3, status
    assert "hello from toy" in await job.logs()
    assert job.describe()["options"] == {"dir": job.job_dir, "toy_conf": None, "ssh": None}


async def test_a_toy_job_is_stopped_with_term_first_and_reattached(
    toy: ToyLauncher, tmp_path: Path
) -> None:
    marker = tmp_path / "got-term"
    program = f"trap 'touch {marker}; exit 0' TERM; echo up; while :; do sleep 0.1; done"
    job = await toy.submit(LaunchSpec(["sh", "-c", program], name="sleeper"))
    with anyio.fail_after(60):
        while "up" not in await job.logs():  # noqa: ASYNC110 - the job's output, polled
            await anyio.sleep(0.1)
    assert (await job.state()).state is JobState.RUNNING
    again = ToyLauncher.reattach(job.describe())
    assert isinstance(again, ToyJob) and again.job_dir == job.job_dir
    status = await again.stop(grace=30)
    assert marker.exists(), "the job got no SIGTERM before being killed"
    assert status.state is JobState.CANCELLED, status
    with pytest.raises(ConfigError, match="has job id 'x1'"):
        ToyLauncher.reattach({**job.describe(), "id": "x1"})


def test_a_toy_job_of_an_unregistered_launcher_is_refused_by_reattach() -> None:
    described = {"launcher": "toy", "version": 1}
    with pytest.raises(ConfigError, match="cannot re-attach a job of launcher 'toy'"):
        reattach(described)


# -- Slurm's hooks, on what the real clients print --------------------------------------------


def _slurm_job() -> SlurmJob:
    spec = LaunchSpec(["true"])
    return SlurmJob(
        clients=Clients(LocalShell(), SlurmJob.scheduler, None),
        job_dir="/tmp/x",
        **spec.job_fields("42", "slurm", JobStatus(JobState.PENDING, "submitted")),
    )


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        ("42\n", "42"),
        ("42;cluster\n", "42"),
        ("sbatch: warning: something\n43\n", "43"),
        ("", None),
    ],
)
def test_slurm_reads_the_job_id_from_sbatch_parsable(out: str, expected: str | None) -> None:
    assert SlurmLauncher(Path("/tmp/unused")).parse_submit(out) == expected


def test_slurm_reads_squeue_sacct_and_scancel_answers() -> None:
    job = _slurm_job()
    assert job.parse_status("PENDING|JobHeldUser|\n") == Queued("PENDING", "JobHeldUser", "")
    assert job.parse_status("RUNNING|None|node7\n") == Queued("RUNNING", "None", "node7")
    assert job.parse_status("COMPLETED|None|(null)\n") == Queued("COMPLETED", "None", "")
    assert job.parse_status("") is None
    assert job.forgotten("slurm_load_jobs error: Invalid job id specified\n")
    assert not job.forgotten("slurm_load_jobs error: Unable to contact slurm controller\n")
    assert job.parse_accounting(0, "CANCELLED by 0\n") == "CANCELLED"
    assert job.parse_accounting(1, "Slurm accounting storage is disabled\n") is None
    assert job.parse_accounting(0, "") is None
    assert job.cancel_ended("scancel: error: Kill job error on job id 42: Job/step already "
                            "completing or completed\n")  # fmt: skip
    assert job.cancel_argv("TERM") == ["scancel", "--signal=TERM", "--full", "42"]
    assert job.cancel_argv(None) == ["scancel", "42"]
    assert "PENDING" in job.pending_states and "COMPLETING" in job.running_states
