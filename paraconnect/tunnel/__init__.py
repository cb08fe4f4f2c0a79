"""Tunnels: the agent (serve), the client side (connect, listen), phone home, the hello
protocol, the private leg, and the TLS Pool call for Python programs."""

from ._agent import Agent, Target
from ._client import AgentLink, Connector, ReverseListener
from ._hello import MAX_FRAME, VERSION, Hello, Purpose
from ._leg import Endpoint, check_same_user, parse_endpoint, peer_uid
from ._perconn import PerConnection, peer_environment
from ._phonehome import Backoff, Home
from ._program import Program, ProgramExited, Restart
from ._secure import Side, secure
from ._stream import ByteStream

__all__ = [
    "MAX_FRAME",
    "VERSION",
    "Agent",
    "AgentLink",
    "Backoff",
    "ByteStream",
    "Connector",
    "Endpoint",
    "Hello",
    "Home",
    "PerConnection",
    "Program",
    "ProgramExited",
    "Purpose",
    "Restart",
    "ReverseListener",
    "Side",
    "Target",
    "check_same_user",
    "parse_endpoint",
    "peer_environment",
    "peer_uid",
    "secure",
]
