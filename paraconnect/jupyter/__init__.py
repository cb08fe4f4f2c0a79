"""The Jupyter server extension: the hub on its own thread, REST under ``/paraconnect/api``, live
events on a websocket; settings in :class:`Paraconnect` (``c.Paraconnect.listen = ...``).

Enabled on install (``etc/jupyter/jupyter_server_config.d/paraconnect.json``); check with
``jupyter server extension list``.  The routes are those of docs/hub-api.md.
"""

from __future__ import annotations

from typing import Any

from ._app import ParaconnectApp
from ._config import Paraconnect

__all__ = ["Paraconnect", "ParaconnectApp"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "paraconnect.jupyter", "app": ParaconnectApp}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """The classic hook, for servers that load by module: the same as the app's loader."""
    load: Any = ParaconnectApp._load_jupyter_server_extension  # untyped in jupyter-server
    load(serverapp)
