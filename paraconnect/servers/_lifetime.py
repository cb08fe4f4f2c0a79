"""How long an enrolled server certificate lives: 24 h by default (renewal at two thirds of
it keeps a server going), or the launch option ``cert_lifetime`` in seconds.  A forward
server's agent does not renew (docs/architecture.md says why): its certificate keeps the 7 days
it had before renewal existed, or ``cert_lifetime``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

__all__ = ["DEFAULT_CERT_LIFETIME", "FORWARD_CERT_LIFETIME", "cert_lifetime_days"]

DEFAULT_CERT_LIFETIME = 86400.0  # seconds: 24 h, as step-ca's and SPIRE's defaults are short
FORWARD_CERT_LIFETIME = 7 * 86400.0  # seconds: no renewal, so the lifetime is the session's
MIN_CERT_LIFETIME = 10.0  # below this, renewal (at two thirds) would outrun a round trip


def cert_lifetime_days(options: Mapping[str, Any], default: float = DEFAULT_CERT_LIFETIME) -> float:
    """The lifetime of a server's enrolled certificates (days, as pki takes it) from its launch
    options, or ConfigError naming the option."""
    value = options.get("cert_lifetime", default)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not MIN_CERT_LIFETIME <= seconds <= 400 * 86400:  # NaN fails too
        raise ConfigError(
            f"option cert_lifetime {value!r}: give the enrolled certificate's lifetime in seconds, "
            f"from {MIN_CERT_LIFETIME:g} to {400 * 86400} (default {DEFAULT_CERT_LIFETIME:g}: 24 h)"
        )
    return seconds / 86400
