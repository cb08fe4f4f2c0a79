"""Handlers of the credential commands (session, issue, share, import, revoke, inspect,
unique-id). Imports of the pki layer happen on call: `paraconnect --help` loads no crypto."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._fs import read_private
from .errors import ConfigError, CredentialError

if TYPE_CHECKING:
    from .pki import Record, Session, Store

__all__ = [
    "import_",
    "inspect",
    "issue",
    "revoke",
    "session_create",
    "session_delete",
    "session_list",
    "session_show",
    "share",
    "unique_id",
]


def _store() -> Store:
    from .pki import Store

    return Store()


def _emit(args: argparse.Namespace, data: Any, lines: list[str]) -> int:
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        for line in lines:
            print(line)
    return 0


def read_passphrase(option: str, value: str | None) -> bytes | None:
    """A passphrase from a file (refused if others can read it) or '-' for standard input."""
    if value is None:
        return None
    if value == "-":
        data = sys.stdin.buffer.readline()
    else:
        data = read_private(Path(value), "passphrase file")
    data = data.rstrip(b"\r\n")
    if not data:
        raise ConfigError(f"{option} {value}: the passphrase is empty")
    return data


def _record_line(rec: Record) -> str:
    state = f"REVOKED {rec.revoked_at[:16]} ({rec.revoked_reason})" if rec.revoked_at else "valid"
    try:
        if not rec.revoked_at and dt.datetime.fromisoformat(rec.not_after) <= dt.datetime.now(
            dt.UTC
        ):
            state = "expired"
    except ValueError:
        pass
    who = f" for {rec.for_friend}" if rec.for_friend else ""
    node = f" node={rec.unique_id}" if rec.unique_id else ""
    return (
        f"  {rec.role:<6} {rec.name:<20} serial {rec.serial[:16]}…  until {rec.not_after[:16]}"
        f"  {state}{who}{node}"
    )


def _session_lines(session: Session) -> list[str]:
    info = session.info()
    return [
        f"session  {info['name']}",
        f"id       {info['id']}",
        f"level    {info['level']}",
        f"key      {info['key_type']}{' (encrypted)' if info['ca_key_encrypted'] else ''}"
        + (f" in token {info['ca_key']}" if info["ca_key"] != "file" else ""),
        f"owner    {'yes' if info['owner'] else 'no (imported bundle)'}",
        f"CA until {str(info['ca_not_after'])[:16]} UTC",
        f"CA sha256 {info['ca_sha256']}",
        f"path     {info['path']}",
    ]


def session_create(args: argparse.Namespace) -> int:
    secret = read_passphrase("--passphrase-file", args.passphrase_file)
    if args.ca_key is None and (args.pin_file or args.pkcs11_module):
        raise ConfigError("--pin-file and --pkcs11-module go with --ca-key pkcs11:…")
    session = _store().create_session(
        args.name, key_type=args.key_type, days=args.days, level=args.level, passphrase=secret,
        ca_key=args.ca_key, pin_file=Path(args.pin_file) if args.pin_file else None,
        pkcs11_module=args.pkcs11_module,
    )  # fmt: skip
    return _emit(args, session.info(), [f"created {session.name}", *_session_lines(session)[1:]])


def session_list(args: argparse.Namespace) -> int:
    sessions = _store().list_sessions()
    lines = [
        f"{s.name:<24} {s.level.value:<8} {'owner' if s.owner else 'imported'}  {s.id}"
        for s in sessions
    ] or ["no sessions; create one with 'paraconnect session create NAME'"]
    return _emit(args, [s.info() for s in sessions], lines)


def session_show(args: argparse.Namespace) -> int:
    session = _store().open_session(args.name)
    records = session.records()
    lines = [*_session_lines(session), f"issued   {len(records)}"]
    lines += [_record_line(r) for r in records]
    data = {**session.info(), "issued": [r.as_dict() for r in records]}
    return _emit(args, data, lines)


def session_delete(args: argparse.Namespace) -> int:
    _store().delete_session(args.name)
    print(f"deleted session {args.name}")
    return 0


def issue(args: argparse.Namespace) -> int:
    session = _store().open_session(args.session)
    issued = session.issue(
        args.role,
        args.name,
        unique_id=args.unique_id,
        days=args.days,
        key_type=args.key_type,
        out=Path(args.out) if args.out else None,
        passphrase=read_passphrase("--passphrase-file", args.passphrase_file),
    )
    files = {k: str(v) for k, v in issued.files.items()} or {
        "cert": str(issued.cert_path),
        "key": str(issued.key_path),
    }
    data = {**issued.record.as_dict(), "files": files}
    lines = [
        f"issued {issued.record.role} certificate {issued.record.name!r}",
        _record_line(issued.record),
    ] + [f"  {k:<5} {v}" for k, v in files.items()]
    return _emit(args, data, lines)


def share(args: argparse.Namespace) -> int:
    from .pki import share as do_share

    session = _store().open_session(args.session)
    ca_secret = read_passphrase("--ca-passphrase-file", args.ca_passphrase_file)
    if session.ca_key_encrypted and ca_secret is None and session.owner:
        # In share, --passphrase-file is the bundle's: the store's own hint would name it.
        raise CredentialError(
            f"the session key of {session.name!r} is encrypted; give its passphrase with "
            "--ca-passphrase-file FILE (--passphrase-file is the bundle's passphrase)"
        )
    secret = read_passphrase("--passphrase-file", args.passphrase_file)
    generated = secret is None
    if secret is None:
        secret = secrets.token_urlsafe(18).encode()
    issued = do_share(
        session,
        args.friend,
        Path(args.out),
        secret,
        days=args.days,
        unique_id=args.unique_id,
        ca_passphrase=ca_secret,
    )
    data: dict[str, Any] = {**issued.record.as_dict(), "bundle": args.out}
    lines = [f"wrote {args.out} for {args.friend}", _record_line(issued.record)]
    if generated:
        data["passphrase"] = secret.decode()
        lines.append(f"passphrase (send it separately from the file): {secret.decode()}")
    lines.append(f"the friend runs: paraconnect import {Path(args.out).name} --passphrase-file F")
    return _emit(args, data, lines)


def import_(args: argparse.Namespace) -> int:
    from .pki import import_bundle

    session, record = import_bundle(
        _store(),
        Path(args.file),
        read_passphrase("--passphrase-file", args.passphrase_file),
        args.as_name,
    )
    data = {"session": session.info(), "certificate": record.as_dict()}
    lines = [
        f"imported {record.role} certificate {record.name!r} into session {session.name!r}",
        f"use it with --creds {session.name}",
    ]
    return _emit(args, data, lines)


def revoke(args: argparse.Namespace) -> int:
    session = _store().open_session(args.session)
    records = session.revoke(
        args.target,
        reason=args.reason,
        passphrase=read_passphrase("--passphrase-file", args.passphrase_file),
    )
    if not records:
        lines = [f"{args.target!r} is already revoked in session {session.name!r}"]
    else:
        lines = [f"revoked in session {session.name!r}:"] + [_record_line(r) for r in records]
    return _emit(args, [r.as_dict() for r in records], lines)


def inspect(args: argparse.Namespace) -> int:
    from ._inspect import describe_file

    data = describe_file(
        Path(args.file),
        store=_store(),
        session_name=args.session,
        passphrase=read_passphrase("--passphrase-file", args.passphrase_file),
    )
    return _emit(args, data, _inspect_lines(data))


def _inspect_lines(data: dict[str, Any]) -> list[str]:
    lines = [f"{data['file']}: {data['kind']}"]
    for cert in data.get("certificates", []):
        lines.append("")
        for key in (
            "subject", "issuer", "role", "name", "session_id", "session", "unique_id",
            "serial", "not_before", "not_after", "validity", "key_type", "sha256", "revoked",
            "session_check",
        ):  # fmt: skip
            if cert.get(key) is not None:
                lines.append(f"  {key:<13} {cert[key]}")
    for key in ("key_type", "encrypted", "next_update", "issuer", "revoked_serials"):
        if data.get(key) is not None:
            lines.append(f"  {key:<13} {data[key]}")
    return lines


def unique_id(args: argparse.Namespace) -> int:
    uid = _store().unique_id()
    return _emit(args, {"unique_id": uid.value, "source": uid.source}, [uid.value])
