"""Security levels, SSL contexts, peer identity, and the policy checks at handshake."""

from ..pki import SecurityLevel
from ._context import client_context, server_context
from ._peer import (
    ANONYMOUS,
    PeerIdentity,
    accepted_roles,
    binding_refusal,
    check_peer,
    peer_identity,
    role_refusal,
)
from ._policy import PolicyWatcher, check_policy, policy_refusal

__all__ = [
    "ANONYMOUS",
    "PeerIdentity",
    "PolicyWatcher",
    "SecurityLevel",
    "accepted_roles",
    "binding_refusal",
    "check_peer",
    "check_policy",
    "client_context",
    "peer_identity",
    "policy_refusal",
    "role_refusal",
    "server_context",
]
