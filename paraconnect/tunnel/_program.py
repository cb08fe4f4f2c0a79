"""The program behind the agent: started on a private leg, watched, restarted only if asked.

Placeholders in its command line:

``{port}``  a free loopback TCP port the program must listen on (the agent checks that the
            socket listening there belongs to this user before it forwards anything);
``{unix}``  a path in a fresh 0700 directory where the program must listen (a Unix socket);
``{fd}``    the number of an inherited, already listening Unix socket (systemd's socket
            activation: ``LISTEN_FDS=1``; the program accepts on it);
``{connect_id}`` (optional, with one of the above) a random number for ParaView's
            ``--connect-id``; the agent tells it to its clients after their hello.

The program learns the session from ``PARACONNECT_SESSION`` (its id), the level from
``PARACONNECT_LEVEL`` and its own leg from ``PARACONNECT_LEG``.  A long-running program serves
many peers at once, so it cannot learn each one from its environment: a program that needs the
peer identity runs per connection (``_perconn``, ``serve --per-connection``).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.abc

from ..errors import ConfigError, NetworkError, ParaconnectError, TrustError
from ..tls import PeerIdentity
from ._leg import (
    Endpoint,
    connect_endpoint,
    free_loopback_port,
    listening_uid,
    private_dir,
    remove_private_dir,
)

__all__ = ["Program", "ProgramExited", "Restart"]

log = logging.getLogger("paraconnect.tunnel")

READY_TIMEOUT = 30.0
STABLE_AFTER = 60.0  # a program that ran this long before failing starts a fresh failure count
# Without /proc (not Linux) the listener's owner cannot be checked: readiness is then probed by
# connecting, which costs a single-client program (pvserver) its one client: prefer {unix}.
_HAVE_PROC = os.path.exists("/proc/net/tcp")

# The program runs in a session of its own (so that a stop reaches all its processes), which
# also cuts it loose from the agent: if the agent is killed with SIGKILL, nothing would stop it.
# A few lines of Python before exec ask Linux to send it SIGTERM when the agent dies
# (PR_SET_PDEATHSIG = 1, kept across exec), and give up if the agent is already gone.
_PARENT_DEATH_SIGNAL = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def _tied_to_us(argv: list[str]) -> list[str]:
    if not os.path.exists("/proc/self"):  # not Linux: no parent-death signal to ask for
        return argv
    return [sys.executable, "-c", _PARENT_DEATH_SIGNAL, str(os.getpid()), *argv]


_POLL = 0.02


class Restart(enum.StrEnum):
    NO = "no"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"

    @classmethod
    def parse(cls, value: str | Restart) -> Restart:
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(
                f"--restart {value!r}: choose one of no, on-failure, always"
            ) from None


class ProgramExited(ParaconnectError):
    """The program behind the agent ended and was not (or could not be) restarted."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class Program:
    """One program on a private leg. `run()` starts it, reports readiness through
    `task_status`, and returns or raises when it ends for good."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        restart: Restart | str = Restart.NO,
        ready_timeout: float = READY_TIMEOUT,
        env: dict[str, str] | None = None,
        max_restarts: int = 5,
    ) -> None:
        if not command:
            raise ConfigError("no program given: put its command line after '--'")
        joined = " ".join(command)
        kinds = [p for p in ("{port}", "{unix}", "{fd}") if p in joined]
        if len(kinds) != 1:
            raise ConfigError(
                "the program's command line must contain exactly one of {port}, {unix} or {fd} "
                f"(where it listens for the agent); got {joined!r}"
            )
        self.command = list(command)
        self.kind = kinds[0]
        # ParaView's --connect-id: a matching token, not authentication, but it keeps other
        # local users' stray connections out of a loopback leg; clients learn it from the agent.
        self.connect_id = secrets.randbelow(2**31 - 2) + 1 if "{connect_id}" in joined else None
        self.restart = Restart.parse(restart)
        self.ready_timeout = ready_timeout
        self.extra_env = env or {}
        self.max_restarts = max_restarts
        self.endpoint: Endpoint | None = None
        self.name = Path(command[0]).name
        self._dir: Path | None = None
        self._ready = anyio.Event()

    def _prepare(self) -> tuple[list[str], Endpoint, list[int], socket.socket | None]:
        if self.kind == "{port}":
            ep = Endpoint("127.0.0.1", free_loopback_port())
            value = str(ep.port)
        else:
            self._dir = self._dir or private_dir()
            path = self._dir / "leg.sock"
            path.unlink(missing_ok=True)
            ep = Endpoint("", 0, str(path))
            value = str(path)
        inherited: socket.socket | None = None
        pass_fds: list[int] = []
        if self.kind == "{fd}":
            inherited = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            inherited.bind(value)
            inherited.listen(128)
            pass_fds = [inherited.fileno()]
            value = str(inherited.fileno())
        argv = [a.replace(self.kind, value) for a in self.command]
        if self.connect_id is not None:
            argv = [a.replace("{connect_id}", str(self.connect_id)) for a in argv]
        return argv, ep, pass_fds, inherited

    async def _wait_ready(self, proc: anyio.abc.Process, ep: Endpoint) -> None:
        with anyio.move_on_after(self.ready_timeout) as scope:
            while True:
                if proc.returncode is not None:
                    raise ProgramExited(
                        f"program {self.name!r} {_describe(proc.returncode)} before it accepted "
                        f"connections on {ep}; check its output above",
                        proc.returncode,
                    )
                if ep.path is not None or not _HAVE_PROC:
                    if ep.path is None or _is_socket(ep.path):
                        try:
                            sock = await connect_endpoint(ep, timeout=1.0)
                        except NetworkError:
                            pass
                        else:
                            sock.close()
                            return
                else:
                    owner = listening_uid(ep.host, ep.port)
                    if owner is not None:
                        if owner != os.getuid():
                            raise TrustError(
                                f"port {ep.port} on the private leg is held by user {owner}, "
                                f"not by {self.name!r} of user {os.getuid()}; refusing to "
                                "forward there (someone took the port first: start again)"
                            )
                        return
                await anyio.sleep(_POLL)
        if scope.cancelled_caught:
            raise ProgramExited(
                f"program {self.name!r} did not listen on {ep} within "
                f"{self.ready_timeout:g} s; check that its command line uses {self.kind} "
                "as the address to listen on",
                1,
            )

    async def connect(self, peer: PeerIdentity, where: str) -> socket.socket:
        """A fresh connection to the program over the private leg."""
        await self._ready.wait()
        ep = self.endpoint
        if ep is None:
            raise NetworkError(f"program {self.name!r} is not running")
        # The port's owner was checked when the program came up; it cannot change hands while
        # the program lives, and a restart checks again.
        return await connect_endpoint(ep)

    async def run(self, *, task_status: anyio.abc.TaskStatus[Endpoint]) -> None:
        failures = 0  # consecutive quick failures; clean exits under --restart always are free
        started = False
        try:
            while True:
                argv, ep, pass_fds, inherited = self._prepare()
                env = {**os.environ, **self.extra_env, "PARACONNECT_LEG": str(ep)}
                if inherited is not None:
                    env["LISTEN_FDS"] = "1"
                    env["LISTEN_FDNAMES"] = "paraconnect"
                log.info("starting %s on private leg %s", " ".join(argv), ep)
                try:
                    proc = await anyio.open_process(
                        _tied_to_us(argv),
                        stdin=subprocess.DEVNULL,
                        stdout=2,  # keep our stdout for the ready line; logs share stderr
                        stderr=None,
                        env=env,
                        pass_fds=pass_fds,
                        start_new_session=True,
                    )
                except OSError as exc:
                    raise ConfigError(f"cannot start program {argv[0]!r}: {exc}") from exc
                finally:
                    if inherited is not None:
                        inherited.close()
                up_since = anyio.current_time()
                try:
                    try:
                        await self._wait_ready(proc, ep)
                    except ProgramExited:
                        if not started or self.restart is Restart.NO:
                            raise  # a first start that fails is a configuration problem
                        code = proc.returncode if proc.returncode is not None else 1
                    else:
                        self.endpoint = ep
                        self._ready.set()
                        if not started:
                            started = True
                            task_status.started(ep)
                        log.info("program %s is ready on %s (pid %d)", self.name, ep, proc.pid)
                        code = await proc.wait()
                finally:
                    await self._stop(proc)
                self._ready = anyio.Event()
                what = f"program {self.name!r} (pid {proc.pid}) {_describe(code)}"
                wanted = self.restart is Restart.ALWAYS or (
                    self.restart is Restart.ON_FAILURE and code != 0
                )
                if not wanted:
                    hint = " (give --restart on-failure to restart it)" if code else ""
                    raise ProgramExited(f"{what}; the agent stops{hint}", code)
                if code == 0:
                    failures = 0
                elif anyio.current_time() - up_since > STABLE_AFTER:
                    failures = 1
                else:
                    failures += 1
                if failures > self.max_restarts:
                    raise ProgramExited(
                        f"{what}, failing {failures} times in a row; giving up", code
                    )
                log.warning("%s; restarting it", what)
                await anyio.sleep(min(0.1 * 2**failures, 5.0) if failures else 0.05)
        finally:
            if self._dir is not None:
                remove_private_dir(self._dir)

    async def _stop(self, proc: anyio.abc.Process) -> None:
        if proc.returncode is not None:
            return
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with anyio.move_on_after(5):
                await proc.wait()
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
