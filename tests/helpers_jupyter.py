"""A real ``jupyter server`` with the paraconnect extension, for the Jupyter layer's tests (and
the labextension's browser tests): a free port, a token, and private runtime, config and data
directories, so that the user's Jupyter setup never leaks in.  The extension is enabled the way
users get it: by the JSON file the package installs into the venv's ``etc/jupyter``.

::

    with start_jupyter(tmp_path) as server:
        server.api("GET", "hub").json()
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from paraconnect.servers import FINAL_STATES

JUPYTER = str(Path(sys.executable).with_name("jupyter"))
API = "paraconnect/api"


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class JupyterServer:
    base_url: str  # http://127.0.0.1:PORT/
    token: str
    home: Path  # its PARACONNECT_HOME
    process: subprocess.Popen[bytes]
    log: Path
    dirs: dict[str, Path] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    @property
    def ws_base(self) -> str:
        return "ws" + self.base_url.removeprefix("http")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: bool = True,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> Response:
        """Any request to the server; `path` relative to its base URL.  Never raises on an
        HTTP status: the tests look at it."""
        data = json.dumps(body).encode() if body is not None else None
        if data is None and method in ("POST", "PUT", "PATCH"):
            data = b""
        req = urllib.request.Request(self.url(path), data=data, method=method)  # noqa: S310
        if token:
            req.add_header("Authorization", f"token {self.token}")
        if data:
            req.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, dict(exc.headers), exc.read())

    def api(self, method: str, path: str, body: Any = None, *, token: bool = True) -> Response:
        """A request under /paraconnect/api/."""
        return self.request(method, f"{API}/{path.lstrip('/')}", body, token=token)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of a request that must succeed."""
        resp = self.api(method, path, body)
        assert resp.status == 200, f"{method} {path}: {resp.status} {resp.body!r}"
        return resp.json()

    def wait_state(self, server_id: str, states: set[str], timeout: float = 90.0) -> Any:
        """Poll GET /servers/{id} until its state is one of `states` (or final)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.ok("GET", f"servers/{server_id}")
            if info["state"] in states | FINAL_STATES or time.monotonic() > deadline:
                return info
            time.sleep(0.2)

    def stop_servers(self) -> None:
        """Stop what the tests launched: servers outlive Jupyter on purpose."""
        resp = self.api("GET", "servers")
        if resp.status != 200:
            return
        for info in resp.json():
            if info["state"] not in FINAL_STATES:
                self.api("DELETE", f"servers/{info['id']}?grace=2")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> int:
        """Stop Jupyter with `sig` and wait for it; its return code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"jupyter server ignored {sig.name} for {timeout} s; log: {self.log_tail()}"
                ) from None
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(server: JupyterServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"jupyter server exited with {server.process.returncode}: {server.log_tail()}"
            )
        with contextlib.suppress(OSError):
            # Answers once the extension has loaded (503 if its hub could not start).
            if server.api("GET", "hub").status in (200, 503):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"jupyter server not ready in {timeout} s: {server.log_tail()}")
        time.sleep(0.2)


@contextlib.contextmanager
def start_jupyter(
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    *,
    home: Path | None = None,
    stop_servers: bool = True,
    ready_timeout: float = 90.0,
    program: Sequence[str] = (JUPYTER, "server"),
    base_path: str = "/",
) -> Iterator[JupyterServer]:
    """Run ``jupyter server`` (or `program`, e.g. another venv's ``jupyter lab``) until the
    block ends (SIGTERM).  `home` is its PARACONNECT_HOME (default ``tmp_path/home``; pass the
    same one to a second server to test re-adoption).  `base_path`: Jupyter's base_url, as
    JupyterHub gives a user's server (``/user/NAME/``)."""
    home = home or tmp_path / "home"
    base = Path(tempfile.mkdtemp(prefix="jupyter-", dir=tmp_path))
    dirs = {name: base / name for name in ("root", "runtime", "config", "data", "ipython")}
    for d in dirs.values():
        d.mkdir()
    token = secrets.token_hex(16)
    full_env = {
        **os.environ,
        "PARACONNECT_HOME": str(home),
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),  # the user's config stays out
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "IPYTHONDIR": str(dirs["ipython"]),
        **(env or {}),
    }
    for attempt in range(3):
        port = free_port()
        args = [
            *program,
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={dirs['root']}",
            *(["--allow-root"] if os.geteuid() == 0 else []),
            *([f"--ServerApp.base_url={base_path}"] if base_path != "/" else []),
            *extra_args,
        ]  # fmt: skip
        log = base / f"jupyter-{attempt}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=full_env
            )
        server = JupyterServer(f"http://127.0.0.1:{port}{base_path}", token, home, proc, log, dirs)
        try:
            _wait_ready(server, ready_timeout)
            break
        except RuntimeError:
            server.stop()
            # Another process took the free port between our probe and Jupyter's bind.
            if attempt == 2 or "already in use" not in log.read_text(errors="replace"):
                raise
    try:
        yield server
    finally:
        try:
            if stop_servers and proc.poll() is None:
                server.stop_servers()
        finally:
            server.stop()


@pytest.fixture(scope="module")
def jupyter_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """One Jupyter server per test module (starting one takes seconds)."""
    with start_jupyter(tmp_path_factory.mktemp("jupyter")) as server:
        yield server
