"""The local launcher and what all launchers share: the spec, the description, re-attaching."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from paraconnect.errors import ConfigError, CredentialError
from paraconnect.servers import JobState, LaunchSpec, LocalJob, LocalLauncher, reattach


@pytest.mark.anyio
async def test_job_runs_in_its_own_session_in_a_private_directory(tmp_path: Path) -> None:
    launcher = LocalLauncher(tmp_path / "runs")
    job = await launcher.submit(LaunchSpec(["sleep", "30"], name="alone", grace=0.5))
    assert isinstance(job, LocalJob)
    assert job.id.startswith("alone-")
    assert os.getsid(job.pid) == job.pid  # session leader: its own process group too
    assert os.getpgid(job.pid) == job.pid
    assert os.getsid(job.pid) != os.getsid(0)
    run_dir = Path(job.job_dir)
    assert run_dir.parent == (tmp_path / "runs").absolute()
    assert (run_dir.stat().st_mode & 0o777) == 0o700  # noqa: ASYNC240
    assert ((tmp_path / "runs").stat().st_mode & 0o777) == 0o700
    with anyio.fail_after(10):
        while not (run_dir / "started").exists():  # noqa: ASYNC110
            await anyio.sleep(0.02)
    assert (await job.state()).state is JobState.RUNNING
    assert (await job.stop(grace=0.5)).state is JobState.CANCELLED


@pytest.mark.anyio
async def test_run_root_open_to_others_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    with pytest.raises(CredentialError, match="chmod 700"):
        await LocalLauncher(root).submit(LaunchSpec(["true"]))


@pytest.mark.anyio
async def test_killed_from_outside_is_failed_without_exit_code(tmp_path: Path) -> None:
    job = await LocalLauncher(tmp_path).submit(LaunchSpec(["sleep", "30"]))
    assert isinstance(job, LocalJob)
    with anyio.fail_after(10):
        while not (Path(job.job_dir) / "started").exists():  # noqa: ASYNC110
            await anyio.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)
    status = await job.wait(10)
    assert status.state is JobState.FAILED
    assert status.exit_code is None
    assert "recorded no exit code" in status.reason


@pytest.mark.anyio
async def test_missing_workdir_fails_with_a_clear_line(tmp_path: Path) -> None:
    job = await LocalLauncher(tmp_path).submit(
        LaunchSpec(["true"], workdir=str(tmp_path / "nowhere"))
    )
    status = await job.wait(10)
    assert status.state is JobState.FAILED
    assert status.exit_code == 97
    assert "cannot enter the working directory" in status.reason


def test_spec_validation() -> None:
    cases: tuple[dict[str, Any], ...] = (
        {"argv": []},
        {"argv": "sleep 1"},
        {"argv": ["-x"]},
        {"argv": ["a\0b"]},
        {"argv": ["x"], "env": {"1BAD": "x"}},
        {"argv": ["x"], "env": {"_pc_d": "x"}},
        {"argv": ["x"], "env": {"PARACONNECT_JOB_DIR": "x"}},
        {"argv": ["x"], "name": "bad name"},
        {"argv": ["x"], "name": "-x"},
        {"argv": ["x"], "walltime": 0},
        {"argv": ["x"], "walltime": float("inf")},
        {"argv": ["x"], "grace": -1},
    )
    for bad in cases:
        with pytest.raises(ConfigError):
            LaunchSpec(**bad)


def test_spec_repr_hides_environment_values() -> None:
    spec = LaunchSpec(["agent"], env={"TOKEN": "very-secret-value"})
    assert "very-secret-value" not in repr(spec)
    assert "TOKEN" in repr(spec)


@pytest.mark.anyio
async def test_local_launcher_takes_no_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no options"):
        await LocalLauncher(tmp_path).submit(LaunchSpec(["true"], options={"partition": "x"}))


def test_reattach_refuses_bad_descriptions() -> None:
    with pytest.raises(ConfigError, match="known launchers: local, slurm, ssh"):
        reattach({"launcher": "pbs"})
    good = {
        "version": 1,
        "launcher": "local",
        "id": "x-1",
        "host": "localhost",
        "name": "x",
        "command": ["true"],
        "submitted_at": "2026-11-23T00:00:00Z",
        "walltime": None,
        "grace": 10.0,
        "state": "running",
        "reason": "",
        "exit_code": None,
        "options": {"dir": "/nonexistent/x-1", "pid": 12345, "boot_id": ""},
    }
    assert isinstance(reattach(good), LocalJob)
    for key, value in (
        ("version", 99),
        ("command", []),
        ("submitted_at", "yesterday"),
        ("options", {"dir": "relative", "pid": 12345}),
        ("options", {"dir": "/x", "pid": 1}),
    ):
        with pytest.raises(ConfigError):
            reattach({**good, key: value})


@pytest.mark.anyio
async def test_vanished_job_directory_is_unknown(tmp_path: Path) -> None:
    described = {
        "version": 1,
        "launcher": "local",
        "id": "x-1",
        "host": "localhost",
        "name": "x",
        "command": ["true"],
        "submitted_at": "2026-11-23T00:00:00Z",
        "walltime": None,
        "grace": 10.0,
        "state": "running",
        "options": {"dir": str(tmp_path / "gone"), "pid": 2**22 + 7, "boot_id": ""},
    }
    status = await reattach(described).state()
    assert status.state is JobState.UNKNOWN
    assert "is gone" in status.reason


@pytest.mark.anyio
async def test_wait_is_bounded_and_logs_tail(tmp_path: Path) -> None:
    job = await LocalLauncher(tmp_path).submit(
        LaunchSpec(["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; sleep 30"], grace=0.2)
    )
    with pytest.raises(TimeoutError):
        await job.wait(0.3)
    with anyio.fail_after(10):
        while (await job.logs(tail=2)) != "line4\nline5\n":  # noqa: ASYNC110
            await anyio.sleep(0.05)
    assert await job.logs(tail=0) == ""
    assert (await job.logs(tail=None)).startswith("line1\n")
    assert (await job.stop(grace=0.2)).state is JobState.CANCELLED


@pytest.mark.anyio
async def test_command_gets_default_sigpipe(tmp_path: Path) -> None:
    """Python ignores SIGPIPE; the launched command must not inherit that."""
    job = await LocalLauncher(tmp_path).submit(
        LaunchSpec(["sh", "-c", "grep SigIgn /proc/$$/status"])
    )
    assert (await job.wait(10)).state is JobState.COMPLETED
    ignored = int((await job.logs()).split()[-1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))
