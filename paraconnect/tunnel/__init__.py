"""Tunnels: the agent (serve), the client side (connect, listen), phone home, the hello
protocol, the private leg, the TLS Pool call for Python programs, accounting of every
connection attempt, and the status metrics."""

from ._accounting import Accounting, Attempt, ConnRecord, Summary, parse_since, summarize
from ._agent import Agent, Target
from ._client import AgentLink, Connector, ReverseListener
from ._hello import MAX_FRAME, VERSION, Hello, Purpose, exchange_hello, read_message
from ._leg import Endpoint, check_same_user, parse_endpoint, peer_uid
from ._perconn import PerConnection, peer_environment
from ._phonehome import Backoff, Home
from ._program import Program, ProgramExited, Restart
from ._secure import Side, Tracked, secure
from ._status import METRICS, Metrics, render_json, render_prometheus, serve_status
from ._stream import ByteStream, PlainConnection
from ._tlsconn import TLSConnection
from ._util import single_error

__all__ = [
    "MAX_FRAME",
    "METRICS",
    "VERSION",
    "Accounting",
    "Agent",
    "AgentLink",
    "Attempt",
    "Backoff",
    "ByteStream",
    "ConnRecord",
    "Connector",
    "Endpoint",
    "Hello",
    "Home",
    "Metrics",
    "PerConnection",
    "PlainConnection",
    "Program",
    "ProgramExited",
    "Purpose",
    "Restart",
    "ReverseListener",
    "Side",
    "Summary",
    "TLSConnection",
    "Target",
    "Tracked",
    "check_same_user",
    "exchange_hello",
    "parse_endpoint",
    "parse_since",
    "peer_environment",
    "peer_uid",
    "read_message",
    "render_json",
    "render_prometheus",
    "secure",
    "serve_status",
    "single_error",
    "summarize",
]
