"""What the store records: security levels, the record of each issued certificate, and the
defaults and small helpers the store and its callers share."""

from __future__ import annotations

import datetime as dt
import enum
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import platformdirs
from cryptography import x509

from ..errors import ConfigError
from ._keys import PrivateKey

__all__ = [
    "DEFAULT_CA_DAYS",
    "DEFAULT_LEAF_DAYS",
    "FORMAT",
    "Issued",
    "Record",
    "SecurityLevel",
    "default_home",
    "revocation_flag",
    "utcnow",
]

DEFAULT_CA_DAYS = 90
DEFAULT_LEAF_DAYS = 7
FORMAT = 1


class SecurityLevel(enum.StrEnum):
    """After FLoM: how much the TLS layer demands of a peer (enforced by paraconnect.tls)."""

    NONE = "none"  # clear text, with a loud warning
    ENCRYPT = "encrypt"  # any certificate of the session CA, in its own role; no node binding
    MUTUAL = "mutual"  # per-node certificates, unique ID in the CN, roles checked

    @classmethod
    def parse(cls, value: str | SecurityLevel) -> SecurityLevel:
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(
                f"unknown security level {value!r}; choose one of none, encrypt, mutual"
            ) from None


def default_home() -> Path:
    env = os.environ.get("PARACONNECT_HOME")
    if env:
        return Path(env).expanduser().absolute()
    return platformdirs.user_data_path("paraconnect", appauthor=False)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def revocation_flag(reason: str | None) -> x509.ReasonFlags:
    if reason is None:
        return x509.ReasonFlags.unspecified
    normalised = reason.replace("-", "_").replace(" ", "_")
    for flag in x509.ReasonFlags:
        if flag.value.lower() == normalised.replace("_", "").lower() or flag.name == normalised:
            return flag
    choices = ", ".join(f.name for f in x509.ReasonFlags if f.name != "remove_from_crl")
    raise ConfigError(f"unknown revocation reason {reason!r}; choose one of {choices}")


@dataclass(frozen=True, slots=True)
class Record:
    """One issued certificate, as recorded when it was issued."""

    serial: str
    name: str
    role: str
    unique_id: str | None
    key_type: str
    not_before: str
    not_after: str
    issued_at: str
    for_friend: str | None
    sha256: str
    key_kept: bool
    revoked_at: str | None = None
    revoked_reason: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate just issued, with its key (only in memory) and where it was written."""

    record: Record
    cert: x509.Certificate
    key: PrivateKey
    cert_path: Path
    key_path: Path | None
    files: dict[str, Path] = field(default_factory=dict)
