"""The local launcher: the command runs on this host, in a session of its own.

The wrapper (see ``_posix``) is our child, spawned with ``setsid``; a thread reaps it so that no
zombie stays behind while we live.  It keeps running if we exit: a restarted hub re-attaches to it
from :meth:`Job.describe`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from .._fs import boot_id, ensure_private_dir, write_atomic
from ..errors import ConfigError, ParaconnectError, StorageError
from ..pki import default_home
from ._launch import (
    Described,
    Job,
    JobState,
    JobStatus,
    Launcher,
    LaunchSpec,
    new_job_id,
    run_command,
)
from ._posix import Shell, ShellJob, env_file, local_path, shell_options, wrapper_script

__all__ = ["LocalJob", "LocalLauncher"]


class LocalShell(Shell):
    host = "localhost"

    async def run(self, script: str, *, timeout: float, doing: str) -> str:  # noqa: ASYNC109
        try:
            with anyio.fail_after(timeout):
                rc, out, err = await run_command(["/bin/sh", "-s"], input=script.encode())
        except TimeoutError:
            raise ParaconnectError(
                f"{doing} on localhost took over {timeout:g} s; is this host overloaded?"
            ) from None
        if rc != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            raise ParaconnectError(
                f"{doing} on localhost failed: {lines[-1] if lines else f'exit code {rc}'}"
            )
        return out.decode(errors="replace")


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _spawn(job_dir: Path) -> int:
    devnull = os.devnull
    pid = os.posix_spawn(
        "/bin/sh",
        ["sh", str(job_dir / "job.sh"), str(job_dir)],
        dict(os.environ),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
        # As subprocess does: Python ignores SIGPIPE and SIGXFSZ, which exec would pass on.
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        setsigmask=(),
    )
    threading.Thread(target=_reap, args=(pid,), name=f"paraconnect-reap-{pid}", daemon=True).start()
    return pid


class LocalJob(ShellJob):
    launcher = "local"


class LocalLauncher(Launcher):
    """Run commands on this host.  Job directories go under `run_root` (default:
    ``$PARACONNECT_HOME/runs``), each 0700 and named after the job's id."""

    name = "local"

    def __init__(self, run_root: Path | str | None = None) -> None:
        self._root = Path(run_root) if run_root is not None else default_home() / "runs"

    @property
    def run_root(self) -> Path:
        return self._root

    async def submit(self, spec: LaunchSpec) -> Job:
        if spec.options:
            raise ConfigError(
                f"the local launcher takes no options; got {', '.join(sorted(spec.options))}"
            )
        root = ensure_private_dir(self._root.absolute())
        job_id = new_job_id(spec.name)
        job_dir = root / job_id
        try:
            job_dir.mkdir(mode=0o700)
        except OSError as exc:
            raise StorageError(
                f"cannot create the job directory {job_dir}: {exc.strerror}"
            ) from exc
        script = wrapper_script(
            argv=spec.argv,
            workdir=local_path(spec.workdir),
            walltime=spec.walltime,
            grace=spec.grace,
        )
        write_atomic(job_dir / "job.sh", script.encode(), mode=0o700)
        if spec.env:
            write_atomic(job_dir / "env.sh", env_file(spec.env).encode(), mode=0o600)
        try:
            pid = _spawn(job_dir)
        except OSError as exc:
            raise ParaconnectError(f"cannot start /bin/sh for job {job_id}: {exc}") from exc
        return LocalJob(
            shell=LocalShell(),
            job_dir=str(job_dir),
            pid=pid,
            boot_id=boot_id(),
            **spec.job_fields(
                job_id, "localhost", JobStatus(JobState.RUNNING, f"started as pid {pid}")
            ),
        )

    @classmethod
    def reattach(cls, described: Mapping[str, Any]) -> Job:
        d = Described.parse(described, cls.name)
        job_dir, pid, boot = shell_options(d.options, cls.name)
        return LocalJob(
            shell=LocalShell(),
            job_dir=job_dir,
            pid=pid,
            boot_id=boot,
            **d.job_fields(),
        )
