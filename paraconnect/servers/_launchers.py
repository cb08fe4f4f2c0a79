"""Launchers by name: the one list that the hub (``make_launcher``), the CLI (``launch
--launcher`` and its options), REST (``GET /hub``), the JupyterLab panel and :func:`reattach`
read.

Adding a launcher means its module and one :func:`register_launcher` call (below, or in a plugin
or a test).  An entry names its class as ``"module:Class"`` so that reading the list (the CLI
building its parser, ``paraconnect.vocab.LAUNCHERS``) imports no launcher module: the class is
imported the first time a launcher of that name is made or a job of it re-attached.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .._wire import record
from ..errors import ConfigError

if TYPE_CHECKING:
    from ._launch import Job, Launcher

__all__ = [
    "LauncherEntry",
    "LauncherOption",
    "launcher_class",
    "launcher_entries",
    "launcher_entry",
    "make_launcher",
    "reattach",
    "register_launcher",
    "unregister_launcher",
]

OptionType = Literal["text", "int"]


@dataclass(frozen=True)
class LauncherOption:
    """One launcher option: its key in ``launcher_options``, what it is for, whether a launch
    must give it, its type, and its command-line flag (default ``--key-with-dashes``)."""

    key: str
    help: str
    required: bool = False
    type: OptionType = "text"
    flag: str = ""
    metavar: str = ""

    def __post_init__(self) -> None:
        if not self.key.isidentifier():
            raise ConfigError(f"launcher option {self.key!r} must be an identifier")
        if not self.flag:
            object.__setattr__(self, "flag", "--" + self.key.replace("_", "-"))
        if not self.flag.startswith("--"):
            raise ConfigError(f"launcher option {self.key}: flag {self.flag!r} must start with --")
        if not self.metavar:
            object.__setattr__(self, "metavar", "N" if self.type == "int" else self.key.upper())

    def as_dict(self) -> dict[str, Any]:
        return record(self, ("key", "help", "required", "type", "flag"))  # not metavar


@dataclass(frozen=True)
class LauncherEntry:
    """A registered launcher.  `target` is its :class:`Launcher` class or ``"module:Class"``;
    None for a launcher the hub does not run itself (``manual``: the user runs the agent)."""

    name: str
    summary: str
    options: tuple[LauncherOption, ...]
    target: type[Launcher] | str | None

    @property
    def hub_runs(self) -> bool:
        """Whether the hub starts the agent with it (the panel's launch form offers these)."""
        return self.target is not None

    def option(self, key: str) -> LauncherOption | None:
        return next((o for o in self.options if o.key == key), None)

    def load(self) -> type[Launcher]:
        if self.target is None:
            raise ConfigError(
                f"the {self.name} launcher starts nothing from the hub; ask the hub for the agent "
                "command instead ('paraconnect launch --launcher manual', "
                "POST /servers/agent-command)"
            )
        if not isinstance(self.target, str):
            return self.target
        module, _, attr = self.target.partition(":")
        loaded: type[Launcher] = getattr(importlib.import_module(module, __package__), attr)
        return loaded

    def as_dict(self) -> dict[str, Any]:
        """What ``GET /hub`` tells about it (docs/hub-api.md)."""
        return {
            "name": self.name,
            "summary": self.summary,
            "hub_runs": self.hub_runs,
            "options": [o.as_dict() for o in self.options],
        }


_ENTRIES: dict[str, LauncherEntry] = {}


def register_launcher(
    name: str,
    target: type[Launcher] | str | None,
    summary: str,
    options: Iterable[LauncherOption] = (),
    *,
    replace: bool = False,
) -> LauncherEntry:
    """Make launcher `name` known everywhere.  A second registration of a name is refused
    unless `replace`, so that two plugins cannot silently take the same name."""
    if not name.isidentifier() or name != name.lower():
        raise ConfigError(f"launcher name {name!r} must be a lower-case identifier")
    if name in _ENTRIES and not replace:
        raise ConfigError(f"launcher {name!r} is already registered; pass replace=True")
    given = tuple(options)
    keys = [o.key for o in given]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"launcher {name!r} names an option twice: {keys}")
    entry = LauncherEntry(name, summary, given, target)
    _ENTRIES[name] = entry
    return entry


def unregister_launcher(name: str) -> None:
    """Forget `name` (tests that register a launcher of their own clean up with this)."""
    _ENTRIES.pop(name, None)


def launcher_entries() -> tuple[LauncherEntry, ...]:
    """Every registered launcher, in registration order."""
    return tuple(_ENTRIES.values())


def launcher_entry(name: str) -> LauncherEntry:
    entry = _ENTRIES.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ConfigError(f"unknown launcher {name!r}; choose one of {', '.join(_ENTRIES)}")
    return entry


def launcher_class(name: str) -> type[Launcher]:
    """The class of launcher `name`, imported now if it was not yet."""
    return launcher_entry(name).load()


def make_launcher(name: str, options: Mapping[str, Any] | None = None) -> Launcher:
    """A launcher by name, made from its options (``launcher_options`` of a launch): a
    required option missing is refused here, naming it; the class checks the rest."""
    entry = launcher_entry(name)
    opts = {k: v for k, v in dict(options or {}).items() if v is not None}
    for option in entry.options:
        if option.required and opts.get(option.key) in (None, ""):
            raise ConfigError(
                f"the {name} launcher needs {option.flag} {option.metavar} "
                f"(launcher option {option.key!r}: {option.help})"
            )
    return entry.load().from_options(opts)


def reattach(described: Mapping[str, Any]) -> Job:
    """Turn a :meth:`Job.describe` dict back into a job handle, whichever launcher made it."""
    kind = described.get("launcher") if isinstance(described, Mapping) else None
    try:
        launcher = launcher_entry(kind).load() if isinstance(kind, str) else None
    except ConfigError:
        launcher = None
    if launcher is None:
        known = ", ".join(sorted(e.name for e in launcher_entries() if e.hub_runs))
        raise ConfigError(
            f"cannot re-attach a job of launcher {kind!r}; known launchers: {known} "
            "(was the description written by Job.describe()?)"
        )
    return launcher.reattach(described)


# -- the launchers paraconnect ships: one line each -------------------------------------------
_Opt = LauncherOption
register_launcher(
    "local", "._local:LocalLauncher", "on this host, as a child of the hub",
    [_Opt("run_root", "where job directories go (default $PARACONNECT_HOME/runs)", metavar="DIR")],
)  # fmt: skip
register_launcher(
    "ssh", "._ssh:SshLauncher", "on another host, over ssh (keys and ssh config as usual)",
    [
        _Opt("host", "host name or ssh config alias", required=True),
        _Opt("port", "port of the sshd", type="int", flag="--ssh-port"),
        _Opt("user", "user name on the host"),
        _Opt("identity_file", "private key file", metavar="FILE"),
        _Opt("config_file", "ssh config file", flag="--ssh-config", metavar="FILE"),
    ],
)  # fmt: skip
register_launcher(
    "slurm", "._slurm:SlurmLauncher", "as a Slurm batch job (sbatch; squeue, sacct, scancel)",
    [
        _Opt("slurm_conf", "SLURM_CONF for the Slurm clients", metavar="FILE"),
        _Opt("job_root", "job directories, on a file system the nodes share",
             metavar="DIR"),
        _Opt("partition", "partition ('sinfo -s' lists them)"),
        _Opt("account", "account to charge"),
        _Opt("gpus", "GPUs to ask for", type="int"),
        _Opt("time", "time limit (minutes, HH:MM:SS)", metavar="T"),
        _Opt("nodes", "nodes to ask for", type="int"),
        _Opt("ntasks", "tasks (MPI ranks) to ask for", type="int"),
    ],
)  # fmt: skip
register_launcher(
    "manual", None, "by hand: the hub prints the shell line that starts the agent on a remote "
    "host (it enrols with a one-time token and phones home); nothing is started here",
)  # fmt: skip
