"""``paraconnect serve --enroll``: this server's key made here, its certificate from the hub
(see paraconnect.servers._enroll); --creds is then the directory enrolment writes."""

from __future__ import annotations

import argparse
import sys

from .errors import ConfigError

__all__ = ["add_options", "maybe_enroll"]


def add_options(p: argparse.ArgumentParser) -> None:
    """``serve --enroll``: make this server's key here and have the hub certify it (see
    paraconnect.servers._enroll); --creds is then the directory enrolment writes."""
    for action in p._actions:
        if action.dest == "creds":
            action.required = False  # --enroll ... --creds-dir DIR stands in for it
    g = p.add_argument_group("enrolment (instead of shipped credentials)")
    g.add_argument("--enroll", metavar="HOST:PORT", help="the hub's enrolment address")
    g.add_argument(
        "--ca-sha256", metavar="FP", help="SHA-256 fingerprint of the session CA to trust"
    )
    g.add_argument(
        "--hub-identity",
        metavar="ROLE/NAME",
        default="client/hub:enroll",
        help="the hub's role and name in the session (default client/hub:enroll, as the hub's "
        "enrolment line says): any other certificate of the session CA is refused before the "
        "token is sent",
    )
    g.add_argument("--token-file", metavar="FILE", help="the one-time enrolment token ('-': stdin)")
    g.add_argument(
        "--token-env",
        metavar="NAME",
        help="read the token from environment variable NAME (removed before the program starts)",
    )
    g.add_argument("--creds-dir", metavar="DIR", help="where to write the enrolled credentials")


def maybe_enroll(args: argparse.Namespace) -> None:
    import functools
    import os
    from pathlib import Path

    if not getattr(args, "enroll", None):
        if not args.creds:
            raise ConfigError("give --creds C, or --enroll HOST:PORT with its options")
        return
    missing = [o for o, v in (("--ca-sha256", args.ca_sha256), ("--server-id", args.server_id),
                              ("--creds-dir", args.creds_dir)) if not v]  # fmt: skip
    if missing:
        raise ConfigError(f"--enroll needs {', '.join(missing)}")
    if args.token_env:
        token = os.environ.pop(args.token_env, "")
    elif args.token_file == "-":  # noqa: S105 - stdin, not a password
        token = sys.stdin.readline()
    elif args.token_file:
        try:
            token = Path(args.token_file).read_text()
        except OSError as exc:
            raise ConfigError(f"--token-file {args.token_file}: {exc.strerror or exc}") from None
    else:
        raise ConfigError("--enroll needs the token: --token-file FILE or --token-env NAME")
    token = token.strip()
    if not token:
        raise ConfigError("the enrolment token is empty; pass the one the hub issued")

    import anyio

    from .pki import Store
    from .servers import REPORT_FILE, enroll, report_unreachable

    creds_dir = Path(args.creds_dir).absolute()
    uid = Store().unique_id().value
    anyio.run(
        functools.partial(
            enroll, args.enroll, args.ca_sha256, token, args.server_id, creds_dir, uid,
            hub_identity=args.hub_identity,
        )
    )  # fmt: skip
    print(f"paraconnect: enrolled {args.server_id}; credentials in {creds_dir}", file=sys.stderr)
    args.creds = str(creds_dir)
    report = creds_dir / REPORT_FILE
    if report.exists():
        # Where the phone-home address cannot be dialled, the hub hears why (once).
        args.report_unreachable = functools.partial(
            report_unreachable, args.enroll, args.ca_sha256, report.read_text().strip(),
            args.server_id, hub_identity=args.hub_identity,
        )  # fmt: skip
