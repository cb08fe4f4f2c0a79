"""Issue 12, items 1-2: nobody but the session reaches the program behind an agent.

A second Unix user (made with useradd) tries every port the program listens on, on loopback and
on the host's own address (where another host would connect); the program is Python's
http.server bound to 0.0.0.0 or 127.0.0.1, serving a page only the session should see.  The
session's own client gets the page through the tunnel.  Where no user namespace can be made the
agent refuses such a program in one line, unless --shared-leg, which `debug server` reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from paraconnect.servers._kinds import build_kind

from .helpers_cli import PARACONNECT, Proc, procs_fixture  # noqa: F401 - the fixture `procs`
from .helpers_leg import (
    NO_USERNS,
    NO_USERNS_ROOT,
    host_addresses,
    host_netns,
    other_connects,
    other_user_fixture,  # noqa: F401 - the fixture `other_user`
    program_listeners,
)
from .helpers_tunnel import Pki, free_port

pytestmark = [pytest.mark.timeout(90)]
MARKER = "only-for-the-session-7f3a"


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{MARKER}.txt").write_text("the session's data\n")
    return site


def _http_server(site: Path, bind: str) -> list[str]:
    return [sys.executable, "-m", "http.server", "--bind", bind, "--directory", str(site)]


def _get(local: str) -> str:
    with urllib.request.urlopen(f"http://{local}/", timeout=20) as response:
        return str(response.read().decode())


def _unreachable_by_other(agent_pid: int, user: str) -> list[tuple[int, int, str]]:
    """The program listens somewhere, none of it in the host's network namespace, and the other
    user reaches none of its ports, on any of the host's addresses."""
    found = program_listeners(agent_pid)
    assert found, "the program listens nowhere?"
    targets = [(addr, port) for _pid, port, _ns in found for addr in host_addresses()]
    seen = other_connects(user, targets)
    leaked = {k: v[:200] for k, v in seen.items() if MARKER in v}
    assert not leaked, leaked
    assert all(netns != host_netns() for _pid, _port, netns in found), found
    return found


@pytest.mark.parametrize("bind", ["0.0.0.0", "127.0.0.1"])  # noqa: S104 - the program's choice
def test_another_user_cannot_reach_a_tcp_program(
    pki: Pki, procs: object, tmp_path: Path, other_user: str, bind: str
) -> None:
    site = _site(tmp_path)
    agent: Proc = procs(  # type: ignore[operator]
        "serve", "--creds", "lab", "--listen", "127.0.0.1:0", "--json", "--status",
        "127.0.0.1:0", "--", *_http_server(site, bind), "{port}",
    )  # fmt: skip
    ready = agent.ready(60)
    client: Proc = procs(  # type: ignore[operator]
        "connect",
        ready["listen"][0],
        "--creds",
        "lab",
        "--local",
        "127.0.0.1:0",
        "--json",  # type: ignore[index]
    )
    local = str(client.ready()["local"])
    assert MARKER in _get(local)  # the session's own client: through the tunnel
    _unreachable_by_other(agent.popen.pid, other_user)
    assert MARKER in _get(local)  # and still, after the other user's tries
    assert str(ready["leg"]).startswith("private network namespace (user+net)"), ready
    status = str(ready["status"]).replace("/metrics", "/status")
    with urllib.request.urlopen(status, timeout=20) as response:  # noqa: S310 - http, loopback
        assert json.loads(response.read())["leg"] == ready["leg"]


def test_refused_without_user_namespaces_unless_shared_leg(
    pki: Pki, home: Path, tmp_path: Path, procs: object, other_user: str
) -> None:
    site = _site(tmp_path)
    program = [*_http_server(site, "127.0.0.1"), "{port}"]
    env = {**os.environ, "PARACONNECT_HOME": str(home)}
    refused = subprocess.run(
        [*NO_USERNS, *PARACONNECT, "serve", "--creds", "lab", "--listen", "127.0.0.1:0",
         "--json", "--", *program],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert refused.returncode == 1 and refused.stdout == "", refused
    errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("paraconnect:")]
    assert len(errors) == 1, refused.stderr
    assert "every local user can connect to" in errors[0] and "--shared-leg" in errors[0]
    assert "user namespaces are not available here" in errors[0]

    # --shared-leg: it runs on the host's loopback, and `debug server` says so.
    dport = free_port()
    debug = subprocess.Popen(
        [*PARACONNECT, "debug", "server", f"127.0.0.1:{dport}", "--creds", "lab", "--json",
         "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    shared = subprocess.Popen(
        [*NO_USERNS, *PARACONNECT, "serve", "--creds", "lab", "--phone-home",
         f"127.0.0.1:{dport}", "--interval", "0.2", "--json", "--shared-leg", "--", *program],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        out, err = debug.communicate(timeout=60)
        report = json.loads(out)
        leg = next(s for s in report["steps"] if s["step"] == "leg")
        assert leg["reason"].startswith("the program's leg: shared loopback leg: other local "
                                        "users CAN connect to port"), (report, err)  # fmt: skip
        assert leg["status"] == "WARN"
        # And it is true: the other user gets the page (what --shared-leg accepts).
        port = int(leg["reason"].rsplit("port ", 1)[1].split()[0])
        seen = other_connects(other_user, [("127.0.0.1", port)])
        assert MARKER in seen[f"127.0.0.1:{port}"], seen
    finally:
        shared.terminate()
        shared.communicate(timeout=30)
        if debug.poll() is None:
            debug.kill()
            debug.communicate()


def test_debug_server_reports_the_private_namespace(pki: Pki, home: Path, tmp_path: Path) -> None:
    site = _site(tmp_path)
    env = {**os.environ, "PARACONNECT_HOME": str(home)}
    dport = free_port()
    debug = subprocess.Popen(
        [*PARACONNECT, "debug", "server", f"127.0.0.1:{dport}", "--creds", "lab", "--json",
         "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    agent = subprocess.Popen(
        [*PARACONNECT, "serve", "--creds", "lab", "--phone-home", f"127.0.0.1:{dport}",
         "--interval", "0.2", "--json", "--", *_http_server(site, "0.0.0.0"), "{port}"],  # noqa: S104
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        out, _err = debug.communicate(timeout=60)
    finally:
        agent.terminate()
        agent.communicate(timeout=30)
        if debug.poll() is None:
            debug.kill()
            debug.communicate()
    report = json.loads(out)
    leg = next(s for s in report["steps"] if s["step"] == "leg")
    assert leg["status"] == "PASS", report
    assert leg["reason"] == (
        "the program's leg: private network namespace (user+net): nobody else can connect to "
        "the program's ports; a broker inside hands over each connection"
    )


def test_shared_leg_refuses_a_port_another_user_took_first(
    pki: Pki, procs: object, other_user: str
) -> None:
    """--shared-leg keeps the port-owner check: the program's port held by another user's
    socket is never forwarded to (here the program itself hands the port to that user)."""
    grab = (
        "import socket, sys, time; s = socket.create_server(('127.0.0.1', int(sys.argv[1]))); "
        "time.sleep(60)"
    )
    agent: Proc = procs(  # type: ignore[operator]
        "serve", "--creds", "lab", "--listen", "127.0.0.1:0", "--json", "--shared-leg", "--",
        "runuser", "-u", other_user, "--", "/usr/bin/python3", "-c", grab, "{port}",
    )  # fmt: skip
    assert agent.wait(60) == 1
    [line] = agent.errors()
    uid = int(subprocess.run(["id", "-u", other_user], capture_output=True, text=True).stdout)
    assert f"is held by user {uid}, not by 'runuser' of user 0" in line, line
    assert "refusing to forward there" in line


def test_probe_wrapper_inner_port_is_private(
    pki: Pki, procs: object, tmp_path: Path, other_user: str
) -> None:
    """The command kind's readiness probe wraps the program (its {inner_port} is TCP): the whole
    wrapper runs in the namespace, so that port is private too."""
    site = _site(tmp_path)
    command = [*_http_server(site, "0.0.0.0"), "{port}"]  # noqa: S104
    program = build_kind("command", {"probe": "http"}, command).program
    assert "{inner_port}" in " ".join(program)
    agent: Proc = procs(  # type: ignore[operator]
        "serve", "--creds", "lab", "--listen", "127.0.0.1:0", "--json", "--", *program
    )
    ready = agent.ready(60)
    client: Proc = procs(  # type: ignore[operator]
        "connect",
        ready["listen"][0],
        "--creds",
        "lab",
        "--local",
        "127.0.0.1:0",
        "--json",  # type: ignore[index]
    )
    assert MARKER in _get(str(client.ready()["local"]))
    _unreachable_by_other(agent.popen.pid, other_user)
    assert ready["leg"] == (
        "unix socket in a 0700 directory; the program's own TCP ports in a private network "
        "namespace (user+net)"
    )


def test_root_without_user_namespaces_gets_a_network_namespace_alone(
    pki: Pki, home: Path, tmp_path: Path, procs: object, other_user: str
) -> None:
    """Root (CAP_SYS_ADMIN) where user namespaces are disabled: a network namespace alone keeps
    the program just as private."""
    site = _site(tmp_path)
    agent = subprocess.Popen(
        [*NO_USERNS_ROOT, *PARACONNECT, "serve", "--creds", "lab", "--listen", "127.0.0.1:0",
         "--json", "--", *_http_server(site, "0.0.0.0"), "{port}"],  # noqa: S104
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PARACONNECT_HOME": str(home)},
    )  # fmt: skip
    try:
        assert agent.stdout is not None
        ready = json.loads(agent.stdout.readline() or "{}")
        assert ready.get("event") == "ready", agent
        client: Proc = procs(  # type: ignore[operator]
            "connect", ready["listen"][0], "--creds", "lab", "--local", "127.0.0.1:0", "--json"
        )
        assert MARKER in _get(str(client.ready()["local"]))
        _unreachable_by_other(agent.pid, other_user)
        assert ready["leg"].startswith("private network namespace (net):"), ready
    finally:
        agent.terminate()
        agent.communicate(timeout=30)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["pvserver", "--sp={port}", "--no-mpi"],
         ["pvserver", "--rc", "--client-host=127.0.0.1", "--server-port={rc_port}", "--no-mpi"]),
        (["mpiexec", "-n", "2", "/usr/bin/pvserver", "--sp={port}", "--connect-id={connect_id}"],
         ["mpiexec", "-n", "2", "/usr/bin/pvserver", "--rc", "--client-host=127.0.0.1",
          "--server-port={rc_port}"]),
        (["python3", "-m", "http.server", "{port}"], None),
        (["pvserver", "--rc", "--server-port={rc_port}"], None),
    ],
)  # fmt: skip
def test_pv_reverse_command(command: list[str], expected: list[str] | None) -> None:
    from paraconnect.tunnel._program import pv_reverse_command

    got = pv_reverse_command(command)
    if expected is None:
        assert got is None
    else:
        bridge = [sys.executable, "-m", "paraconnect.servers._kinds_pvrc", "--unix", "{unix}", "--"]
        assert got == [*bridge, *expected]


def test_stopping_the_agent_ends_a_member_that_blocks_sigterm(
    pki: Pki, procs: object, tmp_path: Path
) -> None:
    """pvserver --rc blocks SIGTERM while it dials: the agent's stop reaches every process of the
    program's group (SIGKILL after a grace period), not only the broker it started."""
    pidfile = tmp_path / "stubborn.pid"
    stubborn = (
        "import os, signal, time; signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM]); "
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    )
    program = (
        "import socket, subprocess, sys; subprocess.Popen([sys.executable, '-c', sys.argv[2]]); "
        "s = socket.create_server(('127.0.0.1', int(sys.argv[1]))); s.accept()"
    )
    agent: Proc = procs(  # type: ignore[operator]
        "serve", "--creds", "lab", "--listen", "127.0.0.1:0", "--json", "--",
        sys.executable, "-c", program, "{port}", stubborn,
    )  # fmt: skip
    agent.ready(60)
    deadline = time.monotonic() + 30
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the program's child never started"
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    try:
        assert agent.stop() == 0
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists():
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                break  # dead, waiting for its reaper
            assert time.monotonic() < deadline, f"pid {pid} outlived the agent"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # the test's own leftover, if the agent failed
