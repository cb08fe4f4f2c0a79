"""The result of a diagnosis: steps, each passed, failed, warned or skipped, with the reason
in plain words and the fix; rendered as text for people and as JSON for programs."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NODE_BINDING_LIMIT", "Report", "Status", "Step"]


# What node binding is, said wherever debug reports on it (issue 12): honest about its limit.
NODE_BINDING_LIMIT = (
    "node binding is a self-check: the unique ID is what the peer claims, so a thief who sets "
    "PARACONNECT_UNIQUE_ID to the certificate's CN connects with a copied certificate; it stops "
    "a copied certificate being used by accident or by a careless colleague, not by an attacker "
    "who has the key"
)


class Status(enum.StrEnum):
    PASS = "PASS"  # noqa: S105 - a status, not a password
    FAIL = "FAIL"
    WARN = "WARN"
    SKIP = "SKIP"


@dataclass(slots=True)
class Step:
    """One thing checked: `name` is a stable id for programs (``tcp``, ``peer-ca``, ...)."""

    name: str
    status: Status
    reason: str
    fix: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "status": self.status.value,
            "reason": self.reason,
            "fix": self.fix,
            "details": self.details,
        }


@dataclass(slots=True)
class Report:
    """What `diagnose_*` found, step by step, in the order the path was walked."""

    command: str
    target: str
    steps: list[Step] = field(default_factory=list)

    # -- building ----------------------------------------------------------------------

    def add(
        self, name: str, status: Status, reason: str, fix: str | None = None, /, **details: Any
    ) -> Step:
        step = Step(name, status, reason, fix, dict(details))
        self.steps.append(step)
        return step

    def ok(self, name: str, reason: str, /, **details: Any) -> Step:
        return self.add(name, Status.PASS, reason, None, **details)

    def fail(self, name: str, reason: str, fix: str | None = None, /, **details: Any) -> Step:
        return self.add(name, Status.FAIL, reason, fix, **details)

    def warn(self, name: str, reason: str, fix: str | None = None, /, **details: Any) -> Step:
        return self.add(name, Status.WARN, reason, fix, **details)

    def skip(self, name: str, reason: str, /, **details: Any) -> Step:
        return self.add(name, Status.SKIP, reason, None, **details)

    def extend(self, steps: list[Step]) -> None:
        self.steps.extend(steps)

    # -- reading -----------------------------------------------------------------------

    @property
    def passed(self) -> bool:
        """True when no step failed (warnings and skipped steps do not fail a report)."""
        return not any(s.status is Status.FAIL for s in self.steps)

    @property
    def failed(self) -> list[Step]:
        return [s for s in self.steps if s.status is Status.FAIL]

    def step(self, name: str) -> Step:
        """The (first) step called `name`; KeyError if the walk never got there."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"no step {name!r} in this report: {[s.name for s in self.steps]}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "target": self.target,
            "ok": self.passed,
            "steps": [s.as_dict() for s in self.steps],
        }

    def render(self) -> str:
        width = max((len(s.name) for s in self.steps), default=4)
        lines = [f"paraconnect debug {self.command} {self.target}"]
        for s in self.steps:
            lines.append(f"  {s.status.value}  {s.name:<{width}}  {s.reason}")
            if s.fix and s.status in (Status.FAIL, Status.WARN):
                lines.append(f"  {'':4}  {'':<{width}}  fix: {s.fix}")
        failed = self.failed
        if failed:
            names = ", ".join(s.name for s in failed)
            lines.append(f"result: {len(failed)} step(s) failed ({names}); see the first fix")
        else:
            warned = sum(1 for s in self.steps if s.status is Status.WARN)
            lines.append(
                "result: everything checked passed" + (f" ({warned} warning(s))" if warned else "")
            )
        return "\n".join(lines)
