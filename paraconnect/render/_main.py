"""The command line and the library entry point of the render server."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from ..errors import ConfigError, ParaconnectError

__all__ = ["main", "serve"]

log = logging.getLogger("paraconnect.render")


def _import_server() -> Any:
    try:
        from . import _server
    except ImportError as exc:
        raise ConfigError(
            f"the built-in renderer needs the 'render' extra (missing {exc.name or exc}); "
            "install it with: pip install 'paraconnect[render]'"
        ) from exc
    return _server


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    unix: str | os.PathLike[str] | None = None,
    fd: int | None = None,
    options: Any = None,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a render server until cancelled; ``task_status.started()`` gets "host:port",
    "unix:PATH" or "fd:N" once it serves.  ``options`` is a ServerOptions.  With ``fd`` (an
    inherited socket) a connected socket is served until its one client leaves."""
    _server = _import_server()
    if unix is None and fd is None:
        _server.check_loopback(host)
    server = _server.RenderServer(options)
    try:
        await server.start()
        if fd is not None:
            await server.serve_fd(fd, task_status=task_status)
        elif unix is not None:
            await server.serve_unix(unix, task_status=task_status)
        else:
            await server.serve_tcp(host, port or 0, task_status=task_status)
    finally:
        server.close()


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit()):
        raise argparse.ArgumentTypeError(f"bad size {text!r}; write it as WxH, e.g. 1280x720")
    return int(w), int(h)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m paraconnect.render",
        description="paraconnect's built-in VTK render server (offscreen, EGL). Listens on "
        "loopback TCP or a Unix socket and prints 'paraconnect-render listening on WHERE'.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--port", type=int, help="TCP port on --host (0: pick a free one)")
    where.add_argument("--unix", metavar="PATH", help="listen on this Unix socket instead")
    where.add_argument(
        "--fd",
        type=int,
        help="serve this inherited socket: a listening one, or a connected one (one client)",
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    p.add_argument("--backend", default="egl", choices=("egl", "osmesa", "auto"))
    p.add_argument("--egl-device", type=int, default=None, help="EGL device index (GPU)")
    p.add_argument("--encoders", type=int, default=None, help="encoder threads (default ≤ 4)")
    p.add_argument("--max-clients", type=int, default=16)
    p.add_argument("--root", type=Path, default=None, help="only load files under this folder")
    p.add_argument("--size", type=_size, default=(640, 480), help="initial WxH (640x480)")
    p.add_argument(
        "--msaa", type=int, default=0, help="multisample anti-aliasing samples (0: off, fastest)"
    )
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="paraconnect-render: %(levelname)s %(message)s"
    )
    try:
        _server = _import_server()
        if logging.getLogger().getEffectiveLevel() > logging.INFO:
            # VTK's own logger repeats, in colour and over many lines, errors that the client
            # is already told in one line; --log-level info keeps them.
            from vtkmodules.vtkCommonCore import vtkLogger

            vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_OFF)
        fields: dict[str, Any] = {
            "backend": args.backend,
            "device": args.egl_device,
            "max_clients": args.max_clients,
            "root": args.root,
            "width": args.size[0],
            "height": args.size[1],
            "multisamples": args.msaa,
        }
        if args.encoders is not None:
            if args.encoders < 1:
                raise ConfigError("--encoders must be at least 1")
            fields["encoders"] = args.encoders
        options = _server.ServerOptions(**fields)
        try:
            anyio.run(_run, args, options)
        except BaseExceptionGroup as group:
            raise _first_error(group) from group
    except ParaconnectError as exc:
        print(f"paraconnect-render: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        return 130
    return 0


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = _first_error(exc)
        if isinstance(exc, ParaconnectError | KeyboardInterrupt):
            return exc
    return group


async def _run(args: argparse.Namespace, options: Any) -> None:
    async with anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(stop_on_signal)

        async def serve_then_stop(task_status: anyio.abc.TaskStatus[str]) -> None:
            await serve(
                host=args.host,
                port=args.port,
                unix=args.unix,
                fd=args.fd,
                options=options,
                task_status=task_status,
            )
            # Only a connected --fd returns: its one client left, so the program ends.
            tg.cancel_scope.cancel()

        where = await tg.start(serve_then_stop)
        print(f"paraconnect-render listening on {where}", flush=True)
