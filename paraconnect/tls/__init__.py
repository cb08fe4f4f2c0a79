"""Security levels, SSL contexts, peer identity, and the policy checks at handshake."""

from ..pki import SecurityLevel
from ._context import client_context, server_context
from ._peer import ANONYMOUS, PeerIdentity, check_peer, peer_identity

__all__ = [
    "ANONYMOUS",
    "PeerIdentity",
    "SecurityLevel",
    "check_peer",
    "client_context",
    "peer_identity",
    "server_context",
]
