"""The extension's life cycle: the hub starts when Jupyter loads the extension and stops when
Jupyter stops.

An :class:`~jupyter_server.extension.application.ExtensionApp` because only extension apps get
``stop_extension``: jupyter-server awaits it in its clean-up, which runs on SIGTERM, on SIGINT
(see ``_stop_on_sigint``), on ``jupyter server stop`` and on ``POST /api/shutdown``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from jupyter_server.extension.application import ExtensionApp

from ..errors import ConfigError, ParaconnectError
from ..vocab import JUPYTER_BASE_URL_ENV
from ._bridge import HubThread
from ._config import Paraconnect
from ._handlers import handlers
from ._websocket import EventStream

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp

__all__ = ["ParaconnectApp"]


class ParaconnectApp(ExtensionApp):
    """paraconnect inside a Jupyter server (settings: :class:`Paraconnect`)."""

    name = "paraconnect"
    load_other_extensions = True
    _hub: HubThread | None = None
    _events: EventStream | None = None

    @property
    def _server(self) -> ServerApp:
        if self.serverapp is None:
            raise ConfigError("the paraconnect extension ran before Jupyter linked it")
        return self.serverapp

    def initialize_settings(self) -> None:
        self._share_log()
        config = Paraconnect(parent=self._server)
        if config.data_dir:
            # Kernels inherit the server's environment: they find this hub through
            # <data_dir>/run/hub.json.
            os.environ["PARACONNECT_HOME"] = config.data_dir
        # srv.open() in a kernel writes a frame whose URL the browser resolves: it needs the
        # server's base URL (/user/<name>/ under JupyterHub), which only the server knows.
        os.environ[JUPYTER_BASE_URL_ENV] = self._server.base_url
        events = self._events = EventStream()
        hub = self._hub = HubThread(config)
        hub.add_listener(events)
        try:
            hub.start()
        except ParaconnectError as exc:
            # Jupyter still starts; every paraconnect route then answers 503 with this line.
            hub.error = str(exc)
            self.log.error("paraconnect: the hub did not start: %s", exc)
        except Exception as exc:  # a bug, or an OS error nobody translated: keep the trace
            hub.error = f"{type(exc).__name__}: {exc}; see the Jupyter server's log"
            self.log.exception("paraconnect: the hub did not start")
        self._stop_on_sigint()
        self.settings.update({"paraconnect_hub": hub, "paraconnect_events": events})

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers)

    async def stop_extension(self) -> None:
        if self._events is not None:
            self._events.close_all()
        if self._hub is not None:
            # Joining the hub's thread blocks; keep tornado's loop free while it does.
            await asyncio.to_thread(self._hub.stop)

    def _share_log(self) -> None:
        """paraconnect's log lines (launches, phone-home, refusals) go to Jupyter's log."""
        ours = logging.getLogger("paraconnect")
        for handler in self._server.log.handlers:
            if handler not in ours.handlers:
                ours.addHandler(handler)
        if ours.level == logging.NOTSET:
            ours.setLevel(logging.INFO)
        ours.propagate = False

    def _stop_on_sigint(self) -> None:
        """Without a terminal, jupyter-server leaves SIGINT to Python: KeyboardInterrupt ends
        its loop with no clean-up at all (no stop_extension; the hub's control socket and
        run/hub.json stay behind).  Route SIGINT to the server's orderly stop, as SIGTERM is."""
        if sys.stdin is not None and sys.stdin.isatty():
            return  # jupyter-server asks "Shut down this Jupyter server?" and then stops
        if threading.current_thread() is not threading.main_thread():
            return  # an embedded server: signals belong to whoever embeds it
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._server._signal_stop)
