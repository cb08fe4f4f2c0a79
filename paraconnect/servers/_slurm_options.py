"""sbatch options, checked: what a launch may ask of Slurm."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["SlurmOptions"]

_WORD_RE = re.compile(r"[A-Za-z0-9_.,:+=%@/-]+")
_TIME_RE = re.compile(r"(\d+-)?\d+(:\d+){0,2}|UNLIMITED|INFINITE", re.IGNORECASE)


@dataclass(frozen=True)
class SlurmOptions:
    """sbatch options.  `extra` holds more ``#SBATCH`` lines (``"--mem=4G"``); `srun` runs the
    command through ``srun`` (default: when more than one task or node is asked for), with
    ``--mpi=`` `mpi` if given."""

    partition: str | None = None
    time: str | None = None
    nodes: int | None = None
    ntasks: int | None = None
    gpus: str | int | None = None
    account: str | None = None
    extra: tuple[str, ...] = ()
    srun: bool | None = None
    mpi: str | None = None

    def __post_init__(self) -> None:
        for key in ("partition", "account", "gpus", "mpi"):
            value = getattr(self, key)
            if key == "gpus" and isinstance(value, int) and not isinstance(value, bool):
                if value < 1:
                    raise ConfigError(f"Slurm option gpus={value} is invalid; give a count >= 1")
                value = str(value)
                object.__setattr__(self, key, value)
            if value is not None and (not isinstance(value, str) or not _WORD_RE.fullmatch(value)):
                raise ConfigError(f"Slurm option {key}={value!r} is invalid; give one word")
        if self.time is not None and (
            not isinstance(self.time, str) or not _TIME_RE.fullmatch(self.time)
        ):
            raise ConfigError(
                f"Slurm option time={self.time!r} is invalid; use minutes, MM:SS, HH:MM:SS "
                "or D-HH:MM:SS"
            )
        for key in ("nodes", "ntasks"):
            value = getattr(self, key)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ConfigError(f"Slurm option {key}={value!r} is invalid; give a count >= 1")
        given: object = self.extra
        if isinstance(given, str) or not isinstance(given, tuple | list):
            raise ConfigError("Slurm option extra must be a list of #SBATCH lines, not a string")
        extra = []
        for line in given:
            if not isinstance(line, str):
                raise ConfigError(f"Slurm option extra holds {line!r}; give text lines")
            text = line.strip()
            text = text.removeprefix("#SBATCH").strip()
            if not text.startswith("-") or "\n" in text or "\r" in text:
                raise ConfigError(
                    f"extra #SBATCH line {line!r} is invalid; give an option such as '--mem=4G'"
                )
            extra.append(text)
        object.__setattr__(self, "extra", tuple(extra))
        if self.srun is not None and not isinstance(self.srun, bool):
            raise ConfigError(f"Slurm option srun={self.srun!r} must be true or false")

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> SlurmOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown Slurm option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        data = dict(values)
        if "extra" in data and isinstance(data["extra"], list):
            data["extra"] = tuple(data["extra"])
        return cls(**data)  # type: ignore[arg-type]

    def merged(self, overrides: Mapping[str, object]) -> SlurmOptions:
        if not overrides:
            return self
        return SlurmOptions.from_mapping({**dataclasses.asdict(self), **overrides})

    @property
    def uses_srun(self) -> bool:
        if self.srun is not None:
            return self.srun
        return (self.ntasks or 1) > 1 or (self.nodes or 1) > 1

    def sbatch_lines(self, *, name: str, walltime: float | None, grace: float) -> list[str]:
        """The #SBATCH lines.  sbatch runs in the job directory, so the output file is named
        relative to it (the job's working directory is its submit directory)."""
        time = self.time
        if time is None and walltime is not None:
            time = str(math.ceil((walltime + grace) / 60) + 1)
        lines = [f"--job-name={name}", "--output=output.log", "--open-mode=append"]
        for key, value in (
            ("partition", self.partition),
            ("time", time),
            ("nodes", self.nodes),
            ("ntasks", self.ntasks),
            ("gpus", self.gpus),
            ("account", self.account),
        ):
            if value is not None:
                lines.append(f"--{key}={value}")
        lines += self.extra
        return [f"#SBATCH {line}" for line in lines]
