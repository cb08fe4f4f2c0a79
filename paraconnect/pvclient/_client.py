"""The kernel's side of the ParaView client process (``_pvmain.py`` in pvpython)."""

from __future__ import annotations

import atexit
import builtins
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from .._proc import end_process
from ..errors import ConfigError, NetworkError, ParaconnectError

__all__ = ["ParaViewClient", "ParaViewError", "client_for", "close_client"]

MAIN = str(Path(__file__).with_name("_pvmain.py"))


class ParaViewError(ParaconnectError):
    """An error raised by code run in the ParaView client: `type` and `message` as the client
    saw them, `where` (the line of the code), `remote_traceback` (the client's traceback).
    Raised as a subclass of the built-in exception of the same name where there is one, so
    ``except ValueError`` works as it would in pvpython."""

    def __init__(self, type_name: str, message: str, where: str, remote_traceback: str) -> None:
        at = f" (in the ParaView client, {where})" if where else " (in the ParaView client)"
        super().__init__(f"{type_name}: {message}{at}")
        self.type, self.message, self.where = type_name, message, where
        self.remote_traceback = remote_traceback


_KINDS: dict[str, type[ParaViewError]] = {}


def _error_class(type_name: str) -> type[ParaViewError]:
    """ParaViewError, mixed with the built-in exception `type_name` names (if any)."""
    if type_name not in _KINDS:
        base = getattr(builtins, type_name, None)
        if (
            isinstance(base, type)
            and issubclass(base, Exception)
            and not issubclass(base, OSError)  # its constructor reads errno, filename ...
        ):
            try:
                _KINDS[type_name] = type(f"ParaView{type_name}", (ParaViewError, base), {})
            except TypeError:  # a layout conflict: the plain class then
                _KINDS[type_name] = ParaViewError
        else:
            _KINDS[type_name] = ParaViewError
    return _KINDS[type_name]


class ParaViewClient:
    """A pvpython process connected to a pvserver at `host`:`port`, kept while it lives.

    ``run(code)`` (or calling it) executes ``paraview.simple`` code there (``simple`` and
    ``servermanager`` are defined) and returns the value of a final expression: as plain data
    when JSON carries it, else its repr.  ``frames`` is the Unix socket where it serves the
    render protocol (a RemoteView of the active render view).  It runs under an Xvfb of its
    own (Debian's ParaView client needs X even when the server renders) unless `xvfb` is false.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        pvpython: str = "pvpython",
        xvfb: bool = True,
        timeout: float = 120.0,
        log: Path | None = None,
    ) -> None:
        exe = shutil.which(pvpython)
        if exe is None:
            raise ConfigError(
                f"no {pvpython!r} on PATH: srv.paraview() runs ParaView's own Python beside the "
                "kernel; install ParaView (Debian: paraview, python3-paraview) or pass pvpython="
            )
        self.host, self.port, self.timeout = host, port, timeout
        self._dir = tempfile.mkdtemp(prefix="paraconnect-pv-")  # 0700: only this user
        self.frames = os.path.join(self._dir, "frames")
        control_path = os.path.join(self._dir, "control")
        self.log = log or Path(self._dir) / "pvpython.log"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(control_path)
        listener.listen(1)
        wrapper = [sys.executable, "-m", "paraconnect.servers._xvfb", "--always", "--"]
        argv = [*(wrapper if xvfb else []), exe, MAIN, "--control", control_path,
                "--frames", self.frames, "--host", host, "--port", str(port),
                "--timeout", str(int(timeout))]  # fmt: skip
        self._lock = threading.Lock()
        self._ids = 0
        self._buf = b""
        with open(self.log, "ab") as out:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            listener.settimeout(timeout)
            try:
                self._sock, _ = listener.accept()
            except TimeoutError:
                raise NetworkError(
                    f"pvpython did not start within {timeout:g} s; see {self.log}"
                ) from None
            hello = self._read_line(timeout)
            if hello.get("op") != "ready":
                raise NetworkError(
                    f"the ParaView client could not connect to pvserver at {host}:{port}: "
                    f"{hello.get('message', 'no reason given')}; see {self.log}"
                )
        except BaseException:
            listener.close()
            self.close()
            raise
        listener.close()
        self.version = str(hello.get("version"))
        self.partitions = int(hello.get("partitions", 1))

    def _read_line(self, timeout: float | None) -> dict[str, Any]:
        self._sock.settimeout(timeout)
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(1 << 20)
            except TimeoutError:
                raise NetworkError(
                    f"the ParaView client did not answer within {timeout:g} s; see {self.log}"
                ) from None
            if not chunk:
                tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
                raise NetworkError(
                    f"the ParaView client (pvpython) ended; ParaView state is lost. "
                    f"Last output: {tail.strip()[-600:]}"
                )
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None and hasattr(self, "_sock")

    def run(self, code: str, *, timeout: float | None = None) -> Any:
        """Run `code` in the client; its printed output is printed here."""
        with self._lock:
            if not self.alive:
                raise NetworkError(
                    "the ParaView client has ended (its state with it); call srv.paraview() "
                    "again for a fresh one"
                )
            self._ids += 1
            self._sock.sendall(json.dumps({"id": self._ids, "code": code}).encode() + b"\n")
            reply = self._read_line(timeout)
        if reply.get("stdout"):
            print(reply["stdout"], end="")
        if not reply.get("ok"):
            cls = _error_class(str(reply.get("type", "Exception")))
            raise cls(
                str(reply.get("type")),
                str(reply.get("message", "")),
                str(reply.get("where", "")),
                str(reply.get("traceback", "")),
            )
        if reply.get("value") is not None:
            return reply["value"]
        return _Repr(reply["repr"]) if reply.get("repr") is not None else None

    __call__ = run

    def close(self) -> None:
        """End the client (its ParaView state with it)."""
        sock = self.__dict__.pop("_sock", None)
        if sock is not None:
            sock.close()  # the client ends when its control socket closes
        proc = self.__dict__.get("_proc")
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                end_process(proc, 10)
        with contextlib.suppress(OSError):
            shutil.rmtree(self._dir)

    def __repr__(self) -> str:
        state = "running" if self.alive else "ended"
        return (
            f"<ParaView {getattr(self, 'version', '?')} client of {self.host}:{self.port}, {state}>"
        )


class _Repr(str):
    """A value the client could only describe: shown as its repr, unquoted."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


_CLIENTS: dict[str, ParaViewClient] = {}
_CLIENTS_LOCK = threading.Lock()


def client_for(key: str, host: str, port: int, **options: Any) -> ParaViewClient:
    """The live client kept under `key` (a server id), or a new one.  A client that ended took
    its ParaView state with it: the new one says so, once."""
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is not None and client.alive and (client.host, client.port) == (host, port):
            return client
        if client is not None:
            client.close()
            print(
                f"paraconnect: the ParaView client of {key} had ended; starting a fresh one "
                "(its pipeline and data are not kept)",
                file=sys.stderr,
            )
        client = _CLIENTS[key] = ParaViewClient(host, port, **options)
        return client


def close_client(key: str) -> None:
    """End the client kept under `key`, if any."""
    with _CLIENTS_LOCK:
        client = _CLIENTS.pop(key, None)
    if client is not None:
        client.close()


@atexit.register
def _close_all() -> None:
    for key in list(_CLIENTS):
        close_client(key)
