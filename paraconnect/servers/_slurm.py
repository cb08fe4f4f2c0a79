"""The Slurm launcher: ``sbatch`` of a generated job script, followed with squeue/sacct.

A :class:`BatchLauncher` (see ``_batch``): this module gives only Slurm's command lines, its
``#SBATCH`` lines, its state names and how to read its clients' answers.  The job script runs
in the submit directory (``$SLURM_SUBMIT_DIR``), the job's own directory.

Wall time: the wrapper enforces the spec's ``walltime`` to the second with ``timeout``; the
``#SBATCH --time`` it asks for (unless given) is that plus the grace, rounded up to minutes, plus
one minute, as Slurm's own backstop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ConfigError
from ._batch import BatchJob, BatchLauncher, Queued, Scheduler, last_line
from ._launch import JobState, LaunchSpec
from ._slurm_options import SlurmOptions
from ._ssh import SshLauncher

__all__ = ["SlurmJob", "SlurmLauncher"]

SLURM = Scheduler("Slurm", "slurmctld", "slurm-client", "SLURM_CONF", "slurm_conf")


class SlurmJob(BatchJob):
    launcher = "slurm"
    scheduler = SLURM
    pending_states = frozenset(
        {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING"}
    )
    running_states = frozenset(
        {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
    )
    final_states: ClassVar[Mapping[str, tuple[JobState, str]]] = {
        "CANCELLED": (JobState.CANCELLED, "cancelled in Slurm (scancel)"),
        "COMPLETED": (JobState.COMPLETED, "completed in Slurm"),
        "TIMEOUT": (JobState.FAILED, "Slurm's time limit (--time) ended the job"),
    }

    def status_argv(self) -> list[str]:
        return ["squeue", "-h", "-t", "all", "-j", self._id, "-o", "%T|%r|%N|%e|%S"]

    def parse_status(self, out: str) -> Queued | None:
        """``STATE|REASON|NODES|END|START`` (squeue -o %T|%r|%N|%e|%S); nothing once squeue
        forgot the job.  END is when Slurm's time limit ends a running job (local time, as
        squeue prints); the wrapper's own wall time (start + walltime) ends it sooner."""
        line = last_line(out)
        if not line:
            return None
        state, _, rest = line.partition("|")
        reason, _, rest = rest.partition("|")
        nodes, _, rest = rest.partition("|")
        end_text, _, start_text = rest.partition("|")
        nodes = nodes.strip()
        end, start = _end_time(end_text.strip()), _end_time(start_text.strip())
        if self._walltime and start is not None:
            end = min(end if end is not None else math.inf, start + self._walltime)
        return Queued(
            state.strip().upper(), reason.strip(), "" if nodes in ("(null)", "n/a") else nodes,
            end,
        )  # fmt: skip

    def forgotten(self, out: str) -> bool:
        return "invalid job id" in out.lower()

    def accounting_argv(self) -> list[str]:
        return ["sacct", "-n", "-P", "-X", "-j", self._id, "-o", "State"]

    def parse_accounting(self, rc: int, out: str) -> str | None:
        """sacct's State (``CANCELLED by 0`` reads CANCELLED); None where accounting is off."""
        line = last_line(out)
        if rc != 0 or not line or "disabled" in out.lower():
            return None
        return line.split()[0].upper()

    def cancel_argv(self, signal: str | None) -> list[str]:
        # --full: the batch script too, not only its steps.
        options = [] if signal is None else [f"--signal={signal}", "--full"]
        return ["scancel", *options, self._id]

    def cancel_ended(self, out: str) -> bool:
        lowered = out.lower()
        return "already completing or completed" in lowered or "invalid job id" in lowered

    @classmethod
    def valid_id(cls, job_id: str) -> bool:
        return job_id.isdigit()


class SlurmLauncher(BatchLauncher):
    """Submit commands to Slurm with ``sbatch``.

    `job_root` must be on a file system the compute nodes share (default
    ``$PARACONNECT_HOME/slurm-jobs`` here, ``~/.paraconnect/slurm-jobs`` on an ssh login node).
    `options` are the defaults for every job; a spec's ``options`` override them (same keys as
    :class:`SlurmOptions`).  `slurm_conf` sets ``SLURM_CONF`` for the clients.  With `ssh`, the
    clients run on that host (a login node), and every path is a path there.
    """

    name = "slurm"
    job_class = SlurmJob
    submit_dir = '"$SLURM_SUBMIT_DIR"'

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
        super().__init__(job_root, conf=slurm_conf, ssh=ssh)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SlurmLauncher:
        """``job_root`` and ``slurm_conf``; every other key is a :class:`SlurmOptions` one."""
        opts = dict(options)
        job_root, conf = opts.pop("job_root", None), opts.pop("slurm_conf", None)
        return cls(job_root, opts or None, slurm_conf=conf)

    def header(self, spec: LaunchSpec) -> list[str]:
        options = self._options.merged(spec.options)
        return options.sbatch_lines(name=spec.name, walltime=spec.walltime, grace=spec.grace)

    def prefix(self, spec: LaunchSpec) -> list[str]:
        options = self._options.merged(spec.options)
        if not options.uses_srun:
            return []
        prefix = ["srun", "--kill-on-bad-exit=1"]
        if options.mpi:
            prefix.append(f"--mpi={options.mpi}")
        return prefix

    def submit_argv(self) -> list[str]:
        return ["sbatch", "--parsable", "job.sh"]

    def parse_submit(self, out: str) -> str | None:
        """``JOBID`` or ``JOBID;CLUSTER`` (sbatch --parsable)."""
        return last_line(out).split(";")[0].strip() or None

    def submit_error(self, rc: int, out: str, name: str) -> Exception:
        if rc == 127:
            return self._clients.missing("sbatch")
        last = last_line(out) or "no message"
        lowered = out.lower()
        if "unable to contact slurm controller" in lowered or "socket timed out" in lowered:
            return self._clients.unreachable("sbatch", out)
        for needle, hint in _HINTS:
            if needle in lowered:
                return ConfigError(f"sbatch refused job {name}: {last}; {hint}")
        return ConfigError(f"sbatch refused job {name}: {last}")


def _end_time(text: str) -> float | None:
    """squeue's %e (``2026-12-06T10:12:33``, local time) as epoch seconds; None for the words
    it prints when there is no end (``Unknown``, ``N/A``, ``NONE``)."""
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


_HINTS = (
    ("invalid partition", "check the partition option ('sinfo -s' lists partitions)"),
    ("invalid account", "check the account option ('sacctmgr show assoc user=$USER')"),
    ("time limit", "check the time option against the partition's limit ('sinfo -s')"),
    ("generic resource", "check the gpus option: the partition may have no GPUs"),
    ("node configuration is not available", "ask for fewer nodes, tasks or GPUs"),
)
