"""The one error hierarchy of paraconnect.

Every failure a user can meet is a :class:`ParaconnectError` whose message says what went wrong,
where (the file, peer or option at fault) and what to do.  The categories are the ones a caller
may want to tell apart; lower-level exceptions are translated at each boundary with
``raise ... from exc`` so the cause is kept for debugging but never shown as the message.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CredentialError",
    "NetworkError",
    "NotFoundError",
    "ParaconnectError",
    "ProtocolError",
    "StorageError",
    "TrustError",
]


class ParaconnectError(Exception):
    """Root of every error paraconnect raises on purpose."""


class CredentialError(ParaconnectError):
    """A credential file is missing, unreadable, corrupt, unsafe (mode, symlink) or expired."""


class TrustError(ParaconnectError):
    """A peer or certificate is refused: unknown CA, revoked, wrong role, wrong unique ID."""


class NetworkError(ParaconnectError):
    """A connection was refused, timed out or could not be routed."""


class ProtocolError(ParaconnectError):
    """The peer spoke, but not our protocol (bad hello, unsupported version)."""


class ConfigError(ParaconnectError):
    """An option, name or configuration value is invalid."""


class NotFoundError(ConfigError):
    """The session, server or certificate named does not exist (REST answers 404)."""


class StorageError(ParaconnectError):
    """The data directory could not be written (disk full, read-only); nothing was changed."""
