"""What every launcher must do, run against each one with real peers: a local subprocess, a real
sshd on loopback, a real single-node Slurm, and that Slurm driven through the sshd (a login
node).

The launched command is a small Python program (below) whose command line carries a token, so
that `ps` can tell whether anything of it is left.  No timed assertions: bounded waits only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from paraconnect.servers import (
    Job,
    JobState,
    Launcher,
    LaunchSpec,
    LocalLauncher,
    SlurmLauncher,
    SshLauncher,
    reattach,
)

pytest_plugins = ["tests.fixtures_slurm", "tests.fixtures_sshd"]

PROGRAM = r"""
import os, pathlib, signal, subprocess, sys, time
mode, token, base = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])

def wait_for(name):
    while not (base / name).exists():
        time.sleep(0.02)

if mode == "ok":
    print(f"out-{token} env-{os.environ.get('PC_SECRET', '')}", flush=True)
    print(f"err-{token}", file=sys.stderr, flush=True)
    pathlib.Path("marker").write_text(token)
    (base / "ready").touch()
    wait_for("go")
elif mode == "fail":
    print(f"boom-{token}", file=sys.stderr, flush=True)
    sys.exit(3)
elif mode == "stubborn":
    # Shuts down gracefully on SIGTERM, but leaves a child that ignores SIGTERM.
    def on_term(signum, frame):
        (base / "got-term").touch()
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    subprocess.Popen([sys.executable, __file__, "ignore", token, str(base)])
    wait_for("child-ready")
    (base / "ready").touch()
    while True:
        time.sleep(1)
elif mode == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    (base / "child-ready").touch()
    while True:
        time.sleep(1)
elif mode == "sleep":
    (base / "ready").touch()
    time.sleep(300)
"""

ORDER = [JobState.PENDING, JobState.RUNNING, JobState.COMPLETED]


@pytest.fixture(params=["local", "ssh", "slurm", "slurm-over-ssh"])
def launcher(request: pytest.FixtureRequest, tmp_path: Path) -> Launcher:
    kind = request.param
    if kind == "local":
        return LocalLauncher(tmp_path / "runs")
    if kind in ("ssh", "slurm-over-ssh"):
        server = request.getfixturevalue("sshd")
        ssh = SshLauncher(
            server.alias, config_file=server.config_file, remote_root=str(tmp_path / "remote")
        )
        if kind == "ssh":
            return ssh
    cluster = request.getfixturevalue("slurm_cluster")
    if kind == "slurm":
        return SlurmLauncher(tmp_path / "jobs", slurm_conf=cluster.conf)
    # sbatch, squeue and scancel run on a "login node" reached through the real sshd.
    return SlurmLauncher(str(tmp_path / "remote-jobs"), slurm_conf=str(cluster.conf), ssh=ssh)


@pytest.fixture
def program(tmp_path: Path) -> Iterator[Callable[..., LaunchSpec]]:
    """A spec running PROGRAM in `mode`, with a fresh token; files land in tmp_path/"io".
    Whatever a failed test left running is killed afterwards."""
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    io = tmp_path / "io"
    io.mkdir()
    tokens: list[str] = []

    def make(mode: str, **kwargs: object) -> LaunchSpec:
        token = f"pctok-{secrets.token_hex(6)}"
        tokens.append(token)
        return LaunchSpec(
            [sys.executable, str(script), mode, token, str(io)],
            name=mode,
            **kwargs,  # type: ignore[arg-type]
        )

    yield make
    for token in tokens:
        for pid in live_pids(token):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def token_of(spec: LaunchSpec) -> str:
    return spec.argv[3]


def live_pids(token: str) -> list[int]:
    return [int(line.split()[0]) for line in live_processes(token, pid=True)]


def live_processes(token: str, *, pid: bool = False) -> list[str]:
    """Processes (not zombies) whose command line holds `token`, as `ps` shows them."""
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    return [
        " ".join(row if pid else row[1:])
        for row in rows
        if len(row) == 3 and token in row[2] and not row[1].startswith("Z")
    ]


async def nothing_left(token: str, timeout: float = 15.0) -> list[str]:  # noqa: ASYNC109
    with anyio.move_on_after(timeout):
        while live_processes(token):  # noqa: ASYNC110 - polling ps
            await anyio.sleep(0.1)
    return live_processes(token)


async def until_file(path: Path, job: Job, timeout: float = 30.0) -> list[JobState]:  # noqa: ASYNC109
    """Wait for `path`, recording the states seen; fail early if the job ends first."""
    seen = [job.last_status.state]
    with anyio.fail_after(timeout):
        while not path.exists():  # noqa: ASYNC240 - a local test file
            status = await job.state()
            seen.append(status.state)
            assert not status.finished, f"{job} ended early: {status}\n{await job.logs()}"
            await anyio.sleep(0.05)
    return seen


def assert_in_order(seen: list[JobState]) -> None:
    ranks = [ORDER.index(state) for state in seen]
    assert ranks == sorted(ranks), seen


@pytest.mark.anyio
async def test_runs_to_completion_with_logs_env_and_workdir(
    launcher: Launcher, program: Callable[..., LaunchSpec], tmp_path: Path
) -> None:
    workdir = tmp_path / "wd"
    workdir.mkdir()
    secret = f"s3cret-{secrets.token_hex(8)}"
    spec = program("ok", workdir=str(workdir), env={"PC_SECRET": secret})
    token = token_of(spec)
    job = await launcher.submit(spec)
    io = tmp_path / "io"
    seen = await until_file(io / "ready", job)
    seen.append((await job.state()).state)
    assert JobState.RUNNING in seen
    (io / "go").touch()
    final = await job.wait(30)
    seen.append(final.state)
    assert_in_order(seen)
    assert final.state is JobState.COMPLETED, final
    assert final.exit_code == 0
    assert (workdir / "marker").read_text() == token
    logs = await job.logs()
    assert f"out-{token} env-{secret}" in logs
    assert f"err-{token}" in logs
    assert (await job.logs(tail=1)).count("\n") == 1
    described = json.loads(json.dumps(job.describe()))
    assert described["launcher"] == launcher.name
    assert described["state"] == "completed"
    assert described["exit_code"] == 0
    assert described["command"] == list(spec.argv)
    assert described["id"] == job.id
    assert described["submitted_at"].endswith("Z")
    # The environment travelled in a file the job removed; it is nowhere in the description.
    assert secret not in json.dumps(described)
    job_dir = Path(described["options"]["dir"])
    assert not (job_dir / "env.sh").exists()
    assert secret not in (job_dir / "job.sh").read_text()
    assert (job_dir.stat().st_mode & 0o777) == 0o700  # noqa: ASYNC240
    if isinstance(launcher, SshLauncher):
        assert secret not in " ".join(launcher.ssh_argv())


@pytest.mark.anyio
async def test_failure_reports_exit_code_and_log_tail(
    launcher: Launcher, program: Callable[..., LaunchSpec]
) -> None:
    spec = program("fail")
    job = await launcher.submit(spec)
    status = await job.wait(30)
    assert status.state is JobState.FAILED, status
    assert status.exit_code == 3
    assert "exited with code 3" in status.reason
    assert f"boom-{token_of(spec)}" in status.reason
    assert job.describe()["state"] == "failed"


@pytest.mark.anyio
async def test_stop_is_graceful_then_kills_and_leaves_nothing(
    launcher: Launcher, program: Callable[..., LaunchSpec], tmp_path: Path
) -> None:
    spec = program("stubborn", grace=1.0)
    token = token_of(spec)
    job = await launcher.submit(spec)
    await until_file(tmp_path / "io" / "ready", job)
    assert len(live_processes(token)) >= 2
    status = await job.stop(grace=1.0)
    assert status.state is JobState.CANCELLED, status
    assert (tmp_path / "io" / "got-term").exists()  # SIGTERM came first
    assert await nothing_left(token) == []  # the child that ignored it was killed
    assert (await job.state()).state is JobState.CANCELLED
    assert (await job.stop()).state is JobState.CANCELLED  # stopping again is harmless


@pytest.mark.anyio
async def test_walltime_limit_is_enforced(
    launcher: Launcher, program: Callable[..., LaunchSpec], tmp_path: Path
) -> None:
    spec = program("sleep", walltime=1.5, grace=1.0)
    job = await launcher.submit(spec)
    status = await job.wait(40)
    assert status.state is JobState.FAILED, status
    assert "wall-time limit of 1.5 s" in status.reason
    assert await nothing_left(token_of(spec)) == []


@pytest.mark.anyio
async def test_reattach_from_description(
    launcher: Launcher, program: Callable[..., LaunchSpec], tmp_path: Path
) -> None:
    spec = program("ok")
    token = token_of(spec)
    job = await launcher.submit(spec)
    await until_file(tmp_path / "io" / "ready", job)
    described = json.loads(json.dumps(job.describe()))
    job_type = type(job)
    del job
    again = reattach(described)
    assert type(again) is job_type
    assert again.id == described["id"]
    assert (await again.state()).state is JobState.RUNNING
    assert f"out-{token}" in await again.logs()
    (tmp_path / "io" / "go").touch()
    assert (await again.wait(30)).state is JobState.COMPLETED
    # A second handle re-attached after the end sees the same outcome.
    late = type(launcher).reattach(described)
    assert (await late.state()).state is JobState.COMPLETED


@pytest.mark.anyio
async def test_stop_after_reattach(
    launcher: Launcher, program: Callable[..., LaunchSpec], tmp_path: Path
) -> None:
    spec = program("sleep", grace=1.0)
    job = await launcher.submit(spec)
    await until_file(tmp_path / "io" / "ready", job)
    again = reattach(job.describe())
    assert (await again.stop(grace=1.0)).state is JobState.CANCELLED
    assert await nothing_left(token_of(spec)) == []


@pytest.mark.anyio
async def test_arguments_and_environment_arrive_verbatim(launcher: Launcher) -> None:
    tricky = ["$HOME", "a b", "'q'", '"d"', "`x`", "; rm -rf /", "\\", "*", "line\nbreak", ""]
    tricky.append("PARACONNECT_EOF_0123456789abcdef")
    code = "import sys, json, os; print(json.dumps([sys.argv[1:], os.environ['PC_V']]))"
    job = await launcher.submit(
        LaunchSpec([sys.executable, "-c", code, *tricky], env={"PC_V": "\n".join(tricky)})
    )
    assert (await job.wait(30)).state is JobState.COMPLETED
    assert json.loads(_last(await job.logs())) == [tricky, "\n".join(tricky)]


def _last(text: str) -> str:
    return [line for line in text.splitlines() if line.startswith("[")][-1]
