"""The Slurm launcher: ``sbatch`` of a generated job script, followed with squeue/sacct.

The job script is the same wrapper as the other launchers' (see ``_posix``) with ``#SBATCH``
lines on top, so the job records its exit code in its directory: clusters without accounting
(``sacct`` disabled) still tell how a job ended once ``squeue`` has forgotten it.  The job
directory must be visible from the compute node (a shared file system, as on any cluster).

The Slurm clients run here, or on a login node through ssh (``ssh=SshLauncher(...)``): every
call is a short sh script fed to ``sh -s`` there, so the two cases share one code path and a
state check is one round trip.

Wall time: the wrapper enforces the spec's ``walltime`` to the second with ``timeout``; the
``#SBATCH --time`` it asks for (unless given) is that plus the grace, rounded up to minutes, plus
one minute, as Slurm's own backstop.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
from ._slurm_options import SlurmOptions
from ._ssh import SshLauncher, SshShell

__all__ = ["SlurmJob", "SlurmLauncher"]

q = shlex.quote
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING"}
_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
_ACTIVE = _PENDING | _RUNNING
_MARKERS = ("squeue", "sacct", "scancel", "sbatch", "files")
_FILES = (
    '[ -f exit_code ] && echo "exit_code=$(cat exit_code)"\n'
    "[ -f walltime ] && echo walltime=1\n"
    "[ -f stop_requested ] && echo stop_requested=1\n"
    "[ -f started ] && echo started=1\n"
    "echo --tail--\n"
    "tail -n 20 output.log 2>/dev/null\n"
)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _sections(text: str) -> dict[str, str]:
    """Split output at the marker lines our scripts print (``--squeue--`` ...).  The files
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


class _Slurm:
    """Runs Slurm's clients where they are (here or over ssh) with the right SLURM_CONF."""

    def __init__(self, shell: Shell, slurm_conf: str | None) -> None:
        self.shell = shell
        self.slurm_conf = slurm_conf

    def setup(self) -> str:
        if not self.slurm_conf:
            return ""
        return f"SLURM_CONF={shell_path(self.slurm_conf)}\nexport SLURM_CONF\n"

    @staticmethod
    def call(name: str, *argv: str) -> str:
        """sh that runs a client and prints ``--name--``, its exit code line, and its output."""
        cmd = " ".join(q(arg) for arg in argv)
        return (
            f"echo --{name}--\n"
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
        conf = f" (SLURM_CONF={self.slurm_conf})" if self.slurm_conf else ""
        return NetworkError(
            f"{command} on {self.shell.host} failed: {_last_line(output) or 'no answer'}; "
            f"is slurmctld running and reachable{conf}?"
        )

    def missing(self, command: str) -> ConfigError:
        return ConfigError(
            f"{command} is not installed on {self.shell.host}; install slurm-client there, or "
            "launch through a login node of the cluster (ssh=...)"
        )

    def describe(self) -> dict[str, Any]:
        ssh = self.shell.describe() if isinstance(self.shell, SshShell) else None
        return {"slurm_conf": self.slurm_conf, "ssh": ssh}


def _sbatch_error(rc: int, output: str, slurm: _Slurm, name: str) -> Exception:
    if rc == 127:
        return slurm.missing("sbatch")
    last = _last_line(output) or "no message"
    lowered = output.lower()
    if "unable to contact slurm controller" in lowered or "socket timed out" in lowered:
        return slurm.unreachable("sbatch", output)
    hints = (
        ("invalid partition", "check the partition option ('sinfo -s' lists partitions)"),
        ("invalid account", "check the account option ('sacctmgr show assoc user=$USER')"),
        ("time limit", "check the time option against the partition's limit ('sinfo -s')"),
        ("generic resource", "check the gpus option: the partition may have no GPUs"),
        ("node configuration is not available", "ask for fewer nodes, tasks or GPUs"),
    )
    for needle, hint in hints:
        if needle in lowered:
            return ConfigError(f"sbatch refused job {name}: {last}; {hint}")
    return ConfigError(f"sbatch refused job {name}: {last}")


class SlurmJob(Job):
    launcher = "slurm"

    def __init__(self, *, slurm: _Slurm, job_dir: str, **common: Any) -> None:
        super().__init__(**common)
        self._slurm = slurm
        self._dir = job_dir

    @property
    def job_dir(self) -> str:
        """The job's directory, on the host that runs the Slurm clients."""
        return self._dir

    def _options(self) -> dict[str, Any]:
        return {"dir": self._dir, **self._slurm.describe()}

    def _squeue(self, sections: dict[str, str]) -> tuple[str, str, str] | None:
        """(state, reason, nodes) from squeue's section, or None when Slurm forgot the job."""
        rc, out = _Slurm.result(sections.get("squeue", ""))
        if rc == 127:
            raise self._slurm.missing("squeue")
        if rc != 0:
            if "invalid job id" in out.lower():
                return None
            raise self._slurm.unreachable("squeue", out)
        line = _last_line(out)
        if not line:
            return None
        state, _, rest = line.partition("|")
        reason, _, nodes = rest.partition("|")
        return state.strip().upper(), reason.strip(), nodes.strip()

    def _state_script(self, *, files: bool) -> str:
        script = _Slurm.call(
            "squeue", "squeue", "-h", "-t", "all", "-j", self._id, "-o", "%T|%r|%N"
        )
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

    async def _sacct(self) -> str | None:
        """The job's state from accounting, or None where accounting is off."""
        sections = await self._slurm.run(
            _Slurm.call("sacct", "sacct", "-n", "-P", "-X", "-j", self._id, "-o", "State"),
            f"asking sacct about job {self._id}",
        )
        rc, out = _Slurm.result(sections.get("sacct", ""))
        line = _last_line(out)
        if rc != 0 or not line or "disabled" in out.lower():
            return None
        return line.split()[0].upper()

    async def _poll(self) -> JobStatus:
        sections = await self._slurm.run(
            self._state_script(files=True), f"checking Slurm job {self._id}"
        )
        queued = self._squeue(sections)
        facts = parse_facts(sections.get("files", "missing=1\n"))
        if queued is None:
            state = await self._sacct()
            reason = "from sacct"
            if state is None:
                if facts.exit_code is not None or facts.stop_requested:
                    return self._classify_files(facts)
                return JobStatus(
                    JobState.UNKNOWN,
                    f"Slurm no longer knows job {self._id}, accounting is off and the job left "
                    f"no exit code in {self._dir}",
                )
        else:
            state, reason, nodes = queued
            if nodes and nodes not in ("(null)", "n/a"):
                self._host = nodes
        if state in _PENDING:
            why = f" ({reason})" if reason and reason != "None" else ""
            return JobStatus(JobState.PENDING, f"pending in Slurm{why}")
        if state in _RUNNING and facts.exit_code is None:
            doing = "stopping" if facts.stop_requested else "running"
            return JobStatus(JobState.RUNNING, f"{doing} on {self._host} (Slurm job {self._id})")
        if facts.exit_code is not None or facts.stop_requested:
            return self._classify_files(facts)
        if state == "CANCELLED":
            return JobStatus(JobState.CANCELLED, "cancelled in Slurm (scancel)")
        if state == "COMPLETED":
            return JobStatus(JobState.COMPLETED, "completed in Slurm", 0)
        if state == "TIMEOUT":
            return JobStatus(JobState.FAILED, "Slurm's time limit (--time) ended the job")
        last = self._classify_files(facts).reason
        return JobStatus(JobState.FAILED, f"Slurm ended the job as {state} ({reason}); {last}")

    async def logs(self, tail: int | None = 100) -> str:
        if tail is not None and tail < 0:
            raise ValueError("tail must be >= 0 or None")
        return await self._slurm.shell.run(
            logs_script(self._dir, tail), timeout=60.0, doing=f"reading the logs of {self._id}"
        )

    async def _active(self) -> bool:
        try:
            sections = await self._slurm.run(self._state_script(files=False), "polling squeue")
            queued = self._squeue(sections)
        except NetworkError:
            return True
        return queued is not None and queued[0] in _ACTIVE

    async def _until_inactive(self, seconds: float) -> bool:
        with anyio.move_on_after(seconds):
            while await self._active():  # noqa: ASYNC110 - polling Slurm
                await anyio.sleep(0.2)
            return True
        return False

    async def _scancel(self, *options: str, mark: bool = False) -> None:
        script = ""
        if mark:
            # Said before signalling, so that the job's end reads "stopped on request".
            script = (
                f"if cd -- {q(self._dir)} 2>/dev/null; then "
                "[ -f exit_code ] || date +%s >stop_requested; cd /; fi\n"
            )
        script += _Slurm.call("scancel", "scancel", *options, self._id)
        sections = await self._slurm.run(script, f"cancelling Slurm job {self._id}")
        rc, out = _Slurm.result(sections.get("scancel", ""))
        if rc == 127:
            raise self._slurm.missing("scancel")
        lowered = out.lower()
        ended = "already completing or completed" in lowered or "invalid job id" in lowered
        if rc != 0 and not ended:
            raise self._slurm.unreachable("scancel", out)

    async def stop(self, grace: float = 10.0) -> JobStatus:
        if not (0 <= grace < math.inf):
            raise ValueError("grace must be a non-negative number of seconds")
        if self._status.finished:
            return self._status
        status = await self.state()
        if status.finished:
            return status
        if status.state is JobState.PENDING:
            await self._scancel(mark=True)
        else:
            # TERM to the batch script (which passes it on) and to every step; KILL after grace.
            await self._scancel("--signal=TERM", "--full", mark=True)
            if not await self._until_inactive(grace):
                await self._scancel("--signal=KILL", "--full")
                await self._scancel()
        await self._until_inactive(30.0)
        self._status = await self._poll()
        return self._status


class SlurmLauncher(Launcher):
    """Submit commands to Slurm with ``sbatch``.

    `job_root` must be on a file system the compute nodes share (default
    ``$PARACONNECT_HOME/slurm-jobs`` here, ``~/.paraconnect/slurm-jobs`` on an ssh login node).
    `options` are the defaults for every job; a spec's ``options`` override them (same keys as
    :class:`SlurmOptions`).  `slurm_conf` sets ``SLURM_CONF`` for the clients.  With `ssh`, the
    clients run on that host (a login node), and every path is a path there.
    """

    name = "slurm"

    def __init__(
        self,
        job_root: Path | str | None = None,
        options: SlurmOptions | Mapping[str, object] | None = None,
        *,
        slurm_conf: Path | str | None = None,
        ssh: SshLauncher | None = None,
    ) -> None:
        if options is None:
            options = SlurmOptions()
        elif not isinstance(options, SlurmOptions):
            options = SlurmOptions.from_mapping(options)
        self._options = options
        self._remote = ssh is not None
        if ssh is None:
            root = Path(job_root) if job_root is not None else default_home() / "slurm-jobs"
            self._root = str(root.expanduser().absolute())
            shell: Shell = LocalShell()
        else:
            self._root = str(job_root) if job_root is not None else "~/.paraconnect/slurm-jobs"
            shell = ssh.shell
        if "\n" in self._root or "\0" in self._root:
            raise ConfigError(f"job_root {self._root!r} is invalid")
        self._slurm = _Slurm(shell, str(slurm_conf) if slurm_conf is not None else None)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SlurmLauncher:
        """``job_root`` and ``slurm_conf``; every other key is a :class:`SlurmOptions` one."""
        opts = dict(options)
        job_root, conf = opts.pop("job_root", None), opts.pop("slurm_conf", None)
        return cls(job_root, opts or None, slurm_conf=conf)

    def script(self, spec: LaunchSpec) -> str:
        """The batch script that :meth:`submit` would write for `spec`."""
        options = self._options.merged(spec.options)
        prefix: list[str] = []
        if options.uses_srun:
            prefix = ["srun", "--kill-on-bad-exit=1"]
            if options.mpi:
                prefix.append(f"--mpi={options.mpi}")
        return wrapper_script(
            argv=spec.argv,
            workdir=spec.workdir if self._remote else local_path(spec.workdir),
            walltime=spec.walltime,
            grace=spec.grace,
            job_dir='"$SLURM_SUBMIT_DIR"',
            header=options.sbatch_lines(name=spec.name, walltime=spec.walltime, grace=spec.grace),
            prefix=prefix,
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
            "set +e\n" + _Slurm.call("sbatch", "sbatch", "--parsable", "job.sh")
        )
        sections = await self._slurm.run(setup, f"submitting job {job_id}")
        job_dir = _last_line(sections.get("", "")).removeprefix("dir=")
        rc, out = _Slurm.result(sections.get("sbatch", ""))
        if rc != 0:
            raise _sbatch_error(rc, out, self._slurm, spec.name)
        slurm_id = _last_line(out).split(";")[0].strip()
        if not slurm_id.isdigit() or not job_dir.startswith("/"):
            raise ConfigError(f"sbatch answered {out.strip()!r}, not a job id")
        return SlurmJob(
            slurm=self._slurm,
            job_dir=job_dir,
            **spec.job_fields(
                slurm_id,
                "slurm",
                JobStatus(JobState.PENDING, f"submitted to Slurm as job {slurm_id}"),
            ),
        )

    @classmethod
    def reattach(cls, described: Mapping[str, Any]) -> Job:
        d = Described.parse(described, cls.name)
        job_dir, conf, ssh = (d.options.get(k) for k in ("dir", "slurm_conf", "ssh"))
        if not isinstance(job_dir, str) or not job_dir.startswith("/"):
            raise ConfigError("job description for launcher 'slurm' has no valid options.dir")
        if conf is not None and not isinstance(conf, str):
            raise ConfigError("job description for launcher 'slurm' has an invalid slurm_conf")
        if ssh is not None and not isinstance(ssh, Mapping):
            raise ConfigError("job description for launcher 'slurm' has invalid ssh options")
        if not d.id.isdigit():
            raise ConfigError(f"job description for launcher 'slurm' has job id {d.id!r}")
        shell: Shell = LocalShell() if ssh is None else SshShell.from_description(ssh)
        return SlurmJob(
            slurm=_Slurm(shell, conf),
            job_dir=job_dir,
            **d.job_fields(),
        )
