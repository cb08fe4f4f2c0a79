"""paraconnect: secure forward and reverse connections from JupyterLab to remote renderers.

Submodules load lazily so that ``paraconnect --help`` stays fast; import what you need from
``paraconnect.pki``, ``paraconnect.tls`` and so on.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ConfigError,
    CredentialError,
    NetworkError,
    NotFoundError,
    ParaconnectError,
    ProtocolError,
    StorageError,
    TrustError,
)

if TYPE_CHECKING:
    from .api import Server, Session, connect_forward, connect_reverse, share
    from .api import hub as connect_hub

__all__ = [
    "ConfigError",
    "CredentialError",
    "NetworkError",
    "NotFoundError",
    "ParaconnectError",
    "ProtocolError",
    "Server",
    "Session",
    "StorageError",
    "TrustError",
    "__version__",
    "connect_forward",
    "connect_hub",
    "connect_reverse",
    "share",
]

# ``paraconnect.hub`` is the hub's module, so the API's ``hub()`` is ``connect_hub`` here.
_API = {
    "Server": "Server",
    "Session": "Session",
    "connect_forward": "connect_forward",
    "connect_hub": "hub",
    "connect_reverse": "connect_reverse",
    "share": "share",
}


def __getattr__(name: str) -> Any:
    # The notebook API starts threads and imports anyio: only when a notebook asks for it.
    if name in _API:
        from . import api

        return getattr(api, _API[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
