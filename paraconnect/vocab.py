"""The words every front end shares: key types, security levels, server states, kinds, launchers
and modes.  One source: the CLI, the REST layer, the widgets, the JupyterLab panel's
``tokens.ts`` and ``docs/hub-api.md`` use these names, and a test checks that none of them names
one that is not defined here.

This module imports nothing heavy (no cryptography), so the CLI can build its parser from it.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar, Self

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
    "ParsedEnum",
    "SecurityLevel",
    "ServerState",
    "choices",
]


def choices(enum_type: type[enum.StrEnum]) -> list[str]:
    """The values of `enum_type`, in definition order (argparse choices, dropdown options)."""
    return [member.value for member in enum_type]


class ParsedEnum(enum.StrEnum):
    """A StrEnum whose `parse` names the option and the valid values in its error; a subclass
    says what it is in its class line (``class Mode(ParsedEnum, what="mode")``)."""

    _what: ClassVar[str]

    def __init_subclass__(cls, what: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._what = what or cls.__name__

    @classmethod
    def _offered(cls) -> list[str]:
        """The values the error offers (all of them unless a subclass keeps some back)."""
        return choices(cls)

    @classmethod
    def parse(cls, value: str | enum.StrEnum) -> Self:
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(
                f"unknown {cls._what} {value!r}; choose one of {', '.join(cls._offered())}"
            ) from None


class KeyType(ParsedEnum, what="key type"):
    EC_P256 = "ec-p256"
    ED25519 = "ed25519"
    RSA_3072 = "rsa-3072"


class SecurityLevel(ParsedEnum, what="security level"):
    """After FLoM: how much the TLS layer demands of a peer (enforced by paraconnect.tls)."""

    NONE = "none"  # clear text, with a loud warning
    ENCRYPT = "encrypt"  # any certificate of the session CA, in its own role; no node binding
    MUTUAL = "mutual"  # per-node certificates, unique ID in the CN, roles checked


class ServerState(ParsedEnum, what="server state"):
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


# The server will not come back by itself.
FINAL_STATES = frozenset({ServerState.STOPPED, ServerState.FAILED})


class Mode(ParsedEnum, what="mode"):
    REVERSE = "reverse"  # the agent dials the hub (phone home)
    FORWARD = "forward"  # the hub dials the agent


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
