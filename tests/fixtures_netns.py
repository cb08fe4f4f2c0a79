"""Hosts on one machine: network namespaces `laptop`, `cluster` and `friend` behind a switch,
with a firewall in `cluster` that refuses inbound connections, for tests of real network
boundaries.

Use it from a test module through ``pytest_plugins`` (so that pytest rewrites its asserts)::

    pytest_plugins = ["tests.fixtures_netns"]

    def test_x(hosts: Hosts) -> None:           # function-scoped: fresh homes, procs stopped
        hosts.addr("laptop")                    # "10.213.N.2"
        hosts.run("laptop", ["ip", "addr"])     # a subprocess inside the laptop namespace
        listen = hosts.start("laptop", "listen", f"{hosts.addr('laptop')}:0", ...)  # paraconnect
        listen.ready()                          # waits for the JSON "ready" event

`hosts` (function-scoped) gives each host its own PARACONNECT_HOME and PARACONNECT_UNIQUE_ID
("laptop-node", ...), like separate machines, and stops every process it started.  Besides
`run` / `popen` / `spawn` (any command inside a host), `start` / `cli` (the paraconnect command),
`env(host)` and `prefix(host)`: `pki()` makes a session on the laptop and hands the cluster a
server certificate as a directory of PEM files; `friend_bundle()` shares a bundle and imports it
into the friend's own home; `client(host, "sha" | "render" | "ask", ...)` runs this module's
client inside a host and returns its JSON answer (`client_proc` for a gated one that waits for
"go" on stdin halfway); `net.firewall("reject" | "drop" | None)` sets the cluster's inbound
rule (reset to "reject" for every test); `faketime(offset)` is the environment for a skewed
clock.  `netns_net` is the session-scoped network underneath.

Traffic never leaves the sandbox: every process these tests start runs inside one of the
namespaces (``nsenter --net=/run/netns/NAME``; nsenter rather than ``ip netns exec`` because
the latter remounts /sys, which slurmd needs), the test subnet exists only between them, and
the root namespace holds an ``unreachable`` route for it while the fixture is up.  Names carry
the creating pid and a random subnet octet; namespaces and routes left by a dead run of ours
are removed at start, and everything is torn down at the end, also on failure.

The module is also a small client to run *inside* a namespace (``python -m tests.fixtures_netns
sha|render|ask|agents ...``), see :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PARACONNECT = str(Path(sys.executable).with_name("paraconnect"))
PREFIX = "pcnet-"
HOSTS = ("laptop", "cluster", "friend")
PASSPHRASE = "friend passphrase"
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def faketime(offset: str) -> dict[str, str]:
    """Environment for a process whose clock is off by `offset` ("-2h", "+1d"): libfaketime
    preloaded (not the faketime wrapper, which would not pass SIGTERM on)."""
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": offset, "FAKETIME_DONT_RESET": "1"}


FIREWALL = """
table inet pcfw {{
    chain input {{
        type filter hook input priority 0; policy accept;
        iif "lo" accept
        ct state established,related accept
        meta l4proto tcp ct state new {action}
    }}
}}
"""
ACTIONS = {"reject": "reject with tcp reset", "drop": "drop"}


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)


def have_netns() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed; run scripts/system-deps.sh"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _subnet(octet: int) -> str:
    return f"10.213.{octet}.0/24"


def clean_stale() -> list[str]:
    """Remove namespaces (and their subnet's unreachable route) left by dead runs of ours."""
    removed = []
    listing = _sh("ip", "netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{PREFIX}(\d+)-(\d+)-\w+", name)
        if not m or _alive(int(m.group(1))):
            continue
        _sh("ip", "netns", "delete", name, check=False)
        _sh("ip", "route", "del", "unreachable", _subnet(int(m.group(2))), check=False)
        removed.append(name)
    return removed


@dataclass(frozen=True)
class Net:
    """The namespaces and their addresses (session-wide)."""

    tag: str  # pcnet-PID-OCTET
    subnet: str
    names: dict[str, str]  # host -> namespace name
    addrs: dict[str, str]  # host -> address
    switch: str

    def nsenter(self, host: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.names[host]}"]

    def firewall(self, action: str | None) -> None:
        """Set the cluster's inbound rule: "reject" (tcp reset), "drop", or None (open)."""
        prefix = self.nsenter("cluster")
        _sh(*prefix, "nft", "delete", "table", "inet", "pcfw", check=False)
        if action is not None:
            subprocess.run(
                [*prefix, "nft", "-f", "-"],
                input=FIREWALL.format(action=ACTIONS[action]),
                text=True,
                capture_output=True,
                timeout=30,
                check=True,
            )


def _make_net(tag: str, octet: int) -> Net:
    names = {h: f"{tag}-{h}" for h in HOSTS}
    switch = f"{tag}-sw"
    addrs = {h: f"10.213.{octet}.{i + 2}" for i, h in enumerate(HOSTS)}
    net = Net(tag, _subnet(octet), names, addrs, switch)
    for ns in (switch, *names.values()):
        _sh("ip", "netns", "add", ns)
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
    _sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
    _sh("ip", "-n", switch, "link", "set", "br0", "up")
    for host, ns in names.items():
        port = f"p-{host}"
        _sh("ip", "-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", ns)  # fmt: skip
        _sh("ip", "-n", switch, "link", "set", port, "master", "br0", "up")
        _sh("ip", "-n", ns, "addr", "add", f"{addrs[host]}/24", "dev", "eth0")
        _sh("ip", "-n", ns, "link", "set", "eth0", "up")
    net.firewall("reject")
    return net


def _teardown(tag: str, octet: int) -> None:
    """Delete every namespace of this run (the veths go with them), after killing what still
    runs inside (only processes these tests started can be there), then the route."""
    listing = _sh("ip", "netns", "list", check=False).stdout.split()
    for ns in [n for n in listing if n.startswith(tag + "-")]:
        for pid in _sh("ip", "netns", "pids", ns, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _sh("ip", "netns", "delete", ns, check=False)
    _sh("ip", "route", "del", "unreachable", _subnet(octet), check=False)


@contextlib.contextmanager
def network() -> Iterator[Net]:
    """Make the namespaces; tear them down (namespaces, veths with them, route) on exit."""
    clean_stale()
    routes = _sh("ip", "route", "show", "table", "all", check=False).stdout
    free = [o for o in range(1, 255) if f"10.213.{o}.0/24" not in routes]
    octet = random.choice(free)
    tag = f"{PREFIX}{os.getpid()}-{octet}"
    # The route first: from here on nothing in the root namespace can reach the subnet.  It
    # fails if another run took this subnet meanwhile; then nothing here is ours to remove.
    _sh("ip", "route", "add", "unreachable", _subnet(octet))
    try:
        yield _make_net(tag, octet)
    finally:
        _teardown(tag, octet)


# -- processes inside the hosts -------------------------------------------------------------


class NsProc:
    """A process in a namespace whose stdout carries JSON lines (paraconnect --json events)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, **kw: object) -> None:
        self.argv = argv
        self.log = log
        self._sink = open(log, "w")  # noqa: SIM115 - closed in stop()
        # A session of its own: stop() can sweep the whole group (the program behind an
        # agent, a wrapper's child) so that nothing outlives the test.
        self.popen: subprocess.Popen[str] = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._sink, text=True, env=env,
            start_new_session=True, **kw,
        )  # type: ignore[call-overload]  # fmt: skip
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.put(line)
        self._lines.put("")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def line(self, timeout: float = 30) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = ""
        assert line, f"no output from {self.argv[2:5]}; rc={self.popen.poll()}:\n{self.text()}"
        return line

    def event(self, timeout: float = 30) -> dict[str, object]:
        return dict(json.loads(self.line(timeout)))

    def ready(self, timeout: float = 30) -> dict[str, object]:
        event = self.event(timeout)
        assert event["event"] == "ready", event
        return event

    def wait_event(self, kind: str, timeout: float = 30) -> dict[str, object]:
        """Skip events until one of `kind` (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.event(max(deadline - time.monotonic(), 0.01))
            if event.get("event") == kind:
                return event

    def text(self) -> str:
        if not self._sink.closed:
            self._sink.flush()
        return self.log.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 30, count: int = 1) -> str:
        """Poll the log (bounded) until `pattern` (a regex) occurs `count` times."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if len(re.findall(pattern, text)) >= count:
                return text
            assert time.monotonic() < deadline, f"{pattern!r} not in log:\n{text[-4000:]}"
            assert self.popen.poll() is None or re.search(pattern, text), (
                f"exited ({self.popen.returncode}) before {pattern!r}:\n{text[-4000:]}"
            )
            time.sleep(0.05)

    def wait(self, timeout: float = 30) -> int:
        return self.popen.wait(timeout)

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def stop(self, grace: float = 15) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        self._reader.join(10)
        if self.popen.stdout is not None and not self._reader.is_alive():
            self.popen.stdout.close()
        self._sink.close()
        return self.popen.returncode


@dataclass
class Hosts:
    """One test's view of the hosts: a home (PARACONNECT_HOME) and node ID per host, like
    separate machines, and every process started here stopped at the end."""

    net: Net
    root: Path
    procs: list[NsProc] = field(default_factory=list)
    paraconnect: str = PARACONNECT  # the installed command

    def addr(self, host: str) -> str:
        return self.net.addrs[host]

    def home(self, host: str) -> Path:
        return self.root / host

    def unique_id(self, host: str) -> str:
        return f"{host}-node"

    def prefix(self, host: str) -> list[str]:
        return self.net.nsenter(host)

    def env(self, host: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {
            **os.environ,
            "PARACONNECT_HOME": str(self.home(host)),
            "PARACONNECT_UNIQUE_ID": self.unique_id(host),
            **(extra or {}),
        }

    def run(
        self,
        host: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        check: bool = False,
        **kw: object,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside `host`'s namespace with its environment; capture its output."""
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            [*self.prefix(host), *argv],
            env=self.env(host, env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            cwd=REPO,
            **kw,
        )

    def popen(
        self, host: str, argv: Sequence[str], *, env: dict[str, str] | None = None, **kw: object
    ) -> subprocess.Popen[str]:
        """A raw Popen inside `host` (the caller stops it; prefer `start`)."""
        kw.setdefault("text", True)
        kw.setdefault("cwd", REPO)
        return subprocess.Popen([*self.prefix(host), *argv], env=self.env(host, env), **kw)  # type: ignore[call-overload, no-any-return]

    def spawn(
        self, host: str, argv: Sequence[str], *, env: dict[str, str] | None = None, **kw: object
    ) -> NsProc:
        """A tracked process inside `host`, its stdout read as lines, stderr to a log."""
        log = self.root / f"{len(self.procs):02d}-{host}-{Path(argv[0]).name}.log"
        proc = NsProc([*self.prefix(host), *argv], self.env(host, env), log, cwd=REPO, **kw)
        self.procs.append(proc)
        return proc

    def start(self, host: str, *args: str, env: dict[str, str] | None = None) -> NsProc:
        """`paraconnect ARGS...` inside `host` (add --json to read its events)."""
        return self.spawn(host, [PARACONNECT, *args], env=env)

    def cli(
        self, host: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.run(host, [PARACONNECT, *args], env=env, timeout=timeout)

    def client(self, host: str, *args: str, timeout: float = 120) -> dict[str, object]:
        """Run this module's client (sha, render) inside `host`; its JSON answer."""
        out = self.run(host, [PYTHON, "-m", "tests.fixtures_netns", *args], timeout=timeout)
        assert out.returncode == 0, f"client {args} failed ({out.returncode}):\n{out.stderr}"
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    def client_proc(self, host: str, *args: str) -> NsProc:
        return self.spawn(
            host, [PYTHON, "-m", "tests.fixtures_netns", *args], stdin=subprocess.PIPE
        )

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(grace=10)

    # -- credentials, like separate machines --------------------------------------------------

    def pki(self, session: str = "lab") -> Pki:
        """On `laptop`: a session, a client certificate for the laptop's node and a server
        certificate for the cluster's node, handed to the cluster as a directory of PEM files
        (NAME.crt, NAME.key, ca.crt, crl.pem) in its own home."""
        for host in HOSTS:
            self.home(host).mkdir(mode=0o700, parents=True, exist_ok=True)
        creds = self.home("cluster") / "creds"
        steps = [
            ("session", "create", session),
            ("issue", "client", "alice", "--session", session,
             "--unique-id", self.unique_id("laptop")),
            ("issue", "server", "srv", "--session", session,
             "--unique-id", self.unique_id("cluster"), "--out", str(creds)),
        ]  # fmt: skip
        for args in steps:
            out = self.cli("laptop", *args)
            assert out.returncode == 0, f"{args}: {out.stderr}"
        return Pki(session, creds, self)

    def friend_bundle(self, name: str = "bob", session: str = "lab") -> Path:
        """`paraconnect share` on the laptop, `paraconnect import` into the friend's home."""
        secret = self.root / "friend.pass"
        secret.write_text(PASSPHRASE + "\n")
        secret.chmod(0o600)
        bundle = self.root / f"{name}.p12"
        out = self.cli(
            "laptop", "share", name, "--session", session, "--out", str(bundle),
            "--unique-id", self.unique_id("friend"), "--passphrase-file", str(secret),
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        out = self.cli(
            "friend", "import", str(bundle), "--passphrase-file", str(secret), "--as", session
        )
        assert out.returncode == 0, out.stderr
        return bundle


@dataclass
class Pki:
    session: str
    cluster_creds: Path  # the agent's directory of PEM files on the cluster
    hosts: Hosts

    def push_crl(self, text: bytes | None = None) -> None:
        """Copy the laptop's revocation list (or `text`) to the cluster's creds, atomically."""
        src = self.hosts.home("laptop") / "sessions" / self.session / "crl.pem"
        data = src.read_bytes() if text is None else text
        tmp = self.cluster_creds / ".crl.pem.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.cluster_creds / "crl.pem")


@pytest.fixture(scope="session")
def netns_net() -> Iterator[Net]:
    """The namespaces, switch and firewall, for the whole test session."""
    why = have_netns()
    if why:
        pytest.skip(why)
    with network() as net:
        yield net


@pytest.fixture
def hosts(netns_net: Net, tmp_path: Path) -> Iterator[Hosts]:
    """Fresh homes per host, the cluster firewall back to "reject", processes stopped after."""
    netns_net.firewall("reject")
    view = Hosts(netns_net, tmp_path)
    for host in HOSTS:
        view.home(host).mkdir(mode=0o700)
    try:
        yield view
    finally:
        view.stop_all()
        netns_net.firewall("reject")


# -- the client run inside a namespace --------------------------------------------------------


def payload(size: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


def _sha_stream(
    host: str, port: int, size: int, seed: int, gate: threading.Barrier | None
) -> dict[str, object]:
    data = payload(size, seed)
    answer = b""
    try:
        with socket.create_connection((host, port), timeout=60) as s:
            s.sendall(b"sha256\n")
            half = size // 2
            s.sendall(data[:half])
            if gate is not None:
                gate.wait(120)  # every stream half sent ...
                gate.wait(300)  # ... and the test says go
            s.sendall(data[half:])
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):
                answer += chunk
    except (OSError, threading.BrokenBarrierError) as exc:
        return {"seed": seed, "ok": False, "error": repr(exc)}
    want = f"{hashlib.sha256(data).hexdigest()} {size}\n".encode()
    return {"seed": seed, "ok": answer == want, "answer": answer.decode(errors="replace")[:200]}


def _sha(args: argparse.Namespace) -> int:
    gate = threading.Barrier(args.streams + 1) if args.gated else None
    results: list[dict[str, object]] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(
                _sha_stream(args.host, args.port, args.size, args.seed + i, gate)
            )
        )
        for i in range(args.streams)
    ]
    for t in threads:
        t.start()
    if gate is not None:
        # Every stream is open and half sent (the far end has answered nothing yet): say so,
        # then wait for the test to let them finish.
        gate.wait(120)
        print(json.dumps({"event": "halfway"}), flush=True)
        sys.stdin.readline()
        gate.wait(300)
    for t in threads:
        t.join(300)
    ok = len(results) == args.streams and all(r["ok"] for r in results)
    print(json.dumps({"event": "done", "ok": ok, "results": results}), flush=True)
    return 0 if ok else 1


def _render(args: argparse.Namespace) -> int:
    from paraconnect.render import RenderClient

    with RenderClient(args.host, args.port, timeout=60) as c:
        c.resize(320, 240)
        c.load("cone")
        c.camera(reset=True)
        frame = c.save_png(args.out)
    data = Path(args.out).read_bytes()
    print(
        json.dumps(
            {"event": "done", "ok": data.startswith(b"\x89PNG"), "format": frame.format,
             "width": frame.width, "height": frame.height, "bytes": len(data)}
        ),
        flush=True,
    )  # fmt: skip
    return 0


def _ask(args: argparse.Namespace) -> int:
    with socket.create_connection((args.host, args.port), timeout=60) as s:
        s.sendall(args.command.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    print(json.dumps({"event": "done", "answer": answer.decode(errors="replace")}), flush=True)
    return 0


def _agents(args: argparse.Namespace) -> int:
    """`count` agents (the library's Agent objects) in one event loop, all phoning `home` at
    once, serving one shared program at `target`; until SIGTERM."""
    import anyio

    from paraconnect.pki import load_credentials
    from paraconnect.tunnel import Agent, Home

    creds = load_credentials(args.creds)
    agents = [
        Agent(
            creds,
            target=args.target,
            phone_home=[Home.parse(args.home, args.interval)],
            server_id=f"agent-{args.first + i}",
        )
        for i in range(args.count)
    ]

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            for agent in agents:
                await tg.start(agent.run)
            print(json.dumps({"event": "ready", "agents": len(agents)}), flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()

    anyio.run(run)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fixtures_netns")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sha", help="send pseudo-random bytes to the echo program; check sha256")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--gated", action="store_true", help="stop halfway until a line on stdin")
    p.set_defaults(func=_sha)
    p = sub.add_parser("render", help="render a cone through the built-in renderer; save a PNG")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("out")
    p.set_defaults(func=_render)
    p = sub.add_parser("ask", help="one command line to the echo program; print its answer")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("command")
    p.set_defaults(func=_ask)
    p = sub.add_parser("agents", help="many agents in one process, phoning home at once")
    p.add_argument("--creds", required=True)
    p.add_argument("--home", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--count", type=int, default=25)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--interval", type=float, default=1.0)
    p.set_defaults(func=_agents)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
