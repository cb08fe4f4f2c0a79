"""Phone home: where an agent dials, how often, and for how long.

A `Home` travels as a control message (``{"type": "phone_home", ...}``) from a client that
disconnects, or comes from ``serve --phone-home``.  The agent keeps dialling it, every
`interval` seconds with ±20 % jitter (the first dial after up to a fifth of it, so that agents
started together do not dial together); a listener that refuses it (TLS or hello) backs it off
exponentially up to `max_backoff`; an optional `deadline` (seconds) ends the attempts if no
listener has taken it by then.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, ProtocolError
from ._leg import Endpoint, parse_endpoint

__all__ = ["DEFAULT_INTERVAL", "Backoff", "Home"]

DEFAULT_INTERVAL = 5.0
MAX_BACKOFF = 300.0


@dataclass(frozen=True, slots=True)
class Home:
    endpoint: Endpoint
    interval: float = DEFAULT_INTERVAL
    deadline: float | None = None
    max_backoff: float = MAX_BACKOFF

    def __post_init__(self) -> None:
        if self.endpoint.path is not None:
            raise ConfigError(f"phone home to {self.endpoint}: give HOST:PORT, not a Unix path")
        if not 0 < self.interval <= 86400:
            raise ConfigError(f"--interval {self.interval:g}: give seconds between 0 and 86400")
        if self.deadline is not None and not self.deadline > 0:  # NaN too
            raise ConfigError(f"--deadline {self.deadline:g}: give a positive number of seconds")

    @classmethod
    def parse(
        cls, text: str, interval: float = DEFAULT_INTERVAL, deadline: float | None = None
    ) -> Home:
        return cls(parse_endpoint(text, "--phone-home"), interval, deadline)

    def to_message(self) -> dict[str, Any]:
        return {
            "type": "phone_home",
            "host": self.endpoint.host,
            "port": self.endpoint.port,
            "interval": self.interval,
            "deadline": self.deadline,
        }

    @classmethod
    def from_message(cls, msg: Mapping[str, Any]) -> Home:
        host, port = msg.get("host"), msg.get("port")
        interval, deadline = msg.get("interval", DEFAULT_INTERVAL), msg.get("deadline")
        if not isinstance(host, str) or not host or type(port) is not int:
            raise ProtocolError("a phone_home message needs a host and a port")
        if not isinstance(interval, int | float) or not (
            deadline is None or isinstance(deadline, int | float)
        ):
            raise ProtocolError("a phone_home message has a bad interval or deadline")
        try:
            return cls(Endpoint(host, port), float(interval), deadline)
        except (ConfigError, OverflowError) as exc:
            raise ProtocolError(f"a bad phone_home message: {exc}") from None


class Backoff:
    """The delay before the next dial: the interval with jitter after a failed connection,
    doubled per consecutive refusal up to a cap."""

    def __init__(self, home: Home, rng: random.Random | None = None) -> None:
        self.home = home
        self.refusals = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets

    def next_delay(self, refused: bool) -> float:
        self.refusals = self.refusals + 1 if refused else 0
        base = self.home.interval * (2 ** min(self.refusals, 16))
        base = min(base, max(self.home.max_backoff, self.home.interval))
        return float(base * self._rng.uniform(0.8, 1.2))

    def first_delay(self) -> float:
        """Before the first dial: up to a fifth of the interval, so that many agents started
        at once (a job array, a node reboot) do not all dial in the same instant."""
        return float(self.home.interval * self._rng.uniform(0.0, 0.2))

    def reset(self) -> None:
        self.refusals = 0
