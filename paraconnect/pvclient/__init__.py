"""ParaView's own client beside the kernel: a pvpython process that a notebook drives
(``srv.paraview()``) and whose active view a RemoteView shows (``srv.view()`` on pvserver).

Standalone, as ``render`` is: it imports only the shared helpers, and its pvpython side
(``_pvmain.py``) imports nothing of paraconnect at all.
"""

from __future__ import annotations

from ._client import ParaViewClient, ParaViewError, client_for, close_client

__all__ = ["ParaViewClient", "ParaViewError", "client_for", "close_client"]
