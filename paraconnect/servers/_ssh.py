"""The ssh launcher: the command runs on another host, reached with the system ``ssh``.

Every call is ``ssh -o BatchMode=yes [the user's options] -- HOST 'sh -s'`` with a script on
stdin: the remote command line is only ``sh -s``, so the job's environment (which may hold an
enrolment token) never shows in ``ps`` on either host.  The user's own ssh config decides keys,
jump hosts and known hosts; paraconnect never adds ``StrictHostKeyChecking=no`` or
``accept-new``.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from .._wire import record
from ..errors import ConfigError, CredentialError, NetworkError, ParaconnectError, TrustError
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
from ._posix import Shell, ShellJob, env_file, heredoc, shell_options, shell_path, wrapper_script

__all__ = ["SshJob", "SshLauncher"]

_HOST_RE = re.compile(r"[A-Za-z0-9_.:%\[\]@-]+")
_OPTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*[= ]\S.*")


def _ssh_error(
    description: str, stderr: str, host: str, port: int | None, rc: int, check_argv: list[str]
) -> ParaconnectError:
    """Translate ssh's exit 255 and its stderr into an error that says what to do."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else f"ssh exited with code {rc}"
    text = stderr
    where = f"ssh to {host!r}"
    check = f"check with '{shlex.join(check_argv)}'"
    if "Host key verification failed" in text or ("No " in text and "host key is known" in text):
        return TrustError(
            f"{where} refused: the host key of {host} is not in your known_hosts (or it changed); "
            "verify its fingerprint with the host's administrator, then connect once with plain "
            f"'ssh {host}' to record it (paraconnect never accepts unknown host keys)"
        )
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return TrustError(
            f"{where} refused: the host key of {host} changed since it was recorded in "
            "known_hosts; find out why before removing the old key with 'ssh-keygen -R'"
        )
    if "UNPROTECTED PRIVATE KEY FILE" in text or "bad permissions" in text:
        return CredentialError(
            f"{where}: the identity file is readable by others and ssh ignores it; "
            "run 'chmod 600' on it"
        )
    if "Permission denied" in text:
        return ConfigError(
            f"{where} was refused ({last}): the remote host accepted none of the offered keys; "
            "set IdentityFile for this host in your ssh config (or the launcher's identity_file) "
            f"to a key listed in the remote ~/.ssh/authorized_keys (BatchMode: no passwords), "
            f"and {check}"
        )
    if "Could not resolve hostname" in text:
        return NetworkError(
            f"{where}: cannot resolve the host name ({last}); check the Host/HostName entry in "
            "your ssh config"
        )
    if "Connection refused" in text:
        on = f" port {port}" if port else ""
        return NetworkError(
            f"{where}: connection refused{on} ({last}); is sshd running there and the port right?"
        )
    if "timed out" in text or "Connection timed out" in text:
        return NetworkError(f"{where} timed out ({last}); check the network path or a jump host")
    if "No route to host" in text or "Network is unreachable" in text:
        return NetworkError(f"{where}: host unreachable ({last})")
    if (
        "Bad configuration option" in text
        or "bad configuration options" in text
        or "Can't open user config file" in text
        or "Bad owner or permissions" in text
    ):
        return ConfigError(
            f"{where}: your ssh configuration is invalid ({last}); fix it and {check}"
        )
    return NetworkError(f"{where} failed while {description}: {last}; {check}")


class SshShell(Shell):
    """Runs scripts on a host through the system ssh client, in BatchMode."""

    def __init__(
        self,
        host: str,
        *,
        config_file: str | None = None,
        port: int | None = None,
        user: str | None = None,
        identity_file: str | None = None,
        connect_timeout: float = 10.0,
        ssh_options: Sequence[str] = (),
        ssh: str = "ssh",
    ) -> None:
        if not host or not _HOST_RE.fullmatch(host) or host.startswith("-"):
            raise ConfigError(f"ssh host {host!r} is invalid; give a host name or a Host alias")
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            raise ConfigError(f"ssh port {port!r} for {host!r} is invalid; give 1-65535")
        if user is not None and (not user or user.startswith("-") or not _HOST_RE.fullmatch(user)):
            raise ConfigError(f"ssh user {user!r} for {host!r} is invalid")
        if config_file is not None and not Path(config_file).is_file():
            raise ConfigError(
                f"ssh config file {config_file} for {host!r} does not exist; check the path"
            )
        if identity_file is not None and not Path(identity_file).is_file():
            raise CredentialError(
                f"ssh identity file {identity_file} for {host!r} does not exist; check the path"
            )
        if not (0 < connect_timeout < math.inf):
            raise ConfigError(f"connect_timeout for {host!r} must be a positive number of seconds")
        for option in ssh_options:
            if not _OPTION_RE.fullmatch(option) or "\n" in option:
                raise ConfigError(f"ssh option {option!r} for {host!r} is invalid; use 'Key=Value'")
        self.host = host
        self.config_file = config_file
        self.port = port
        self.user = user
        self.identity_file = identity_file
        self.connect_timeout = connect_timeout
        self.ssh_options = tuple(ssh_options)
        self.ssh = ssh

    def argv(self) -> list[str]:
        """The ssh command line (without the remote command).  Nothing secret goes here."""
        argv = [self.ssh, "-T", "-o", "BatchMode=yes"]
        argv += ["-o", f"ConnectTimeout={max(1, math.ceil(self.connect_timeout))}"]
        if self.config_file is not None:
            argv += ["-F", self.config_file]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        if self.user is not None:
            argv += ["-l", self.user]
        if self.identity_file is not None:
            argv += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        for option in self.ssh_options:
            argv += ["-o", option]
        return [*argv, "--", self.host, "sh -s"]

    def describe(self) -> dict[str, Any]:
        names = ("host", "config_file", "port", "user", "identity_file", "connect_timeout")
        return record(self, (*names, "ssh_options", "ssh"))

    @classmethod
    def from_description(cls, options: Mapping[str, Any]) -> SshShell:
        try:
            return cls(
                str(options["host"]),
                config_file=options.get("config_file"),
                port=options.get("port"),
                user=options.get("user"),
                identity_file=options.get("identity_file"),
                connect_timeout=float(options.get("connect_timeout", 10.0)),
                ssh_options=tuple(options.get("ssh_options", ())),
                ssh=str(options.get("ssh", "ssh")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"job description for launcher 'ssh' has invalid ssh options ({exc})"
            ) from None

    async def run(self, script: str, *, timeout: float, doing: str) -> str:  # noqa: ASYNC109
        try:
            with anyio.fail_after(timeout + self.connect_timeout):
                rc, out, err = await run_command(self.argv(), input=script.encode())
        except TimeoutError:
            raise NetworkError(
                f"ssh to {self.host!r} did not finish {doing} within "
                f"{timeout + self.connect_timeout:g} s; check the host and the network"
            ) from None
        except FileNotFoundError:
            raise ConfigError(
                f"the ssh client {self.ssh!r} is not installed; install openssh-client"
            ) from None
        stderr = err.decode(errors="replace")
        if rc == 255:
            check_argv = [*self.argv()[:-3], self.host, "true"]
            raise _ssh_error(doing, stderr, self.host, self.port, rc, check_argv)
        if rc != 0:
            lines = [line for line in stderr.splitlines() if line.strip()]
            last = lines[-1].strip() if lines else f"exit code {rc}"
            raise ConfigError(f"on {self.host!r}, {doing} failed: {last}")
        return out.decode(errors="replace")


class SshJob(ShellJob):
    launcher = "ssh"

    def _options(self) -> dict[str, Any]:
        shell = self._shell
        ssh = shell.describe() if isinstance(shell, SshShell) else {}
        return {**super()._options(), "ssh": ssh}


class SshLauncher(Launcher):
    """Run commands on `host` (a name or a Host alias of your ssh config) through ``ssh``.

    Job directories go under `remote_root` on that host (``~`` is the remote home), each 0700.
    The remote host needs a POSIX sh, ``setsid`` (util-linux) and, for wall-time limits,
    ``timeout`` (coreutils): any Linux host.
    """

    name = "ssh"

    def __init__(
        self,
        host: str,
        *,
        config_file: str | Path | None = None,
        port: int | None = None,
        user: str | None = None,
        identity_file: str | Path | None = None,
        remote_root: str = "~/.paraconnect/runs",
        connect_timeout: float = 10.0,
        ssh_options: Sequence[str] = (),
        ssh: str = "ssh",
    ) -> None:
        self._shell = SshShell(
            host,
            config_file=str(config_file) if config_file is not None else None,
            port=port,
            user=user,
            identity_file=str(identity_file) if identity_file is not None else None,
            connect_timeout=connect_timeout,
            ssh_options=ssh_options,
            ssh=ssh,
        )
        if not remote_root or "\0" in remote_root or "\n" in remote_root:
            raise ConfigError(f"remote_root {remote_root!r} for {host!r} is invalid")
        self._remote_root = remote_root

    @property
    def host(self) -> str:
        return self._shell.host

    @property
    def shell(self) -> SshShell:
        """Runs sh scripts on the host (used by the Slurm launcher to reach a login node)."""
        return self._shell

    def ssh_argv(self) -> list[str]:
        """The exact ssh command line every call uses (for display and for tests)."""
        return self._shell.argv()

    async def check(self) -> None:
        """Connect once and run nothing; raise the error a launch would meet."""
        await self._shell.run("exit 0\n", timeout=30.0, doing="checking the connection")

    async def submit(self, spec: LaunchSpec) -> Job:
        if spec.options:
            raise ConfigError(
                f"the ssh launcher takes no per-job options; got {', '.join(sorted(spec.options))}"
            )
        job_id = new_job_id(spec.name)
        wrapper = wrapper_script(
            argv=spec.argv,
            workdir=spec.workdir,
            walltime=spec.walltime,
            grace=spec.grace,
        )
        script = (
            "set -e\n"
            "umask 077\n"
            "command -v setsid >/dev/null 2>&1 || "
            "{ echo 'setsid (util-linux) is not installed there' >&2; exit 3; }\n"
            f"_pc_base={shell_path(self._remote_root)}\n"
            'mkdir -p -- "$_pc_base"\n'
            f'_pc_d="$_pc_base"/{shlex.quote(job_id)}\n'
            'mkdir -- "$_pc_d"\n'
            'cd -- "$_pc_d"\n'
            "_pc_d=$(pwd -P)\n"
            + heredoc("job.sh", wrapper)
            + (heredoc("env.sh", env_file(spec.env)) if spec.env else "")
            + "chmod 700 job.sh\n"
            'setsid sh "$_pc_d/job.sh" "$_pc_d" </dev/null >/dev/null 2>&1 &\n'
            "_pc_pid=$!\n"
            "_pc_i=0\n"
            "while [ ! -s pid ] && [ $_pc_i -lt 200 ]; do sleep 0.05; _pc_i=$((_pc_i + 1)); done\n"
            'echo "dir=$_pc_d"\n'
            # The wrapper's own pid, in case setsid had to fork.
            "[ -s pid ] && _pc_pid=$(cat pid)\n"
            'echo "pid=$_pc_pid"\n'
            'echo "boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"\n'
        )
        out = await self._shell.run(script, timeout=60.0, doing=f"starting job {job_id}")
        values = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
        job_dir, pid = values.get("dir", ""), values.get("pid", "")
        if not job_dir.startswith("/") or not pid.isdigit():
            raise ConfigError(
                f"on {self.host!r}, starting job {job_id} gave no job directory or pid; "
                f"got {out.strip()[-200:]!r}"
            )
        return SshJob(
            shell=self._shell,
            job_dir=job_dir,
            pid=int(pid),
            boot_id=values.get("boot_id", ""),
            **spec.job_fields(
                job_id,
                self.host,
                JobStatus(JobState.RUNNING, f"started on {self.host} as pid {pid}"),
            ),
        )

    @classmethod
    def reattach(cls, described: Mapping[str, Any]) -> Job:
        d = Described.parse(described, cls.name)
        job_dir, pid, boot_id = shell_options(d.options, cls.name)
        ssh = d.options.get("ssh")
        if not isinstance(ssh, Mapping):
            raise ConfigError("job description for launcher 'ssh' has no options.ssh")
        return SshJob(
            shell=SshShell.from_description(ssh),
            job_dir=job_dir,
            pid=pid,
            boot_id=boot_id,
            **d.job_fields(),
        )
