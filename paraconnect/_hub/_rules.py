"""What a hub lets its users launch: a limit on running servers, the ssh hosts it offers and the
Slurm options every job gets.  The operation layer (`_ops`) applies them, so they hold whichever
way a launch arrives: REST, the control socket (CLI, kernels, scripts) or the panel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError

__all__ = ["DEFAULT_WARNINGS", "LaunchRules", "check_warnings"]


@dataclass(frozen=True)
class LaunchRules:
    """`max_servers`: the most servers not stopped or failed at once (0: no limit);
    `ssh_hosts`: when not empty, the only hosts the ssh launcher may reach; `slurm_defaults`:
    launcher options every Slurm launch starts from (its own options win); `source`: where a
    user changes them, named in each refusal."""

    max_servers: int = 0
    ssh_hosts: tuple[str, ...] = ()
    slurm_defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "paraconnect hub"

    def __post_init__(self) -> None:
        if type(self.max_servers) is not int or self.max_servers < 0:
            raise ConfigError(
                f"max_servers must be 0 (no limit) or a positive whole number, "
                f"not {self.max_servers!r}"
            )
        object.__setattr__(self, "ssh_hosts", tuple(self.ssh_hosts))
        object.__setattr__(self, "slurm_defaults", MappingProxyType(dict(self.slurm_defaults)))

    def check_room(self, running: int) -> None:
        """Refuse a new server while `max_servers` run.  Counted before the launch: two
        racing launches may pass together, which a soft limit meant to keep one user from
        flooding a cluster can live with."""
        if self.max_servers and running >= self.max_servers:
            raise ConfigError(
                f"{running} servers run, the limit of this hub (max_servers={self.max_servers}, "
                f"set by {self.source}); stop one first"
            )

    def launcher_options(self, launcher: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The launcher options to use: Slurm's start from `slurm_defaults`; an ssh host must be
        one of `ssh_hosts` when that list is set."""
        if launcher == "slurm":
            return {**self.slurm_defaults, **options}
        if launcher == "ssh" and self.ssh_hosts and options.get("host") not in self.ssh_hosts:
            raise ConfigError(
                f"ssh host {options.get('host')!r} is not one this hub offers "
                f"({', '.join(self.ssh_hosts)}; set by {self.source})"
            )
        return dict(options)

    @classmethod
    def from_lines(
        cls, max_servers: int, ssh_hosts: Iterable[str], slurm_lines: Iterable[str], source: str
    ) -> LaunchRules:
        """From command-line options: ``--slurm-default KEY=VALUE`` lines."""
        defaults: dict[str, Any] = {}
        for line in slurm_lines:
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--slurm-default {line!r}: write KEY=VALUE (partition=gpu)")
            defaults[key.strip().replace("-", "_")] = value.strip()
        return cls(max_servers, tuple(ssh_hosts), defaults, source)


DEFAULT_WARNINGS = (600.0, 60.0)  # seconds before the end of a job's time limit


def check_warnings(values: object) -> tuple[float, ...]:
    """Warning thresholds (seconds before the end), or ConfigError saying what to give."""
    try:
        out = tuple(sorted({float(v) for v in values}, reverse=True))  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        out = ()
    if not out or not all(0 < v <= 7 * 86400 for v in out):
        raise ConfigError(
            f"walltime warnings {values!r}: give seconds before the end of a job's time limit, "
            "each above 0 and at most 7 days (default 600 and 60)"
        )
    return out
