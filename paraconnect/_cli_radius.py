"""The RADIUS options of ``serve``, ``listen`` and ``hub`` (one set, one reading)."""

from __future__ import annotations

import argparse
from typing import Any

from ._cli_common import add_seconds
from .errors import ConfigError

__all__ = ["add_radius_options", "radius_config"]


def add_radius_options(p: argparse.ArgumentParser) -> None:
    """Who may connect, asked of a RADIUS server (serve, listen, hub)."""
    g = p.add_argument_group("RADIUS (who may connect, and accounting)")
    g.add_argument(
        "--radius",
        metavar="HOST:PORT",
        help="ask this RADIUS server (Access-Request) about every peer that passed the "
        "certificate, revocation and policy checks, and send it accounting (Start, "
        "Interim-Update, Stop) on PORT+1",
    )
    g.add_argument(
        "--radius-secret-file", metavar="FILE", help="the RADIUS shared secret (mode 0600)"
    )
    g.add_argument(
        "--radius-fail",
        choices=("closed", "open"),
        default="closed",
        help="when the RADIUS server does not answer and no recent answer stands in: refuse "
        "(closed, the default) or admit (open)",
    )
    add_seconds(
        g,
        "--radius-cache",
        "a RADIUS answer stands in for S s when the server does not answer (default 60)",
        default=60.0,
    )
    add_seconds(
        g,
        "--radius-interim",
        "seconds between Interim-Updates of an open connection (default 300)",
        default=300.0,
    )


def radius_config(args: argparse.Namespace) -> Any:
    """The RadiusConfig the options give, or None without --radius."""
    if not getattr(args, "radius", None):
        if getattr(args, "radius_secret_file", None):
            raise ConfigError("--radius-secret-file needs --radius HOST:PORT")
        return None
    from .tunnel import RadiusConfig

    return RadiusConfig.load(
        args.radius,
        args.radius_secret_file,
        fail=args.radius_fail,
        cache=args.radius_cache,
        interim=args.radius_interim,
    )
