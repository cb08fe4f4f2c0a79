"""A real JupyterHub (from PyPI, with configurable-http-proxy from npm: tools/jupyterhub/) on
loopback, spawning single-user servers with the paraconnect extension as real Unix users made
for the test (LocalProcessSpawner, DummyAuthenticator with a password the test sets).

The users cannot run this venv's interpreter (its standard library lives under /root), so they
run Debian's Python 3.11 in a venv of their own that adds this venv's site-packages (a ``.pth``
line): the same paraconnect, JupyterLab and jupyterhub, a CPython of the same minor version.

::

    with start_jupyterhub(tmp, users=2) as hub:
        token = hub.user_token(hub.users[0])
        hub.spawn(hub.users[0])
        hub.request("GET", f"user/{hub.users[0]}/paraconnect/api/hub", token=token)
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from paraconnect.servers import FINAL_STATES

from .helpers_jupyter import Response, free_port

REPO = Path(__file__).resolve().parent.parent
CHP = REPO / "tools" / "jupyterhub" / "node_modules" / ".bin" / "configurable-http-proxy"
SYSTEM_PYTHON = "/usr/bin/python3"
API = "paraconnect/api"


@dataclass
class Hub:
    url: str  # http://127.0.0.1:PORT/ (the proxy: what a browser reaches)
    service_token: str
    password: str
    users: list[str]
    python: Path  # the users' interpreter (with paraconnect)
    process: subprocess.Popen[bytes]
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Any request through the proxy; never raises on an HTTP status, never follows a
        redirect (a refusal to another user is often a redirect to the hub's login)."""
        data = json.dumps(body).encode() if body is not None else None
        if data is None and method in ("POST", "PUT", "PATCH", "DELETE"):
            data = b""
        req = urllib.request.Request(self.url + path.lstrip("/"), data=data, method=method)  # noqa: S310
        if token:
            req.add_header("Authorization", f"token {token}")
        if data:
            req.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=60) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, dict(exc.headers), exc.read())

    def hub_api(self, method: str, path: str, body: Any = None) -> Response:
        return self.request(method, f"hub/api/{path}", body, token=self.service_token)

    def user_token(self, user: str) -> str:
        """An API token of `user` (what their notebook or a script of theirs holds)."""
        if user not in self.tokens:
            resp = self.hub_api("POST", f"users/{user}/tokens", {"note": "paraconnect tests"})
            assert resp.status in (200, 201), f"token for {user}: {resp.status} {resp.body!r}"
            self.tokens[user] = resp.json()["token"]
        return self.tokens[user]

    def spawn(self, user: str, timeout: float = 90.0) -> None:
        """Start `user`'s single-user server and wait until the hub says it is ready."""
        resp = self.hub_api("POST", f"users/{user}/server")
        assert resp.status in (201, 202, 400), f"spawn {user}: {resp.status} {resp.body!r}"
        deadline = time.monotonic() + timeout
        while True:
            info = self.hub_api("GET", f"users/{user}").json()
            server = (info.get("servers") or {}).get("")
            if server and server.get("ready"):
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{user}'s server not ready: {info}; {self.log_tail()}")
            time.sleep(0.3)
        # Ready for the hub; the extension's routes answer once its hub has started.
        while (resp := self.api(user, "GET", "hub")).status not in (200, 503):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{user}'s paraconnect routes never answered: {resp.status} {resp.body!r}"
                )
            time.sleep(0.3)

    def api(self, user: str, method: str, path: str, body: Any = None) -> Response:
        """A request to `user`'s own /user/<user>/paraconnect/api/, with their token."""
        return self.request(
            method, f"user/{user}/{API}/{path.lstrip('/')}", body, token=self.user_token(user)
        )

    def api_raw(self, user: str, method: str, path: str) -> Response:
        """A request to any route of `user`'s server (``lab/api/...``), with their token."""
        return self.request(method, f"user/{user}/{path.lstrip('/')}", token=self.user_token(user))

    def ok(self, user: str, method: str, path: str, body: Any = None) -> Any:
        resp = self.api(user, method, path, body)
        assert resp.status == 200, f"{user}: {method} {path}: {resp.status} {resp.body!r}"
        return resp.json()

    def wait_state(self, user: str, server_id: str, states: set[str], timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            info = self.ok(user, "GET", f"servers/{server_id}")
            if info["state"] in states | FINAL_STATES or time.monotonic() > deadline:
                return info
            time.sleep(0.2)

    def as_user(self, user: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Python `code` run as `user` (a process of theirs on this machine)."""
        return subprocess.run(
            ["runuser", "-u", user, "--", str(self.python), "-c", code, *args],
            capture_output=True, text=True, timeout=90, check=False, cwd="/",
        )  # fmt: skip

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _user_python(root: Path) -> Path:
    """A venv of Debian's Python that sees this venv's packages (and this checkout)."""
    env = root / "env"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(env)], check=True)
    ours = sysconfig.get_paths()["purelib"]
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    pth = env / "lib" / minor / "site-packages" / "paraconnect-tests.pth"
    # addsitedir, not a bare path: the editable install is itself a .pth in that directory.
    pth.write_text(f"import site; site.addsitedir({ours!r})\n")
    return env / "bin" / "python"


def _make_user(name: str, password: str) -> None:
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
    entry = pwd.getpwnam(name)
    # JupyterLab's news toast would cover the panel in screenshots.  The settings live in the
    # config dir, ~/.config/jupyter with JUPYTER_PLATFORM_DIRS=1 (the spawner sets it).
    lab = ".config/jupyter/lab/user-settings/@jupyterlab/apputils-extension"
    notes = Path(entry.pw_dir, lab)
    notes.mkdir(parents=True)
    (notes / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    subprocess.run(["chown", "-R", f"{name}:{name}", entry.pw_dir], check=True)


def pids_of(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
    return pids


def _remove_user(name: str) -> None:
    """Every process of the user was started by this fixture (the user is new): stop them by
    pid, then remove the user and their home."""
    with contextlib.suppress(KeyError):
        uid = pwd.getpwnam(name).pw_uid
        deadline = time.monotonic() + 15
        while (pids := pids_of(uid)) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            time.sleep(0.2)
        for pid in pids_of(uid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


_CONFIG = """
c = get_config()  # noqa
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.pid_file = {pid_file!r}
c.JupyterHub.db_url = "sqlite:///{db}"
c.JupyterHub.cookie_secret_file = {secret!r}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allowed_users = set({users!r})
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [{python!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.args = ["--LabApp.expose_app_in_browser=True"]
c.Spawner.environment = {{
    "PYTHONDONTWRITEBYTECODE": "1",
    "JUPYTER_PLATFORM_DIRS": "1",
    # The extensions enabled in this venv (the paraconnect server extension, the panel).
    "JUPYTER_CONFIG_PATH": {etc!r},
    "JUPYTER_PATH": {share!r},
}}
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
c.JupyterHub.services = [{{"name": "paraconnect-tests", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{
    "name": "paraconnect-tests",
    "scopes": ["admin:users", "admin:servers", "tokens", "list:users"],
    "services": ["paraconnect-tests"],
}}]
"""


@contextlib.contextmanager
def start_jupyterhub(tmp: Path, users: int = 2) -> Iterator[Hub]:
    """A JupyterHub with `users` new Unix users, until the block ends."""
    if os.geteuid() != 0:
        pytest.skip("needs root: JupyterHub's LocalProcessSpawner runs servers as other users")
    assert CHP.exists(), f"{CHP} missing: run 'npm ci' in tools/jupyterhub (make does)"
    shared = Path(tempfile.mkdtemp(prefix="pc-hub-"))
    shared.chmod(0o755)  # the users run its interpreter
    python = _user_python(shared)
    password = secrets.token_urlsafe(12)
    names = [f"pchub{secrets.token_hex(3)}{i}" for i in range(users)]
    token = secrets.token_hex(32)
    log = tmp / "jupyterhub.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        for name in names:
            _make_user(name, password)
        port = free_port()
        config = tmp / "jupyterhub_config.py"
        config.write_text(
            _CONFIG.format(
                port=port, hub_port=free_port(), api_port=free_port(), chp=str(CHP),
                pid_file=str(tmp / "proxy.pid"), db=tmp / "hub.sqlite",
                secret=str(tmp / "cookie_secret"), password=password, users=names,
                python=str(python), token=token, etc=str(Path(sys.prefix, "etc", "jupyter")),
                share=str(Path(sys.prefix, "share", "jupyter")),
            )
        )  # fmt: skip
        hubexe = str(Path(sys.executable).with_name("jupyterhub"))
        env = {**os.environ, "PATH": f"{python.parent}:{os.environ['PATH']}"}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [hubexe, "-f", str(config)], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        hub = Hub(f"http://127.0.0.1:{port}/", token, password, names, python, proc, log)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                if hub.request("GET", "hub/api/").status == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"JupyterHub did not start: {hub.log_tail()}")
            time.sleep(0.3)
        try:
            yield hub
        finally:
            for name in names:
                _stop_servers(hub, name)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # cleanup_servers: it stops the users' servers
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for name in names:
            _remove_user(name)
        shutil.rmtree(shared, ignore_errors=True)


def _stop_servers(hub: Hub, user: str) -> None:
    """paraconnect servers outlive Jupyter on purpose: stop what the tests launched."""
    if user not in hub.tokens:
        return
    resp = hub.api(user, "GET", "servers")
    if resp.status != 200:
        return
    for info in resp.json():
        if info["state"] not in FINAL_STATES:
            hub.api(user, "DELETE", f"servers/{info['id']}?grace=2")
