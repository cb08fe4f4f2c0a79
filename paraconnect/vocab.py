"""The words every front end shares: key types, security levels, server states, kinds, launchers
and modes.  One source: the CLI, the REST layer, the widgets, the JupyterLab panel's
``tokens.ts`` and ``docs/hub-api.md`` use these names, and a test checks that none of them names
one that is not defined here.

This module imports nothing heavy (no cryptography), so the CLI can build its parser from it.
"""

from __future__ import annotations

import enum
from typing import Self

from .errors import ConfigError

__all__ = [
    "COMMAND_KINDS",
    "FINAL_STATES",
    "JUPYTER_BASE_URL_ENV",
    "KINDS",
    "LAUNCHERS",
    "VIEW_KINDS",
    "WEB_KINDS",
    "KeyType",
    "Mode",
    "SecurityLevel",
    "ServerState",
    "choices",
]


def choices(enum_type: type[enum.StrEnum]) -> list[str]:
    """The values of `enum_type`, in definition order (argparse choices, dropdown options)."""
    return [member.value for member in enum_type]


class _Parsed(enum.StrEnum):
    """A StrEnum whose `parse` names the option and the valid values in its error."""

    @classmethod
    def _what(cls) -> str:
        return cls.__name__

    @classmethod
    def parse(cls, value: str | enum.StrEnum) -> Self:
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(
                f"unknown {cls._what()} {value!r}; choose one of {', '.join(choices(cls))}"
            ) from None


class KeyType(_Parsed):
    EC_P256 = "ec-p256"
    ED25519 = "ed25519"
    RSA_3072 = "rsa-3072"

    @classmethod
    def _what(cls) -> str:
        return "key type"


class SecurityLevel(_Parsed):
    """After FLoM: how much the TLS layer demands of a peer (enforced by paraconnect.tls)."""

    NONE = "none"  # clear text, with a loud warning
    ENCRYPT = "encrypt"  # any certificate of the session CA, in its own role; no node binding
    MUTUAL = "mutual"  # per-node certificates, unique ID in the CN, roles checked

    @classmethod
    def _what(cls) -> str:
        return "security level"


class ServerState(_Parsed):
    """Where a server the hub supervises stands (see servers/_supervisor.py for the machine):
    submitted → starting → waiting (for phone home) → connected ⇄ idle → stopped | failed;
    unreachable: enrolled, but its agent says it cannot reach the hub's phone-home address (it
    keeps trying, so it may still turn connected)."""

    SUBMITTED = "submitted"
    STARTING = "starting"
    WAITING = "waiting"
    UNREACHABLE = "unreachable"
    CONNECTED = "connected"
    IDLE = "idle"
    STOPPED = "stopped"
    FAILED = "failed"

    @classmethod
    def _what(cls) -> str:
        return "server state"


# The server will not come back by itself.
FINAL_STATES = frozenset({ServerState.STOPPED, ServerState.FAILED})


class Mode(_Parsed):
    REVERSE = "reverse"  # the agent dials the hub (phone home)
    FORWARD = "forward"  # the hub dials the agent

    @classmethod
    def _what(cls) -> str:
        return "mode"


# Server kinds (servers/_kinds.py builds their command lines).
KINDS = ("builtin", "pvserver", "command", "web", "trame")
# Kinds whose launch takes the program's command line (after '--').
COMMAND_KINDS = ("command", "web")
# Kinds that serve a web app: Jupyter's proxy shows them (/paraconnect/proxy/<id>/).
WEB_KINDS = ("web", "trame")
# Kinds with a client of paraconnect's own (view(), paraview()).
VIEW_KINDS = ("builtin", "pvserver")

# The Jupyter server's base URL (``/user/<name>/`` under JupyterHub), exported by the server
# extension to its kernels: the URL of a frame that srv.open() writes is the browser's to resolve.
JUPYTER_BASE_URL_ENV = "PARACONNECT_JUPYTER_BASE_URL"
LAUNCHERS: tuple[str, ...]  # from the launcher list, by __getattr__ below


def __getattr__(name: str) -> tuple[str, ...]:
    """``LAUNCHERS``: the names registered in paraconnect.servers (register_launcher), read
    when first asked for, so that importing this module stays light."""
    if name == "LAUNCHERS":
        from .servers import launcher_entries

        return tuple(entry.name for entry in launcher_entries())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
