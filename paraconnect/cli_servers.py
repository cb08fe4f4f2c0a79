"""``paraconnect hub | launch | servers``: run a hub without Jupyter, and talk to it.

``paraconnect hub`` serves until SIGINT/SIGTERM and writes ``$PARACONNECT_HOME/run/hub.json``;
``launch`` and ``servers`` find it there and use its control socket (length-prefixed JSON on a
Unix socket in a 0700 directory).  Servers keep running when the hub stops; the next hub
re-adopts those that phone home again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from ._cli_common import add_seconds
from .errors import ConfigError
from .vocab import COMMAND_KINDS, KINDS

__all__ = ["add_parsers"]


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "hub",
        help="run the hub (without Jupyter): phone-home listeners, launched servers, registry",
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="where agents phone home (default 127.0.0.1:0: a free loopback port)",
    )
    p.add_argument(
        "--advertise", metavar="HOST", help="the host name agents should dial (NAT, login nodes)"
    )
    p.add_argument(
        "--session",
        action="append",
        default=[],
        metavar="S",
        help="open this session's listener at start (repeatable)",
    )
    p.add_argument(
        "--status",
        metavar="HOST:PORT",
        help="serve the hub's metrics over plain HTTP on this loopback address: /metrics "
        "(Prometheus text) and /status (JSON); port 0 picks one (in the ready event)",
    )
    add_seconds(
        p,
        "--readopt-grace",
        "seconds a server of a previous hub has to phone home again (default 120)",
        default=120.0,
    )
    p.add_argument(
        "--max-servers",
        type=int,
        default=0,
        metavar="N",
        help="refuse a launch while N servers run (default 0: no limit)",
    )
    p.add_argument(
        "--ssh-host",
        action="append",
        default=[],
        metavar="HOST",
        help="the only hosts the ssh launcher may reach (repeatable; default: any)",
    )
    p.add_argument(
        "--slurm-default",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a launcher option every Slurm launch starts from, e.g. partition=gpu (repeatable)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    _json(p)
    from ._cli_radius import add_radius_options

    add_radius_options(p)
    p.set_defaults(func=_hub)

    p = subparsers.add_parser(
        "launch",
        help="launch a server through the running hub",
        description="Launch a pvserver, the built-in renderer or any TCP program (kind "
        "command, its command line after '--', with {port}) and supervise it.",
    )
    p.add_argument("kind", choices=KINDS)
    # Everything after the kind: options, then '--' and the command (split in _launch, since
    # argparse cannot mix a positional kind, options and a trailing command line).
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options, then -- COMMAND ARGS...")
    p.set_defaults(parser=p)
    p.set_defaults(func=_launch)

    p = subparsers.add_parser(
        "servers", help="list, show, tail, dial, stop or resubmit launched servers"
    )
    ssub = p.add_subparsers(dest="servers_command", metavar="ACTION", required=True)
    q = ssub.add_parser("list", help="every server the hub knows")
    _json(q)
    q.set_defaults(func=_list)
    for name, what in (("show", "one server"), ("logs", "its agent's and program's log")):
        q = ssub.add_parser(name, help=what)
        q.add_argument("id")
        if name == "logs":
            q.add_argument("--tail", type=int, default=100, metavar="N")
        _json(q)
        q.set_defaults(func=_server_op("server", "id") if name == "show" else _logs)
    q = ssub.add_parser(
        "dial", help="connect a client that accepts (pvpython ReverseConnect) to the server"
    )
    q.add_argument("id")
    q.add_argument("port", type=int, help="the client's listening port on 127.0.0.1")
    add_seconds(q, "--timeout", None, default=60.0)
    _json(q)
    q.set_defaults(func=_server_op("dial", "id", "port", "timeout"))
    q = ssub.add_parser("stop", help="stop it: graceful, then kill (scancel under Slurm)")
    q.add_argument("id")
    add_seconds(q, "--grace", None, default=10.0)
    _json(q)
    q.set_defaults(func=_server_op("stop", "id", "grace"))
    q = ssub.add_parser(
        "resubmit",
        help="a new batch job for a reverse server whose job nears its time limit: it phones "
        "home for the same id, so the local endpoint and the view stay",
    )
    q.add_argument("id")
    _json(q)
    q.set_defaults(func=_server_op("resubmit", "id"))


def _dest(flag: str) -> str:
    return "launcher_opt_" + flag.removeprefix("--").replace("-", "_")


def _launcher_options(p: argparse.ArgumentParser) -> dict[str, dict[str, str]]:
    """Each registered launcher's options (paraconnect.servers register_launcher), added last
    so that a clash with one of 'launch' is named here; returns launcher -> {key: flag}."""
    from .servers import launcher_entries

    entries = launcher_entries()
    flags: dict[str, tuple[str, list[str]]] = {}  # flag -> (type, helps)
    for entry in entries:
        for option in entry.options:
            kind, helps = flags.setdefault(option.flag, (option.type, []))
            if kind != option.type:
                raise ConfigError(
                    f"launcher {entry.name} declares {option.flag} as {option.type}, another "
                    f"launcher as {kind}; give it another flag"
                )
            helps.append(
                f"{entry.name}: {option.help}" + (" (required)" if option.required else "")
            )
    group = p.add_argument_group("launcher options (each names its launcher)")
    for entry in entries:
        for option in entry.options:
            if option.flag not in flags:
                continue  # added for an earlier launcher
            _, helps = flags.pop(option.flag)
            try:
                group.add_argument(
                    option.flag, dest=_dest(option.flag), metavar=option.metavar,
                    help="; ".join(helps), type=int if option.type == "int" else str,
                )  # fmt: skip
            except argparse.ArgumentError as exc:
                raise ConfigError(
                    f"launcher {entry.name}: its option {option.flag} clashes with an option of "
                    f"'launch' ({exc}); register it under another flag"
                ) from None
    return {e.name: {o.key: o.flag for o in e.options} for e in entries}


def _chosen_launcher_options(
    args: argparse.Namespace, flags: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """The options given for the chosen launcher; one of another launcher is refused, since it
    would be silently ignored."""
    mine = flags[args.launcher]
    for name, theirs in flags.items():
        for flag in theirs.values():
            if flag not in mine.values() and getattr(args, _dest(flag)) is not None:
                raise ConfigError(
                    f"{flag} is an option of the {name} launcher, not of {args.launcher}; "
                    f"drop it or use --launcher {name}"
                )
    given = {key: getattr(args, _dest(flag)) for key, flag in mine.items()}
    return {key: value for key, value in given.items() if value is not None}


def _launch_options(p: argparse.ArgumentParser) -> dict[str, dict[str, str]]:
    from .servers import launcher_entries

    entries = launcher_entries()
    p.add_argument(
        "--launcher",
        choices=[e.name for e in entries],
        default="local",
        help="; ".join(f"{e.name}: {e.summary}" for e in entries),
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--reverse",
        dest="mode",
        action="store_const",
        const="reverse",
        help="the agent phones home to the hub (default)",
    )
    mode.add_argument(
        "--forward",
        dest="mode",
        action="store_const",
        const="forward",
        help="the agent listens; the hub dials it",
    )
    p.set_defaults(mode="reverse")
    p.add_argument("--session", default="default", metavar="S")
    add_seconds(p, "--walltime", "wall-time limit in seconds")
    p.add_argument(
        "--restart-policy",
        choices=["never", "on-failure"],
        default="never",
        help="relaunch the agent's job when it fails (default never)",
    )
    p.add_argument("--restart-limit", type=int, default=3, metavar="N")
    p.add_argument("--python", metavar="PATH", help="Python with paraconnect on the remote host")
    p.add_argument(
        "--ranks",
        type=int,
        metavar="N",
        help="pvserver: MPI ranks (mpiexec -n N); under --launcher slurm the job asks for N "
        "tasks and one agent runs mpiexec inside its private network namespace, not srun "
        "(srun's tasks would start outside it, their ports reachable on the node), so the N ranks "
        "must fit on one node",
    )
    p.add_argument("--xvfb", choices=["auto", "always", "never"], help="pvserver: X server")
    p.add_argument(
        "--pv-reverse",
        action="store_true",
        help="pvserver, hardened: it dials out to a loopback bridge, so nothing listens on the "
        "remote host; the client must accept (pvpython ReverseConnect) and 'servers dial' it",
    )
    p.add_argument(
        "--shared-leg",
        action="store_true",
        help="pvserver, command: run the program in the remote host's network (serve "
        "--shared-leg): other users there CAN connect to its port; by default it runs in a "
        "private network namespace, which also keeps it off the network",
    )
    p.add_argument("--size", metavar="WxH", help="builtin: default frame size")
    p.add_argument("--app", metavar="PATH", help="trame: the app file on the server's host")
    p.add_argument(
        "--probe",
        choices=["port", "log", "http"],
        help="command: ready when it listens (port, default), logs --log-regex, or answers "
        "GET --http-path",
    )
    p.add_argument("--log-regex", metavar="REGEX", help="command: readiness log line")
    p.add_argument("--http-path", metavar="PATH", help="command: readiness HTTP path")
    p.add_argument("--wait", action="store_true", help="wait until the server is connected")
    p.add_argument(
        "--relay-port",
        type=int,
        metavar="P",
        help="with --wait: then relay one client of 127.0.0.1:P (this user) to the server's "
        "local endpoint, and stop the server when it leaves (ParaView's .pvsc: 'paraconnect "
        "pvsc')",
    )
    add_seconds(p, "--timeout", "for --wait", default=120.0)
    _json(p)
    return _launcher_options(p)


def _client() -> Any:
    from .hub import HubClient

    return HubClient()


def _print_info(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(info))
        return
    for key in ("id", "kind", "state", "reason", "launcher", "host", "job_id", "mode", "local"):
        print(f"{key:10} {info.get(key)}")
    if info.get("connect_id"):
        print(f"{'connect_id':10} {info['connect_id']}")
    if info.get("note"):
        print(f"{'note':10} {info['note']}")


def _launch(outer: argparse.Namespace) -> int:
    rest = list(outer.rest)
    command: list[str] = []
    if "--" in rest:
        at = rest.index("--")
        rest, command = rest[:at], rest[at + 1 :]
    parser = argparse.ArgumentParser(prog=f"{outer.parser.prog} {outer.kind}")
    flags = _launch_options(parser)
    args = parser.parse_args(rest)
    args.kind = outer.kind
    if command and args.kind not in COMMAND_KINDS:
        raise ConfigError(
            f"kind {args.kind} takes no command after '--'; use kind command (or web)"
        )
    options: dict[str, Any] = {
        "restart_policy": args.restart_policy,
        "restart_limit": args.restart_limit,
    }
    if args.pv_reverse:
        if args.kind != "pvserver":
            raise ConfigError("--pv-reverse is an option of the pvserver kind")
        options["pv_reverse"] = True
    if args.shared_leg:
        if args.kind == "builtin":
            raise ConfigError(
                "--shared-leg is an option of the pvserver, command, web and trame kinds"
            )
        options["shared_leg"] = True
    for key in (
        "walltime",
        "python",
        "ranks",
        "xvfb",
        "size",
        "probe",
        "log_regex",
        "http_path",
        "app",
    ):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    lopts = _chosen_launcher_options(args, flags)
    if args.launcher == "manual":
        if args.mode != "reverse":
            raise ConfigError("an agent started by hand phones home: drop --forward")
        with _client() as hub:
            got = hub.request(
                "agent_command", kind=args.kind, session=args.session, options=options,
                command=command,
            )  # fmt: skip
        if args.json:
            print(json.dumps(got))
        else:
            expires = time.strftime("%H:%M", time.localtime(got["expires"]))
            for warning in got.get("warnings", []):
                print(f"paraconnect: warning: {warning}", file=sys.stderr)
            print(f"# server {got['server']['id']}: run this on the remote host before {expires}")
            print(got["command"])
        return 0
    with _client() as hub:
        info = hub.request(
            "launch",
            kind=args.kind,
            launcher=args.launcher,
            session=args.session,
            mode=args.mode,
            options=options,
            command=command,
            launcher_options=lopts,
        )
        if args.wait:
            info = hub.request("wait", id=info["id"], timeout=args.timeout)
    _print_info(info, args.json)
    if args.relay_port is not None and info["state"] == "connected":
        from .cli_pvsc import relay_in_background

        def stop() -> None:
            with _client() as hub:
                hub.request("stop", id=info["id"])

        host, port = str(info["local"]).rsplit(":", 1)
        relay_in_background(args.relay_port, (host, int(port)), stop)
    return 0 if info["state"] != "failed" else 1


def _list(args: argparse.Namespace) -> int:
    with _client() as hub:
        infos = hub.request("servers")
    if args.json:
        print(json.dumps(infos))
        return 0
    print(f"{'ID':20} {'KIND':9} {'STATE':10} {'LAUNCHER':8} {'LOCAL':22} REASON")
    for i in infos:
        local = i.get("local") or "-"
        print(
            f"{i['id']:20} {i['kind']:9} {i['state']:10} {i['launcher']:8} {local:22} {i['reason']}"
        )
    return 0


def _server_op(op: str, *fields: str) -> Callable[[argparse.Namespace], int]:
    """The handler of a command that runs `op` on the hub with these arguments and prints the
    server it answers with."""

    def run(args: argparse.Namespace) -> int:
        with _client() as hub:
            _print_info(hub.request(op, **{f: getattr(args, f) for f in fields}), args.json)
        return 0

    return run


def _logs(args: argparse.Namespace) -> int:
    with _client() as hub:
        text = hub.request("logs", id=args.id, tail=args.tail)
    print(json.dumps({"id": args.id, "logs": text}) if args.json else text, end="")
    if not args.json and text and not text.endswith("\n"):
        print()
    return 0


def _hub(args: argparse.Namespace) -> int:
    import logging
    import signal

    import anyio

    from ._cli_radius import radius_config
    from .cli_tunnel import serve_status_at
    from .hub import Hub, LaunchRules, serve_control
    from .tunnel import loop_options, single_error

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s paraconnect %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    rules = LaunchRules.from_lines(
        args.max_servers, args.ssh_host, args.slurm_default,
        "paraconnect hub --max-servers / --ssh-host / --slurm-default",
    )  # fmt: skip
    hub = Hub(
        listen=args.listen,
        advertise=args.advertise,
        readopt_grace=args.readopt_grace,
        rules=rules,
        radius=radius_config(args),
    )

    async def main() -> int:
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            addresses = {s: await hub.open_session(s) for s in args.session}
            control = await tg.start(serve_control, hub)
            fields = {"control": str(control), "phone_home": addresses, "at": time.time()}
            if args.status:
                fields["status"] = await serve_status_at(tg, args.status)
            if args.json:
                print(json.dumps({"event": "ready", **fields}), flush=True)
            else:
                print(f"ready: control {control}, phone home {addresses}", flush=True)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()
        return 0

    try:
        result: int = anyio.run(main, backend="asyncio", backend_options=loop_options())
    except BaseExceptionGroup as group:
        raise single_error(group) from None
    return result
