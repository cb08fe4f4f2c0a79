"""The job wrapper and the small POSIX sh scripts that watch, read and stop it.

The same scripts serve the local and the ssh launcher (run by ``sh -s`` here, or by ``ssh host
sh -s`` there) and, for the wrapper, Slurm: one implementation of "run it, record how it ended,
find what is left of it, stop it", tested through every launcher.

Layout of a job directory (0700)::

    job.sh       the wrapper (the Slurm batch script, with #SBATCH lines, for Slurm)
    env.sh       0600, the spec's environment; the wrapper reads then removes it
    output.log   the command's stdout and stderr, interleaved
    pid          the wrapper's pid (a session leader for local and ssh)
    boot_id      the host's boot id when the wrapper started
    started, ended           seconds since the epoch
    exit_code    written atomically when the command returns
    walltime     present when the wall-time limit ended the command
    stop_requested           present when paraconnect asked the job to stop
    inner_pid    the command's pid (timeout's, when a wall-time limit applies)

The wrapper starts the command in the background and waits for it, passing a SIGTERM on, so that
a command that shuts down gracefully still gets its exit code recorded.  A POSIX sh starts
background commands with SIGINT and SIGQUIT ignored: stop jobs with SIGTERM (as paraconnect and
Slurm do), not SIGINT.

A job is "alive" while any non-zombie process of its session remains (the wrapper runs under
``setsid``), so a command that outlives a killed wrapper still counts, and a zombie left to a
non-reaping init does not.  A pid reused by someone else is recognised: the session leader must
be our wrapper (its command line names this job's ``job.sh``).
"""

from __future__ import annotations

import abc
import math
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._launch import Job, JobState, JobStatus, exit_reason, one_line, root_cause

__all__ = [
    "Facts",
    "Shell",
    "ShellJob",
    "classify",
    "env_file",
    "heredoc",
    "local_path",
    "parse_facts",
    "shell_options",
    "shell_path",
    "wrapper_script",
]

q = shlex.quote


def shell_path(path: str) -> str:
    """Quote a path for sh on the job's host: ``~`` and relative paths are from ``$HOME``."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + q(path[2:])
    if not path.startswith("/"):
        return '"$HOME"/' + q(path)
    return q(path)


def local_path(path: str | None) -> str | None:
    """A working directory on this host: ``~`` expanded, relative to the current directory."""
    if path is None:
        return None
    return str(Path(path).expanduser().absolute())


def _duration(seconds: float) -> str:
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def env_file(env: Mapping[str, str]) -> str:
    return "".join(f"export {key}={q(value)}\n" for key, value in sorted(env.items()))


def heredoc(name: str, content: str) -> str:
    """sh that writes `content` verbatim to the file `name` in the current directory, from the
    script itself (so from stdin, never a command line), atomically (temp file, then mv)."""
    while True:
        tag = f"PARACONNECT_EOF_{secrets.token_hex(8)}"
        if tag not in content:
            break
    if not content.endswith("\n"):
        content += "\n"
    temp, target = q(f".{name}.tmp"), q(name)
    return f"cat >{temp} <<'{tag}'\n{content}{tag}\nmv -f {temp} {target}\n"


def wrapper_script(
    *,
    argv: Sequence[str],
    workdir: str | None,
    walltime: float | None,
    grace: float,
    job_dir: str = '"$1"',
    header: Sequence[str] = (),
    prefix: Sequence[str] = (),
    session: bool = True,
) -> str:
    """The sh script that runs one command and records how it ended.

    `job_dir` is the sh expression of the job's directory: by default the wrapper's first
    argument; ``"$SLURM_SUBMIT_DIR"`` for Slurm, which runs a copy of its batch script.
    `prefix` goes before the command (srun).
    Once the command returns, the wrapper sends SIGTERM to what it left behind: the whole session
    when the wrapper leads one (`session`: local and ssh run it under setsid), else its own process
    group and timeout's (Slurm, where the session is slurmstepd's).
    """
    cmd = " ".join(q(arg) for arg in (*prefix, *argv))
    log = '"$_pc_d/output.log"'
    lines = [
        "#!/bin/sh",
        *header,
        "# paraconnect job wrapper (generated): runs one command, records how it ended.",
        f"PARACONNECT_JOB_DIR={job_dir}",
        "export PARACONNECT_JOB_DIR",
        "_pc_d=$PARACONNECT_JOB_DIR",
        'cd -- "$_pc_d" || exit 97',
        "echo $$ >pid.tmp && mv -f pid.tmp pid",
        "cat /proc/sys/kernel/random/boot_id >boot_id 2>/dev/null",
        "date +%s >started",
        "_pc_path=$PATH",
        f"_pc_session={1 if session else 0}",
        "_pc_tgroup=",
        "_pc_end() {",
        "  PATH=$_pc_path",
        '  date +%s >"$_pc_d/ended"',
        '  echo "$1" >"$_pc_d/exit_code.tmp" && mv -f "$_pc_d/exit_code.tmp" "$_pc_d/exit_code"',
        "}",
        "if [ -f env.sh ]; then . ./env.sh; rm -f env.sh; fi",
    ]
    if workdir is not None:
        lines += [
            f"cd -- {shell_path(workdir)} 2>>{log} || {{",
            "  printf 'paraconnect: cannot enter the working directory %s\\n' "
            f"{q(workdir)} >>{log}",
            "  _pc_end 97",
            "  exit 97",
            "}",
        ]
    run = f"{cmd} </dev/null >>{log} 2>&1 &"
    if walltime is not None:
        kill = f"-k {_duration(grace)}" if grace > 0 else "-s KILL"
        lines += [
            "if command -v timeout >/dev/null 2>&1; then",
            # timeout(1) puts itself in a process group of its own.
            f"  timeout {kill} {_duration(walltime)} {run}",
            "  _pc_tgroup=$!",
            "else",
            "  echo 'paraconnect: timeout(1) not found; the wall-time limit is not enforced' "
            f">>{log}",
            f"  {run}",
            "fi",
        ]
    else:
        lines.append(run)
    lines += [
        "_pc_child=$!",
        'echo "$_pc_child" >"$_pc_d/inner_pid"',
        # The wrapper outlives a SIGTERM (passing it on) so that it can record the exit code of a
        # command that shuts down gracefully; SIGKILL after the grace ends it with the rest.
        "trap 'kill -TERM \"$_pc_child\" 2>/dev/null' TERM",
        'wait "$_pc_child"',
        "_pc_rc=$?",
        # A trapped signal interrupts wait; wait again until the command is reaped.
        'while kill -0 "$_pc_child" 2>/dev/null; do',
        '  wait "$_pc_child"',
        "  _pc_rc=$?",
        '  [ "$_pc_rc" -eq 127 ] && break',
        "done",
        "PATH=$_pc_path",
    ]
    if walltime is not None:
        lines += [
            'if [ -s "$_pc_d/started" ] && '
            '{ [ "$_pc_rc" -eq 124 ] || [ "$_pc_rc" -eq 137 ]; }; then',
            f'  if [ $(( $(date +%s) - $(cat "$_pc_d/started") )) -ge {math.floor(walltime)} ]; '
            'then echo "$_pc_rc" >"$_pc_d/walltime"; fi',
            "fi",
        ]
    lines += [
        '_pc_end "$_pc_rc"',
        # What the command left behind goes with it (SIGTERM, SIGKILL after the grace): the
        # job's session where the wrapper leads one (local, ssh), else the wrapper's process
        # group and timeout's (Slurm, where the session is slurmstepd's).
        "trap '' TERM",
        _LEFTOVERS,
        "_pc_leftovers",
        'if [ -n "$_pc_list" ]; then',
        "  kill -TERM $_pc_list 2>/dev/null",
        "  _pc_i=0",
        f'  while [ -n "$_pc_list" ] && [ $_pc_i -lt {max(1, math.ceil(grace * 10))} ]; do',
        "    sleep 0.1; _pc_leftovers; _pc_i=$((_pc_i + 1))",
        "  done",
        '  [ -n "$_pc_list" ] && kill -KILL $_pc_list 2>/dev/null',
        "fi",
        'exit "$_pc_rc"',
    ]
    return "\n".join(lines) + "\n"


# Sets _pc_list to the live processes, other than the wrapper, of the wrapper's session (when it
# leads one) or of its process group and timeout's.
_LEFTOVERS = r"""_pc_leftovers() {
  _pc_list=
  [ -r /proc/self/stat ] || return 0
  for _pc_f in /proc/[0-9]*/stat; do
    read -r _pc_line 2>/dev/null <"$_pc_f" || continue
    _pc_p=${_pc_line%% *}
    [ "$_pc_p" = "$$" ] && continue
    set -- ${_pc_line##*) }
    [ "$1" = Z ] && continue
    if [ "$_pc_session" = 1 ]; then
      [ "$4" = "$$" ] || continue
    else
      [ "$3" = "$$" ] || [ "$3" = "$_pc_tgroup" ] || continue
    fi
    _pc_list="$_pc_list $_pc_p"
  done
}"""


# Sets _pc_alive to 1 while a non-zombie process of session $_pc_sid remains, sending signal $1
# (if given) to each.  Checks first that the session leader, if alive, is our wrapper.
_SCAN = r"""
_pc_scan() {
  _pc_sig=$1
  _pc_alive=0
  if [ ! -r /proc/self/stat ]; then
    kill -0 -"$_pc_sid" 2>/dev/null && _pc_alive=1
    if [ -n "$_pc_sig" ]; then kill -"$_pc_sig" -"$_pc_sid" 2>/dev/null; fi
    return 0
  fi
  if read -r _pc_line 2>/dev/null </proc/"$_pc_sid"/stat; then
    set -- ${_pc_line##*) }
    if [ "$1" != Z ] && [ "$4" = "$_pc_sid" ]; then
      tr '\0' '\n' 2>/dev/null </proc/"$_pc_sid"/cmdline | grep -qxF "$_pc_d/job.sh" || return 0
    fi
  fi
  for _pc_f in /proc/[0-9]*/stat; do
    read -r _pc_line 2>/dev/null <"$_pc_f" || continue
    _pc_p=${_pc_line%% *}
    set -- ${_pc_line##*) }
    [ "$4" = "$_pc_sid" ] || continue
    [ "$1" = Z ] && continue
    _pc_alive=1
    if [ -n "$_pc_sig" ]; then
      kill -"$_pc_sig" "$_pc_p" 2>/dev/null
      kill -CONT "$_pc_p" 2>/dev/null
    fi
  done
}
"""


def _preamble(job_dir: str, pid: int, boot_id: str) -> str:
    return (
        f"_pc_d={q(job_dir)}\n"
        f"_pc_sid={pid}\n"
        'cd -- "$_pc_d" 2>/dev/null || { echo missing=1; exit 0; }\n'
        "_pc_boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)\n"
        f'if [ -n {q(boot_id)} ] && [ -n "$_pc_boot" ] && [ "$_pc_boot" != {q(boot_id)} ]; '
        "then _pc_rebooted=1; else _pc_rebooted=0; fi\n" + _SCAN
    )


def status_script(job_dir: str, pid: int, boot_id: str, tail: int) -> str:
    # Processes first, files after: a job that ends in between shows its exit code.
    return _preamble(job_dir, pid, boot_id) + (
        'if [ "$_pc_rebooted" = 1 ]; then echo rebooted=1; echo alive=0; '
        'else _pc_scan ""; echo "alive=$_pc_alive"; fi\n'
        '[ -f exit_code ] && echo "exit_code=$(cat exit_code)"\n'
        "[ -f walltime ] && echo walltime=1\n"
        "[ -f stop_requested ] && echo stop_requested=1\n"
        "[ -f started ] && echo started=1\n"
        "echo --tail--\n"
        f"tail -n {tail} output.log 2>/dev/null\n"
        "exit 0\n"
    )


def stop_script(job_dir: str, pid: int, boot_id: str, grace: float) -> str:
    ticks = max(1, math.ceil(grace * 10))
    return _preamble(job_dir, pid, boot_id) + (
        '[ "$_pc_rebooted" = 1 ] && { echo alive=0; exit 0; }\n'
        "[ -f exit_code ] || date +%s >stop_requested\n"
        "_pc_scan TERM\n"
        "_pc_i=0\n"
        f'while [ "$_pc_alive" = 1 ] && [ $_pc_i -lt {ticks} ]; do '
        'sleep 0.1; _pc_scan ""; _pc_i=$((_pc_i + 1)); done\n'
        'if [ "$_pc_alive" = 1 ]; then\n'
        "  echo killed=1\n"
        "  _pc_scan KILL\n"
        "  _pc_i=0\n"
        '  while [ "$_pc_alive" = 1 ] && [ $_pc_i -lt 50 ]; do '
        'sleep 0.1; _pc_scan ""; _pc_i=$((_pc_i + 1)); done\n'
        "fi\n"
        'echo "alive=$_pc_alive"\n'
        "exit 0\n"
    )


def logs_script(job_dir: str, tail: int | None) -> str:
    read = "cat output.log" if tail is None else f"tail -n {int(tail)} output.log"
    return f"cd -- {q(job_dir)} 2>/dev/null || exit 0\n[ -f output.log ] && {read}\nexit 0\n"


@dataclass(frozen=True)
class Facts:
    """What a job's directory and its host say about it."""

    missing: bool = False
    exit_code: int | None = None
    walltime: bool = False
    stop_requested: bool = False
    started: bool = False
    alive: bool | None = None
    rebooted: bool = False
    tail: str = ""


def parse_facts(output: str) -> Facts:
    head, _, tail = output.partition("--tail--\n")
    values: dict[str, str] = {}
    for line in head.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    code = values.get("exit_code")
    return Facts(
        missing=values.get("missing") == "1",
        exit_code=int(code) if code is not None and code.lstrip("-").isdigit() else None,
        walltime="walltime" in values,
        stop_requested="stop_requested" in values,
        started="started" in values,
        alive={"1": True, "0": False}.get(values.get("alive", "")),
        rebooted="rebooted" in values,
        tail=tail,
    )


def classify(
    facts: Facts, *, host: str, where: str, walltime: float | None, grace: float
) -> JobStatus:
    """Turn facts into a status.  `where` names the job for messages (a directory, a job id)."""
    last = one_line(facts.tail)
    last_output = f"; last output: {last}" if last else "; it wrote no output"
    rc = facts.exit_code
    if facts.walltime and rc is not None:
        how = "SIGTERM" if rc != 137 else f"SIGTERM, then SIGKILL after the {grace:g} s grace"
        limit = f"{walltime:g} s" if walltime is not None else "its"
        return JobStatus(
            JobState.FAILED, f"wall-time limit of {limit} reached: stopped with {how}", rc
        )
    if rc is not None:
        if facts.stop_requested:
            return JobStatus(JobState.CANCELLED, f"stopped on request ({exit_reason(rc)})", rc)
        if rc == 0:
            return JobStatus(JobState.COMPLETED, "exited with code 0", 0)
        cause = root_cause(facts.tail)
        if cause:
            # The program's own error first, in one line; the rest is in its log.
            return JobStatus(JobState.FAILED, f"{cause} ({exit_reason(rc)})", rc)
        return JobStatus(JobState.FAILED, exit_reason(rc) + last_output, rc)
    if facts.missing:
        return JobStatus(
            JobState.UNKNOWN, f"the job directory {where} on {host} is gone; was it removed?"
        )
    if facts.alive:
        if facts.stop_requested:
            return JobStatus(JobState.RUNNING, f"stopping on {host}")
        return JobStatus(JobState.RUNNING, f"running on {host}")
    if facts.stop_requested:
        return JobStatus(JobState.CANCELLED, "stopped on request")
    if facts.alive is None:
        return JobStatus(JobState.UNKNOWN, f"could not tell whether job {where} on {host} runs")
    if facts.rebooted:
        return JobStatus(
            JobState.FAILED, f"{host} restarted while the job ran; it recorded no exit code"
        )
    return JobStatus(
        JobState.FAILED,
        f"the job's processes on {host} are gone and it recorded no exit code (killed from "
        f"outside paraconnect or out of memory){last_output}",
    )


class Shell(abc.ABC):
    """Runs an sh script (fed on stdin) on the job's host; local or over ssh."""

    host: str

    @abc.abstractmethod
    async def run(
        self,
        script: str,
        *,
        timeout: float,  # noqa: ASYNC109 - the budget becomes a cancel scope, named in the error
        doing: str,
    ) -> str:
        """Run `script` with ``sh -s``; return its stdout.  Raise a ParaconnectError naming the
        host when it cannot run or exits non-zero."""


class ShellJob(Job):
    """A job whose wrapper runs as a session leader on a host reached through a :class:`Shell`."""

    _status_timeout = 30.0

    def __init__(self, *, shell: Shell, job_dir: str, pid: int, boot_id: str, **common: Any):
        super().__init__(**common)
        self._shell = shell
        self._dir = job_dir
        self._pid = pid
        self._boot_id = boot_id

    @property
    def job_dir(self) -> str:
        return self._dir

    @property
    def pid(self) -> int:
        return self._pid

    def _options(self) -> dict[str, Any]:
        return {"dir": self._dir, "pid": self._pid, "boot_id": self._boot_id}

    def _classify(self, facts: Facts) -> JobStatus:
        return classify(
            facts,
            host=self._host,
            where=self._dir,
            walltime=self._walltime,
            grace=self._grace,
        )

    async def _poll(self) -> JobStatus:
        out = await self._shell.run(
            status_script(self._dir, self._pid, self._boot_id, tail=20),
            timeout=self._status_timeout,
            doing=f"checking job {self._id}",
        )
        return self._classify(parse_facts(out))

    async def logs(self, tail: int | None = 100) -> str:
        if tail is not None and tail < 0:
            raise ValueError("tail must be >= 0 or None")
        return await self._shell.run(
            logs_script(self._dir, tail), timeout=60.0, doing=f"reading the logs of {self._id}"
        )

    async def stop(self, grace: float = 10.0) -> JobStatus:
        if not (0 <= grace < math.inf):
            raise ValueError("grace must be a non-negative number of seconds")
        if self._status.finished:
            return self._status
        await self._shell.run(
            stop_script(self._dir, self._pid, self._boot_id, grace),
            timeout=grace + 30.0,
            doing=f"stopping job {self._id}",
        )
        self._status = await self._poll()
        return self._status


def shell_options(options: Mapping[str, Any], launcher: str) -> tuple[str, int, str]:
    """The directory, wrapper pid and boot id from a described job's options, checked."""
    job_dir, pid, boot_id = options.get("dir"), options.get("pid"), options.get("boot_id", "")
    if not isinstance(job_dir, str) or not job_dir.startswith("/"):
        raise ConfigError(f"job description for launcher {launcher!r} has no valid options.dir")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        raise ConfigError(f"job description for launcher {launcher!r} has no valid options.pid")
    if not isinstance(boot_id, str):
        raise ConfigError(f"job description for launcher {launcher!r} has an invalid boot_id")
    return job_dir, pid, boot_id
