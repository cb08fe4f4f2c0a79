"""The hub: the object that ties sessions, tunnels and servers together (ARCHITECTURE.md).

::

    from paraconnect.hub import Hub

    hub = Hub().start_in_thread()                 # its own event loop thread
    info = hub.call(hub.launch, "builtin", "local")   # blocking, from any thread
    info = hub.call(hub.wait, info.id)            # state "connected"
    RenderClient(port=info.local_port)            # the server's local endpoint
    hub.stop_thread()

``paraconnect hub`` runs one without Jupyter and serves a small control API on a Unix socket
(:mod:`paraconnect._hub._control`) that ``paraconnect launch`` and ``paraconnect servers`` use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from .vocab import ServerState

if TYPE_CHECKING:
    from ._hub._client import AsyncHubClient, AsyncHubEvents, HubEvents, find_hub
    from ._hub._control import HubClient, serve_control
    from ._hub._core import Hub, ServerInfo, make_launcher
    from ._hub._ops import dispatch
    from ._hub._rules import LaunchRules, check_warnings
    from .servers import ServerEvent

# The clients (the notebook API, the widgets) load no tunnel, servers or cryptography: each name
# is imported from its module when first asked for (PEP 562), as ``paraconnect.pki`` does.
_WHERE = {
    "AsyncHubClient": "._hub._client",
    "AsyncHubEvents": "._hub._client",
    "HubEvents": "._hub._client",
    "find_hub": "._hub._client",
    "HubClient": "._hub._control",
    "serve_control": "._hub._control",
    "Hub": "._hub._core",
    "ServerInfo": "._hub._core",
    "make_launcher": "._hub._core",
    "dispatch": "._hub._ops",
    "LaunchRules": "._hub._rules",
    "check_warnings": "._hub._rules",
    "ServerEvent": ".servers",
}

__all__ = [
    "AsyncHubClient",
    "AsyncHubEvents",
    "Hub",
    "HubClient",
    "HubEvents",
    "LaunchRules",
    "ServerEvent",
    "ServerInfo",
    "ServerState",
    "check_warnings",
    "dispatch",
    "find_hub",
    "make_launcher",
    "serve_control",
]


__getattr__, __dir__ = lazy_exports(__package__ or "paraconnect", _WHERE, globals(), __all__)
