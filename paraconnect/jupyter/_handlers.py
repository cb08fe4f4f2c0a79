"""REST routes under ``/paraconnect/api`` (docs/hub-api.md): each handler maps its path, query
and body onto an operation's fields and awaits the operation on the hub's loop.

Every method is ``@web.authenticated`` (token or cookie; an API handler answers 403, never a
login redirect) and ``@authorized`` against the ``paraconnect`` resource, so a Jupyter
authorizer can grant read or write on it.  tests/test_jupyter_rest.py requests every route of
:data:`handlers` without credentials and fails if one answers anything but 403.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, ClassVar, NoReturn, cast

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..errors import (
    ConfigError,
    NetworkError,
    NotFoundError,
    ParaconnectError,
    ProtocolError,
    TrustError,
)
from ..servers import launcher_entries
from ._bridge import HubThread
from ._config import Paraconnect
from ._proxy import PROXY, ProxyHandler
from ._view import ViewHandler
from ._websocket import AUTH_RESOURCE, EventsHandler

__all__ = ["API", "handlers", "status_for"]

API = "/paraconnect/api"


def status_for(exc: ParaconnectError) -> int:
    """The HTTP status of a hub error (docs/hub-api.md)."""
    if isinstance(exc, TrustError):
        return 403
    if isinstance(exc, NetworkError):
        return 502
    if isinstance(exc, NotFoundError):
        return 404
    return 400


class _Handler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def hub(self) -> HubThread:
        return cast(HubThread, self.settings["paraconnect_hub"])

    @property
    def conf(self) -> Paraconnect:
        return self.hub.config

    def body(self) -> dict[str, Any]:
        """The JSON object sent, or {} for an empty body."""
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except ValueError as exc:
            self._fail(ProtocolError(f"the request body is not JSON: {exc}"))
        if not isinstance(data, dict):
            self._fail(ProtocolError("the request body must be a JSON object"))
        return cast(dict[str, Any], data)

    def query(self, name: str, kind: type[int] | type[float] | None = None) -> Any:
        """Query argument `name` (None when absent), converted to `kind`; a number given as
        text for a field that also takes words (``since=1h``) is sent as a number."""
        value = self.get_query_argument(name, None)
        if value in (None, ""):
            return None
        if kind is not None:
            try:
                return kind(value)
            except ValueError:
                self._fail(ConfigError(f"query argument {name}={value!r} must be a number"))
        try:
            return float(value)
        except ValueError:
            return value

    def _fail(self, exc: ParaconnectError) -> NoReturn:
        self.set_status(status_for(exc))
        self.finish(json.dumps({"error": str(exc), "category": type(exc).__name__}))
        raise web.Finish()

    async def call(self, op: str, **fields: Any) -> Any:
        """Run `op` on the hub; a hub error ends the request with its status and one line."""
        try:
            return await self.hub.op(op, {k: v for k, v in fields.items() if v is not None})
        except ParaconnectError as exc:
            if self.hub.hub is None:
                self.set_status(503)  # the hub itself does not run: not the request's fault
                self.finish(json.dumps({"error": str(exc), "category": type(exc).__name__}))
                raise web.Finish() from exc
            self._fail(exc)

    async def answer(self, op: str, **fields: Any) -> None:
        self.finish(json.dumps(await self.call(op, **fields)))


class _OpHandler(_Handler):
    """A route whose methods each run one operation on the path's fields (``server_id`` is the
    operation's ``id``), merged over the JSON body's for the methods in :attr:`bodies`."""

    ops: ClassVar[dict[str, str]] = {}
    bodies: ClassVar[frozenset[str]] = frozenset()

    async def _run(self, **path: str) -> None:
        method = str(self.request.method)
        fields: dict[str, Any] = {"id" if k == "server_id" else k: v for k, v in path.items()}
        if method in self.bodies:
            fields = {**self.body(), **fields}
        await self.answer(self.ops[method], **fields)

    @staticmethod
    def method() -> Any:
        """:meth:`_run` as one HTTP method: authenticated, and authorized for its method's
        action (@authorized fixes the read or write action at the first request it sees, so
        GET and POST cannot share one wrapper)."""
        return web.authenticated(authorized(_OpHandler._run))


def _op(get: str = "", post: str = "", put: str = "", body: bool = False) -> type[_OpHandler]:
    """The handler of a route whose methods each run one operation (`body`: the non-GET ones
    take the request's JSON body)."""
    ops = {m: op for m, op in (("GET", get), ("POST", post), ("PUT", put)) if op}
    bodies = frozenset(m for m in ops if body and m != "GET")
    name = "".join(part.title() for part in (get or post or put).split("_")) + "Handler"
    # Only the methods it has: tornado answers the others 405 (and a test lists every route).
    methods = {m.lower(): _OpHandler.method() for m in ops}
    return type(name, (_OpHandler,), {"ops": ops, "bodies": bodies, **methods})


class HubHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        info = await self.call("hub")
        # The launchers as registered (paraconnect.servers.register_launcher): the panel's
        # launch form offers these, so a new launcher needs no change to the panel.
        launchers = [entry.as_dict() for entry in launcher_entries()]
        self.finish(json.dumps({**info, "launchers": launchers, "jupyter": self.conf.public()}))


class SessionsHandler(_OpHandler):
    ops: ClassVar[dict[str, str]] = {"GET": "sessions", "POST": "session_create"}
    bodies = frozenset({"POST"})
    get, post = _OpHandler.method(), _OpHandler.method()

    def body(self) -> dict[str, Any]:
        # A new session gets this Jupyter server's default level unless the request names one.
        return {"level": self.conf.default_level, **super().body()}


class BundleHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self, session: str, serial: str) -> None:
        got = await self.call("friend_bundle", session=session, serial=serial)
        # The name comes from the session and friend names: keep it header-safe.
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", str(got["filename"]))
        self.set_header("Content-Disposition", f'attachment; filename="{filename}"')
        self.set_header("Cache-Control", "no-store")
        self.finish(base64.b64decode(got["data_b64"]), set_content_type="application/x-pkcs12")


class PolicyRuleHandler(_Handler):
    @web.authenticated
    @authorized
    async def delete(self, session: str, index: str) -> None:
        await self.answer("policy_remove", session=session, index=int(index))


class ServerHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self, server_id: str) -> None:
        await self.answer("server", id=server_id)

    @web.authenticated
    @authorized
    async def delete(self, server_id: str) -> None:
        await self.answer("stop", id=server_id, grace=self.query("grace", float))


class LogsHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self, server_id: str) -> None:
        await self.answer("logs", id=server_id, tail=self.query("tail", int))


class AccountingHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.answer(
            "accounting",
            session=self.get_query_argument("session", None) or None,
            since=self.query("since"),
            limit=self.query("limit", int),
        )


_S = r"(?P<session>[^/]+)"
_ID = r"(?P<server_id>[^/]+)"

# Paths relative to the server's base_url; order matters where patterns overlap
# (/servers/agent-command before /servers/{id}).
handlers: list[tuple[str, type[web.RequestHandler]]] = [
    (rf"{API}/hub", HubHandler),
    (rf"{API}/sessions", SessionsHandler),
    (rf"{API}/sessions/{_S}", _op(get="session")),
    (rf"{API}/sessions/{_S}/open", _op(post="session_open")),
    (rf"{API}/sessions/{_S}/certificates", _op(get="certificates")),
    (rf"{API}/sessions/{_S}/friends", _op(get="friends", post="friend_issue", body=True)),
    (rf"{API}/sessions/{_S}/friends/(?P<serial>[^/]+)/bundle", BundleHandler),
    (rf"{API}/sessions/{_S}/revoke", _op(post="revoke", body=True)),
    (rf"{API}/sessions/{_S}/policy", _op(get="policy")),
    (rf"{API}/sessions/{_S}/policy/rules", _op(post="policy_rule", body=True)),
    (rf"{API}/sessions/{_S}/policy/rules/(?P<index>[0-9]+)", PolicyRuleHandler),
    (rf"{API}/sessions/{_S}/policy/default", _op(put="policy_default", body=True)),
    # The hub's operation layer applies Paraconnect.max_servers / ssh_hosts / slurm_defaults
    # (LaunchRules) to a launch, for kernels and the CLI as for this route.
    (rf"{API}/servers", _op(get="servers", post="launch", body=True)),
    (rf"{API}/servers/agent-command", _op(post="agent_command", body=True)),
    (rf"{API}/servers/{_ID}", ServerHandler),
    (rf"{API}/servers/{_ID}/logs", LogsHandler),
    (rf"{API}/servers/{_ID}/view", ViewHandler),
    (rf"{API}/launch-options", _op(get="launch_options")),
    (rf"{API}/servers/{_ID}/resubmit", _op(post="resubmit")),
    (rf"{API}/listeners", _op(get="listeners")),
    (rf"{API}/accounting", AccountingHandler),
    (rf"{API}/events", EventsHandler),
    # A web app's own paths: everything after the id (with its slash) goes to the app.
    (rf"{PROXY}/{_ID}(?P<path>/.*|)", ProxyHandler),
]
