"""paraconnect's built-in remote renderer: VTK offscreen (EGL) frames over a small protocol.

The client side (``RenderClient``, ``AsyncRenderClient``, ``Frame``) needs no VTK and imports
eagerly.  The server side (``RenderServer``, ``ServerOptions``, ``serve``) needs the ``render``
extra (``pip install 'paraconnect[render]'``: VTK, numpy, simplejpeg, Pillow) and is imported on
first use.  The wire format is documented in ``_protocol.py``; ``PROTOCOL_VERSION`` is its
version.  This package is standalone: it imports nothing from the tunnel or servers layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ._blocking import RenderClient
from ._client import AsyncRenderClient, Frame, RemoteRenderError, RenderTimeout
from ._protocol import DATASETS, FORMATS, MAX_HEADER, FrameDecoder
from ._protocol import VERSION as PROTOCOL_VERSION

if TYPE_CHECKING:
    from ._main import main, serve
    from ._server import RenderServer, ServerOptions
    from ._view import RemoteView

__all__ = [
    "DATASETS",
    "FORMATS",
    "MAX_HEADER",
    "PROTOCOL_VERSION",
    "AsyncRenderClient",
    "Frame",
    "FrameDecoder",
    "RemoteRenderError",
    "RemoteView",
    "RenderClient",
    "RenderServer",
    "RenderTimeout",
    "ServerOptions",
    "main",
    "serve",
]

_LAZY = {
    "RenderServer": "._server",
    "ServerOptions": "._server",
    "serve": "._main",
    "main": "._main",
    "RemoteView": "._view",  # an anywidget: needs the jupyter extra
}


# The server imports VTK (a second or more, and an optional extra); clients never need it.
# The widget needs anywidget (the jupyter extra).
__getattr__, _ = lazy_exports(__name__, _LAZY, globals(), _LAZY)
