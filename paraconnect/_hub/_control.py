"""The hub's local control API: a Unix socket in a 0700 runtime directory, length-prefixed JSON.

A running hub writes ``<home>/run/hub.json`` (0600: pid, control socket, phone-home addresses)
so that ``paraconnect launch`` / ``paraconnect servers`` and kernels find it.  Each request is a
4-byte big-endian length and a JSON object ``{"op": ..., ...}``; each reply
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "...", "category": "ConfigError"}``.
Only this user can connect: the directory is 0700 and the peer's uid is checked.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from .. import errors
from .._fs import ensure_private_dir, read_public, write_atomic
from ..errors import ConfigError, NetworkError, ParaconnectError, ProtocolError
from ..pki import default_home

if TYPE_CHECKING:
    from ._core import Hub

__all__ = ["HubClient", "find_hub", "runtime_dir", "serve_control"]

MAX_REQUEST = 1 << 20
_LEN = struct.Struct("!I")


def runtime_dir(home: Path | None = None) -> Path:
    return (home or default_home()) / "run"


async def _read(stream: anyio.abc.ByteStream) -> dict[str, Any] | None:
    buf = b""
    while len(buf) < 4:
        try:
            chunk = await stream.receive(4 - len(buf))
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
        buf += chunk
    (size,) = _LEN.unpack(buf)
    if size > MAX_REQUEST:
        raise ProtocolError(f"control request of {size} bytes is over the {MAX_REQUEST} limit")
    data = b""
    while len(data) < size:
        data += await stream.receive(size - len(data))
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ProtocolError("a control request must be a JSON object")
    return obj


def _frame(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj).encode()
    return _LEN.pack(len(data)) + data


async def _dispatch(hub: Hub, req: dict[str, Any]) -> Any:
    op = req.get("op")
    sid = str(req.get("id", ""))
    if op == "launch":
        info = await hub.launch(
            str(req["kind"]),
            str(req.get("launcher", "local")),
            str(req.get("session", "default")),
            str(req.get("mode", "reverse")),
            req.get("options") or {},
            list(req.get("command") or []),
            req.get("launcher_options") or {},
        )
        return info.as_dict()
    if op == "servers":
        return [i.as_dict() for i in await hub.servers()]
    if op == "server":
        return hub.server(sid).as_dict()
    if op == "logs":
        tail = req.get("tail", 100)
        return await hub.logs(sid, tail if isinstance(tail, int) else None)
    if op == "stop":
        return (await hub.stop(sid, float(req.get("grace", 10.0)))).as_dict()
    if op == "dial":
        await hub.dial_client(sid, int(req["port"]), float(req.get("timeout", 60.0)))
        return hub.server(sid).as_dict()
    if op == "wait":
        timeout = req.get("timeout", 60.0)
        try:
            info = await hub.wait(sid, str(req.get("state", "connected")), float(timeout))
        except TimeoutError:
            raise NetworkError(
                f"server {sid} did not reach state {req.get('state', 'connected')} within "
                f"{timeout} s; see 'paraconnect servers logs {sid}'"
            ) from None
        return info.as_dict()
    raise ProtocolError(f"unknown control request {op!r}")


async def _serve_one(hub: Hub, stream: anyio.abc.SocketStream) -> None:
    async with stream:
        sock = stream.extra(  # noqa: S610 - anyio's typed attribute
            anyio.abc.SocketAttribute.raw_socket
        )
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.getuid():
            return
        while True:
            try:
                req = await _read(stream)
            except (ProtocolError, ValueError) as exc:
                await stream.send(
                    _frame({"ok": False, "error": str(exc), "category": "ProtocolError"})
                )
                return
            if req is None:
                return
            try:
                reply = {"ok": True, "result": await _dispatch(hub, req)}
            except ParaconnectError as exc:
                reply = {"ok": False, "error": str(exc), "category": type(exc).__name__}
            except (KeyError, TypeError, ValueError) as exc:
                reply = {"ok": False, "error": f"bad request: {exc}", "category": "ProtocolError"}
            await stream.send(_frame(reply))


async def serve_control(
    hub: Hub, *, task_status: anyio.abc.TaskStatus[Path] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve the control socket and keep the runtime file while the hub runs."""
    rdir = ensure_private_dir(runtime_dir(hub.home))
    path = rdir / "hub.sock"
    info_path = rdir / "hub.json"
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
        else:
            raise ConfigError(
                f"a hub already runs for {hub.home} (control socket {path}); stop it first"
            )
        finally:
            probe.close()
    listener = await anyio.create_unix_listener(path, mode=0o600)
    try:
        sessions = {name: hub.phone_home_address(name) for name in hub.sessions}
        write_atomic(
            info_path,
            json.dumps({"pid": os.getpid(), "control": str(path), "home": str(hub.home),
                        "phone_home": sessions}).encode(),
            mode=0o600,
        )  # fmt: skip
        async with listener, anyio.create_task_group() as tg:
            task_status.started(path)
            await listener.serve(lambda s: _serve_one(hub, s), task_group=tg)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            info_path.unlink()


def find_hub(home: Path | None = None) -> Path:
    """The control socket of the hub running for `home`; a ConfigError says how to start one."""
    rdir = runtime_dir(home)
    info_path = rdir / "hub.json"
    try:
        info = json.loads(read_public(info_path, "hub runtime file"))
        pid = int(info["pid"])
        os.kill(pid, 0)
        return Path(info["control"])
    except (ParaconnectError, OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"no hub runs for {rdir.parent}; start one with 'paraconnect hub' (or in Jupyter)"
        ) from None


class HubClient:
    """A blocking client of a running hub's control socket (for the CLI and scripts)."""

    def __init__(self, home: Path | None = None, timeout: float = 120.0) -> None:
        path = find_hub(home)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError as exc:
            self._sock.close()
            raise NetworkError(
                f"cannot reach the hub's control socket {path}: {exc.strerror or exc}; "
                "is 'paraconnect hub' still running?"
            ) from None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, op: str, **fields: Any) -> Any:
        try:
            self._sock.sendall(_frame({"op": op, **fields}))
            head = self._recv(4)
            (size,) = _LEN.unpack(head)
            reply = json.loads(self._recv(size))
        except (OSError, ValueError) as exc:
            raise NetworkError(f"the hub's control socket failed during {op!r}: {exc}") from None
        if not reply.get("ok"):
            cls = getattr(errors, str(reply.get("category")), ParaconnectError)
            if not (isinstance(cls, type) and issubclass(cls, ParaconnectError)):
                cls = ParaconnectError
            raise cls(str(reply.get("error")))
        return reply.get("result")

    def _recv(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self._sock.recv(size - len(data))
            if not chunk:
                raise NetworkError("the hub closed its control socket")
            data += chunk
        return data
