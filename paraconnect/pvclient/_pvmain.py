"""The ParaView client process: ``pvpython _pvmain.py --control PATH --frames PATH --host H
--port P``, started by :mod:`paraconnect.pvclient` beside the kernel.

ParaView's Python cannot share a process with the ``vtk`` wheel a kernel may have imported, so
this file runs in pvpython and imports nothing of paraconnect (nor the wheel): standard library
and ``paraview`` only.  It

- connects to the kernel's control socket (``--control``, in a 0700 directory the kernel made)
  and says ``ready`` (with the client's ParaView version and the server's data partitions) once
  ``simple.Connect`` to the server's local endpoint succeeded, or ``failed`` with the reason;
- runs the ``run`` requests it gets there (one JSON object a line): ``paraview.simple`` code in
  one namespace kept for the life of this process, the value of a final expression sent back as
  ``repr`` (and as JSON when it is plain data), an error as its type, message and the line of
  the code that raised it;
- serves frames on ``--frames`` (a Unix socket in the same directory) in paraconnect.render's
  frame protocol (version 1: ``hello``, ``load``, ``resize``, ``camera``, ``render``, ``bye``),
  so the notebook's RemoteView shows ParaView's active render view: the server renders, this
  client composites and encodes.

One thread: ParaView's rendering wants the main thread, and requests are served in turn.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import selectors
import socket
import struct
import sys
import time
import traceback
from typing import Any

PREFIX = struct.Struct(">II")
MAX_HEADER = 64 * 1024
PROTOCOL = 1
CELL = "<paraview cell>"


def _send_line(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall(json.dumps(obj, default=repr).encode() + b"\n")


def _version() -> str:
    from paraview import servermanager  # type: ignore[import-not-found]

    m = servermanager.vtkSMProxyManager
    return f"{m.GetVersionMajor()}.{m.GetVersionMinor()}.{m.GetVersionPatch()}"


def _plain(value: Any) -> Any:
    """`value` if JSON carries it as it is, else None."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return value


class Cells:
    """The notebook's code, run in one namespace for the life of the process."""

    def __init__(self) -> None:
        from paraview import servermanager, simple

        self.ns: dict[str, Any] = {"simple": simple, "servermanager": servermanager}
        self.sources: list[str] = []

    def run(self, code: str) -> dict[str, Any]:
        self.sources.append(code)
        out = io.StringIO()
        try:
            tree = ast.parse(code, CELL, "exec")
            last = None
            final = tree.body[-1] if tree.body else None
            if isinstance(final, ast.Expr):
                last = ast.Expression(final.value)
                tree.body.pop()
            with contextlib.redirect_stdout(out):
                # The notebook user's own code, in their own client: that is the point.
                exec(compile(tree, CELL, "exec", dont_inherit=True), self.ns)  # noqa: S102
                value = None
                if last is not None:
                    code_of_last = compile(last, CELL, "eval", dont_inherit=True)
                    value = eval(code_of_last, self.ns)  # noqa: S307
        except BaseException as exc:  # every error goes back to the notebook
            return {"ok": False, "stdout": out.getvalue(), **self._error(exc, code)}
        return {
            "ok": True,
            "stdout": out.getvalue(),
            "repr": None if value is None else repr(value),
            "value": _plain(value),
        }

    @staticmethod
    def _error(exc: BaseException, code: str) -> dict[str, Any]:
        where = ""
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename == CELL and frame.lineno:
                lines = code.splitlines()
                text = lines[frame.lineno - 1].strip() if frame.lineno <= len(lines) else ""
                where = f"line {frame.lineno}: {text}"
        if isinstance(exc, SyntaxError) and exc.filename == CELL and exc.lineno:
            where = f"line {exc.lineno}: {(exc.text or '').strip()}"
        return {
            "type": type(exc).__name__,
            "message": str(exc),
            "where": where,
            "traceback": "".join(traceback.format_exception(exc)),
        }


class Frames:
    """paraconnect.render's frame protocol over ParaView's active render view."""

    def __init__(self) -> None:
        from paraview import simple

        self.simple = simple
        self.size = (640, 480)
        self.count = 0
        self.loaded: Any = None

    def view(self) -> Any:
        view = self.simple.GetActiveViewOrCreate("RenderView")
        if list(view.ViewSize) != list(self.size):
            view.ViewSize = list(self.size)
        return view

    def handle(self, header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        op, rid = header.get("op"), header.get("id")
        try:
            reply, payload = self._dispatch(op, header)
        except BadRequest as exc:
            return {"op": "error", "id": rid, "kind": exc.kind, "fatal": False,
                    "message": str(exc)}, b""  # fmt: skip
        except Exception as exc:  # one bad request never ends the client
            return {"op": "error", "id": rid, "kind": "server", "fatal": False,
                    "message": f"{type(exc).__name__}: {exc}"}, b""  # fmt: skip
        reply["id"] = rid
        return reply, payload

    def _dispatch(self, op: object, h: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        if op == "hello":
            if h.get("v") != PROTOCOL:
                raise BadRequest(f"protocol version {h.get('v')!r}; this client speaks 1")
            return {"op": "hello", "v": PROTOCOL, "server": f"ParaView {_version()} (pvpython)",
                    "window": "paraview", "formats": ["jpeg", "png"],
                    "datasets": ["wavelet", "sphere", "cone"], "max_size": 8192}, b""  # fmt: skip
        if op == "resize":
            w, h_ = h.get("w"), h.get("h")
            if not (type(w) is int and type(h_) is int and 0 < w <= 8192 and 0 < h_ <= 8192):
                raise BadRequest("resize needs w and h between 1 and 8192", kind="config")
            self.size = (w, h_)
            return {"op": "ok"}, b""
        if op == "camera":
            return self._camera(h), b""
        if op == "load":
            return self._load(h), b""
        if op == "render":
            return self._render(h)
        if op == "bye":
            return {"op": "ok"}, b""
        raise BadRequest(f"unknown or unsupported op {op!r} for the ParaView view")

    def _camera(self, h: dict[str, Any]) -> dict[str, Any]:
        view = self.view()
        if h.get("reset"):
            view.ResetCamera()
        cam = view.GetActiveCamera()
        azimuth, elevation = float(h.get("azimuth", 0.0)), float(h.get("elevation", 0.0))
        zoom = float(h.get("zoom", 1.0))
        if azimuth:
            cam.Azimuth(azimuth)
        if elevation:
            cam.Elevation(max(-89.0, min(89.0, elevation)))
            cam.OrthogonalizeViewUp()
        if zoom != 1.0:
            if not 0.0 < zoom <= 100.0:
                raise BadRequest("zoom must be a factor in (0, 100]", kind="config")
            cam.Zoom(zoom)
        return {"op": "ok"}

    def _load(self, h: dict[str, Any]) -> dict[str, Any]:
        s = self.simple
        path, dataset = h.get("path"), h.get("dataset")
        if isinstance(path, str):
            if not os.path.exists(path):
                raise BadRequest(f"no file {path!r} on the server's host", kind="config")
            source = s.OpenDataFile(path)
        elif dataset == "wavelet":
            source = s.Wavelet()
        elif dataset == "sphere":
            source = s.Sphere(ThetaResolution=64, PhiResolution=64)
        elif dataset == "cone":
            source = s.Cone(Resolution=int(h.get("resolution", 32)))
        else:
            raise BadRequest(f"unknown dataset {dataset!r}", kind="config")
        if self.loaded is not None:
            s.Delete(self.loaded)
        self.loaded = source
        view = self.view()
        shown = s.Show(source, view)
        if dataset == "wavelet":
            shown.SetRepresentationType("Outline")
            s.Show(s.Contour(Input=source, ContourBy=["POINTS", "RTData"], Isosurfaces=[157.0]))
        view.ResetCamera()
        info = source.GetDataInformation()
        return {"op": "ok", "dataset": {"points": info.GetNumberOfPoints(),
                                        "cells": info.GetNumberOfCells(),
                                        "bounds": list(info.GetBounds())}}  # fmt: skip

    def _render(self, h: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        from paraview.vtk.vtkIOImage import (  # type: ignore[import-not-found]
            vtkJPEGWriter,
            vtkPNGWriter,
        )
        from paraview.vtk.vtkRenderingCore import (  # type: ignore[import-not-found]
            vtkWindowToImageFilter,
        )

        fmt = h.get("format", "jpeg")
        if fmt not in ("jpeg", "png"):
            raise BadRequest(f"format {fmt!r}: choose jpeg or png", kind="config")
        view = self.view()
        t0 = time.perf_counter()
        self.simple.Render(view)
        grab = vtkWindowToImageFilter()
        grab.SetInput(view.GetRenderWindow())
        grab.ReadFrontBufferOff()
        grab.Update()
        t1 = time.perf_counter()
        writer = vtkJPEGWriter() if fmt == "jpeg" else vtkPNGWriter()
        if fmt == "jpeg":
            writer.SetQuality(int(h.get("quality", 85)))
        writer.WriteToMemoryOn()
        writer.SetInputConnection(grab.GetOutputPort())
        writer.Write()
        data = bytes(memoryview(writer.GetResult()))
        t2 = time.perf_counter()
        self.count += 1
        w, h_, _ = grab.GetOutput().GetDimensions()
        return {"op": "frame", "stream": False, "n": self.count, "w": w, "h": h_,
                "format": fmt, "render_ms": (t1 - t0) * 1e3, "encode_ms": (t2 - t1) * 1e3,
                "t": time.time()}, data  # fmt: skip


class BadRequest(Exception):
    def __init__(self, message: str, *, kind: str = "protocol") -> None:
        super().__init__(message)
        self.kind = kind


class FrameConn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def messages(self) -> list[dict[str, Any]]:
        """Whole frames received so far; raises BadRequest on a framing error (fatal)."""
        out = []
        while len(self.buf) >= PREFIX.size:
            hlen, plen = PREFIX.unpack(self.buf[: PREFIX.size])
            if hlen > MAX_HEADER or plen != 0:
                raise BadRequest("bad frame: header over 64 KiB or a client payload")
            if len(self.buf) < PREFIX.size + hlen:
                break
            raw = self.buf[PREFIX.size : PREFIX.size + hlen]
            self.buf = self.buf[PREFIX.size + hlen :]
            try:
                header = json.loads(raw)
            except ValueError:
                header = None
            out.append(header if isinstance(header, dict) else {"op": None})
        return out


def _frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return PREFIX.pack(len(raw), len(payload)) + raw + payload


def serve(control: socket.socket, frames_path: str) -> None:
    cells, frames = Cells(), Frames()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(frames_path)
    os.chmod(frames_path, 0o600)
    listener.listen(8)
    sel = selectors.DefaultSelector()
    sel.register(control, selectors.EVENT_READ, "control")
    sel.register(listener, selectors.EVENT_READ, "listener")
    pending = b""
    while True:
        for key, _ in sel.select():
            if key.data == "control":
                chunk = control.recv(1 << 20)
                if not chunk:
                    return  # the kernel went away: so does this client
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    request = json.loads(line)
                    reply = cells.run(str(request.get("code", "")))
                    _send_line(control, {"id": request.get("id"), **reply})
            elif key.data == "listener":
                conn, _ = listener.accept()
                sel.register(conn, selectors.EVENT_READ, FrameConn(conn))
            else:
                fc: FrameConn = key.data
                chunk = fc.sock.recv(1 << 16)
                try:
                    if not chunk:
                        raise EOFError
                    fc.buf += chunk
                    for header in fc.messages():
                        reply, payload = frames.handle(header)
                        fc.sock.sendall(_frame(reply, payload))
                        if header.get("op") == "bye":
                            raise EOFError
                except (EOFError, OSError, BadRequest) as exc:
                    if isinstance(exc, BadRequest):
                        with contextlib.suppress(OSError):
                            fatal = {"op": "error", "kind": "protocol", "fatal": True,
                                     "message": str(exc)}  # fmt: skip
                            fc.sock.sendall(_frame(fatal))
                    sel.unregister(fc.sock)
                    fc.sock.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--control", required=True)
    parser.add_argument("--frames", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout", type=int, default=60)
    args = parser.parse_args()
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.connect(args.control)
    try:
        from paraview import servermanager, simple

        simple.Connect(args.host, args.port, timeout=args.timeout)
        if servermanager.ActiveConnection is None:
            raise ConnectionError(f"no pvserver answered at {args.host}:{args.port}")
        parts = servermanager.ActiveConnection.GetNumberOfDataPartitions()
    except Exception as exc:  # told to the kernel, which raises it there
        _send_line(control, {"op": "failed", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    _send_line(control, {"op": "ready", "version": _version(), "partitions": parts,
                         "pid": os.getpid()})  # fmt: skip
    serve(control, args.frames)
    with contextlib.suppress(Exception):
        simple.Disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
