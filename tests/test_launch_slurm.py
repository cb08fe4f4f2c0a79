"""The Slurm launcher against a real single-node Slurm: the job script, the job id, pending
jobs, MPI-style ranks through srun, scancel, and life without accounting."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from paraconnect.errors import ConfigError
from paraconnect.servers import (
    JobState,
    LaunchSpec,
    SlurmJob,
    SlurmLauncher,
    SlurmOptions,
    reattach,
)

if TYPE_CHECKING:
    from tests.fixtures_slurm import SlurmCluster

# Imported by pytest (not above) so that it can rewrite their asserts.
pytest_plugins = ["tests.fixtures_slurm"]


@pytest.fixture
def launcher(slurm_cluster: SlurmCluster, tmp_path: Path) -> SlurmLauncher:
    return SlurmLauncher(tmp_path / "jobs", slurm_conf=slurm_cluster.conf)


def sbatch_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


@pytest.mark.anyio
async def test_held_job_goes_pending_running_completed_under_its_id(
    launcher: SlurmLauncher, slurm_cluster: SlurmCluster
) -> None:
    job = await launcher.submit(
        LaunchSpec(
            ["sh", "-c", "echo hi from $SLURM_JOB_ID"], name="held", options={"extra": ["--hold"]}
        )
    )
    assert isinstance(job, SlurmJob)
    assert job.id.isdigit()
    status = await job.state()
    assert status.state is JobState.PENDING
    assert "JobHeldUser" in status.reason
    queued = slurm_cluster.run("squeue", "-h", "-j", job.id, "-o", "%i %j").stdout.split()
    assert queued == [job.id, "held"]
    slurm_cluster.run("scontrol", "release", job.id)
    seen = []
    with anyio.fail_after(30):
        while not (status := await job.state()).finished:
            seen.append(status.state)
            await anyio.sleep(0.05)
    assert status.state is JobState.COMPLETED, status
    assert set(seen) <= {JobState.PENDING, JobState.RUNNING}
    assert f"hi from {job.id}" in await job.logs()
    assert job.host == slurm_cluster.node_name


@pytest.mark.anyio
async def test_options_land_in_the_script_and_ranks_run_through_srun(
    launcher: SlurmLauncher, slurm_cluster: SlurmCluster
) -> None:
    spec = LaunchSpec(
        ["sh", "-c", "echo rank-$SLURM_PROCID-of-$SLURM_NTASKS"],
        name="ranks",
        walltime=90,
        grace=5,
        options={
            "partition": slurm_cluster.partition,
            "nodes": 1,
            "ntasks": 2,
            "extra": ["--nice=10", "#SBATCH --comment=paraconnect-test"],
        },
    )
    job = await launcher.submit(spec)
    assert isinstance(job, SlurmJob)
    job_dir = Path(job.job_dir)
    script = (job_dir / "job.sh").read_text()
    lines = sbatch_lines(script)
    for expected in (
        "#SBATCH --job-name=ranks",
        f"#SBATCH --partition={slurm_cluster.partition}",
        "#SBATCH --time=3",  # 90 s + 5 s grace, in minutes rounded up, plus one
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=2",
        "#SBATCH --nice=10",
        "#SBATCH --comment=paraconnect-test",
        "#SBATCH --output=output.log",
    ):
        assert expected in lines
    assert "srun --kill-on-bad-exit=1 sh -c" in script
    # Every #SBATCH line precedes the first command, or sbatch ignores it.
    body = [line for line in script.splitlines()[1:] if line and not line.startswith("#")]
    assert script.index(body[0]) > script.index(lines[-1])
    assert (job_dir.stat().st_mode & 0o777) == 0o700  # noqa: ASYNC240
    assert ((job_dir / "job.sh").stat().st_mode & 0o777) == 0o700
    status = await job.wait(30)
    assert status.state is JobState.COMPLETED, status
    logs = await job.logs()
    assert sorted(re.findall(r"rank-\d-of-2", logs)) == ["rank-0-of-2", "rank-1-of-2"]


def test_script_for_gpus_account_and_mpi(launcher: SlurmLauncher, tmp_path: Path) -> None:
    defaults = SlurmLauncher(tmp_path, options={"account": "proj1", "gpus": 2})
    script = defaults.script(
        LaunchSpec(["pvserver"], name="pv", options={"mpi": "pmix", "ntasks": 4, "time": "1:00:00"})
    )
    lines = sbatch_lines(script)
    assert "#SBATCH --account=proj1" in lines
    assert "#SBATCH --gpus=2" in lines
    assert "#SBATCH --ntasks=4" in lines
    assert "#SBATCH --time=1:00:00" in lines
    assert "srun --kill-on-bad-exit=1 --mpi=pmix pvserver" in script
    single = defaults.script(LaunchSpec(["pvserver"]))
    assert "srun" not in single
    forced = defaults.script(LaunchSpec(["pvserver"], options={"srun": True}))
    assert "srun --kill-on-bad-exit=1 pvserver" in forced


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    for bad in (
        {"partition": "a b"},
        {"ntasks": 0},
        {"nodes": "2"},
        {"time": "soon"},
        {"extra": ["--mem=1G\n#SBATCH --uid=0"]},
        {"extra": "--mem=1G"},
        {"extra": ["mem=1G"]},
        {"gpu": 1},
    ):
        with pytest.raises(ConfigError):
            SlurmOptions.from_mapping(bad)
    with pytest.raises(ConfigError, match="unknown Slurm option"):
        SlurmLauncher(tmp_path).script(LaunchSpec(["x"], options={"queue": "q"}))


@pytest.mark.anyio
async def test_unknown_partition_is_refused_by_sbatch(launcher: SlurmLauncher) -> None:
    with pytest.raises(ConfigError) as info:
        await launcher.submit(LaunchSpec(["true"], options={"partition": "nosuchpart"}))
    assert "partition" in str(info.value)
    assert "sinfo" in str(info.value)


@pytest.mark.anyio
async def test_scancel_of_a_pending_job(
    launcher: SlurmLauncher, slurm_cluster: SlurmCluster
) -> None:
    job = await launcher.submit(LaunchSpec(["true"], options={"extra": ["--hold"]}))
    assert (await job.state()).state is JobState.PENDING
    status = await job.stop(grace=1)
    assert status.state is JobState.CANCELLED, status
    state = slurm_cluster.run("squeue", "-h", "-t", "all", "-j", job.id, "-o", "%T").stdout
    assert state.strip() == "CANCELLED"


@pytest.mark.anyio
async def test_without_squeue_or_sacct_the_exit_code_file_decides(
    launcher: SlurmLauncher, tmp_path: Path
) -> None:
    """Slurm has forgotten the job (MinJobAge) and accounting is off: the wrapper's exit-code
    file still tells how it ended; without it, the state is unknown, said plainly."""
    job = await launcher.submit(LaunchSpec(["sh", "-c", "exit 4"]))
    assert (await job.wait(30)).exit_code == 4
    described = json.loads(json.dumps(job.describe()))
    described.update(id="987654", state="running", exit_code=None)
    status = await reattach(described).state()
    assert status.state is JobState.FAILED
    assert status.exit_code == 4
    (Path(described["options"]["dir"]) / "exit_code").unlink()
    status = await reattach(described).state()
    assert status.state is JobState.UNKNOWN
    assert "accounting is off" in status.reason


@pytest.mark.anyio
async def test_controller_down_makes_state_unknown(launcher: SlurmLauncher, tmp_path: Path) -> None:
    job = await launcher.submit(LaunchSpec(["true"]))
    await job.wait(30)
    described = job.describe()
    conf = tmp_path / "elsewhere.conf"
    text = Path(described["options"]["slurm_conf"]).read_text()  # noqa: ASYNC240
    text = re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=1", text)
    conf.write_text(text + "MessageTimeout=1\n")
    described.update(state="running", options={**described["options"], "slurm_conf": str(conf)})
    status = await reattach(described).state()
    assert status.state is JobState.UNKNOWN
    assert "slurmctld" in status.reason
