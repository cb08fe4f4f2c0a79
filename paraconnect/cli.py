"""The `paraconnect` command: a thin layer over the library.

Every command prints one line `paraconnect: error: ...` and exits 1 on failure, exits 0 on
success, and takes --json where its output is data. Heavy imports (cryptography, asyncio) are
made inside the handlers so that start-up stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ._version import __version__
from .errors import ParaconnectError
from .vocab import KeyType, SecurityLevel, choices

__all__ = ["build_parser", "main"]


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _add_passphrase(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--passphrase-file", metavar="FILE", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paraconnect",
        description="Secure forward and reverse connections to remote rendering servers.",
    )
    parser.add_argument("--version", action="version", version=f"paraconnect {__version__}")
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="data directory (default: $PARACONNECT_HOME, else the user data dir)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_session, _add_issue, _add_share_import, _add_revoke, _add_inspect, _add_demo):
        add(sub)
    from . import cli_debug, cli_policy, cli_pvsc, cli_servers, cli_tunnel

    for module in (cli_tunnel, cli_debug, cli_policy, cli_servers, cli_pvsc):
        module.add_parsers(sub)
    return parser


def _add_session(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """session create, list, show, delete."""
    from . import _cli_pki

    session = sub.add_parser("session", help="create, list, show or delete sessions")
    ssub = session.add_subparsers(dest="session_command", metavar="ACTION", required=True)
    p = ssub.add_parser("create", help="create a session: a session key and certificate (CA)")
    p.add_argument("name", help="session name (letters, digits, '.', '_', '-')")
    p.add_argument(
        "--key-type",
        default=KeyType.EC_P256.value,
        choices=choices(KeyType),
        help="key type of the session key and, by default, of what it issues",
    )
    p.add_argument("--days", type=int, default=90, help="lifetime of the session CA in days")
    p.add_argument(
        "--level",
        default=SecurityLevel.MUTUAL.value,
        choices=choices(SecurityLevel),
        help="security level of the session's connections (default: mutual): encrypt and "
        "mutual both check the session and each certificate's role; mutual also binds "
        "certificates to their node; none is clear text",
    )
    _add_passphrase(p, "encrypt the session key with the passphrase in FILE ('-': stdin)")
    p.add_argument(
        "--ca-key",
        metavar="URI",
        help="keep the session key in a PKCS#11 token: an RFC 7512 URI such as "
        "'pkcs11:token=LABEL;object=NAME'; the key is made there (non-extractable) unless it "
        "exists, and every signature of the session is made by the token",
    )
    p.add_argument(
        "--pin-file",
        metavar="FILE",
        help="the token's user PIN, in a file only you can read; the session records the "
        "file's path (never the PIN) and reads it whenever it signs",
    )
    p.add_argument(
        "--pkcs11-module",
        metavar="PATH",
        help="the token's PKCS#11 library (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so), unless "
        "the URI names it (module-path=)",
    )
    _add_json(p)
    p.set_defaults(func=_cli_pki.session_create)
    p = ssub.add_parser("list", help="list sessions")
    _add_json(p)
    p.set_defaults(func=_cli_pki.session_list)
    p = ssub.add_parser("show", help="show a session and the certificates it issued")
    p.add_argument("name")
    _add_json(p)
    p.set_defaults(func=_cli_pki.session_show)
    p = ssub.add_parser("delete", help="delete a session and everything it holds")
    p.add_argument("name")
    p.set_defaults(func=_cli_pki.session_delete)


def _add_issue(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """issue: server, client and node certificates."""
    from . import _cli_pki

    p = sub.add_parser(
        "issue",
        help="issue a server, client or node certificate",
        description="Issue a server, client or node certificate.  A node certificate (or one "
        "given --unique-id) is bound to a node: its CN is the node's unique ID, and at level "
        "mutual a peer whose hello claims another unique ID is refused.  Node binding is a "
        "self-check: the unique ID is what the peer claims, so a thief who sets "
        "PARACONNECT_UNIQUE_ID to the CN connects with a copied certificate.  It stops a copied "
        "certificate being used by accident or by a careless colleague, not by an attacker who "
        "has the key: keep keys private and revoke a leaked one.",
    )
    p.add_argument("role", choices=["server", "client", "node"])
    p.add_argument("name", help="name of the certificate holder")
    p.add_argument("--session", required=True, metavar="S", help="the issuing session")
    p.add_argument(
        "--unique-id",
        metavar="ID",
        help="bind to this node unique ID (node certificates default to this machine's); a "
        "self-check against copies made by accident, not against a thief (see above)",
    )
    p.add_argument("--days", type=float, default=7, help="validity in days (default 7)")
    p.add_argument("--key-type", choices=choices(KeyType))
    p.add_argument(
        "--out", metavar="DIR", help="write DIR/NAME.crt, DIR/NAME.key, DIR/ca.crt, DIR/crl.pem"
    )
    _add_passphrase(p, "passphrase of an encrypted session key")
    _add_json(p)
    p.set_defaults(func=_cli_pki.issue)


def _add_share_import(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """share (a friend bundle) and import (one given to us)."""
    from . import _cli_pki

    p = sub.add_parser("share", help="issue a friend's client certificate as a PKCS#12 bundle")
    p.add_argument("friend", help="the friend's name")
    p.add_argument("--session", required=True, metavar="S")
    p.add_argument("--out", required=True, metavar="FILE.p12")
    _add_passphrase(
        p, "bundle passphrase from FILE ('-': stdin); without it one is generated and printed"
    )
    p.add_argument("--days", type=float, default=7, help="validity in days (default 7)")
    p.add_argument("--unique-id", metavar="ID", help="bind to the friend's node unique ID")
    p.add_argument("--ca-passphrase-file", metavar="FILE", help="passphrase of the session key")
    _add_json(p)
    p.set_defaults(func=_cli_pki.share)
    p = sub.add_parser("import", help="install a friend bundle (PKCS#12) into your own store")
    p.add_argument("file", metavar="FILE.p12")
    _add_passphrase(p, "bundle passphrase from FILE ('-': stdin)")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="local name of the session")
    _add_json(p)
    p.set_defaults(func=_cli_pki.import_)


def _add_revoke(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """revoke by name or serial."""
    from . import _cli_pki

    p = sub.add_parser("revoke", help="revoke certificates by name or serial")
    p.add_argument("target", metavar="NAME|SERIAL")
    p.add_argument("--session", required=True, metavar="S")
    p.add_argument(
        "--reason",
        metavar="R",
        help="key_compromise, affiliation_changed, superseded, cessation_of_operation, ...",
    )
    _add_passphrase(p, "passphrase of an encrypted session key")
    _add_json(p)
    p.set_defaults(func=_cli_pki.revoke)


def _add_inspect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """inspect a file; print this node's unique ID."""
    from . import _cli_pki

    p = sub.add_parser("inspect", help="describe a certificate, CRL, key or bundle")
    p.add_argument("file")
    p.add_argument("--session", metavar="S", help="also check it against this session")
    _add_passphrase(p, "passphrase of a bundle")
    _add_json(p)
    p.set_defaults(func=_cli_pki.inspect)
    p = sub.add_parser("unique-id", help="print this node's unique ID")
    _add_json(p)
    p.set_defaults(func=_cli_pki.unique_id)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """demo: the quickstart, in JupyterLab, headless or as commands."""
    p = sub.add_parser(
        "demo",
        help="a session, the built-in renderer phoning home, a picture through the tunnel",
        description="Open the quickstart notebook in JupyterLab; --headless runs it without a "
        "browser and writes the picture; --cli walks through the same with paraconnect commands.",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--headless", action="store_true", help="run the notebook with nbclient, no browser"
    )
    how.add_argument(
        "--cli", action="store_true", help="the same steps as real 'paraconnect' processes"
    )
    p.add_argument("--keep", action="store_true", help="keep the demo's data directory")
    p.add_argument(
        "--out", metavar="FILE.png", help="where to write the picture (./paraconnect-demo.png)"
    )
    p.add_argument("--dataset", default="wavelet", help="wavelet, sphere or cone")
    p.add_argument(
        "--dir", metavar="DIR", help="JupyterLab: the working directory (./paraconnect-demo)"
    )
    p.add_argument("--no-browser", action="store_true", help="JupyterLab: open no browser")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    if args.cli:
        from ._demo import run

        return run(keep=args.keep, out=args.out, dataset=args.dataset)
    from ._demo_lab import open_lab, run_headless

    if args.headless:
        return run_headless(args.out, args.dataset, args.keep)
    return open_lab(args.dir, browser=not args.no_browser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.home:
        os.environ["PARACONNECT_HOME"] = os.path.abspath(args.home)
    try:
        result: int = args.func(args)
    except ParaconnectError as exc:
        print(f"paraconnect: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("paraconnect: interrupted", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
