"""Security levels, SSL contexts, peer identity, and the policy checks at handshake."""

from ..pki import SecurityLevel
from ._context import client_context, server_context
from ._peer import ANONYMOUS, PeerIdentity, check_peer, peer_identity
from ._policy import PolicyWatcher, check_policy, policy_refusal

__all__ = [
    "ANONYMOUS",
    "PeerIdentity",
    "PolicyWatcher",
    "SecurityLevel",
    "check_peer",
    "check_policy",
    "client_context",
    "peer_identity",
    "policy_refusal",
    "server_context",
]
