"""Tunnels: the agent (serve), the client side (connect), the reverse listener (listen, and
the hub's phone-home ports), the one secure listener every accepting role uses, phone home,
the hello protocol and the typed control messages, the private leg, the TLS Pool call for
Python programs, accounting of every connection attempt, and the status metrics."""

from ._accounting import Accounting, Attempt, ConnRecord, Summary, parse_since, summarize
from ._agent import Agent, Target
from ._client import Connector
from ._hello import MAX_FRAME, VERSION, Hello, Purpose, exchange_hello, read_message
from ._leg import Endpoint, check_same_user, parse_endpoint, peer_uid
from ._listener import Established, Refusal, SecureListener
from ._messages import Message
from ._perconn import PerConnection, peer_environment
from ._phonehome import Backoff, Home
from ._program import Program, ProgramExited, Restart
from ._pvversion import local_paraview, paraview_mismatch, program_version
from ._radius_wire import FAIL_MODES as RADIUS_FAIL_MODES
from ._radius_wire import RadiusConfig
from ._reverse import AgentLink, ByServerId, Pinned, ReverseListener, Rule
from ._secure import Side, Tracked, identity_label, secure
from ._status import METRICS, Metrics, render_json, render_prometheus, serve_status
from ._stream import ByteStream, PlainConnection
from ._tlsconn import TLSConnection
from ._util import loop_options, single_error

__all__ = [
    "MAX_FRAME",
    "METRICS",
    "RADIUS_FAIL_MODES",
    "VERSION",
    "Accounting",
    "Agent",
    "AgentLink",
    "Attempt",
    "Backoff",
    "ByServerId",
    "ByteStream",
    "ConnRecord",
    "Connector",
    "Endpoint",
    "Established",
    "Hello",
    "Home",
    "Message",
    "Metrics",
    "PerConnection",
    "Pinned",
    "PlainConnection",
    "Program",
    "ProgramExited",
    "Purpose",
    "RadiusConfig",
    "Refusal",
    "Restart",
    "ReverseListener",
    "Rule",
    "SecureListener",
    "Side",
    "Summary",
    "TLSConnection",
    "Target",
    "Tracked",
    "check_same_user",
    "exchange_hello",
    "identity_label",
    "local_paraview",
    "loop_options",
    "paraview_mismatch",
    "parse_endpoint",
    "parse_since",
    "peer_environment",
    "peer_uid",
    "program_version",
    "read_message",
    "render_json",
    "render_prometheus",
    "secure",
    "serve_status",
    "single_error",
    "summarize",
]
