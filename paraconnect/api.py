"""What a notebook cell calls: sessions, servers launched forward or reverse, friend bundles.

::

    import paraconnect as pc
    s = pc.Session("cfd-run", create=True)                      # open, or create once
    srv = pc.connect_reverse(kind="builtin", launcher="local", session=s)
    srv.wait_connected(timeout=60)                              # prints each state change
    view = srv.view(dataset="wavelet")                          # a RemoteView widget
    pc.connect_forward("node7:11111", kind="pvserver", session=s, launcher="ssh")
    pc.share(s, "alice", passphrase="...")                      # a friend bundle (download link)

Every call goes to a hub through its ops (docs/hub-api.md): the one of this Jupyter server
(``<home>/run/hub.json``; the extension exports PARACONNECT_HOME to its kernels), the one of
``paraconnect hub``, or, when none runs, one embedded in this process (said once, on stderr).

The implementation is async (:class:`AsyncServer`, :func:`aconnect_reverse`, ...); the
blocking names run it on the API's event loop thread through anyio's blocking portal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import queue
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ._api_sessions import (
    DEFAULT,
    Bundle,
    Hub,
    PassphraseSource,
    alaunch,
    aopen_session,
    ashare,
    check_session_name,
    hub,
    passphrase_reader,
)
from ._api_web import AppFrame, app_url, check_web
from ._runtime import Runtime, runtime
from .errors import ConfigError, NetworkError, ParaconnectError
from .hub import AsyncHubEvents
from .vocab import VIEW_KINDS

if TYPE_CHECKING:
    from .pvclient import ParaViewClient
    from .render import RemoteView
    from .tunnel import Endpoint

__all__ = [
    "AsyncServer",
    "Bundle",
    "Hub",
    "Server",
    "Session",
    "aconnect_forward",
    "aconnect_reverse",
    "aopen_session",
    "ashare",
    "connect_forward",
    "connect_reverse",
    "hub",
    "share",
]

Progress = Callable[[dict[str, Any]], None]


# -- sessions --------------------------------------------------------------------------------


class Session:
    """A session (its CA and everything it issued): ``pc.Session("cfd-run")`` opens one that
    exists, ``pc.Session.create("cfd-run")`` makes a new one (``create=True``: open, or create
    when missing).  An unknown name fails with the names that exist.  `passphrase` (a file, or
    a function returning it) decrypts an encrypted session key; it is read only when the hub
    does not hold the key already."""

    def __init__(
        self,
        name: str = DEFAULT,
        *,
        create: bool = False,
        passphrase: PassphraseSource | None = None,
        key_type: str | None = None,
        days: int | None = None,
        level: str | None = None,
        home: Path | str | None = None,
    ) -> None:
        self.name = check_session_name(name)
        self._rt = runtime(home)
        self._passphrase = passphrase_reader(passphrase)
        self.info: dict[str, Any] = self._open(
            create=create, key_type=key_type, days=days, level=level
        )

    @classmethod
    def create(
        cls,
        name: str,
        *,
        key_type: str = "ec-p256",
        days: int | None = None,
        level: str = "mutual",
        passphrase: PassphraseSource | None = None,
        home: Path | str | None = None,
    ) -> Session:
        """A new session `name` (refused if it exists); `passphrase` encrypts its key."""
        self = cls.__new__(cls)
        self.name = check_session_name(name)
        self._rt = runtime(home)
        self._passphrase = passphrase_reader(passphrase)
        self.info = self._open(create="new", key_type=key_type, days=days, level=level)
        return self

    def _open(self, **how: Any) -> dict[str, Any]:
        info: dict[str, Any] = self._rt.call(
            functools.partial(
                aopen_session, self._rt, self.name, passphrase=self._passphrase, **how
            )
        )
        return info

    def _request(self, op: str, **fields: Any) -> Any:
        return self._rt.call(functools.partial(self._rt.request, op, session=self.name, **fields))

    @property
    def hub(self) -> Hub:
        """The hub this session was opened in."""
        return Hub(self._rt)

    def refresh(self) -> dict[str, Any]:
        """The SessionInfo again, with its certificates."""
        self.info = self._request("session")
        return self.info

    @property
    def ca_sha256(self) -> str:
        return str(self.info["ca_sha256"])

    def certificates(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("certificates")
        return result

    def friends(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("friends")
        return result

    def revoke(self, target: str, reason: str | None = None) -> list[dict[str, Any]]:
        """Revoke by name or serial; live connections it carried are closed now."""
        result: list[dict[str, Any]] = self._request("revoke", target=target, reason=reason)
        return result

    def share(
        self,
        name: str,
        passphrase: str,
        days: float = 7,
        unique_id: str | None = None,
        out: Path | str | None = None,
    ) -> Bundle:
        return share(self, name, passphrase, days=days, unique_id=unique_id, out=out)

    def __repr__(self) -> str:
        return f"<paraconnect.Session {self.name!r} level={self.info.get('level')}>"


def _session_of(session: Session | str | None) -> tuple[str, Runtime, Callable[[], str] | None]:
    """Name, runtime and passphrase reader of what a call was given for `session`."""
    if isinstance(session, Session):
        return session.name, session._rt, session._passphrase
    return check_session_name(session or DEFAULT), runtime(), None


# -- friend bundles ----------------------------------------------------------------------------


def share(
    session: Session | str | None,
    name: str,
    passphrase: str,
    *,
    days: float = 7,
    unique_id: str | None = None,
    out: Path | str | None = None,
) -> Bundle:
    """Issue `name` a client certificate of `session` as a PKCS#12 bundle under `passphrase`,
    valid `days`; written to `out` (a file or directory) when given.  At level mutual give the
    friend's node ID (`unique_id`, what ``paraconnect unique-id`` prints on their machine): the
    certificate is then bound to it.  In a notebook the result shows as a download link."""
    sname, rt, unlock = _session_of(session)
    rt.call(functools.partial(aopen_session, rt, sname, passphrase=unlock))
    bundle: Bundle = rt.call(
        functools.partial(ashare, rt, sname, name, passphrase, days, unique_id)
    )
    if out is not None:
        target = Path(out)
        if target.is_dir():
            target = target / bundle.filename
        bundle = dataclasses.replace(bundle, path=bundle.save(target))
    return bundle


# -- servers -----------------------------------------------------------------------------------


class AsyncServer:
    """A launched server, by id, on the API's loop."""

    def __init__(self, rt: Runtime, info: Mapping[str, Any]) -> None:
        self._rt = rt
        self.id = str(info["id"])
        self.info = dict(info)
        self._last_state = str(info.get("state"))
        # launcher "manual": {command, expires}, the line to run by hand on the remote host
        self.by_hand: dict[str, Any] | None = None

    async def refresh(self) -> dict[str, Any]:
        self.info = await self._rt.request("server", id=self.id)
        return self.info

    async def wait_connected(
        self,
        timeout: float = 60.0,  # noqa: ASYNC109 - the hub's wait op takes it
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Wait until connected; `progress` gets each ``server`` event of this server.  A
        NetworkError says why when it failed or took longer than `timeout`."""
        address = (await self._rt.request("hub")).get("events") if progress else None
        self._last_state = str(self.info.get("state"))
        info: dict[str, Any] | None = None
        failure: ParaconnectError | None = None
        async with contextlib.AsyncExitStack() as stack:
            client = await self._rt.fresh_client()
            stack.push_async_callback(client.aclose)
            client.timeout = timeout + 30
            events = None
            if progress is not None and address:
                events = await stack.enter_async_context(AsyncHubEvents(str(address), ("server",)))
            async with anyio.create_task_group() as tg:
                if events is not None and progress is not None:
                    tg.start_soon(self._follow, events, progress)
                # Caught here so that the caller sees the ParaconnectError, not a group.
                try:
                    info = await client.request("wait", id=self.id, timeout=timeout)
                except ParaconnectError as exc:
                    failure = exc
                tg.cancel_scope.cancel()
        if failure is not None or info is None:
            raise failure or NetworkError(f"no answer from the hub about {self.id}")
        self.info = dict(info)
        if progress is not None and info["state"] != self._last_state:
            # The reply can overtake the event feed: report the state it ended in.
            progress({"server_id": self.id, "state": info["state"], "reason": info["reason"]})
        if info["state"] != "connected":
            raise NetworkError(
                f"server {self.id} is {info['state']}: {info['reason']}; its log: "
                f"'paraconnect servers logs {self.id}' (or .logs())"
            )
        return self.info

    async def _follow(self, events: AsyncHubEvents, progress: Progress) -> None:
        async for _topic, event in events:
            if event.get("server_id") == self.id:
                self._last_state = str(event.get("state"))
                progress(event)

    async def logs(self, tail: int | None = 100) -> str:
        return str(await self._rt.request("logs", id=self.id, tail=tail))

    async def stop(self, grace: float = 10.0) -> dict[str, Any]:
        self.info = await self._rt.request("stop", id=self.id, grace=grace)
        return self.info


async def _launch(
    rt: Runtime, kind: str, launcher: str, session: str, mode: str,
    options: Mapping[str, Any], command: Sequence[str], launcher_options: Mapping[str, Any],
    passphrase: Callable[[], str] | None = None,
) -> AsyncServer:  # fmt: skip
    info, by_hand = await alaunch(
        rt, kind, launcher, session, mode, dict(options), list(command), dict(launcher_options),
        passphrase,
    )  # fmt: skip
    server = AsyncServer(rt, info)
    server.by_hand = by_hand
    return server


async def aconnect_reverse(
    rt: Runtime,
    kind: str = "builtin",
    launcher: str = "local",
    session: str = "default",
    options: Mapping[str, Any] | None = None,
    command: Sequence[str] = (),
    launcher_options: Mapping[str, Any] | None = None,
    *,
    passphrase: Callable[[], str] | None = None,
) -> AsyncServer:
    return await _launch(
        rt, kind, launcher, session, "reverse", options or {}, command, launcher_options or {},
        passphrase,
    )  # fmt: skip


def _local_endpoint(info: Mapping[str, Any]) -> Endpoint:
    """The server's local endpoint (``info["local"]``, HOST:PORT as the hub writes it)."""
    from .tunnel import parse_endpoint

    return parse_endpoint(str(info["local"]), f"server {info.get('id')}'s local address")


def _forward_options(
    address: str, launcher: str, options: Mapping[str, Any] | None,
    launcher_options: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    from .tunnel import parse_endpoint

    try:
        ep = parse_endpoint(address)
    except ConfigError:
        ep = None
    if ep is None or ep.path is not None:
        raise ConfigError(f"connect_forward needs HOST:PORT, not {address!r} (e.g. 'node7:11111')")
    opts = {"forward_listen": address, **(options or {})}
    lopts = dict(launcher_options or {})
    if launcher == "ssh":
        lopts.setdefault("host", ep.host)
    return opts, lopts


async def aconnect_forward(
    rt: Runtime,
    address: str,
    kind: str = "pvserver",
    launcher: str = "local",
    session: str = "default",
    options: Mapping[str, Any] | None = None,
    command: Sequence[str] = (),
    launcher_options: Mapping[str, Any] | None = None,
    *,
    passphrase: Callable[[], str] | None = None,
) -> AsyncServer:
    opts, lopts = _forward_options(address, launcher, options, launcher_options)
    return await _launch(rt, kind, launcher, session, "forward", opts, command, lopts, passphrase)


class Server:
    """A launched server (blocking facade of :class:`AsyncServer`)."""

    def __init__(self, rt: Runtime, server: AsyncServer) -> None:
        self._rt, self._async = rt, server
        self.id = server.id

    @classmethod
    def get(cls, server_id: str, home: Path | str | None = None) -> Server:
        """A server the hub already knows, by id."""
        rt = runtime(home)
        return cls(
            rt, AsyncServer(rt, rt.call(functools.partial(rt.request, "server", id=server_id)))
        )

    @property
    def info(self) -> dict[str, Any]:
        """Its ServerInfo, fetched now."""
        result: dict[str, Any] = self._rt.call(self._async.refresh)
        return result

    @property
    def kind(self) -> str:
        return str(self._async.info["kind"])

    @property
    def state(self) -> str:
        return str(self.info["state"])

    @property
    def local(self) -> str | None:
        """127.0.0.1:PORT where this machine's clients (pvpython, RemoteView) connect."""
        local = self.info.get("local")
        return str(local) if local else None

    @property
    def port(self) -> int | None:
        local = self.local
        return int(local.rsplit(":", 1)[1]) if local else None

    @property
    def connect_id(self) -> int | None:
        cid = self.info.get("connect_id")
        return int(cid) if cid else None

    @property
    def agent_line(self) -> str | None:
        """launcher "manual": the shell line that starts this server's agent on the remote
        host (it enrols with a one-time token, then phones home)."""
        return None if self._async.by_hand is None else str(self._async.by_hand["command"])

    @property
    def note(self) -> str:
        """What to know about this server, one sentence each: for pvserver, what is not kept
        between clients and how to connect pvpython; for a manual agent, the line to run."""
        info = self.info
        sentences = [str(info.get("note") or "").strip()]
        if info["kind"] == "pvserver" and info.get("local"):
            cid = f" --connect-id={info['connect_id']}" if info.get("connect_id") else ""
            local = _local_endpoint(info)
            sentences.append(
                f"Connect ParaView: pvpython{cid}, then simple.Connect('{local.host}', "
                f"{local.port}) (or 'paraview --server-url=cs://{local}{cid}')"
            )
        if self._async.by_hand is not None:
            until = time.strftime("%H:%M", time.localtime(self._async.by_hand["expires"]))
            sentences.append(f"Run this on the remote host before {until}: {self.agent_line}")
        # One sentence a line: the hub's note and the hints must not run into each other.
        return "\n".join(s if s.endswith(".") else f"{s}." for s in sentences if s)

    def wait_connected(self, timeout: float = 60.0, *, quiet: bool = False) -> Server:
        """Wait until connected, printing each state change (from the hub's events)."""
        changes: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        future = self._rt.submit(
            functools.partial(self._async.wait_connected, timeout, None if quiet else changes.put)
        )
        future.add_done_callback(lambda _f: changes.put(None))
        try:
            if not quiet:
                print(f"{self.id}: {self._async.info['state']} ({self._async.info['reason']})")
            # Printed here, on the caller's thread, so the output lands in the caller's cell.
            while (event := changes.get()) is not None:
                print(f"{self.id}: {event.get('state')} ({event.get('reason', '')})")
            future.result()
        except KeyboardInterrupt:
            # Only the waiting stops: the hub goes on starting the server, which a user who
            # pressed Ctrl-C (or Interrupt kernel) would otherwise not guess.
            future.cancel()
            raise KeyboardInterrupt(
                f"stopped waiting for {self.id}; the server keeps starting on its own. "
                f"Wait again with .wait_connected(), or stop it with .stop() (the command "
                f"line: paraconnect servers stop {self.id})"
            ) from None
        return self

    def logs(self, tail: int | None = 100) -> str:
        result: str = self._rt.call(self._async.logs, tail)
        return result

    def stop(self, grace: float = 10.0) -> dict[str, Any]:
        from .pvclient import close_client

        close_client(self.id)
        result: dict[str, Any] = self._rt.call(self._async.stop, grace)
        return result

    def view(
        self,
        dataset: str | None = None,
        *,
        path: str | None = None,
        width: int = 640,
        height: int = 480,
    ) -> RemoteView:
        """A RemoteView widget (drag rotates, wheel zooms): of the built-in renderer, showing a
        file on the server's host (``path=``) or a built-in dataset (``dataset=``, the wavelet
        when neither is given); or of a pvserver's active ParaView view through the client
        :meth:`paraview` keeps (there the pipeline is what ``paraview()`` built; `dataset`
        loads one only when given)."""
        if dataset is not None and path is not None:
            raise ConfigError("view() shows a dataset or a file: give dataset= or path=, not both")
        info = self._connected()
        from .render import RemoteView

        if info["kind"] == "pvserver":
            client = self.paraview()
            return RemoteView(unix=client.frames, dataset=dataset, width=width, height=height)
        if dataset is None and path is None:
            dataset = "wavelet"
        local = _local_endpoint(info)
        return RemoteView(
            host=local.host,
            port=local.port,
            dataset=dataset,
            path=path,
            width=width,
            height=height,
            server_id=self.id,
        )

    def open(self, *, width: str = "100%", height: int = 600) -> AppFrame:
        """A web server's app (kinds ``web``, ``trame``) inline in the notebook, through the
        Jupyter server extension's authenticated proxy; its link opens a JupyterLab tab."""
        info = self.info
        check_web(info)
        return AppFrame(self.id, app_url(self.id), width, height)

    def paraview(self, **options: Any) -> ParaViewClient:
        """A pvserver's ParaView client: a pvpython process beside this kernel, connected to the
        server's local endpoint, started once and kept while it lives (and with it the
        pipeline).  ``pv = srv.paraview(); pv("simple.Show(simple.Sphere())")``; errors there
        raise here.  `options` go to :class:`paraconnect.pvclient.ParaViewClient`."""
        info = self._connected()
        from .pvclient import client_for
        from .tunnel import local_paraview, paraview_mismatch

        # Said here, in one line, before ParaView's own handshake fails obscurely.
        client = local_paraview(str(options.get("pvpython", "pvpython")))
        mismatch = paraview_mismatch(info.get("program_version"), client, self.id)
        if mismatch:
            raise ConfigError(mismatch)
        local = _local_endpoint(info)
        return client_for(self.id, local.host, local.port, **options)

    def _connected(self) -> dict[str, Any]:
        info = self.info
        if info["kind"] not in VIEW_KINDS:  # no client of ours for TCP/web programs
            raise ConfigError(
                f"view() shows the built-in renderer or pvserver; {self.id} is a "
                f"{info['kind']} server: connect its own client to {info.get('local')}"
            )
        if not info.get("local") or info["state"] != "connected":
            raise NetworkError(
                f"server {self.id} is {info['state']}, not connected; call wait_connected() first"
            )
        return info

    def __repr__(self) -> str:
        info = self._async.info
        return f"<paraconnect.Server {self.id} {info['kind']} {info['mode']} {info['state']}>"


def connect_reverse(
    kind: str = "builtin",
    launcher: str = "local",
    session: Session | str | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    command: Sequence[str] = (),
    **launcher_options: Any,
) -> Server:
    """Launch a `kind` server (builtin, pvserver, command, web, trame) with `launcher` (local,
    ssh, slurm); its agent phones home to this hub over mutual TLS.  `options` are the kind's
    (``xvfb``, ``ranks``, ``app``, ``walltime``, ...); keyword arguments go to the launcher
    (``host`` for ssh; ``partition``, ``slurm_conf`` ... for slurm).  Returns at once: see
    :meth:`Server.wait_connected`."""
    sname, rt, passphrase = _session_of(session)
    srv: AsyncServer = rt.call(
        functools.partial(
            aconnect_reverse, rt, kind, launcher, sname, options, command, launcher_options,
            passphrase=passphrase,
        )
    )  # fmt: skip
    return Server(rt, srv)


def connect_forward(
    address: str,
    kind: str = "pvserver",
    session: Session | str | None = None,
    *,
    launcher: str = "local",
    options: Mapping[str, Any] | None = None,
    command: Sequence[str] = (),
    **launcher_options: Any,
) -> Server:
    """Launch a `kind` server whose agent LISTENS on `address` ("HOST:PORT", the agent's
    ``--listen``) on the host the launcher runs it on; the hub then dials it there over mutual
    TLS and exposes it on a local endpoint.  With ``launcher="ssh"`` the host of `address` is
    also the ssh host unless ``host=`` is given; port 0 lets the agent pick a free one (it
    reports it).  Nothing on the remote host is reachable without the session's
    certificates: the agent refuses anyone else at the TLS handshake."""
    sname, rt, passphrase = _session_of(session)
    srv: AsyncServer = rt.call(
        functools.partial(
            aconnect_forward, rt, address, kind, launcher, sname, options, command,
            launcher_options, passphrase=passphrase,
        )
    )  # fmt: skip
    return Server(rt, srv)
