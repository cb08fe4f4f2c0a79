"""What the ``paraconnect`` command modules share: commands declared as data (:class:`Command`:
name, help, handler, the functions that add its arguments, its own subcommands) and the options
several commands take in the same words."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "Command",
    "add_commands",
    "add_creds",
    "add_json",
    "add_passphrase",
    "add_seconds",
    "add_session",
]

Handler = Callable[[argparse.Namespace], int]
ArgAdder = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    """One subcommand: `args` add its arguments in order; one with `actions` is a group whose
    chosen action's name goes to `dest`; `defaults` go to the namespace with the handler."""

    name: str
    help: str
    run: Handler | None = None
    args: tuple[ArgAdder, ...] = ()
    description: str | None = None
    actions: tuple[Command, ...] = ()
    dest: str = ""
    metavar: str = "ACTION"
    defaults: Mapping[str, Any] = field(default_factory=dict)


def add_commands(sub: Subparsers, commands: tuple[Command, ...]) -> None:
    for command in commands:
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        for add in command.args:
            add(p)
        if command.actions:
            inner = p.add_subparsers(dest=command.dest, metavar=command.metavar, required=True)
            add_commands(inner, command.actions)
        if command.run is not None:
            p.set_defaults(func=command.run, **command.defaults)


def add_creds(p: argparse.ArgumentParser, help: str) -> None:
    """The required ``--creds C``: a session name, a PEM directory or a bundle."""
    p.add_argument("--creds", required=True, metavar="C", help=help)


def add_json(p: argparse.ArgumentParser, help: str = "print machine-readable JSON") -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_passphrase(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--passphrase-file", metavar="FILE", help=help)


def add_session(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """A required ``--session S``: the session a command acts on."""
    p.add_argument("--session", required=True, metavar="S", help=help)


def add_seconds(
    p: argparse._ActionsContainer, flag: str, help: str | None, default: float | None = None
) -> None:
    """An option that is a duration: seconds, as a float, shown as S."""
    p.add_argument(flag, type=float, default=default, metavar="S", help=help)
