"""Server kinds: what program the agent runs on its private leg, and how.

- ``builtin``: paraconnect's own renderer, ``python -m paraconnect.render --unix {unix}`` (or
  ``--fd {fd}``).
- ``pvserver``: ParaView's server on ``{port}``, which the agent gives it in a user + network
  namespace of its own (Debian's pvserver binds 0.0.0.0 and has no bind option: there, nobody
  else can reach it; no ``--connect-id``, which every local user could read in ``ps``),
  ``--no-mpi`` unless ranks are asked for (then ``mpiexec -n N pvserver`` through ``_mpi``,
  which lets root run it; a Slurm job asks for N tasks and runs one agent), under its own Xvfb
  (``-displayfd -noreset``) when the remote host has no DISPLAY.  Where user namespaces are
  disabled the agent falls back to the reverse bridge below by itself.  pvserver exits when its
  client leaves: the agent restarts it (``--restart always``) and the user is told that
  ParaView state is not kept between clients.
- ``pvserver`` with ``pv_reverse``: hardened; pvserver ``--rc`` dials a loopback bridge
  (``_kinds_pvrc``) so nothing listens on the remote host; the client pvpython must accept
  (``ReverseConnect``), and the hub dials it.  Trade-off: no listening socket on the remote host
  at all, but the client side must use ReverseConnect and ask the hub to dial it, and the
  standard ``Connect(host, port)`` workflow of ParaView's GUI does not apply.
- ``web``: any HTTP(+WebSocket) app whose command line holds ``{port}``; as ``command`` with
  the readiness probe ``http`` by default.  The Jupyter extension's proxy
  (``/paraconnect/proxy/<id>/``) shows it in the browser.
- ``trame``: a trame app file (option ``app``), ``python APP --server --port {port} --host
  127.0.0.1 --timeout 0``, as ``web`` (wslink's own timeout would end the app 300 s after its
  last browser left; its public default secret is harmless on the private leg).
- ``command``: any TCP program whose command line holds ``{port}`` (or ``{unix}``/``{fd}``);
  ready when it listens there (probe ``port``), or when its output matches ``log_regex`` (probe
  ``log``) or ``GET http_path`` answers (probe ``http``), through the ``_kinds_probe`` wrapper.
  The agent runs it in a network namespace of its own (as pvserver), and refuses it where none
  can be made.

Option ``shared_leg`` (pvserver, command, web, trame): run the program in the host's network instead
(``serve --shared-leg``): other local users CAN then connect to its port; only for programs that
need the network (multi-node MPI over TCP, licence servers).

A kind only builds command lines; the hub wraps them in ``paraconnect serve``.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..vocab import KINDS

__all__ = ["KINDS", "ServerKind", "build_kind"]


PVSERVER_NOTE = (
    "pvserver ends when its client leaves; the agent then starts a fresh one for the next "
    "client: ParaView state (loaded data, pipelines) is NOT kept between clients"
)

PV_REVERSE_NOTE = (
    "hardened (--pv-reverse): pvserver dials out to a loopback bridge, nothing listens on the "
    "remote host; start pvpython with simple.ReverseConnect(PORT) (it must accept) and have "
    "the hub dial it: 'paraconnect servers dial ID PORT' or hub.dial_client(ID, PORT)"
)


@dataclass(frozen=True)
class ServerKind:
    """The program behind one agent: its command line (with the agent's placeholders), the
    agent's restart policy for it, and a note for the user."""

    name: str
    program: tuple[str, ...]
    restart: str = "no"
    ready_timeout: float = 60.0
    note: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    agent_args: tuple[str, ...] = ()  # options of `paraconnect serve` the kind asks for
    ranks: int | None = None  # MPI ranks: a batch job asks its scheduler for as many tasks


def _bool(options: Mapping[str, Any], key: str) -> bool:
    # Strict: the string "false" from a form or a JSON typo must not switch an option on.
    value = options.get(key, False)
    if type(value) is not bool:
        raise ConfigError(f"option {key} must be true or false, not {value!r}")
    return value


def _agent_args(options: Mapping[str, Any], version_of: str | None = None) -> tuple[str, ...]:
    args: tuple[str, ...] = ("--shared-leg",) if _bool(options, "shared_leg") else ()
    if version_of is not None:
        # The agent tells clients pvserver's version, so they explain a mismatch themselves.
        args += ("--version-command", shlex.join([version_of, "--version"]))
    return args


def _python(options: Mapping[str, Any]) -> str:
    python = options.get("python") or sys.executable
    if not isinstance(python, str):
        raise ConfigError("option python must be the path of a Python with paraconnect installed")
    return python


def _int(options: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = options.get(key, default)
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise ConfigError(f"option {key} must be a positive whole number, not {value!r}")
    return value


def build_kind(
    kind: str, options: Mapping[str, Any] | None = None, command: Sequence[str] = ()
) -> ServerKind:
    """The `kind` with its options (see each kind); `command` is the program for ``command``."""
    opts = dict(options or {})
    if kind == "builtin":
        leg = opts.get("leg", "unix")
        if leg not in ("unix", "fd"):
            raise ConfigError(f"option leg {leg!r} of the builtin kind: choose unix or fd")
        argv = [_python(opts), "-m", "paraconnect.render", f"--{leg}", "{" + leg + "}"]
        size = opts.get("size")
        if size is not None:
            argv += ["--size", str(size)]
        data = opts.get("data")
        if data is not None:
            if not isinstance(data, str) or not data:
                raise ConfigError(
                    f"option data must be a folder on the server's host, not {data!r}"
                )
            argv += ["--root", data]  # the view opens files there, never outside
        return ServerKind("builtin", tuple(argv), restart="on-failure", options=opts)
    if kind == "pvserver":
        ranks = _int(opts, "ranks", None)
        pvserver = str(opts.get("pvserver", "pvserver"))
        argv = [pvserver, "--sp={port}"]
        if ranks is None:
            argv.append("--no-mpi")
        else:
            mpiexec = [str(opts.get("mpiexec", "mpiexec")), "-n", str(ranks)]
            # Through _mpi: as root, Open MPI needs its two consent variables (see there).
            argv = [_python(opts), "-m", "paraconnect.servers._mpi", "--", *mpiexec, *argv]
        reverse = _bool(opts, "pv_reverse")
        if reverse:
            # Hardened: pvserver dials a loopback port of our bridge; nothing listens on the
            # host's network (see _kinds_pvrc).
            argv = [a for a in argv if not a.startswith("--sp=")]
            at = argv.index(pvserver) + 1
            argv[at:at] = ["--rc", "--client-host=127.0.0.1", "--server-port={rc_port}"]
        xvfb = opts.get("xvfb", "auto")
        if xvfb not in ("auto", "always", "never"):
            raise ConfigError(f"option xvfb {xvfb!r}: choose auto, always or never")
        if xvfb != "never":
            wrapper = [_python(opts), "-m", "paraconnect.servers._xvfb"]
            if xvfb == "always":
                wrapper.append("--always")
            argv = [*wrapper, "--", *argv]
        if reverse:
            bridge = [_python(opts), "-m", "paraconnect.servers._kinds_pvrc", "--unix", "{unix}"]
            return ServerKind(
                "pvserver",
                (*bridge, "--", *argv),
                restart="on-failure",
                note=f"{PVSERVER_NOTE}. {PV_REVERSE_NOTE}",
                options=opts,
                agent_args=_agent_args(opts, pvserver),
                ranks=ranks,
            )
        program = tuple(argv)
        return ServerKind(
            "pvserver",
            program,
            restart="always",
            note=PVSERVER_NOTE,
            options=opts,
            agent_args=_agent_args(opts, pvserver),
            ranks=ranks,
        )
    if kind == "command":
        argv = list(command)
        if not argv:
            raise ConfigError(
                "the command kind needs the program after '--', e.g. -- python3 -m http.server "
                "--bind 127.0.0.1 {port}"
            )
        joined = " ".join(argv)
        if sum(p in joined for p in ("{port}", "{unix}", "{fd}")) != 1:
            raise ConfigError(
                f"command {joined!r}: put exactly one of {{port}}, {{unix}} or {{fd}} where the "
                "program listens (the agent gives it a private leg there)"
            )
        return _tcp_program("command", argv, opts, "port")
    if kind == "web":
        argv = list(command)
        joined = " ".join(argv)
        if not argv or "{port}" not in joined or "{unix}" in joined or "{fd}" in joined:
            raise ConfigError(
                "the web kind needs the app's command after '--' with {port} where it serves "
                "HTTP, e.g. -- python3 -m http.server --bind 127.0.0.1 {port}"
            )
        return _tcp_program("web", argv, opts, "http")
    if kind == "trame":
        app = opts.get("app")
        if not isinstance(app, str) or not app:
            raise ConfigError(
                "the trame kind needs option app: the path of the trame app file on the "
                "server's host (run as: python APP --server --port PORT --host 127.0.0.1)"
            )
        # --timeout 0: wslink otherwise ends the app 300 s after its last browser left.
        argv = [_python(opts), app, "--server", "--port", "{port}", "--host", "127.0.0.1"]
        argv += ["--timeout", "0"]
        return _tcp_program("trame", argv, opts, "http")
    raise ConfigError(f"unknown server kind {kind!r}; choose one of {', '.join(KINDS)}")


def _tcp_program(
    name: str, argv: list[str], opts: Mapping[str, Any], default_probe: str
) -> ServerKind:
    """A TCP program (command, web, trame) with its readiness probe and restart policy."""
    joined = " ".join(argv)
    probe = opts.get("probe", default_probe)
    if probe not in ("port", "log", "http"):
        raise ConfigError(f"probe {probe!r}: choose port, log (with log_regex) or http")
    if probe != "port":
        # Ready only once the probe passed: the wrapper opens the agent's leg then.
        if "{port}" not in joined:
            raise ConfigError(f"probe {probe} needs the program to listen on {{port}}")
        target = opts.get("log_regex") if probe == "log" else opts.get("http_path", "/")
        if not isinstance(target, str) or not target:
            raise ConfigError("probe log needs option log_regex (a regular expression)")
        flag = "--log" if probe == "log" else "--http"
        wrapper = [
            *(_python(opts), "-m", "paraconnect.servers._kinds_probe", "--unix", "{unix}"),
            *(flag, target, "--timeout", str(_int(opts, "probe_timeout", 60))),
        ]
        argv = [*wrapper, "--", *(a.replace("{port}", "{inner_port}") for a in argv)]
    restart = opts.get("restart", "no")
    if restart not in ("no", "on-failure", "always"):
        raise ConfigError(f"option restart {restart!r}: choose no, on-failure or always")
    return ServerKind(
        name, tuple(argv), restart=restart, options=opts, agent_args=_agent_args(opts)
    )
