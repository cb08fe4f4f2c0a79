"""What a notebook cell calls: sessions, servers launched forward or reverse, friend bundles.

::

    import paraconnect as pc
    s = pc.Session("cfd-run")                                   # create or open
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

import base64
import contextlib
import dataclasses
import functools
import html
import queue
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ._runtime import Runtime, runtime
from .errors import ConfigError, NetworkError, ParaconnectError
from .hub import AsyncHubEvents, HubEvents

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


# -- the hub ---------------------------------------------------------------------------------


class Hub:
    """A handle on the hub this process talks to: ``pc.hub().request("servers")``."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    @property
    def home(self) -> Path:
        return self._rt.home

    @property
    def embedded(self) -> bool:
        """True when the hub runs inside this process (no Jupyter or ``paraconnect hub``)."""
        return self._rt.embedded

    def request(self, op: str, **fields: Any) -> Any:
        """Run one op of docs/hub-api.md and return its result."""
        return self._rt.call(functools.partial(self._rt.request, op, **fields))

    def events(self) -> HubEvents:
        """A started subscriber of the hub's events; ``.subscribe(callback)`` on it."""
        address = self.request("hub").get("events")
        if not address:
            raise ConfigError(
                "this hub publishes no ZeroMQ events (pyzmq missing); pip install "
                "'paraconnect[jupyter]'"
            )
        return HubEvents(str(address)).start()


def hub(home: Path | str | None = None) -> Hub:
    """The hub for `home` (default: $PARACONNECT_HOME, else the user data directory)."""
    return Hub(runtime(home))


# -- sessions --------------------------------------------------------------------------------


async def aopen_session(
    rt: Runtime,
    name: str,
    *,
    key_type: str = "ec-p256",
    days: int | None = None,
    level: str = "mutual",
) -> dict[str, Any]:
    """Create the session `name` if it does not exist, start its phone-home listener, and
    return its SessionInfo."""
    names = {s["name"] for s in await rt.request("sessions")}
    if name not in names:
        fields: dict[str, Any] = {"name": name, "key_type": key_type, "level": level}
        if days is not None:
            fields["days"] = days
        await rt.request("session_create", **fields)
    info: dict[str, Any] = await rt.request("session_open", session=name)
    return info


class Session:
    """A session (its CA and everything it issued), created on first use, opened after."""

    def __init__(
        self,
        name: str = "default",
        *,
        key_type: str = "ec-p256",
        days: int | None = None,
        level: str = "mutual",
        home: Path | str | None = None,
    ) -> None:
        self.name = name
        self._rt = runtime(home)
        self.info: dict[str, Any] = self._rt.call(
            functools.partial(
                aopen_session, self._rt, name, key_type=key_type, days=days, level=level
            )
        )

    def _request(self, op: str, **fields: Any) -> Any:
        return self._rt.call(functools.partial(self._rt.request, op, session=self.name, **fields))

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


def _session_name(session: Session | str | None) -> tuple[str, Runtime]:
    if isinstance(session, Session):
        return session.name, session._rt
    return session or "default", runtime()


# -- friend bundles ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A friend's PKCS#12 bundle (encrypted with the passphrase given at issue)."""

    session: str
    friend: str
    serial: str
    filename: str
    data: bytes
    not_after: str
    path: Path | None = None

    def save(self, path: Path | str) -> Path:
        out = Path(path)
        out.write_bytes(self.data)
        out.chmod(0o600)
        return out

    def _repr_html_(self) -> str:
        b64 = base64.b64encode(self.data).decode()
        name = html.escape(self.filename)
        return (
            f"<a download='{name}' href='data:application/x-pkcs12;base64,{b64}'>"
            f"download {name}</a> (for {html.escape(self.friend)}, serial {self.serial}, "
            f"valid until {html.escape(self.not_after)}; send the passphrase another way)"
        )


async def ashare(
    rt: Runtime,
    session: str,
    name: str,
    passphrase: str,
    days: float = 7,
    unique_id: str | None = None,
) -> Bundle:
    issued = await rt.request(
        "friend_issue", session=session, name=name, passphrase=passphrase, days=days,
        unique_id=unique_id,
    )  # fmt: skip
    cert = issued["certificate"]
    got = await rt.request("friend_bundle", session=session, serial=cert["serial"])
    return Bundle(
        session, name, str(cert["serial"]), str(got["filename"]),
        base64.b64decode(got["data_b64"]), str(cert["not_after"]),
    )  # fmt: skip


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
    sname, rt = _session_name(session)
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
    rt: Runtime,
    kind: str,
    launcher: str,
    session: str,
    mode: str,
    options: Mapping[str, Any],
    command: Sequence[str],
    launcher_options: Mapping[str, Any],
) -> AsyncServer:
    await aopen_session(rt, session)
    info = await rt.request(
        "launch", kind=kind, launcher=launcher, session=session, mode=mode,
        options=dict(options), command=list(command), launcher_options=dict(launcher_options),
    )  # fmt: skip
    return AsyncServer(rt, info)


async def aconnect_reverse(
    rt: Runtime,
    kind: str = "builtin",
    launcher: str = "local",
    session: str = "default",
    options: Mapping[str, Any] | None = None,
    command: Sequence[str] = (),
    launcher_options: Mapping[str, Any] | None = None,
) -> AsyncServer:
    return await _launch(
        rt, kind, launcher, session, "reverse", options or {}, command, launcher_options or {}
    )


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
) -> AsyncServer:
    opts, lopts = _forward_options(address, launcher, options, launcher_options)
    return await _launch(rt, kind, launcher, session, "forward", opts, command, lopts)


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
    def note(self) -> str:
        """For pvserver: how to connect pvpython (and what is not kept between clients)."""
        info = self.info
        note = str(info.get("note") or "")
        if info["kind"] == "pvserver" and info.get("local"):
            cid = f" --connect-id={info['connect_id']}" if info.get("connect_id") else ""
            local = _local_endpoint(info)
            hint = (
                f"pvpython{cid}, then simple.Connect('{local.host}', {local.port}) "
                f"(or 'paraview --server-url=cs://{local}{cid}')"
            )
            note = f"{note} {hint}".strip()
        return note

    def wait_connected(self, timeout: float = 60.0, *, quiet: bool = False) -> Server:
        """Wait until connected, printing each state change (from the hub's events)."""
        changes: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        future = self._rt.submit(
            functools.partial(self._async.wait_connected, timeout, None if quiet else changes.put)
        )
        future.add_done_callback(lambda _f: changes.put(None))
        if not quiet:
            print(f"{self.id}: {self._async.info['state']} ({self._async.info['reason']})")
        # Printed here, on the caller's thread, so the output lands in the caller's cell.
        while (event := changes.get()) is not None:
            print(f"{self.id}: {event.get('state')} ({event.get('reason', '')})")
        future.result()
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
        self, dataset: str | None = "wavelet", *, width: int = 640, height: int = 480
    ) -> RemoteView:
        """A RemoteView widget (drag rotates, wheel zooms): of the built-in renderer, or of a
        pvserver's active ParaView view through the client :meth:`paraview` keeps (there the
        pipeline is what ``paraview()`` built; `dataset` loads one only when given)."""
        info = self._connected()
        from .render import RemoteView

        if info["kind"] == "pvserver":
            client = self.paraview()
            pv_dataset = None if dataset == "wavelet" else dataset
            return RemoteView(unix=client.frames, dataset=pv_dataset, width=width, height=height)
        local = _local_endpoint(info)
        return RemoteView(
            host=local.host, port=local.port, dataset=dataset, width=width, height=height
        )

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
        if info["kind"] == "command":  # no client of paraconnect's own for any TCP program
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
    """Launch a `kind` server (builtin, pvserver, command) with `launcher` (local, ssh, slurm);
    its agent phones home to this hub over mutual TLS.  `options` are the kind's (``xvfb``,
    ``ranks``, ``walltime``, ...); keyword arguments go to the launcher (``host`` for ssh;
    ``partition``, ``slurm_conf`` ... for slurm).  Returns at once: see
    :meth:`Server.wait_connected`."""
    sname, rt = _session_name(session)
    srv: AsyncServer = rt.call(
        functools.partial(
            aconnect_reverse, rt, kind, launcher, sname, options, command, launcher_options
        )
    )
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
    sname, rt = _session_name(session)
    srv: AsyncServer = rt.call(
        functools.partial(
            aconnect_forward,
            rt,
            address,
            kind,
            launcher,
            sname,
            options,
            command,
            launcher_options,
        )
    )
    return Server(rt, srv)
