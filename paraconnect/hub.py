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

from ._hub._control import HubClient, find_hub, serve_control
from ._hub._core import Hub, ServerInfo, make_launcher
from ._hub._rules import LaunchRules
from .servers import ServerEvent
from .vocab import ServerState

__all__ = [
    "Hub",
    "HubClient",
    "LaunchRules",
    "ServerEvent",
    "ServerInfo",
    "ServerState",
    "find_hub",
    "make_launcher",
    "serve_control",
]
