"""Names and unique IDs: checked before anything touches the disk or a certificate.

Kept free of heavy imports: `paraconnect unique-id` needs only this.
"""

from __future__ import annotations

import re

from ..errors import ConfigError, NotFoundError

__all__ = ["check_name", "check_unique_id", "no_such_session"]

# Whole-string matches only: with `$` and `.match`, "bob\n" passed as "bob", made a second
# "bob" that `revoke bob` and `policy deny --name bob` never find.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")
_UID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"invalid {what} {name!r}: use 1-48 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_unique_id(unique_id: str) -> str:
    if not isinstance(unique_id, str) or not _UID_RE.fullmatch(unique_id):
        raise ConfigError(
            f"invalid unique ID {unique_id!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return unique_id


def no_such_session(name: str, existing: list[str], create: str) -> NotFoundError:
    """The one refusal of a session name that does not exist, for every front end: a typo
    must never become a new session with a new CA.  `create` says how to make it there."""
    have = ", ".join(repr(n) for n in existing) if existing else "none yet"
    return NotFoundError(f"no session named {name!r} (sessions: {have}); {create}")
