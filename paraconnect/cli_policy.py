"""``paraconnect policy`` and ``paraconnect accounting``: who may connect, and who did.

``policy allow|deny`` add an ordered rule (role, name, serial, unique ID: every one given must
match), ``policy default allow|deny`` sets what applies when no rule matches, ``policy show``
lists them, ``policy remove`` deletes rules.  Running agents and clients pick a change up
within a second, and close open connections the new policy refuses.

``accounting`` lists the record of every connection attempt (``--summary``: per identity).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from ._cli_common import Command, add_commands, add_json, add_session
from .errors import ConfigError

if TYPE_CHECKING:
    from ._cli_common import Subparsers
    from .pki import Policy, Rule, Session

__all__ = ["add_parsers"]


def _criteria(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", choices=["server", "client", "node"], help="the peer's role")
    p.add_argument("--name", metavar="N", help="the certificate's name")
    p.add_argument("--serial", metavar="X", help="the certificate's serial (hex)")
    p.add_argument("--unique-id", metavar="U", help="the node unique ID it was issued for")


def _json(p: argparse.ArgumentParser) -> None:
    add_json(p, "print the policy as JSON")


def _position(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--position",
        type=int,
        metavar="N",
        help="insert as rule number N (default: append, checked last)",
    )


def _verdict(p: argparse.ArgumentParser) -> None:
    p.add_argument("verdict", choices=["allow", "deny"])


def _removal(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", type=int, metavar="N", help="remove rule number N")
    p.add_argument(
        "--all",
        action="store_true",
        help="remove the whole policy file (also a malformed one): everyone allowed again",
    )


def _records(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", metavar="S", help="only this session (name or id)")
    p.add_argument("--since", metavar="T", help="only since T: a date/time (UTC) or an age (2h)")
    p.add_argument("--summary", action="store_true", help="one line per remote identity")
    p.add_argument(
        "--rotate-days",
        type=float,
        metavar="D",
        help="first move closed records older than D days into the archive",
    )
    p.add_argument(
        "--rotate-rows",
        type=int,
        metavar="N",
        help="first move all but the newest N closed records into the archive",
    )
    add_json(p, "print JSON")


def add_parsers(subparsers: Subparsers) -> None:
    add_commands(subparsers, _COMMANDS)


# -- policy ------------------------------------------------------------------------------


def _session(name: str) -> Session:
    from .pki import Store

    return Store().open_session(name)


def _rule(args: argparse.Namespace, action: str) -> Rule:
    from .pki import Rule

    return Rule.make(
        action, role=args.role, name=args.name, serial=args.serial, unique_id=args.unique_id
    )


def _print(session: Session, policy: Policy, args: argparse.Namespace) -> None:
    from .pki import policy_path, policy_warnings

    warnings = policy_warnings(session, policy)
    if args.json:
        out = {
            "session": session.name,
            "path": str(policy_path(session)),
            **policy.as_dict(),
            "warnings": warnings,
        }
        print(json.dumps(out, indent=1))
    else:
        print(f"policy of session {session.name!r} ({policy_path(session)}):")
        for index, rule in enumerate(policy.rules, 1):
            print(f"  {index}. {rule.describe()}")
        print(f"  default: {policy.default}")
    for warning in warnings:
        loud = "WARNING" if warning.startswith("LOCK-OUT") else "warning"
        print(f"paraconnect: {loud}: {warning}", file=sys.stderr)


def _add(args: argparse.Namespace) -> int:
    from .pki import add_rule

    session = _session(args.session)
    _print(session, add_rule(session, _rule(args, args.action), args.position), args)
    return 0


def _default(args: argparse.Namespace) -> int:
    from .pki import set_default

    session = _session(args.session)
    _print(session, set_default(session, args.verdict), args)
    return 0


def _show(args: argparse.Namespace) -> int:
    from .pki import load_policy, policy_path

    session = _session(args.session)
    _print(session, load_policy(policy_path(session)), args)
    return 0


def _remove(args: argparse.Namespace) -> int:
    from ._fs import fsync_dir, locked
    from .pki import Policy, policy_path, remove_rule

    session = _session(args.session)
    given = any(v is not None for v in (args.role, args.name, args.serial, args.unique_id))
    if args.all:
        path = policy_path(session)
        with locked(session.path / ".lock"):
            path.unlink(missing_ok=True)
            fsync_dir(session.path)
        _print(session, Policy(), args)
        return 0
    if (args.index is None) == (not given):
        raise ConfigError(
            "say which rules to remove: --index N, or the fields of the rule (--name, --role, "
            "--serial, --unique-id), or --all"
        )

    criteria = None if args.index is not None else _rule(args, "allow").criteria
    _print(session, remove_rule(session, index=args.index, criteria=criteria), args)
    return 0


# -- accounting --------------------------------------------------------------------------


def _session_ids(spec: str) -> list[str]:
    from .pki import Store

    store = Store()
    ids = [s.id for s in store.list_sessions() if spec in (s.name, s.id)]
    return ids or [spec]


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _accounting(args: argparse.Namespace) -> int:
    import datetime as dt

    from .pki import default_home
    from .tunnel import Accounting, parse_since, summarize

    home = default_home()
    if not (home / "accounting.sqlite3").exists():
        records = []
        acc = None
    else:
        acc = Accounting.in_home(home, auto_rotate=False)
    try:
        if acc is not None:
            if args.rotate_days is not None or args.rotate_rows is not None:
                moved = acc.rotate(
                    max_age=args.rotate_days * 86400 if args.rotate_days is not None else None,
                    max_rows=args.rotate_rows,
                )
                print(
                    f"paraconnect: {moved} record(s) moved to {acc.archive_path}", file=sys.stderr
                )
            records = acc.records(
                session=_session_ids(args.session) if args.session else None,
                since=parse_since(args.since) if args.since else None,
            )
    finally:
        if acc is not None:
            acc.close()
    if args.summary:
        summary = summarize(records)
        if args.json:
            print(json.dumps([s.as_dict() for s in summary], indent=1))
            return 0
        for s in summary:
            print(
                f"{s.identity}: {s.count} attempt(s), {s.refused} refused, {s.lost} lost, "
                f"{s.open} open, connected {s.seconds:.1f} s, in {_fmt_bytes(s.bytes_in)}, "
                f"out {_fmt_bytes(s.bytes_out)}"
            )
        return 0
    if args.json:
        print(json.dumps([r.as_dict() for r in records], indent=1))
        return 0
    now = time.time()
    for r in records:
        start = dt.datetime.fromtimestamp(r.start, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        end = r.end if r.end is not None else now
        who = r.remote_identity or "unidentified peer"
        line = (
            f"{start} {r.outcome:<7} {r.kind or '?':<7} {r.side or '?'} <-> {who} at "
            f"{r.remote_address}: {end - r.start:.1f} s, in {_fmt_bytes(r.bytes_in)}, "
            f"out {_fmt_bytes(r.bytes_out)}"
        )
        if r.reason:
            line += f" ({r.reason})"
        print(line)
    return 0


_COMMANDS = (
    Command(
        "policy",
        "who may connect to a session: ordered allow/deny rules and a default",
        description="Rules are checked in order at every handshake, and again on open "
        "connections when the policy changes; the first rule whose every given field matches "
        "decides, else the default. Revocation stays with 'paraconnect revoke'.",
        dest="policy_command",
        actions=(
            *(
                Command(
                    action,
                    f"add a rule that {action}s matching peers",
                    _add,
                    (add_session, _criteria, _position, _json),
                    defaults={"action": action},
                )
                for action in ("allow", "deny")
            ),
            Command(
                "default",
                "what applies when no rule matches (allow or deny)",
                _default,
                (_verdict, add_session, _json),
            ),
            Command(
                "show", "show the rules, the default and any warnings", _show, (add_session, _json)
            ),
            Command(
                "remove",
                "remove rules: by number, by their exact fields, or --all (reset)",
                _remove,
                (add_session, _criteria, _removal, _json),
            ),
        ),
    ),
    Command(
        "accounting",
        "list connection records (every attempt, accepted or refused) or a summary",
        _accounting,
        (_records,),
        description="Records from this data directory's accounting database and its archive.",
    ),
)
