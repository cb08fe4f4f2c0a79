"""What every batch-scheduler launcher shares: write the job script, submit it, follow the job
with the scheduler's status command (and its accounting once the queue forgot the job), cancel
it with a grace signal first, read its logs, and re-attach to it from its description.

The job script is the same wrapper as the other launchers' (see ``_posix``) with the scheduler's
header lines on top, so the job records its exit code in its directory: clusters without
accounting still tell how a job ended once the queue has forgotten it.  The job directory must be
visible from the compute node (a shared file system, as on any cluster).

The scheduler's clients run here, or on a login node through ssh (``ssh=SshLauncher(...)``):
every call is a short sh script fed to ``sh -s`` there, so the two cases share one code path and
a state check is one round trip.

A scheduler is a pair of subclasses that give only its words (:class:`Scheduler`), its command
lines and its parse hooks; ``_slurm`` is one.  What a PBS Pro / OpenPBS pair would give, as a
sketch (not shipped: no PBS runs here to test it against)::

    class PbsJob(BatchJob):
        launcher = "pbs"
        scheduler = Scheduler("PBS", "pbs_server", "openpbs-client", "PBS_CONF_FILE", "pbs_conf")
        pending_states = frozenset({"Q", "H", "W", "T", "S"})
        running_states = frozenset({"R", "E", "B"})
        final_states = {"F": ...}                        # qstat -x: finished; exit from files
        def status_argv(self): return ["qstat", "-x", "-f", "-F", "json", self.id]
        def parse_status(self, out): ...                 # job_state, comment, exec_host
        def forgotten(self, out): return "unknown job id" in out.lower()
        def cancel_argv(self, signal):
            return ["qsig", "-s", signal, self.id] if signal else ["qdel", self.id]
        def cancel_ended(self, out): return "job has finished" in out.lower()

    class PbsLauncher(BatchLauncher):
        name, job_class, submit_dir = "pbs", PbsJob, '"$PBS_O_WORKDIR"'
        def header(self, spec): return ["#PBS -N " + spec.name, "#PBS -j oe", "#PBS -o ..."]
        def submit_argv(self): return ["qsub", "job.sh"]
        def parse_submit(self, out): return last_line(out) or None   # "1234.server"
        @classmethod
        def valid_id(cls, job_id): ...
"""

from __future__ import annotations

import abc
import dataclasses
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import anyio

from .._fs import ensure_private_dir
from ..errors import ConfigError, NetworkError
from ..pki import default_home
from ._launch import Described, Job, JobState, JobStatus, Launcher, LaunchSpec, new_job_id
from ._local import LocalShell
from ._posix import (
    Facts,
    Shell,
    classify,
    env_file,
    heredoc,
    local_path,
    logs_script,
    parse_facts,
    shell_path,
    wrapper_script,
)
from ._ssh import SshLauncher, SshShell

__all__ = ["BatchJob", "BatchLauncher", "Clients", "Queued", "Scheduler", "last_line"]

q = shlex.quote
# The sections of our scripts' output, each after a --name-- line.
_MARKERS = ("status", "accounting", "cancel", "submit", "files")
_FILES = (
    '[ -f exit_code ] && echo "exit_code=$(cat exit_code)"\n'
    "[ -f walltime ] && echo walltime=1\n"
    "[ -f stop_requested ] && echo stop_requested=1\n"
    "[ -f started ] && echo started=1\n"
    "echo --tail--\n"
    "tail -n 20 output.log 2>/dev/null\n"
)


def last_line(text: str) -> str:
    """The last non-blank line, stripped: where the clients put their answer or error."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _sections(text: str) -> dict[str, str]:
    """Split output at the marker lines our scripts print (``--status--`` ...).  The files
    section comes last and runs to the end, so a log line can never pose as a marker."""
    parts: dict[str, str] = {}
    current, kept = "", list[str]()
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        name = line.strip()[2:-2] if line.strip().startswith("--") else ""
        if line.strip() == f"--{name}--" and name in _MARKERS and name not in parts:
            parts[current] = "".join(kept)
            current, kept = name, []
            if name == "files":
                parts[name] = "".join(lines[index + 1 :])
                return parts
            continue
        kept.append(line)
    parts[current] = "".join(kept)
    return parts


@dataclass(frozen=True)
class Scheduler:
    """A batch scheduler's words, for reasons and errors."""

    name: str  # "Slurm"
    daemon: str  # "slurmctld": named when its clients get no answer
    package: str  # "slurm-client": named when a client is missing
    conf_var: str  # "SLURM_CONF": the clients' configuration, exported when given
    conf_key: str  # "slurm_conf": that option's name in a launcher's options and description


class Queued(NamedTuple):
    """What the status command says of a job still in the queue."""

    state: str  # the scheduler's state name, upper case
    reason: str  # why it pends (or "")
    nodes: str  # where it runs (or "")
    ends_at: float | None = None  # when the scheduler's time limit ends it (epoch s), if said


class Clients:
    """Runs a scheduler's clients where they are (here or over ssh) with its configuration."""

    def __init__(self, shell: Shell, scheduler: Scheduler, conf: str | None) -> None:
        self.shell = shell
        self.scheduler = scheduler
        self.conf = conf

    def setup(self) -> str:
        if not self.conf:
            return ""
        var = self.scheduler.conf_var
        return f"{var}={shell_path(self.conf)}\nexport {var}\n"

    @staticmethod
    def call(section: str, argv: Sequence[str]) -> str:
        """sh that runs a client and prints ``--section--``, its exit code line, its output."""
        cmd = " ".join(q(arg) for arg in argv)
        return (
            f"echo --{section}--\n"
            f"if command -v {q(argv[0])} >/dev/null 2>&1; then\n"
            f'  _pc_out=$({cmd} 2>&1 </dev/null); echo "rc=$?"\n'
            f"else _pc_out='{argv[0]}: command not found'; echo rc=127; fi\n"
            "printf '%s\\n' \"$_pc_out\"\n"
        )

    @staticmethod
    def result(section: str) -> tuple[int, str]:
        first, _, rest = section.partition("\n")
        code = first.removeprefix("rc=")
        return (int(code) if code.isdigit() else 1), rest

    async def run(self, script: str, doing: str) -> dict[str, str]:
        script = self.setup() + script + "exit 0\n"
        return _sections(await self.shell.run(script, timeout=60.0, doing=doing))

    def unreachable(self, command: str, output: str) -> NetworkError:
        conf = f" ({self.scheduler.conf_var}={self.conf})" if self.conf else ""
        return NetworkError(
            f"{command} on {self.shell.host} failed: {last_line(output) or 'no answer'}; "
            f"is {self.scheduler.daemon} running and reachable{conf}?"
        )

    def missing(self, command: str) -> ConfigError:
        return ConfigError(
            f"{command} is not installed on {self.shell.host}; install "
            f"{self.scheduler.package} there, or launch through a login node of the cluster "
            "(ssh=...)"
        )

    def describe(self) -> dict[str, Any]:
        ssh = self.shell.describe() if isinstance(self.shell, SshShell) else None
        return {self.scheduler.conf_key: self.conf, "ssh": ssh}


class BatchJob(Job):
    """A job in a batch scheduler's queue.  Subclasses give the scheduler's words, its state
    tables, its status/accounting/cancel command lines and the hooks that read their output."""

    scheduler: ClassVar[Scheduler]
    pending_states: ClassVar[frozenset[str]]
    running_states: ClassVar[frozenset[str]]
    # Final states whose meaning the job's own files cannot tell better: (state, reason).
    final_states: ClassVar[Mapping[str, tuple[JobState, str]]]

    def __init__(self, *, clients: Clients, job_dir: str, **common: Any) -> None:
        super().__init__(**common)
        self._clients = clients
        self._dir = job_dir
        # When the scheduler will end the job (its time limit), as its last status said.
        self.ends_at: float | None = None

    # -- what a scheduler gives ------------------------------------------------------------

    @abc.abstractmethod
    def status_argv(self) -> list[str]:
        """The command that tells where the job stands while the scheduler lists it."""

    @abc.abstractmethod
    def parse_status(self, out: str) -> Queued | None:
        """The status command's answer (exit code 0) read; None when it no longer lists it."""

    def forgotten(self, out: str) -> bool:
        """Whether a failed status command says the scheduler no longer knows the job."""
        return False

    def accounting_argv(self) -> list[str] | None:
        """The accounting command (asked once the queue forgot the job); None: there is none."""
        return None

    def parse_accounting(self, rc: int, out: str) -> str | None:
        """The final state from accounting, or None where accounting is off."""
        return None

    @abc.abstractmethod
    def cancel_argv(self, signal: str | None) -> list[str]:
        """Cancel the job (`signal` None), or send `signal` (TERM, KILL) to all of it."""

    def cancel_ended(self, out: str) -> bool:
        """Whether a failed cancel says the job had already ended."""
        return False

    @classmethod
    def valid_id(cls, job_id: str) -> bool:
        """Whether `job_id` looks like one of the scheduler's job ids."""
        return bool(job_id) and not job_id.startswith("-")

    # -- shared ----------------------------------------------------------------------------

    @property
    def job_dir(self) -> str:
        """The job's directory, on the host that runs the scheduler's clients."""
        return self._dir

    def _options(self) -> dict[str, Any]:
        return {"dir": self._dir, **self._clients.describe()}

    def _queued(self, sections: dict[str, str]) -> Queued | None:
        """The status section read, or None when the scheduler forgot the job."""
        argv = self.status_argv()
        rc, out = Clients.result(sections.get("status", ""))
        if rc == 127:
            raise self._clients.missing(argv[0])
        if rc != 0:
            if self.forgotten(out):
                return None
            raise self._clients.unreachable(argv[0], out)
        return self.parse_status(out)

    def _state_script(self, *, files: bool) -> str:
        script = Clients.call("status", self.status_argv())
        if files:
            script += (
                "echo --files--\n"
                f"if cd -- {q(self._dir)} 2>/dev/null; then\n{_FILES}else echo missing=1; fi\n"
            )
        return script

    def _classify_files(self, facts: Facts) -> JobStatus:
        return classify(
            dataclasses.replace(facts, alive=False),
            host=self._host,
            where=self._dir,
            walltime=self._walltime,
            grace=self._grace,
        )

    async def _accounting(self) -> str | None:
        argv = self.accounting_argv()
        if argv is None:
            return None
        sections = await self._clients.run(
            Clients.call("accounting", argv), f"asking {argv[0]} about job {self._id}"
        )
        return self.parse_accounting(*Clients.result(sections.get("accounting", "")))

    async def _poll(self) -> JobStatus:
        words = self.scheduler
        sections = await self._clients.run(
            self._state_script(files=True), f"checking {words.name} job {self._id}"
        )
        queued = self._queued(sections)
        facts = parse_facts(sections.get("files", "missing=1\n"))
        if queued is None:
            state = await self._accounting()
            reason = f"from {(self.accounting_argv() or ['accounting'])[0]}"
            if state is None:
                if facts.exit_code is not None or facts.stop_requested:
                    return self._classify_files(facts)
                return JobStatus(
                    JobState.UNKNOWN,
                    f"{words.name} no longer knows job {self._id}, accounting is off and the job "
                    f"left no exit code in {self._dir}",
                )
        else:
            state, reason, nodes, ends_at = queued
            if ends_at is not None and state in self.running_states:
                self.ends_at = ends_at
            if nodes:
                self._host = nodes
        if state in self.pending_states:
            why = f" ({reason})" if reason and reason != "None" else ""
            return JobStatus(JobState.PENDING, f"pending in {words.name}{why}")
        if state in self.running_states and facts.exit_code is None:
            doing = "stopping" if facts.stop_requested else "running"
            return JobStatus(
                JobState.RUNNING, f"{doing} on {self._host} ({words.name} job {self._id})"
            )
        if facts.exit_code is not None or facts.stop_requested:
            return self._classify_files(facts)
        if state in self.final_states:
            final, why = self.final_states[state]
            return JobStatus(final, why, 0 if final is JobState.COMPLETED else None)
        last = self._classify_files(facts).reason
        return JobStatus(
            JobState.FAILED, f"{words.name} ended the job as {state} ({reason}); {last}"
        )

    async def logs(self, tail: int | None = 100) -> str:
        if tail is not None and tail < 0:
            raise ValueError("tail must be >= 0 or None")
        return await self._clients.shell.run(
            logs_script(self._dir, tail), timeout=60.0, doing=f"reading the logs of {self._id}"
        )

    async def _active(self) -> bool:
        try:
            sections = await self._clients.run(
                self._state_script(files=False), f"polling {self.status_argv()[0]}"
            )
            queued = self._queued(sections)
        except NetworkError:
            return True
        return queued is not None and queued.state in self.pending_states | self.running_states

    async def _until_inactive(self, seconds: float) -> bool:
        with anyio.move_on_after(seconds):
            while await self._active():  # noqa: ASYNC110 - polling the scheduler
                await anyio.sleep(0.2)
            return True
        return False

    async def _cancel(self, signal: str | None = None, *, mark: bool = False) -> None:
        script = ""
        if mark:
            # Said before signalling, so that the job's end reads "stopped on request".
            script = (
                f"if cd -- {q(self._dir)} 2>/dev/null; then "
                "[ -f exit_code ] || date +%s >stop_requested; cd /; fi\n"
            )
        argv = self.cancel_argv(signal)
        script += Clients.call("cancel", argv)
        sections = await self._clients.run(
            script, f"cancelling {self.scheduler.name} job {self._id}"
        )
        rc, out = Clients.result(sections.get("cancel", ""))
        if rc == 127:
            raise self._clients.missing(argv[0])
        if rc != 0 and not self.cancel_ended(out):
            raise self._clients.unreachable(argv[0], out)

    async def stop(self, grace: float = 10.0) -> JobStatus:
        if not (0 <= grace < math.inf):
            raise ValueError("grace must be a non-negative number of seconds")
        if self._status.finished:
            return self._status
        status = await self.state()
        if status.finished:
            return status
        if status.state is JobState.PENDING:
            await self._cancel(mark=True)
        else:
            # TERM to the batch script (which passes it on) and to every step; KILL after grace.
            await self._cancel("TERM", mark=True)
            if not await self._until_inactive(grace):
                await self._cancel("KILL")
                await self._cancel()
        await self._until_inactive(30.0)
        self._status = await self._poll()
        return self._status


class BatchLauncher(Launcher):
    """Submit commands to a batch scheduler.  Subclasses give the job class, the header lines
    for a spec, the submit command and the hook that reads the job id from its answer.

    `job_root` must be on a file system the compute nodes share (default
    ``$PARACONNECT_HOME/<name>-jobs`` here, ``~/.paraconnect/<name>-jobs`` on an ssh login
    node).  `conf` sets the scheduler's configuration variable for its clients.  With `ssh`, the
    clients run on that host (a login node), and every path is a path there.
    """

    job_class: ClassVar[type[BatchJob]]
    submit_dir: ClassVar[str]  # sh expression of the job's directory inside the batch script

    def __init__(
        self,
        job_root: Path | str | None = None,
        *,
        conf: Path | str | None = None,
        ssh: SshLauncher | None = None,
    ) -> None:
        self._remote = ssh is not None
        if ssh is None:
            root = Path(job_root) if job_root is not None else default_home() / self._root_name
            self._root = str(root.expanduser().absolute())
            shell: Shell = LocalShell()
        else:
            self._root = (
                str(job_root) if job_root is not None else f"~/.paraconnect/{self._root_name}"
            )
            shell = ssh.shell
        if "\n" in self._root or "\0" in self._root:
            raise ConfigError(f"job_root {self._root!r} is invalid")
        self._clients = Clients(
            shell, self.job_class.scheduler, str(conf) if conf is not None else None
        )

    @property
    def _root_name(self) -> str:
        return f"{self.name}-jobs"

    # -- what a scheduler gives ------------------------------------------------------------

    @abc.abstractmethod
    def header(self, spec: LaunchSpec) -> list[str]:
        """The scheduler's directive lines (``#SBATCH ...``) for `spec`."""

    def prefix(self, spec: LaunchSpec) -> list[str]:
        """What goes before the command in the script (``srun``), if anything."""
        return []

    @abc.abstractmethod
    def submit_argv(self) -> list[str]:
        """The submit command, run in the job's directory, where the script is ``job.sh``."""

    @abc.abstractmethod
    def parse_submit(self, out: str) -> str | None:
        """The job id from the submit command's answer (exit code 0); None if there is none."""

    def submit_error(self, rc: int, out: str, name: str) -> Exception:
        """The error for a refused submission of job `name`."""
        command = self.submit_argv()[0]
        if rc == 127:
            return self._clients.missing(command)
        return ConfigError(f"{command} refused job {name}: {last_line(out) or 'no message'}")

    # -- shared ----------------------------------------------------------------------------

    def script(self, spec: LaunchSpec) -> str:
        """The batch script that :meth:`submit` would write for `spec`."""
        return wrapper_script(
            argv=spec.argv,
            workdir=spec.workdir if self._remote else local_path(spec.workdir),
            walltime=spec.walltime,
            grace=spec.grace,
            job_dir=self.submit_dir,
            header=self.header(spec),
            prefix=self.prefix(spec),
            session=False,
        )

    async def submit(self, spec: LaunchSpec) -> Job:
        script = self.script(spec)
        if not self._remote:
            ensure_private_dir(Path(self._root))
        job_id = new_job_id(spec.name)
        setup = (
            "set -e\n"
            "umask 077\n"
            f"_pc_base={shell_path(self._root)}\n"
            'mkdir -p -- "$_pc_base"\n'
            f'mkdir -- "$_pc_base"/{q(job_id)}\n'
            f'cd -- "$_pc_base"/{q(job_id)}\n'
            + heredoc("job.sh", script)
            + (heredoc("env.sh", env_file(spec.env)) if spec.env else "")
            + "chmod 700 job.sh\n"
            'echo "dir=$(pwd -P)"\n'
            "set +e\n" + Clients.call("submit", self.submit_argv())
        )
        sections = await self._clients.run(setup, f"submitting job {job_id}")
        job_dir = last_line(sections.get("", "")).removeprefix("dir=")
        rc, out = Clients.result(sections.get("submit", ""))
        if rc != 0:
            raise self.submit_error(rc, out, spec.name)
        queued_id = self.parse_submit(out)
        if (
            queued_id is None
            or not self.job_class.valid_id(queued_id)
            or not job_dir.startswith("/")
        ):
            raise ConfigError(f"{self.submit_argv()[0]} answered {out.strip()!r}, not a job id")
        words = self.job_class.scheduler
        return self.job_class(
            clients=self._clients,
            job_dir=job_dir,
            **spec.job_fields(
                queued_id,
                self.name,
                JobStatus(JobState.PENDING, f"submitted to {words.name} as job {queued_id}"),
            ),
        )

    @classmethod
    def reattach(cls, described: Mapping[str, Any]) -> Job:
        d = Described.parse(described, cls.name)
        conf_key = cls.job_class.scheduler.conf_key
        job_dir, conf, ssh = (d.options.get(k) for k in ("dir", conf_key, "ssh"))
        what = f"job description for launcher {cls.name!r}"
        if not isinstance(job_dir, str) or not job_dir.startswith("/"):
            raise ConfigError(f"{what} has no valid options.dir")
        if conf is not None and not isinstance(conf, str):
            raise ConfigError(f"{what} has an invalid {conf_key}")
        if ssh is not None and not isinstance(ssh, Mapping):
            raise ConfigError(f"{what} has invalid ssh options")
        if not cls.job_class.valid_id(d.id):
            raise ConfigError(f"{what} has job id {d.id!r}")
        shell: Shell = LocalShell() if ssh is None else SshShell.from_description(ssh)
        return cls.job_class(
            clients=Clients(shell, cls.job_class.scheduler, conf),
            job_dir=job_dir,
            **d.job_fields(),
        )
