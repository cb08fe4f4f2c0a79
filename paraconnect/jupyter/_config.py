"""The extension's settings: ``c.Paraconnect.<name>`` in a Jupyter config file, or
``--Paraconnect.<name>=...`` on the ``jupyter lab`` / ``jupyter server`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traitlets import Dict, Float, Int, List, TraitError, Unicode, validate
from traitlets.config import Configurable

from .._wire import hostport
from ..errors import ConfigError
from ..hub import LaunchRules, check_warnings
from ..pki import SecurityLevel, default_home
from ..tunnel import RADIUS_FAIL_MODES, RadiusConfig, parse_endpoint

__all__ = ["Paraconnect"]


def _host_port(value: str, what: str) -> str:
    try:
        ep = parse_endpoint(value.strip(), f"Paraconnect.{what}")
    except ConfigError:
        ep = None
    if ep is None or ep.path is not None:
        raise TraitError(f"Paraconnect.{what} {value!r}: give HOST:PORT, e.g. 0.0.0.0:8765")
    return hostport(ep.host, ep.port)


class Paraconnect(Configurable):
    """Settings of the paraconnect hub that runs inside the Jupyter server."""

    data_dir = Unicode(
        "",
        help="The paraconnect data directory (sessions, certificates, the server registry). "
        "Empty: $PARACONNECT_HOME, else the platform's user data directory. When set, it is "
        "also exported as PARACONNECT_HOME so that kernels of this server find the same hub.",
    ).tag(config=True)

    listen = Unicode(
        "127.0.0.1:0",
        help="HOST:PORT where agents phone home (reverse connections). Port 0 picks a free "
        "port per session; use 0.0.0.0:PORT to accept agents from other hosts.",
    ).tag(config=True)

    advertise = Unicode(
        "",
        help="The host name agents dial to phone home, when it differs from the listen "
        "address (NAT, a login node in front of the compute nodes). Empty: the listen host.",
    ).tag(config=True)

    enroll_listen = Unicode(
        "",
        help="HOST:PORT of the enrolment endpoint where agents trade a one-time token for a "
        "certificate. Empty: the listen host and a free port.",
    ).tag(config=True)

    default_level = Unicode(
        "mutual",
        help="Security level of sessions created from JupyterLab when the request names none: "
        "mutual (per-node certificates, roles checked), encrypt, or none.",
    ).tag(config=True)

    ssh_hosts = List(
        Unicode(),
        default_value=[],
        help="Hosts (names or ssh config aliases) offered for the ssh launcher. When the list "
        "is not empty, launches over ssh are limited to these hosts.",
    ).tag(config=True)

    slurm_defaults = Dict(
        default_value={},
        help="Launcher options for every Slurm launch (partition, account, time, gpus, "
        "slurm_conf, ...); a launch's own options win.",
    ).tag(config=True)

    connect_timeout = Float(
        300.0,
        help="Seconds a launched server has to phone home (or be reached) before it is failed.",
    ).tag(config=True)

    proxy_ping_interval = Float(
        30.0,
        help="Seconds between the pings on a websocket of /paraconnect/proxy/ (a live browser "
        "answers them; they keep proxies in between from closing an idle websocket). 0: none. "
        "No timeout ends a websocket that answers.",
    ).tag(config=True)

    readopt_grace = Float(
        120.0,
        help="Seconds a server launched before a Jupyter restart has to phone home again "
        "before it is reported lost.",
    ).tag(config=True)

    walltime_warnings = List(
        Float(),
        default_value=[600.0, 60.0],
        help="Seconds before the end of a batch job's time limit at which the hub warns (an "
        "event and a JupyterLab notification), once per job and threshold.",
    ).tag(config=True)

    max_servers = Int(
        0,
        help="The most servers that may run at once (not stopped, failed or lost); 0: no limit.",
    ).tag(config=True)

    open_sessions = List(
        Unicode(),
        default_value=[],
        help="Sessions whose phone-home listener opens when Jupyter starts (others open on "
        "first use).",
    ).tag(config=True)

    radius = Unicode(
        "",
        help="HOST:PORT of a RADIUS server the hub asks (Access-Request) about every agent "
        "that phones home, once its certificate, revocation and policy checks passed, and "
        "sends accounting to (on PORT+1). Empty: no RADIUS.",
    ).tag(config=True)

    radius_secret_file = Unicode(
        "",
        help="The file holding the RADIUS shared secret; it must be yours, mode 0600.",
    ).tag(config=True)

    radius_fail = Unicode(
        "closed",
        help="When the RADIUS server does not answer and no recent answer stands in: "
        "'closed' refuses the agent (the default), 'open' admits it.",
    ).tag(config=True)

    radius_cache = Float(
        60.0,
        help="Seconds a RADIUS answer stands in for the same certificate while the server "
        "does not answer.",
    ).tag(config=True)

    radius_interim = Float(
        300.0,
        help="Seconds between RADIUS Interim-Updates of an open connection.",
    ).tag(config=True)

    @validate("radius")
    def _radius(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip()
        return _host_port(value, "radius") if value else ""

    @validate("radius_fail")
    def _radius_fail(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip().lower()
        if value not in RADIUS_FAIL_MODES:
            raise TraitError(f"Paraconnect.radius_fail {value!r}: choose closed or open")
        return value

    @validate("data_dir")
    def _data_dir(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip()
        return str(Path(value).expanduser().absolute()) if value else ""

    @validate("listen")
    def _listen(self, proposal: dict[str, Any]) -> str:
        return _host_port(str(proposal["value"]), "listen")

    @validate("enroll_listen")
    def _enroll_listen(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip()
        return _host_port(value, "enroll_listen") if value else ""

    @validate("advertise")
    def _advertise(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip()
        if any(c.isspace() for c in value) or value.count(":") == 1:
            raise TraitError(
                f"Paraconnect.advertise {value!r}: give a host name or address without a port"
            )
        return value

    @validate("default_level")
    def _default_level(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip().lower()
        choices = [level.value for level in SecurityLevel]
        if value not in choices:
            raise TraitError(f"Paraconnect.default_level {value!r}: choose one of {choices}")
        return value

    @validate("ssh_hosts", "open_sessions")
    def _names(self, proposal: dict[str, Any]) -> list[str]:
        # Strip and de-duplicate, keeping the order the user wrote.
        names = (str(v).strip() for v in proposal["value"])
        return list(dict.fromkeys(n for n in names if n))

    @validate("slurm_defaults")
    def _slurm_defaults(self, proposal: dict[str, Any]) -> dict[str, Any]:
        return {str(k).replace("-", "_"): v for k, v in dict(proposal["value"]).items()}

    @validate("connect_timeout", "readopt_grace")
    def _positive(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise TraitError(f"Paraconnect.{proposal['trait'].name} must be positive, not {value}")
        return value

    @validate("walltime_warnings")
    def _walltime_warnings(self, proposal: dict[str, Any]) -> list[float]:
        try:
            return list(check_warnings(proposal["value"]))
        except ConfigError as exc:
            raise TraitError(f"Paraconnect.{exc}") from None

    @validate("max_servers")
    def _max_servers(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if value < 0:
            raise TraitError(f"Paraconnect.max_servers must be 0 (no limit) or more, not {value}")
        return value

    @property
    def home(self) -> Path:
        """The data directory in effect."""
        return Path(self.data_dir) if self.data_dir else default_home()

    def launch_rules(self) -> LaunchRules:
        """The launch rules the hub applies for every front end (REST, kernels, the CLI)."""
        return LaunchRules(
            self.max_servers, tuple(self.ssh_hosts), dict(self.slurm_defaults),
            "Jupyter's Paraconnect.max_servers / ssh_hosts / slurm_defaults",
        )  # fmt: skip

    def radius_config(self) -> RadiusConfig | None:
        """The RADIUS server the hub asks, or None; a secret file others can read, or none
        given, stops the hub with one line (it does not run without the RADIUS it was told)."""
        if not self.radius:
            return None
        if not self.radius_secret_file:
            raise ConfigError("Paraconnect.radius needs Paraconnect.radius_secret_file (0600)")
        return RadiusConfig.load(
            self.radius, Path(self.radius_secret_file).expanduser(), fail=self.radius_fail,
            cache=self.radius_cache, interim=self.radius_interim,
        )  # fmt: skip

    def public(self) -> dict[str, Any]:
        """What the JupyterLab panel may show and offer (no secrets here)."""
        return {
            "default_level": self.default_level,
            "ssh_hosts": list(self.ssh_hosts),
            "slurm_defaults": dict(self.slurm_defaults),
            "max_servers": self.max_servers,
            "advertise": self.advertise or None,
        }
