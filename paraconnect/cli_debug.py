"""``paraconnect debug client | server | creds``: a thin layer over `paraconnect.debug`.

Prints each step as PASS/FAIL/WARN/SKIP with its reason and fix (or, with ``--json``, one JSON
object with the same steps), and exits 0 when no step failed, 1 when one did.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._cli_common import Command, add_commands, add_creds, add_json, add_passphrase, add_seconds
from .errors import ConfigError
from .vocab import SecurityLevel, choices

if TYPE_CHECKING:
    from ._cli_common import Subparsers
    from .debug import Report

__all__ = ["add_parsers"]


def _creds_options(p: argparse.ArgumentParser) -> None:
    add_creds(p, "client credentials: a session name, a directory of PEM files or a PKCS#12 bundle")
    _common(p)


def _common(p: argparse.ArgumentParser) -> None:
    add_passphrase(p, "passphrase of a bundle or key")
    p.add_argument(
        "--level",
        choices=choices(SecurityLevel),
        help="security level to check against (default: the session's)",
    )
    add_json(p, "print the steps as JSON")


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", metavar="HOST:PORT", help="the agent's --listen address")
    _creds_options(p)
    p.add_argument("--server-id", metavar="ID", help="the server id to expect")
    add_seconds(p, "--timeout", "seconds per step (default 5)", default=5.0)


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", metavar="HOST:PORT", help="where agents phone home")
    _creds_options(p)
    add_seconds(
        p,
        "--timeout",
        "seconds to wait for a connection and for each step (default 60)",
        default=60.0,
    )


def _creds_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("creds", metavar="C", help="a session name, a PEM directory or a bundle")
    p.add_argument("--peer-ca", metavar="FILE", help="the peer's ca.crt: would it trust us?")
    p.add_argument(
        "--role", choices=["client", "server"], help="the role they must act in (default: any)"
    )
    _common(p)


def add_parsers(subparsers: Subparsers) -> None:
    add_commands(subparsers, _COMMANDS)


def _passphrase(args: argparse.Namespace) -> bytes | None:
    if not args.passphrase_file:
        return None
    try:
        if args.passphrase_file == "-":  # noqa: S105 - "-" means stdin
            return sys.stdin.buffer.readline().rstrip(b"\r\n")
        return Path(args.passphrase_file).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigError(
            f"--passphrase-file {args.passphrase_file}: {exc.strerror or exc}"
        ) from None


def _print(args: argparse.Namespace, report: Report) -> int:
    if args.json:
        print(json.dumps(report.as_dict(), indent=1, default=str))
    else:
        print(report.render())
    return 0 if report.passed else 1


def _client(args: argparse.Namespace) -> int:
    import anyio

    from .debug import diagnose_client

    async def main() -> Report:
        return await diagnose_client(
            args.address,
            args.creds,
            server_id=args.server_id,
            timeout=args.timeout,
            passphrase=_passphrase(args),
            level=args.level,
        )

    return _print(args, anyio.run(main, backend="asyncio"))


def _server(args: argparse.Namespace) -> int:
    import anyio

    from .debug import diagnose_server

    def listening(port: int) -> None:
        if not args.json:
            print(f"listening on port {port}; waiting for one connection", file=sys.stderr)

    async def main() -> Report:
        return await diagnose_server(
            args.address,
            args.creds,
            timeout=args.timeout,
            passphrase=_passphrase(args),
            level=args.level,
            on_listening=listening,
        )

    return _print(args, anyio.run(main, backend="asyncio"))


def _creds(args: argparse.Namespace) -> int:
    from .debug import diagnose_creds

    report = diagnose_creds(
        args.creds,
        peer_ca=args.peer_ca,
        role=args.role,
        passphrase=_passphrase(args),
        level=args.level,
    )
    return _print(args, report)


_COMMANDS = (
    Command(
        "debug",
        "explain, step by step, why a connection or credentials fail",
        description="Walk the path to a peer step by step (name, address, TCP, what answers, "
        "TLS, the peer's certificate, whether it accepts ours, paraconnect's hello) and say "
        "what passed, what failed, why, and the fix. Exit 1 if a step failed.",
        dest="debug_command",
        metavar="WHAT",
        actions=(
            Command("client", "try a connection to an agent as a client", _client, (_client_args,)),
            Command(
                "server",
                "listen once (as 'paraconnect listen') and explain what arrives",
                _server,
                (_server_args,),
            ),
            Command("creds", "check credentials offline", _creds, (_creds_args,)),
        ),
    ),
)
