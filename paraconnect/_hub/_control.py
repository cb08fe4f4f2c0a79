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
import logging
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from .._accept import serve_listener
from .._fs import ensure_private_dir, write_atomic
from ..errors import ConfigError, NetworkError, ParaconnectError, ProtocolError
from ._client import MAX_REQUEST, HubClient, find_hub, runtime_dir
from ._client import encode_control as _frame
from ._client import read_control as _read
from ._ops import dispatch

if TYPE_CHECKING:
    from ._core import Hub

__all__ = ["MAX_REQUEST", "HubClient", "find_hub", "runtime_dir", "serve_control"]

log = logging.getLogger("paraconnect.hub")


async def _dispatch(hub: Hub, req: dict[str, Any]) -> Any:
    fields = dict(req)
    name = fields.pop("op", None)
    if not isinstance(name, str):
        raise ProtocolError("a control request needs an 'op' (see docs/hub-api.md)")
    return await dispatch(hub, name, fields)


async def _answer(hub: Hub, req: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"ok": True, "result": await _dispatch(hub, req)}
    except ParaconnectError as exc:
        return {"ok": False, "error": str(exc), "category": type(exc).__name__}
    except (KeyError, TypeError, ValueError) as exc:
        return {"ok": False, "error": f"bad request: {exc}", "category": "ProtocolError"}
    except Exception as exc:
        log.exception(
            "hub: the control operation %r failed (a bug: please report it)", req.get("op")
        )
        return {
            "ok": False,
            "error": f"the hub failed: {exc!r}; see its log",
            "category": "ParaconnectError",
        }


async def _serve_one(hub: Hub, stream: anyio.abc.SocketStream) -> None:
    """One client, request after request.  Whatever it sends or however it leaves, this ends
    only its connection (a log line), never the hub."""
    async with stream:
        try:
            sock = stream.extra(  # noqa: S610 - anyio's typed attribute
                anyio.abc.SocketAttribute.raw_socket
            )
            size = struct.calcsize("3i")
            _pid, uid, _gid = struct.unpack(
                "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size)
            )
            if uid != os.getuid():
                log.warning("hub: control socket: refused a client of uid %d", uid)
                return
            while True:
                try:
                    req = await _read(stream)
                except ProtocolError as exc:
                    log.warning("hub: control socket: %s; closed that connection", exc)
                    reply = {"ok": False, "error": str(exc), "category": "ProtocolError"}
                    await stream.send(_frame(reply))
                    return
                if req is None:
                    return
                reply = await _answer(hub, req)
                try:
                    data = _frame(reply)
                except (ProtocolError, TypeError, ValueError) as exc:
                    data = _frame({"ok": False, "error": str(exc), "category": "ProtocolError"})
                await stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, NetworkError) as exc:
            log.info("hub: a control client left before its reply: %s", exc or type(exc).__name__)
        except Exception:
            log.exception("hub: a control connection failed (a bug: please report it)")


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
        events = hub.bus.address
        write_atomic(
            info_path,
            json.dumps({"pid": os.getpid(), "control": str(path), "home": str(hub.home),
                        "phone_home": sessions, "events": events}).encode(),
            mode=0o600,
        )  # fmt: skip
        async with listener:
            task_status.started(path)
            # Same user only, so no cap; but an accept error never ends the hub.
            await serve_listener(
                listener, lambda s: _serve_one(hub, s), "hub: control socket", cap=None
            )
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            info_path.unlink()
