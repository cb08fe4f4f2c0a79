"""`paraconnect demo`: the main job on the embedded default, from the command line.

A session, the built-in renderer launched behind an agent that phones home over mutual TLS,
and a picture of a dataset rendered on the "remote" side and fetched through the tunnel. Every
part is a real process: `paraconnect listen` (the scientist's side), `paraconnect serve
--phone-home` (the render node's side, holding only its own PEM credentials), and the renderer
on a private Unix socket behind the agent. The Jupyter issue wraps the same path in a notebook.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from ._proc import end_process
from .errors import ConfigError, NetworkError

__all__ = ["run"]

_PARACONNECT = [sys.executable, "-m", "paraconnect.cli"]


class _Command:
    """A `paraconnect ... --json` process: waits for its JSON events, stops it on exit."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = f"paraconnect {args[0]}"
        self.log_path = log
        self._log: IO[str] = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*_PARACONNECT, *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )

    def event(self, name: str, timeout: float) -> dict[str, Any]:
        if self.proc.stdout is None:  # pragma: no cover - Popen was given stdout=PIPE
            raise NetworkError(f"{self.name} has no output to read")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            try:
                data: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            if data.get("event") == name:
                return data
        tail = self.log_path.read_text().strip().splitlines()[-3:]
        raise NetworkError(f"{self.name} did not report {name!r}: " + " | ".join(tail))

    def stop(self) -> None:
        if self.proc.poll() is None:
            end_process(self.proc, 15)
        self._log.close()


def _colour_map(client: Any) -> str | None:
    """Colour by the dataset's first array (a vector by its last component: the sphere's
    normals show height), so the picture shows values, with the scalar bar naming them."""
    state = client.state()
    if state["color"] is None and state["arrays"]:
        first = state["arrays"][0]
        component = first["components"] - 1 if first["components"] > 1 else None
        state = client.request("color", array=first["name"], component=component)["state"]
    color = state["color"]
    return f"{color['array']!r} ({state['colormap']})" if color else None


def run(keep: bool = False, out: str | None = None, dataset: str = "wavelet") -> int:
    from .pki import Store
    from .tunnel import parse_endpoint

    try:
        from .render import RenderClient
    except ImportError as exc:
        raise ConfigError(
            f"the demo needs the built-in renderer: pip install 'paraconnect[render]' ({exc})"
        ) from None

    home = Path(tempfile.mkdtemp(prefix="paraconnect-demo-"))
    os.chmod(home, 0o700)
    picture = Path(out or "paraconnect-demo.png").absolute()
    env = {**os.environ, "PARACONNECT_HOME": str(home)}
    store = Store(home)
    commands: list[_Command] = []
    try:
        uid = store.unique_id().value
        print(f"1. paraconnect session create demo   (level mutual; data in {home})")
        session = store.create_session("demo")
        print(f"   session CA sha256 {session.ca_fingerprint[:47]}…")
        print("2. credentials: a node certificate for this machine (the scientist's side), and")
        print("   a server certificate written to a directory for the render node")
        session.issue("node", "laptop")
        remote = home / "render-node"
        session.issue("server", "render-node", unique_id=uid, out=remote)

        print("3. paraconnect listen --server render-node: waits for that server to phone home")
        print("   (any other server of the session is refused), exposes it locally")
        listen = _Command(
            [
                "listen",
                "127.0.0.1:0",
                "--creds",
                "demo",
                "--local",
                "127.0.0.1:0",
                "--json",
                "--server",
                "render-node",
            ],
            env,
            home / "listen.log",
        )
        commands.append(listen)
        ready = listen.event("ready", 30)
        print(f"   listening on {ready['listen']}, local endpoint {ready['local']}")

        print("4. paraconnect serve --phone-home: the built-in renderer on a private Unix socket,")
        print("   the agent dialling home over mutual TLS")
        serve = _Command(
            ["serve", "--creds", str(remote), "--phone-home", str(ready["listen"]),
             "--interval", "1", "--json", "--",
             sys.executable, "-m", "paraconnect.render", "--unix", "{unix}"],
            env,
            home / "serve.log",
        )  # fmt: skip
        commands.append(serve)
        server = listen.event("server", 60)
        print(f"   the server phoned home: {server.get('peer', server)}")

        local = parse_endpoint(str(ready["local"]), "the listener's local address")
        t0 = time.perf_counter()
        with RenderClient(local.host, local.port, timeout=60) as client:
            facts = client.load(dataset)
            coloured = _colour_map(client)
            client.camera(azimuth=30, elevation=20)
            frame = client.save_png(picture)
        elapsed = (time.perf_counter() - t0) * 1000
        print(f"5. rendered {dataset!r} on the render node, {frame.width}x{frame.height} PNG, "
              f"{len(frame.data)} bytes through the tunnel in {elapsed:.0f} ms")  # fmt: skip
        if isinstance(facts, dict) and facts:
            summary = ", ".join(f"{k} {v}" for k, v in list(facts.items())[:3])
            print(f"   dataset: {summary}")
        print(f"   coloured by {coloured} with a scalar bar" if coloured else "   one colour")
        print(f"   picture: {picture}")
        print("done: a session, a server that phoned home, and a picture through mutual TLS.")
        return 0
    finally:
        for command in reversed(commands):
            command.stop()
        if keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
