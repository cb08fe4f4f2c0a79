"""Widgets for notebooks (ipywidgets 8): credentials, sharing with friends, servers phoning
home, and the built-in renderer's view.  They talk to the hub only through its ops
(:func:`paraconnect.hub`), never to the data directory.

Needs the ``jupyter`` extra (ipywidgets, anywidget, pyzmq).
"""

from __future__ import annotations

from ..render import RemoteView  # it lives beside its RenderClient; api.view() makes one
from ._credentials import CredentialsWidget
from ._share import ShareWidget
from ._watcher import PhoneHomeWatcher

__all__ = ["CredentialsWidget", "PhoneHomeWatcher", "RemoteView", "ShareWidget"]
