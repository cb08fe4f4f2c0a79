"""``paraconnect serve | connect | listen``: the tunnel commands, a thin layer over
`paraconnect.tunnel`.

Logs (one line per connection, with the peer identity) go to stderr, and so does the output of
the program behind ``serve``.  With ``--json``, stdout carries events, one JSON object a line:
``{"event": "ready", ...}`` once the command listens (what scripts and tests wait for) and, for
``listen``, ``{"event": "server", ...}`` for each server that phones home (and
``{"event": "refused", ...}`` for one it does not take).  SIGINT/SIGTERM end
a command cleanly; ``connect`` and ``listen`` first tell the agent where to phone next if
``--on-exit-phone-home`` is given.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
from typing import TYPE_CHECKING, Any

from . import _cli_enroll, _cli_radius
from ._cli_common import (
    ArgAdder,
    Command,
    Handler,
    add_commands,
    add_creds,
    add_passphrase,
    add_seconds,
)
from .errors import ConfigError, ParaconnectError
from .vocab import SecurityLevel, choices

if TYPE_CHECKING:
    from ._cli_common import Subparsers
    from .pki import Credentials, Role
    from .tunnel import AgentLink, Home, PerConnection, Program

__all__ = ["add_parsers"]

_LEVELS = choices(SecurityLevel)


def _common(p: argparse.ArgumentParser, role: str) -> None:
    add_creds(
        p,
        f"{role} credentials: a session name, a directory of PEM files (NAME.crt, "
        "NAME.key, ca.crt[, crl.pem]) or a PKCS#12 bundle (.p12)",
    )
    add_passphrase(p, "passphrase of a bundle or key")
    p.add_argument(
        "--level",
        choices=_LEVELS,
        help="security level (default: the session's; mutual for files and bundles)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow level none (clear text) on non-loopback addresses",
    )
    add_seconds(
        p,
        "--handshake-timeout",
        "drop a peer that has not completed TLS and the hello within S s (default 10)",
        default=10.0,
    )
    add_seconds(
        p,
        "--drain-timeout",
        "on SIGTERM/SIGINT, take no new connections and let open streams finish for up "
        "to S s before exiting (default 30; 0 cuts them at once)",
        default=30.0,
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print events as JSON lines on stdout: 'ready' once listening (and, for "
        "listen, 'server' for each server that phones home)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


def _phone_options(p: argparse.ArgumentParser, flag: str, what: str) -> None:
    p.add_argument(flag, action="append", default=[], metavar="HOST:PORT", help=what)
    add_seconds(
        p, "--interval", "seconds between phone-home attempts, with jitter (default 5)", default=5.0
    )
    add_seconds(
        p, "--deadline", "stop phoning home if no listener took the server within S seconds"
    )


def add_parsers(subparsers: Subparsers) -> None:
    add_commands(subparsers, _COMMANDS)


def _serve_args(p: argparse.ArgumentParser) -> None:
    _common(p, "server")
    _cli_enroll.add_options(p)
    _add_status_option(p)
    p.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="accept clients here (forward); repeat for several addresses; [::1]:PORT for IPv6",
    )
    _phone_options(p, "--phone-home", "dial a listener here until one takes the server (reverse)")
    p.add_argument(
        "--restart",
        choices=["no", "on-failure", "always"],
        default="no",
        help="restart the program when it ends (default: no, the agent stops with it)",
    )
    add_seconds(
        p,
        "--ready-timeout",
        "seconds the program may take to listen on its private leg (default 30)",
        default=30.0,
    )
    p.add_argument(
        "--shared-leg",
        action="store_true",
        help="run a {port} program in the host's network, as it is: other local users CAN "
        "connect to its port (and it can reach the network); only for programs that need "
        "the network or where user namespaces are disabled",
    )
    p.add_argument(
        "--version-command",
        metavar="CMD",
        help="a command printing the program's version ('pvserver --version'): run once at "
        "start, the version is told to clients so that they can explain a mismatch",
    )
    p.add_argument(
        "--per-connection",
        action="store_true",
        help="start COMMAND afresh for each connection, the connection on its stdin/stdout "
        "and the peer identity in PARACONNECT_PEER_* (no placeholder needed)",
    )
    p.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="begin each connection to the program with a PROXY protocol v2 header carrying "
        "the peer's address and certificate identity",
    )
    p.add_argument("--server-id", default="", help="this server's id (default: the cert name)")
    p.add_argument(
        "--target",
        metavar="HOST:PORT",
        help="serve an already running program at this address instead of starting COMMAND",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS... ({port} etc.)")
    _cli_radius.add_radius_options(p)


def _client_args(p: argparse.ArgumentParser) -> None:
    """What connect and listen share: the address, the credentials, the local endpoint."""
    p.add_argument("address", metavar="HOST:PORT")
    _common(p, "client")
    p.add_argument(
        "--local",
        required=True,
        metavar="HOST:PORT",
        help="the local plaintext endpoint, e.g. 127.0.0.1:11111 (or unix:PATH)",
    )
    _phone_options(
        p,
        "--on-exit-phone-home",
        "when this command ends, tell the server to phone home there (a listener's "
        "HOST:PORT, yours or a friend's)",
    )


def _connect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server-id", default="", help="refuse a server with another id")


def _listen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="NAME",
        dest="servers",
        help="take only the server whose certificate is NAME (repeatable); any other "
        "server of the session that dials is refused, logged and accounted.  Without "
        "it, the first server taken is the only one taken for this command's life, so "
        "no later one can take over the local endpoint",
    )
    add_seconds(
        p,
        "--agent-wait",
        "how long a local connection waits for a server to phone home",
        default=30.0,
    )
    _cli_radius.add_radius_options(p)


def _client_command(name: str, verb: str, more: str, run: Handler, own: ArgAdder) -> Command:
    return Command(
        name,
        f"{verb} HOST:PORT and expose it on a local endpoint ({more})",
        run,
        (_client_args, own),
        description=f"{verb.capitalize()} HOST:PORT over mutual TLS and give local "
        "programs a plaintext endpoint (--local) that only this user can reach.",
    )


# -- shared ------------------------------------------------------------------------------


def _setup_logging(args: argparse.Namespace) -> None:
    import logging

    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s paraconnect %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


def _load(args: argparse.Namespace, role: Role) -> Credentials:
    from ._cli_pki import read_passphrase
    from .pki import load_credentials

    passphrase = read_passphrase("--passphrase-file", args.passphrase_file)
    return load_credentials(args.creds, role=role, passphrase=passphrase)


def _homes(texts: list[str], args: argparse.Namespace) -> list[Home]:
    from .tunnel import Home

    return [Home.parse(t, args.interval, args.deadline) for t in texts]


def _event(args: argparse.Namespace, event: str, **fields: Any) -> None:
    if args.json:
        print(json.dumps({"event": event, **fields}), flush=True)
    else:
        print(f"{event}: " + ", ".join(f"{k} {v}" for k, v in fields.items()), flush=True)


def _ready(args: argparse.Namespace, **fields: Any) -> None:
    _event(args, "ready", **fields)


async def _until_signal(on_exit: Any = None, ready: Any = None) -> None:
    """Return on SIGINT or SIGTERM, after running `on_exit` (an async callable) if given.
    `ready` (say we are ready) runs once the signals are ours: a stop sent the moment the
    ready line is read must drain, not kill the process outright."""
    import signal

    import anyio

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        if ready is not None:
            ready()
        async for _signum in signals:
            break
    if on_exit is not None:
        await on_exit()


async def _drain(side: Any, grace: float) -> None:
    """After a stop signal: refuse new connections, let open data streams finish (bounded)."""
    import logging

    log = logging.getLogger("paraconnect.tunnel")
    streams = side.data_open()
    if streams and grace > 0:
        log.warning("stop signal: draining %d open stream(s), up to %g s", streams, grace)
    left = await side.drain(grace)
    if left:
        log.warning("stop signal: cutting %d stream(s) still open after %g s", left, grace)
    else:
        log.info("stop signal: no open streams; exiting")


def _run(main: Any) -> int:
    import anyio

    from .tunnel import loop_options, single_error

    try:
        result: int = anyio.run(main, backend="asyncio", backend_options=loop_options())
    except BaseExceptionGroup as group:
        raise single_error(group) from None
    return result


# -- serve -------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    _setup_logging(args)
    # The options first: a bad RADIUS secret file must not cost the one-time enrolment token.
    radius = _cli_radius.radius_config(args)
    _cli_enroll.maybe_enroll(args)
    from .pki import Role
    from .tunnel import Agent, PerConnection, Program, ProgramExited

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if bool(command) == bool(args.target):
        raise ConfigError(
            "give the program to serve after '--' (e.g. -- pvserver --sp={port}), "
            "or --target HOST:PORT for one already running, not both"
        )
    creds = _load(args, Role.SERVER)
    program: Program | PerConnection | None = None
    if command and args.per_connection:
        program = PerConnection(command)
    elif command:
        program = Program(
            command,
            restart=args.restart,
            ready_timeout=args.ready_timeout,
            shared_leg=args.shared_leg,
        )
        if args.version_command:
            import logging

            from .tunnel import program_version

            program.version = program_version(shlex.split(args.version_command))
            logging.getLogger("paraconnect.tunnel").info(
                "program version: %s", program.version or "not reported"
            )
    agent = Agent(
        creds,
        program=program,
        target=args.target,
        listen=args.listen,
        phone_home=_homes(args.phone_home, args),
        server_id=args.server_id,
        level=args.level,
        insecure=args.insecure,
        handshake_timeout=args.handshake_timeout,
        proxy_protocol=args.proxy_protocol,
        radius=radius,
        on_unreachable=getattr(args, "report_unreachable", None),
        # An enrolled agent's key was made here: it renews it with the hub that certified it.
        renew=bool(getattr(args, "enroll", None)),
    )

    async def main() -> int:
        import anyio

        async with anyio.create_task_group() as tg:
            addresses = await tg.start(agent.run)
            if isinstance(program, Program):
                from .tunnel import METRICS

                METRICS.leg_from(lambda: program.protection)
            status = await _start_status(args, tg)
            ready = functools.partial(
                _ready,
                args,
                **status,
                listen=[str(a) for a in addresses],
                phone_home=[str(h.endpoint) for h in agent.homes],
                program=str(program.endpoint or "per connection") if program else args.target,
                leg=getattr(program, "protection", "") or "",
                level=agent.level.value,
            )
            await _until_signal(ready=ready)
            await _drain(agent.side, args.drain_timeout)
            tg.cancel_scope.cancel()
        return 0

    try:
        return _run(main)
    except ProgramExited as exc:
        if exc.returncode == 0:
            print(f"paraconnect: {exc}", file=sys.stderr)
            return 0
        raise


# -- serve --status: the tunnel metrics over HTTP, on loopback ---------------------------


def _add_status_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--status",
        metavar="HOST:PORT",
        help="serve the tunnel metrics over plain HTTP on this loopback address: /metrics "
        "(Prometheus text) and /status (JSON); port 0 picks one (in the ready event)",
    )


async def serve_status_at(tg: Any, address: str) -> str:
    """Start the tunnel metrics (connections, handshakes, bytes, servers by state) over HTTP
    on `address` (``--status``) in `tg`; its URL."""
    from ._wire import hostport
    from .tunnel import parse_endpoint, serve_status

    ep = parse_endpoint(address, "--status")
    if ep.path is not None:
        raise ConfigError("--status takes HOST:PORT on loopback, not a unix socket")
    port = await tg.start(serve_status, ep.host, ep.port)
    return f"http://{hostport(ep.host, port)}/metrics"


async def _start_status(args: argparse.Namespace, tg: Any) -> dict[str, str]:
    """Start the status endpoint if asked; the ready event then names its address."""
    if not getattr(args, "status", None):
        return {}
    return {"status": await serve_status_at(tg, args.status)}


# -- connect / listen --------------------------------------------------------------------


def _client_side(args: argparse.Namespace) -> tuple[Credentials, list[Home], dict[str, Any]]:
    """What connect and listen both start from: logging, client credentials, the homes to ask
    to phone home on exit, and the TLS options their role takes."""
    _setup_logging(args)
    from .pki import Role

    tls = {
        "level": args.level,
        "insecure": args.insecure,
        "handshake_timeout": args.handshake_timeout,
    }
    return _load(args, Role.CLIENT), _homes(args.on_exit_phone_home, args), tls


def _connect(args: argparse.Namespace) -> int:
    from .tunnel import Connector

    creds, homes, tls = _client_side(args)
    connector = Connector(creds, args.address, args.local, server_id=args.server_id, **tls)

    def ready(local: Any) -> None:
        agent = connector.agent
        check = None
        if connector.version:  # a pvserver: say a version mismatch before ParaView fails
            import logging

            from .tunnel import local_paraview, paraview_mismatch

            check = paraview_mismatch(connector.version, local_paraview(), str(connector.remote))
            if check:
                logging.getLogger("paraconnect.tunnel").warning("%s", check)
        _ready(
            args,
            local=str(local),
            remote=str(connector.remote),
            server_id=agent.server_id if agent else None,
            connect_id=connector.connect_id,
            version=connector.version,
            version_check=check,
        )

    return _serve_until_stopped(args, connector, homes, ready)


def _listen(args: argparse.Namespace) -> int:
    from .tunnel import ReverseListener

    radius = _cli_radius.radius_config(args)
    creds, homes, tls = _client_side(args)

    def on_agent(link: AgentLink) -> None:
        # One line per server that phones home: scripts learn its connect id here.
        _event(
            args,
            "server",
            server_id=link.hello.server_id,
            peer=link.peer_label,
            address=link.where,
            connect_id=link.connect_id,
        )

    def on_refused(name: str, where: str, why: str) -> None:
        _event(args, "refused", server=name, address=where, reason=why)

    listener = ReverseListener(
        creds,
        args.address,
        args.local,
        **tls,
        agent_wait=args.agent_wait,
        on_agent=on_agent,
        servers=args.servers,
        on_refused=on_refused,
        radius=radius,
    )

    def ready(started: Any) -> None:
        address, local = started
        _ready(args, listen=str(address), local=str(local))

    return _serve_until_stopped(args, listener, homes, ready)


def _serve_until_stopped(args: argparse.Namespace, role: Any, homes: list[Home], ready: Any) -> int:
    """Run `role` (a Connector or ReverseListener) until SIGINT/SIGTERM: `ready` with what it
    started, then on the signal ask each of `homes` to phone home, drain, stop."""

    async def on_exit() -> None:
        for home in homes:
            try:
                await role.request_phone_home(home)
            except ParaconnectError as exc:
                print(f"paraconnect: warning: {exc}", file=sys.stderr)

    async def main() -> int:
        import anyio

        async with anyio.create_task_group() as tg:
            started = await tg.start(role.run)
            # The ready line is printed once the stop signals are ours: a stop sent the moment
            # it is read drains instead of killing the process outright.
            await _until_signal(on_exit, functools.partial(ready, started))
            await _drain(role.side, args.drain_timeout)
            tg.cancel_scope.cancel()
        return 0

    return _run(main)


_COMMANDS = (
    Command(
        "serve",
        "run a program on a private leg and serve it over mutual TLS (the agent)",
        _serve,
        (_serve_args,),
        description="Start COMMAND with {port}, {unix} or {fd} replaced by its private leg "
        "(and {connect_id} by a random number its clients are told; it is not a secret), then "
        "listen for clients (--listen, forward) or dial them (--phone-home, reverse). A "
        "program on {port} runs in a user + network namespace of its own, so that no other "
        "user or host can connect to anything it listens on; it therefore cannot reach the "
        "network itself (multi-node MPI over TCP, licence servers): --shared-leg is the "
        "escape. Where user namespaces are disabled, pvserver falls back to the reverse "
        "bridge and any other {port} program is refused unless --shared-leg is given.",
    ),
    _client_command(
        "connect", "connect to an agent's --listen", "forward", _connect, _connect_args
    ),
    _client_command("listen", "accept agents phoning home on", "reverse", _listen, _listen_args),
)
