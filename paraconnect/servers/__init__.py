"""Launchers: run a command line (the paraconnect agent, or anything) on this host, over ssh or
under Slurm; follow its state, read its logs, stop it, and re-attach after a restart.

::

    from paraconnect.servers import LaunchSpec, SlurmLauncher, reattach

    launcher = SlurmLauncher(options={"partition": "gpu", "gpus": 1})
    job = await launcher.submit(LaunchSpec(["paraconnect", "serve", ...], env={"TOKEN": t},
                                           walltime=3600, name="pv"))
    status = await job.state()          # JobStatus(state=JobState.PENDING, reason=..., ...)
    text = await job.logs(tail=50)      # the command's stdout and stderr
    saved = job.describe()              # JSON-able; keep it in the registry
    job = reattach(saved)               # ... after a restart
    await job.stop(grace=10)            # SIGTERM, SIGKILL after 10 s (scancel for Slurm)

Server kinds (``build_kind``: pvserver, builtin, command), the supervisor (one state machine per
server, events with reasons, restart policy, wall time, stop) and its SQLite registry, and
enrolment (``enroll`` / ``EnrollServer``: an agent's key never leaves its host) live here too;
the hub (``paraconnect.hub``) ties them to the tunnel.

A new launcher is its module and one ``register_launcher`` line (``_launchers``); a batch
scheduler's launcher subclasses ``BatchLauncher``/``BatchJob`` (``_batch``) as Slurm's does.

Every launcher runs the command under the same small sh wrapper (see ``_posix``), which records
its exit code in the job's 0700 directory, enforces the wall-time limit with ``timeout``, and
takes what the command left behind with it when it ends.
"""

from ._batch import BatchJob, BatchLauncher, Queued, Scheduler
from ._enroll import (
    DEFAULT_TOKEN_TTL,
    HUB_IDENTITY,
    REPORT_FILE,
    EnrollServer,
    enroll,
    issue_token,
    report_unreachable,
    retire,
)
from ._kinds import KINDS, ServerKind, build_kind
from ._kinds_options import COMMON_OPTIONS, KIND_OPTIONS, KindOption, kind_descriptions
from ._kinds_tie import pump_both
from ._launch import Job, JobState, JobStatus, Launcher, LaunchSpec
from ._launchers import (
    LauncherEntry,
    LauncherOption,
    launcher_class,
    launcher_entries,
    launcher_entry,
    make_launcher,
    reattach,
    register_launcher,
    unregister_launcher,
)
from ._lifetime import DEFAULT_CERT_LIFETIME, cert_lifetime_days
from ._local import LocalJob, LocalLauncher
from ._registry import FINAL_STATES, ServerRecord, ServerRegistry, ServerState
from ._renewal import Renewed, certify_renewal
from ._slurm import SlurmJob, SlurmLauncher
from ._slurm_options import SlurmOptions
from ._ssh import SshJob, SshLauncher
from ._supervisor import RestartPolicy, ServerEvent, Supervisor

__all__ = [
    "COMMON_OPTIONS",
    "DEFAULT_CERT_LIFETIME",
    "DEFAULT_TOKEN_TTL",
    "FINAL_STATES",
    "HUB_IDENTITY",
    "KINDS",
    "KIND_OPTIONS",
    "REPORT_FILE",
    "BatchJob",
    "BatchLauncher",
    "EnrollServer",
    "Job",
    "JobState",
    "JobStatus",
    "KindOption",
    "LaunchSpec",
    "Launcher",
    "LauncherEntry",
    "LauncherOption",
    "LocalJob",
    "LocalLauncher",
    "Queued",
    "Renewed",
    "RestartPolicy",
    "Scheduler",
    "ServerEvent",
    "ServerKind",
    "ServerRecord",
    "ServerRegistry",
    "ServerState",
    "SlurmJob",
    "SlurmLauncher",
    "SlurmOptions",
    "SshJob",
    "SshLauncher",
    "Supervisor",
    "build_kind",
    "cert_lifetime_days",
    "certify_renewal",
    "enroll",
    "issue_token",
    "kind_descriptions",
    "launcher_class",
    "launcher_entries",
    "launcher_entry",
    "make_launcher",
    "pump_both",
    "reattach",
    "register_launcher",
    "report_unreachable",
    "retire",
    "unregister_launcher",
]
