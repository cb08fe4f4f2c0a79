"""The program behind the agent: started on a private leg, watched, restarted only if asked.

Placeholders in its command line:

``{port}``  a TCP port the program must listen on.  By default the program runs in a user +
            network namespace of its own (`_netns`): its loopback, and whatever else it
            listens on, is reachable by nobody else, and a broker in there hands the agent
            each connection.  Where no such namespace can be made, a ParaView ``pvserver``
            falls back to the reverse bridge (``_kinds_pvrc``) and any other program is
            refused, unless ``shared_leg`` (``serve --shared-leg``) accepts a port on the
            host's loopback that every local user can connect to (the agent then checks that
            the socket listening there belongs to this user before it forwards anything);
``{unix}``  a path in a fresh 0700 directory where the program must listen (a Unix socket);
``{fd}``    the number of an inherited, already listening Unix socket (systemd's socket
            activation: ``LISTEN_FDS=1``; the program accepts on it);
``{connect_id}`` (optional, with one of the above) a random number for ParaView's
            ``--connect-id``; the agent tells it to its clients after their hello.  It is
            NOT a secret (every local user reads command lines in /proc) and protects
            nothing: the namespace does.

A program with ``{unix}``/``{fd}`` whose command line also holds ``{inner_port}`` or ``{rc_port}``
(the probe and reverse-bridge wrappers, which open TCP ports of their own) runs in a namespace of
its own too; ``{inner_port}`` (a port the program listens on) is refused without one, as
``{port}`` is.

The program learns the session from ``PARACONNECT_SESSION`` (its id), the level from
``PARACONNECT_LEVEL`` and its own leg from ``PARACONNECT_LEG``.  A long-running program serves
many peers at once, so it cannot learn each one from its environment: a program that needs the
peer identity runs per connection (``_perconn``, ``serve --per-connection``).
"""

from __future__ import annotations

import contextlib
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
from ..vocab import ParsedEnum
from ._leg import (
    Endpoint,
    connect_endpoint,
    free_loopback_port,
    listening_uid,
    private_dir,
    remove_private_dir,
)
from ._spares import Spares

__all__ = ["Program", "ProgramExited", "Restart", "pv_reverse_command"]

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
_BROKER = str(Path(__file__).with_name("_netns.py"))  # stdlib only: run as a script, fast


PROTECTION_NETNS = (
    "private network namespace ({how}): nobody else can connect to the program's ports; a "
    "broker inside hands over each connection"
)
PROTECTION_UNIX = "unix socket in a 0700 directory"
PROTECTION_FD = "inherited socket (no address anyone else can reach)"
PROTECTION_SHARED = (
    "shared loopback leg: other local users CAN connect to port {port} (--shared-leg)"
)
PROTECTION_PV_FALLBACK = (
    "unix socket in a 0700 directory; pvserver dials back over loopback to a bridge that "
    "takes this user's connection only (no network namespace here)"
)


class _NoNamespace(Exception):
    """The broker could not make a namespace here; the reason is the message."""


def pv_reverse_command(command: Sequence[str]) -> list[str] | None:
    """ParaView's `pvserver --sp={port}` rewritten for the reverse bridge (``_kinds_pvrc``):
    pvserver dials a loopback port of the bridge instead of listening.  None for any other
    program."""
    argv = list(command)
    at = next((i for i, a in enumerate(argv) if Path(a).name.startswith("pvserver")), None)
    if at is None or not any(a in ("--sp={port}", "--server-port={port}") for a in argv[at:]):
        return None
    kept = [
        a
        for a in argv[at + 1 :]
        if a not in ("--sp={port}", "--server-port={port}") and not a.startswith("--connect-id=")
    ]
    rc = ["--rc", "--client-host=127.0.0.1", "--server-port={rc_port}"]
    bridge = [sys.executable, "-m", "paraconnect.servers._kinds_pvrc", "--unix", "{unix}", "--"]
    return [*bridge, *argv[: at + 1], *rc, *kept]


class Restart(ParsedEnum, what="--restart"):
    NO = "no"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


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
        shared_leg: bool = False,
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
        # ParaView's --connect-id: a matching token, public in /proc/*/cmdline: it keeps stray
        # connections of a --shared-leg out, nothing more; clients learn it from the agent.
        self.connect_id = secrets.randbelow(2**31 - 2) + 1 if "{connect_id}" in joined else None
        self.version: str | None = None  # what `serve --version-command` found, if asked
        self.restart = Restart.parse(restart)
        self.ready_timeout = ready_timeout
        self.extra_env = env or {}
        self.max_restarts = max_restarts
        self.shared_leg = shared_leg
        self.endpoint: Endpoint | None = None
        self.name = Path(command[0]).name
        # How the leg is kept private, in words (`debug server`, the status page).
        self.protection = ""
        self._netns: bool | None = None  # None: not tried yet; False: none can be made here
        self._chan: socket.socket | None = None  # our end of the broker's socket pair
        self._spares: Spares | None = None  # of the broker's namespace, while it runs
        self._dir: Path | None = None
        self._ready = anyio.Event()

    @property
    def _needs_namespace(self) -> bool:
        """Does the program listen on TCP where, outside a namespace, every user could
        connect?"""
        return self.kind == "{port}" or "{inner_port}" in " ".join(self.command)

    def _namespace_mode(self) -> str | None:
        if self.shared_leg or self._netns is False:
            return None
        if self.kind == "{port}":
            return "port"
        if any(p in " ".join(self.command) for p in ("{inner_port}", "{rc_port}")):
            return "exec"
        return None

    def _prepare(
        self, mode: str | None
    ) -> tuple[list[str], Endpoint, list[int], socket.socket | None]:
        if self.kind == "{port}":
            # In a namespace the broker picks the port in there: {port} stays for it.
            ep = Endpoint("127.0.0.1", 0 if mode else free_loopback_port())
            value = "{port}" if mode else str(ep.port)
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

    def _describe_leg(self, ep: Endpoint, how: str | None) -> str:
        if how is not None and self.kind == "{port}":
            return PROTECTION_NETNS.format(how=how)
        base = {"{unix}": PROTECTION_UNIX, "{fd}": PROTECTION_FD}.get(self.kind)
        if base is None:
            return PROTECTION_SHARED.format(port=ep.port)
        if how is not None:
            return f"{base}; the program's own TCP ports in a private network namespace ({how})"
        if "{rc_port}" in " ".join(self.command):
            return PROTECTION_PV_FALLBACK
        if "{inner_port}" in " ".join(self.command):
            return f"{base}; the program's own TCP port is on the SHARED loopback (--shared-leg)"
        return base

    def _broker_message(self, chan: socket.socket) -> bytes | None:
        try:
            return chan.recv(256)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    async def _wait_ready(
        self, proc: anyio.abc.Process, ep: Endpoint, chan: socket.socket | None
    ) -> tuple[Endpoint, str | None]:
        how: str | None = None
        with anyio.move_on_after(self.ready_timeout) as scope:
            while True:
                # The broker's word first: it is sent before the broker exits.
                if chan is not None and how is None:
                    msg = self._broker_message(chan)
                    if msg is not None and msg.startswith(b"none "):
                        raise _NoNamespace(msg[5:].decode(errors="replace"))
                    if msg is not None and msg.startswith(b"ready "):
                        _word, how, port = msg.decode().split()
                        if self.kind == "{port}":
                            return Endpoint("127.0.0.1", int(port)), how
                if proc.returncode is not None:
                    raise ProgramExited(
                        f"program {self.name!r} {_describe(proc.returncode)} before it accepted "
                        f"connections on {ep}; check its output above",
                        proc.returncode,
                    )
                if chan is not None and how is None:
                    pass  # not in its namespace yet
                elif ep.path is not None or not _HAVE_PROC:
                    if ep.path is None or _is_socket(ep.path):
                        try:
                            sock = await connect_endpoint(ep, timeout=1.0)
                        except NetworkError:
                            pass
                        else:
                            sock.close()
                            return ep, how
                else:
                    owner = listening_uid(ep.host, ep.port)
                    if owner is not None:
                        if owner != os.getuid():
                            raise TrustError(
                                f"port {ep.port} on the private leg is held by user {owner}, "
                                f"not by {self.name!r} of user {os.getuid()}; refusing to "
                                "forward there (someone took the port first: start again)"
                            )
                        return ep, how
                await anyio.sleep(_POLL)
        assert scope.cancelled_caught  # noqa: S101 - the loop only ends by returning or raising
        raise ProgramExited(
            f"program {self.name!r} did not listen on {ep} within "
            f"{self.ready_timeout:g} s; check that its command line uses {self.kind} "
            "as the address to listen on",
            1,
        )

    def _no_namespace(self, reason: str) -> None:
        """No namespace here: fall back (pvserver), refuse, or run in the host's network."""
        self._netns = False
        if not self._needs_namespace:
            log.info("%s; %s runs in the host's network", reason, self.name)
            return
        fallback = pv_reverse_command(self.command)
        if fallback is None:
            raise ConfigError(
                f"program {self.name!r} would listen on a TCP port that every local user can "
                f"connect to, and no private network can be made for it here ({reason}); "
                "refused: let it listen on {unix} or {fd}, or accept that risk with --shared-leg"
            )
        log.warning(
            "%s: pvserver falls back to the reverse bridge (it dials a loopback port that only "
            "this user's connection is taken on); clients connect with ReverseConnect, as with "
            "--pv-reverse",
            reason,
        )
        self.command, self.kind, self.connect_id = fallback, "{unix}", None

    async def connect(self, peer: PeerIdentity, where: str) -> socket.socket:
        """A fresh connection to the program over the private leg."""
        await self._ready.wait()
        ep = self.endpoint
        if ep is None:
            raise NetworkError(f"program {self.name!r} is not running")
        chan = self._chan
        if chan is not None:
            return await self._in_namespace(chan, ep)
        # The port's owner was checked when the program came up; it cannot change hands while
        # the program lives, and a restart checks again.
        return await connect_endpoint(ep)

    async def _in_namespace(self, chan: socket.socket, ep: Endpoint) -> socket.socket:
        """A connection to the program made inside its namespace, from one of the broker's
        spare sockets (`_spares`)."""
        if self._spares is None or self._spares.chan is not chan:
            if self._spares is not None:
                self._spares.close()
            self._spares = Spares(chan, self.name)
        sock = await self._spares.take()
        try:
            return await connect_endpoint(ep, sock=sock)
        except NetworkError as exc:
            reason = exc.__cause__.strerror if isinstance(exc.__cause__, OSError) else None
            raise NetworkError(
                f"cannot connect to program {self.name!r} in its network namespace: {reason or exc}"
            ) from exc

    def _drop_spares(self) -> None:
        if self._spares is not None:
            self._spares.close()
            self._spares = None

    def _spawn_argv(
        self, argv: list[str], mode: str | None, pass_fds: list[int]
    ) -> tuple[list[str], socket.socket | None, socket.socket | None]:
        if mode is None:
            return _tied_to_us(argv), None, None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        pass_fds.append(theirs.fileno())
        broker = [sys.executable, "-I", _BROKER, "--sock", str(theirs.fileno())]
        broker += ["--parent", str(os.getpid()), "--mode", mode, "--"]
        return [*broker, *argv], ours, theirs

    async def run(self, *, task_status: anyio.abc.TaskStatus[Endpoint]) -> None:
        failures = 0  # consecutive quick failures; clean exits under --restart always are free
        started = False
        try:
            while True:
                mode = self._namespace_mode()
                argv, ep, pass_fds, inherited = self._prepare(mode)
                env = {**os.environ, **self.extra_env, "PARACONNECT_LEG": str(ep)}
                if inherited is not None:
                    env["LISTEN_FDS"] = "1"
                    env["LISTEN_FDNAMES"] = "paraconnect"
                where = f"its own network namespace ({self.kind})" if mode else f"private leg {ep}"
                log.info("starting %s in %s", " ".join(argv), where)
                spawn, chan, theirs = self._spawn_argv(argv, mode, pass_fds)
                try:
                    proc = await anyio.open_process(
                        spawn,
                        stdin=subprocess.DEVNULL,
                        stdout=2,  # keep our stdout for the ready line; logs share stderr
                        stderr=None,
                        env=env,
                        pass_fds=pass_fds,
                        start_new_session=True,
                    )
                except OSError as exc:
                    if chan is not None:
                        chan.close()
                    raise ConfigError(f"cannot start program {argv[0]!r}: {exc}") from exc
                finally:
                    if inherited is not None:
                        inherited.close()
                    if theirs is not None:
                        theirs.close()
                up_since = anyio.current_time()
                try:
                    try:
                        ep, how = await self._wait_ready(proc, ep, chan)
                    except _NoNamespace as exc:
                        self._no_namespace(str(exc))
                        continue  # at once, outside a namespace (the finally stops the broker)
                    except ProgramExited:
                        if not started or self.restart is Restart.NO:
                            raise  # a first start that fails is a configuration problem
                        code = proc.returncode if proc.returncode is not None else 1
                    else:
                        if how is not None:
                            self._netns = True
                        self.protection = self._describe_leg(ep, how)
                        self.endpoint = ep
                        self._chan = chan if self.kind == "{port}" else None
                        self._ready.set()
                        if not started:
                            started = True
                            task_status.started(ep)
                        log.info(
                            "program %s is ready on %s (pid %d); leg: %s",
                            self.name,
                            ep,
                            proc.pid,
                            self.protection,
                        )
                        code = await proc.wait()
                finally:
                    await self._stop(proc)
                    self._chan = None
                    self._drop_spares()
                    if chan is not None:
                        chan.close()
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
        """End the program's whole process group, not only the process we started: a member
        that blocks SIGTERM (pvserver --rc while it dials) would outlive the agent."""
        with anyio.CancelScope(shield=True):
            if not _group_alive(proc.pid):
                await proc.wait()
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with anyio.move_on_after(5):
                await proc.wait()
            # Once the process we started has ended, what is left of its group gets a short
            # grace only: whoever stops the agent (the hub, a batch system) may not wait long.
            with anyio.move_on_after(1 if proc.returncode is not None else 0):
                while _group_alive(proc.pid):  # noqa: ASYNC110 - no event says "group empty"
                    await anyio.sleep(_POLL)
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def _group_alive(pgid: int) -> bool:
    """Is a live process (not a zombie waiting for its reaper) left in the group?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # a member that changed user (runuser, setuid) is still a member
    if not os.path.isdir("/proc/self"):
        return True
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False
