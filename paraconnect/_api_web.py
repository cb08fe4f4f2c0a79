"""A web server's app in a notebook (``srv.open()``): an inline frame on the Jupyter server
extension's authenticated proxy, ``<base_url>paraconnect/proxy/<server-id>/``.

The URL is absolute from the site's root (``/user/<name>/paraconnect/proxy/...`` under
JupyterHub), so the browser resolves it the same from any notebook's page; the base URL comes
from the server extension, which exports it to its kernels.  The frame is on Jupyter's origin,
so Jupyter's own cookie authenticates it; the proxy strips that cookie before the app sees the
request.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .errors import ConfigError, NetworkError
from .vocab import JUPYTER_BASE_URL_ENV, WEB_KINDS

PROXY = "paraconnect/proxy"
# What a web app needs in its frame: its scripts and their websockets back to the proxy (same
# origin), forms, downloads, its own pop-ups.
SANDBOX = "allow-scripts allow-same-origin allow-forms allow-downloads allow-popups allow-modals"


def jupyter_base_url() -> str:
    """This kernel's Jupyter server's base URL, ``/`` outside one (a plain Jupyter server)."""
    base = os.environ.get(JUPYTER_BASE_URL_ENV) or os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    base = base or "/"
    if not base.startswith("/"):
        raise ConfigError(
            f"${JUPYTER_BASE_URL_ENV} is {base!r}, not a path from the site's root; unset it "
            "(the paraconnect server extension sets it for its kernels)"
        )
    return base if base.endswith("/") else base + "/"


def app_url(server_id: str, base_url: str | None = None) -> str:
    base = jupyter_base_url() if base_url is None else base_url
    return f"{base}{PROXY}/{quote(server_id, safe='')}/"


def check_web(info: Mapping[str, Any]) -> None:
    """open() shows web apps only, once the tunnel to them is up."""
    if info["kind"] not in WEB_KINDS:
        raise ConfigError(
            f"open() shows a web app (kinds {', '.join(WEB_KINDS)}); {info['id']} is a "
            f"{info['kind']} server: use view() for builtin and pvserver, or point its own "
            f"client at {info.get('local') or 'its local endpoint'}"
        )
    if not info.get("local") or info["state"] != "connected":
        raise NetworkError(
            f"server {info['id']} is {info['state']}, not connected; call wait_connected() first"
        )


class AppFrame:
    """The app of a web server, shown inline where a notebook displays it (an IFrame output),
    with a link that opens it in a JupyterLab tab (a new browser tab outside JupyterLab)."""

    def __init__(self, server_id: str, url: str, width: str = "100%", height: int = 600) -> None:
        if not isinstance(height, int) or isinstance(height, bool) or not 100 <= height <= 4000:
            raise ConfigError(f"open(height={height!r}): give the height in pixels, 100 to 4000")
        self.server_id, self.url, self.width, self.height = server_id, url, width, height

    def _repr_html_(self) -> str:
        url, sid = html.escape(self.url, quote=True), html.escape(self.server_id, quote=True)
        width = html.escape(str(self.width), quote=True)
        return (
            f'<div class="paraconnect-app" data-server="{sid}">'
            f'<iframe src="{url}" width="{width}" height="{self.height}" '
            f'style="border: 0" sandbox="{SANDBOX}" title="the app of server {sid}"></iframe>'
            f'<div><a href="{url}" target="_blank" rel="noopener" '
            f'data-paraconnect-app="{sid}">Open {sid} in a JupyterLab tab</a></div></div>'
        )

    def __repr__(self) -> str:
        return f"<paraconnect.AppFrame {self.server_id} at {self.url}>"
