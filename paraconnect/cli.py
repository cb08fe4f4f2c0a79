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

from . import _cli_pki
from ._cli_common import Command, add_commands, add_json, add_passphrase, add_session
from ._version import __version__
from .errors import ParaconnectError
from .vocab import KeyType, SecurityLevel, choices

__all__ = ["build_parser", "main"]


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
    add_commands(sub, _COMMANDS)
    from . import cli_debug, cli_policy, cli_pvsc, cli_servers, cli_tunnel

    for module in (cli_tunnel, cli_debug, cli_policy, cli_servers, cli_pvsc):
        module.add_parsers(sub)
    return parser


# -- the credential commands' arguments (handlers: _cli_pki) ---------------------------------


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")


def _days(p: argparse.ArgumentParser) -> None:
    p.add_argument("--days", type=float, default=7, help="validity in days (default 7)")


def _session_create(p: argparse.ArgumentParser) -> None:
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
    add_passphrase(p, "encrypt the session key with the passphrase in FILE ('-': stdin)")
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


def _issue(p: argparse.ArgumentParser) -> None:
    p.add_argument("role", choices=["server", "client", "node"])
    p.add_argument("name", help="name of the certificate holder")
    add_session(p, "the issuing session")
    p.add_argument(
        "--unique-id",
        metavar="ID",
        help="bind to this node unique ID (node certificates default to this machine's); a "
        "self-check against copies made by accident, not against a thief (see above)",
    )
    _days(p)
    p.add_argument("--key-type", choices=choices(KeyType))
    p.add_argument(
        "--out", metavar="DIR", help="write DIR/NAME.crt, DIR/NAME.key, DIR/ca.crt, DIR/crl.pem"
    )
    add_passphrase(p, "passphrase of an encrypted session key")


def _share(p: argparse.ArgumentParser) -> None:
    p.add_argument("friend", help="the friend's name")
    add_session(p)
    p.add_argument("--out", required=True, metavar="FILE.p12")
    add_passphrase(
        p, "bundle passphrase from FILE ('-': stdin); without it one is generated and printed"
    )
    _days(p)
    p.add_argument("--unique-id", metavar="ID", help="bind to the friend's node unique ID")
    p.add_argument("--ca-passphrase-file", metavar="FILE", help="passphrase of the session key")


def _import(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE.p12")
    add_passphrase(p, "bundle passphrase from FILE ('-': stdin)")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="local name of the session")


def _revoke(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|SERIAL")
    add_session(p)
    p.add_argument(
        "--reason",
        metavar="R",
        help="key_compromise, affiliation_changed, superseded, cessation_of_operation, ...",
    )
    add_passphrase(p, "passphrase of an encrypted session key")


def _inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument("--session", metavar="S", help="also check it against this session")
    add_passphrase(p, "passphrase of a bundle")


def _demo_args(p: argparse.ArgumentParser) -> None:
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


_COMMANDS = (
    Command(
        "session",
        "create, list, show or delete sessions",
        dest="session_command",
        actions=(
            Command(
                "create",
                "create a session: a session key and certificate (CA)",
                _cli_pki.session_create,
                (_session_create, add_json),
            ),
            Command("list", "list sessions", _cli_pki.session_list, (add_json,)),
            Command(
                "show",
                "show a session and the certificates it issued",
                _cli_pki.session_show,
                (_name, add_json),
            ),
            Command(
                "delete",
                "delete a session and everything it holds",
                _cli_pki.session_delete,
                (_name,),
            ),
        ),
    ),
    Command(
        "issue",
        "issue a server, client or node certificate",
        _cli_pki.issue,
        (_issue, add_json),
        description="Issue a server, client or node certificate.  A node certificate (or one "
        "given --unique-id) is bound to a node: its CN is the node's unique ID, and at level "
        "mutual a peer whose hello claims another unique ID is refused.  Node binding is a "
        "self-check: the unique ID is what the peer claims, so a thief who sets "
        "PARACONNECT_UNIQUE_ID to the CN connects with a copied certificate.  It stops a copied "
        "certificate being used by accident or by a careless colleague, not by an attacker who "
        "has the key: keep keys private and revoke a leaked one.",
    ),
    Command(
        "share",
        "issue a friend's client certificate as a PKCS#12 bundle",
        _cli_pki.share,
        (_share, add_json),
    ),
    Command(
        "import",
        "install a friend bundle (PKCS#12) into your own store",
        _cli_pki.import_,
        (_import, add_json),
    ),
    Command(
        "revoke",
        "revoke certificates by name or serial",
        _cli_pki.revoke,
        (_revoke, add_json),
    ),
    Command(
        "inspect",
        "describe a certificate, CRL, key or bundle",
        _cli_pki.inspect,
        (_inspect, add_json),
    ),
    Command("unique-id", "print this node's unique ID", _cli_pki.unique_id, (add_json,)),
    Command(
        "demo",
        "a session, the built-in renderer phoning home, a picture through the tunnel",
        _demo,
        (_demo_args,),
        description="Open the quickstart notebook in JupyterLab; --headless runs it without a "
        "browser and writes the picture; --cli walks through the same with paraconnect commands.",
    ),
)

if __name__ == "__main__":
    sys.exit(main())
