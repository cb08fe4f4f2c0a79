"""What every launcher shares: the launch spec, the job handle, its states, and re-attaching.

A launcher runs one command line somewhere (this host, an ssh host, a Slurm allocation) and hands
back a :class:`Job`.  The job is described by a JSON-able dict (:meth:`Job.describe`) that the
supervisor keeps in its registry; :func:`reattach` turns that dict back into a live handle after a
restart, without the launcher object that made it.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import enum
import math
import re
import secrets
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict

import anyio
import anyio.abc

from ..errors import ConfigError, ParaconnectError

__all__ = [
    "DESCRIBE_VERSION",
    "Job",
    "JobState",
    "JobStatus",
    "LaunchSpec",
    "Launcher",
    "run_command",
]

DESCRIBE_VERSION = 1
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The wrapper script's own variables; a spec may not replace them.
_RESERVED_ENV = re.compile(r"_pc_.*|PARACONNECT_JOB_DIR")


class JobState(enum.StrEnum):
    """Where a job stands.  ``completed``, ``failed`` and ``cancelled`` are final."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobStatus:
    """A state, why (one line, safe to show and to store), and the exit code once known."""

    state: JobState
    reason: str = ""
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        return self.state.finished

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "reason": self.reason, "exit_code": self.exit_code}


class JobFields(TypedDict):
    """What every :class:`Job` is made of, whichever launcher made it."""

    id: str
    host: str
    command: Sequence[str]
    name: str
    submitted_at: dt.datetime
    walltime: float | None
    grace: float
    status: JobStatus


@dataclass(frozen=True)
class LaunchSpec:
    """One command to launch.

    - ``argv``: the command and its arguments, never passed through a shell unquoted.
    - ``env``: variables added to the launcher's environment.  They travel in a 0600 file that the
      job removes once read, never on a command line; ``repr`` shows only their names.
    - ``workdir``: where the command runs (on the target host); default: the job's own directory.
    - ``name``: a short label (letters, digits, ``._-``), part of the job's id.
    - ``walltime``: seconds after which the command gets SIGTERM, then SIGKILL ``grace`` seconds
      later; ``None`` for no limit.
    - ``options``: launcher options (for Slurm: partition, ntasks, ...; see each launcher).
    """

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    workdir: str | None = None
    name: str = "job"
    walltime: float | None = None
    grace: float = 10.0
    options: Mapping[str, object] = field(default_factory=dict)

    def job_fields(self, job_id: str, host: str, status: JobStatus) -> JobFields:
        """The common fields of the job that runs this spec, submitted now."""
        return JobFields(
            id=job_id, host=host, command=self.argv, name=self.name, submitted_at=utcnow(),
            walltime=self.walltime, grace=self.grace, status=status,
        )  # fmt: skip

    def __post_init__(self) -> None:
        if isinstance(self.argv, str | bytes):
            raise ConfigError("LaunchSpec.argv must be a list of strings, not one string")
        argv = tuple(self.argv)
        if not argv:
            raise ConfigError("LaunchSpec.argv is empty; give the command to run")
        for arg in argv:
            if not isinstance(arg, str) or "\0" in arg:
                raise ConfigError(f"LaunchSpec.argv holds {arg!r}; every argument must be text")
        if argv[0].startswith("-"):
            raise ConfigError(
                f"LaunchSpec.argv starts with the option {argv[0]!r}; put the program first"
            )
        env = dict(self.env)
        for key, value in env.items():
            if not isinstance(key, str) or not _ENV_RE.fullmatch(key):
                raise ConfigError(
                    f"environment variable name {key!r} is invalid; use letters, digits and _"
                )
            if _RESERVED_ENV.fullmatch(key):
                raise ConfigError(f"environment variable {key} is reserved for the job wrapper")
            if not isinstance(value, str) or "\0" in value:
                raise ConfigError(f"environment variable {key} must be text without NUL bytes")
        if not _NAME_RE.fullmatch(self.name):
            raise ConfigError(
                f"job name {self.name!r} is invalid; use up to 64 letters, digits, '.', '_', '-'"
            )
        if self.walltime is not None and not (0 < self.walltime < math.inf):
            raise ConfigError(f"walltime must be a positive number of seconds, not {self.walltime}")
        if not (0 <= self.grace < math.inf):
            raise ConfigError(
                f"grace must be zero or a positive number of seconds, not {self.grace}"
            )
        if self.workdir is not None and (not self.workdir or "\0" in self.workdir):
            raise ConfigError("workdir must be a non-empty path")
        object.__setattr__(self, "argv", argv)
        object.__setattr__(self, "env", env)
        object.__setattr__(self, "options", dict(self.options))

    def __repr__(self) -> str:
        return (
            f"LaunchSpec(argv={list(self.argv)!r}, env_names={sorted(self.env)!r}, "
            f"workdir={self.workdir!r}, name={self.name!r}, walltime={self.walltime!r}, "
            f"grace={self.grace!r}, options={dict(self.options)!r})"
        )


async def run_command(
    argv: Sequence[str], *, input: bytes | None = None, env: Mapping[str, str] | None = None
) -> tuple[int, bytes, bytes]:
    """Run `argv` to its end: (exit code, stdout, stderr).  A program that exits without
    reading its input (ssh refused) is not an error here; cancelling kills it."""

    async def drain(stream: anyio.abc.ByteReceiveStream | None, sink: list[bytes]) -> None:
        if stream is not None:
            async for chunk in stream:
                sink.append(chunk)

    out: list[bytes] = []
    err: list[bytes] = []
    async with (
        await anyio.open_process(
            list(argv),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        ) as proc,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(drain, proc.stdout, out)
        tg.start_soon(drain, proc.stderr, err)
        if proc.stdin is not None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await proc.stdin.send(input or b"")
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await proc.stdin.aclose()
        await proc.wait()
    return proc.returncode or 0, b"".join(out), b"".join(err)


def new_job_id(name: str) -> str:
    return f"{name}-{secrets.token_hex(5)}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def one_line(text: str, limit: int = 400) -> str:
    """Collapse output into one line for a reason; keep the end, which says the most."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    joined = " | ".join(lines[-5:])
    return joined if len(joined) <= limit else "..." + joined[-limit:]


def root_cause(text: str, limit: int = 240) -> str | None:
    """The error line a program wrote last: paraconnect's own ``paraconnect: error: …`` first,
    else the last line that names an error (a Python exception's last line), so a reason can
    lead with it rather than end with it after a screen of log."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    ours = [ln.removeprefix("paraconnect: error: ") for ln in lines
            if ln.startswith("paraconnect: error: ")]  # fmt: skip
    named = [ln for ln in lines if re.search(r"(?i)\berror\b|^\w+(Error|Exception)\b", ln)]
    found = ours or named
    return found[-1][:limit] if found else None


def exit_reason(code: int) -> str:
    if code > 128 and code - 128 < 65:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        return f"exited with code {code} (killed by {name}?)"
    return f"exited with code {code}"


class Job(abc.ABC):
    """A handle on one launched command.  Cheap to drop: :func:`reattach` makes a new one."""

    launcher: ClassVar[str]

    def __init__(
        self,
        *,
        id: str,
        host: str,
        command: Sequence[str],
        name: str,
        submitted_at: dt.datetime,
        walltime: float | None,
        grace: float,
        status: JobStatus | None = None,
    ) -> None:
        self._id = id
        self._host = host
        self._command = tuple(command)
        self._name = name
        self._submitted_at = submitted_at
        self._walltime = walltime
        self._grace = grace
        self._status = status or JobStatus(JobState.PENDING, "submitted")

    @property
    def id(self) -> str:
        return self._id

    @property
    def host(self) -> str:
        return self._host

    @property
    def command(self) -> tuple[str, ...]:
        return self._command

    @property
    def name(self) -> str:
        return self._name

    @property
    def submitted_at(self) -> dt.datetime:
        return self._submitted_at

    @property
    def last_status(self) -> JobStatus:
        """The status seen by the last :meth:`state` call (or at submit), without asking again."""
        return self._status

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._id} on {self._host}: {self._status.state.value}>"

    async def state(self) -> JobStatus:
        """Ask where the job stands.  Never raises for an unreachable host or scheduler: that is
        state ``unknown`` with the reason; a job already seen finished is not asked again."""
        if self._status.finished:
            return self._status
        try:
            status = await self._poll()
        except ParaconnectError as exc:
            status = JobStatus(JobState.UNKNOWN, str(exc))
        self._status = status
        return status

    async def wait(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - the API others call; applied inside
        *,
        poll: float = 0.2,
    ) -> JobStatus:
        """Poll until the job is finished; raise TimeoutError after `timeout` seconds."""
        with anyio.fail_after(timeout):
            while True:
                status = await self.state()
                if status.finished:
                    return status
                await anyio.sleep(poll)

    @abc.abstractmethod
    async def _poll(self) -> JobStatus: ...

    @abc.abstractmethod
    async def logs(self, tail: int | None = 100) -> str:
        """The last `tail` lines (all with None) of the command's stdout and stderr, interleaved
        as written."""

    @abc.abstractmethod
    async def stop(self, grace: float = 10.0) -> JobStatus:
        """Stop the job: SIGTERM to all its processes, SIGKILL to what is left after `grace`
        seconds.  Returns the final status (``cancelled`` unless it had already finished)."""

    def _options(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        """A JSON-able description, enough for :func:`reattach`; holds no secrets."""
        return {
            "version": DESCRIBE_VERSION,
            "launcher": self.launcher,
            "id": self._id,
            "host": self._host,
            "name": self._name,
            "command": list(self._command),
            "submitted_at": iso(self._submitted_at),
            "walltime": self._walltime,
            "grace": self._grace,
            **self._status.as_dict(),
            "options": self._options(),
        }


class Launcher(abc.ABC):
    """Runs commands somewhere.  Launchers are known by ``name`` through one list,
    ``_launchers.register_launcher``, which :func:`reattach` and the hub read."""

    name: ClassVar[str]

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Launcher:
        """The launcher that ``launcher_options`` (a launch's, by REST, CLI or kernel) ask
        for; by default they are its keyword arguments."""
        try:
            return cls(**options)
        except TypeError as exc:
            raise ConfigError(
                f"the {cls.name} launcher does not take options {sorted(options)}: {exc}"
            ) from None

    @abc.abstractmethod
    async def submit(self, spec: LaunchSpec) -> Job:
        """Start `spec`; return once the job is started (local, ssh) or queued (Slurm)."""

    @classmethod
    @abc.abstractmethod
    def reattach(cls, described: Mapping[str, Any]) -> Job:
        """A live handle on the job that `described` (from :meth:`Job.describe`) names."""


@dataclass(frozen=True)
class Described:
    """The common fields of a description, checked."""

    id: str
    host: str
    name: str
    command: tuple[str, ...]
    submitted_at: dt.datetime
    walltime: float | None
    grace: float
    status: JobStatus
    options: Mapping[str, Any]

    def job_fields(self) -> JobFields:
        """The common fields of the job it describes."""
        return JobFields(
            id=self.id, host=self.host, command=self.command, name=self.name,
            submitted_at=self.submitted_at, walltime=self.walltime, grace=self.grace,
            status=self.status,
        )  # fmt: skip

    @classmethod
    def parse(cls, described: Mapping[str, Any], launcher: str) -> Described:
        def need(
            key: str, kind: type | tuple[type, ...], where: Mapping[str, Any] = described
        ) -> Any:
            value = where.get(key)
            if not isinstance(value, kind):
                raise ConfigError(
                    f"job description for launcher {launcher!r} has no valid {key!r}; "
                    "pass the dict that Job.describe() returned"
                )
            return value

        if described.get("launcher") != launcher:
            raise ConfigError(
                f"job description is for launcher {described.get('launcher')!r}, not {launcher!r}; "
                "use paraconnect.servers.reattach() to pick the launcher"
            )
        if described.get("version") != DESCRIBE_VERSION:
            raise ConfigError(
                f"job description version {described.get('version')!r} is not supported "
                f"(expected {DESCRIBE_VERSION})"
            )
        command = need("command", list)
        if not command or not all(isinstance(a, str) for a in command):
            raise ConfigError(f"job description for launcher {launcher!r} has an invalid command")
        try:
            submitted = dt.datetime.strptime(need("submitted_at", str), "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise ConfigError("job description has an invalid 'submitted_at'") from None
        walltime = described.get("walltime")
        if walltime is not None and not isinstance(walltime, int | float):
            raise ConfigError("job description has an invalid 'walltime'")
        try:
            state = JobState(described.get("state", "unknown"))
        except ValueError:
            state = JobState.UNKNOWN
        exit_code = described.get("exit_code")
        return cls(
            id=need("id", str),
            host=need("host", str),
            name=need("name", str),
            command=tuple(command),
            submitted_at=submitted.replace(tzinfo=dt.UTC),
            walltime=float(walltime) if walltime is not None else None,
            grace=float(need("grace", (int, float))),
            status=JobStatus(
                state,
                str(described.get("reason", "")),
                exit_code if isinstance(exit_code, int) else None,
            ),
            options=need("options", dict),
        )
