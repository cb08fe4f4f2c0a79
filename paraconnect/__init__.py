"""paraconnect: secure forward and reverse connections from JupyterLab to remote renderers.

Submodules load lazily so that ``paraconnect --help`` stays fast; import what you need from
``paraconnect.pki``, ``paraconnect.tls`` and so on.
"""

from ._version import __version__
from .errors import (
    ConfigError,
    CredentialError,
    NetworkError,
    ParaconnectError,
    ProtocolError,
    StorageError,
    TrustError,
)

__all__ = [
    "ConfigError",
    "CredentialError",
    "NetworkError",
    "ParaconnectError",
    "ProtocolError",
    "StorageError",
    "TrustError",
    "__version__",
]
