"""What each server kind accepts in a launch's ``options``, described for front ends.

`build_kind` (``_kinds``) is what enforces them; this table is what the hub tells (op
``launch_options``) so the panel's launch form can offer each option with its type, default and
help, and check it before a launch.  tests/test_launch_options.py builds every kind with each
described default, so the two cannot drift apart silently.  ``COMMON_OPTIONS`` are those of every
launch, read by the hub and the supervisor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._wire import record
from ..vocab import COMMAND_KINDS, KINDS

__all__ = ["COMMON_OPTIONS", "KIND_OPTIONS", "KindOption", "kind_descriptions"]

KindOptionType = Literal["text", "int", "bool", "choice"]


@dataclass(frozen=True)
class KindOption:
    """One option of a kind: its key in ``options``, what it is for, its type, its default
    (None: unset) and, for ``choice``, the values `build_kind` takes."""

    key: str
    help: str
    type: KindOptionType = "text"
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: int = 1  # for int

    def as_dict(self) -> dict[str, Any]:
        return record(self)


_PYTHON = KindOption("python", "Python with paraconnect on the remote host (default: this one)")
_SHARED = KindOption(
    "shared_leg",
    "run the program in the host's network: other users there CAN reach its port",
    "bool",
    False,
)


def _program_options(probe: str) -> tuple[KindOption, ...]:
    """The options of a TCP program (command, web, trame); `probe`: its default probe."""
    return (
        KindOption(
            "probe",
            "when the program is ready: it listens (port), its output matches log_regex (log), "
            "or GET http_path answers (http)",
            "choice",
            probe,
            ("port", "log", "http"),
        ),
        KindOption("log_regex", "with probe log: a regular expression its output matches"),
        KindOption("http_path", "with probe http: the path to GET", "text", "/"),
        KindOption("probe_timeout", "seconds the probe waits", "int", 60),
        KindOption(
            "restart",
            "when the agent starts the program again",
            "choice",
            "no",
            ("no", "on-failure", "always"),
        ),
        _SHARED,
        _PYTHON,
    )


KIND_OPTIONS: Mapping[str, tuple[KindOption, ...]] = {
    "builtin": (
        KindOption("leg", "how the agent reaches the renderer", "choice", "unix", ("unix", "fd")),
        KindOption("size", "first picture size, WIDTHxHEIGHT (e.g. 1280x720)"),
        KindOption(
            "data",
            "the folder on the server's host the view opens files from (its file browser "
            "lists it); default: where the renderer runs",
        ),
        _PYTHON,
    ),
    "pvserver": (
        KindOption("ranks", "MPI ranks (mpiexec -n N); unset: one process, no MPI", "int"),
        KindOption("pvserver", "the pvserver program", "text", "pvserver"),
        KindOption("mpiexec", "the MPI launcher, with ranks", "text", "mpiexec"),
        KindOption(
            "xvfb",
            "a virtual display: auto (when the host has none), always or never",
            "choice",
            "auto",
            ("auto", "always", "never"),
        ),
        KindOption(
            "pv_reverse",
            "hardened: nothing listens on the remote host; pvpython must ReverseConnect",
            "bool",
            False,
        ),
        _SHARED,
        _PYTHON,
    ),
    "command": _program_options("port"),
    "web": _program_options("http"),
    "trame": (
        KindOption("app", "the trame app file on the server's host (python APP --server ...)"),
        *_program_options("http"),
        _PYTHON,
    ),
}

# Options of every launch, whatever the kind: the hub and the supervisor read them
# (RestartPolicy.from_options, the job's wall time).
COMMON_OPTIONS: tuple[KindOption, ...] = (
    KindOption("walltime", "wall-time limit of the job, in seconds; unset: none", "int"),
    KindOption(
        "restart_policy",
        "relaunch the agent's job when it fails",
        "choice",
        "never",
        ("never", "on-failure"),
    ),
    KindOption("restart_limit", "relaunches at most, with on-failure", "int", 3, minimum=0),
)

_SUMMARY = {
    "builtin": "paraconnect's own VTK renderer (RemoteView in a notebook)",
    "pvserver": "ParaView's pvserver (connect pvpython or the ParaView GUI to it)",
    "command": "any TCP program: put {port} (or {unix}, {fd}) where it listens",
    "web": "any HTTP(+WebSocket) app: put {port} where it serves; opened through Jupyter's proxy",
    "trame": "a trame app file (option app), opened through Jupyter's proxy",
}


def kind_descriptions() -> list[dict[str, Any]]:
    """Every kind with its options (what op ``launch_options`` answers)."""
    return [
        {
            "name": kind,
            "summary": _SUMMARY[kind],
            "needs_command": kind in COMMAND_KINDS,
            "options": [o.as_dict() for o in (*KIND_OPTIONS[kind], *COMMON_OPTIONS)],
        }
        for kind in KINDS
    ]
