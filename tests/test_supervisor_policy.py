"""The supervisor's policies through a real hub and local jobs: restart on failure up to a
limit, the wall-time limit, and the command kind (an echo server) end to end."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from paraconnect._hub._ops import call_in_thread
from paraconnect.errors import ConfigError
from paraconnect.hub import Hub
from paraconnect.pki import Session
from paraconnect.servers._kinds import build_kind
from paraconnect.servers._supervisor import RestartPolicy, parse_ready

from .helpers_hub import running_hub

pytestmark = pytest.mark.timeout(90)
ECHO = [sys.executable, str(Path(__file__).with_name("helpers_echo.py")), "--port", "{port}"]


def echo(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"echo\n" + payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_revoking_a_server_cuts_its_open_tunnel_at_the_hub(home: Path, session: Session) -> None:
    """Issue 4 at the hub: revoking an agent's certificate closes its open connections there
    (the hub re-checks what it holds when the session's CRL changes)."""
    with running_hub(home) as (hub, _events):
        info = hub.call(hub.launch, "command", "local", "lab", "reverse", {}, ECHO)
        info = hub.call(hub.wait, info.id)
        assert info.state == "connected"
        with socket.create_connection(("127.0.0.1", info.local_port), timeout=30) as s:
            s.sendall(b"echo\nbefore")
            got = b""
            while len(got) < 6:
                got += s.recv(100)
            assert got == b"before"  # the tunnel works, and stays open
            [revoked] = session.revoke(info.id, reason="key_compromise")
            assert revoked.name == info.id
            s.settimeout(15)  # a bound for the test, not a speed requirement
            rest = b""
            while chunk := s.recv(100):  # a cut tunnel ends in EOF or a reset
                rest += chunk
            assert rest == b""


def test_a_deny_through_the_hub_api_cuts_that_server_only(home: Path, session: Session) -> None:
    """The hub's policy API (what the Jupyter extension calls): a deny by name applies live to
    that server's open tunnel; the other server keeps working."""
    with running_hub(home) as (hub, _events):
        infos = [hub.call(hub.launch, "command", "local", "lab", "reverse", {}, ECHO) for _ in "ab"]
        a, b = (hub.call(hub.wait, info.id) for info in infos)
        with socket.create_connection(("127.0.0.1", a.local_port), timeout=30) as s:
            s.sendall(b"echo\nx")
            assert s.recv(10) == b"x"
            policy = call_in_thread(hub, "policy_rule", {"session": "lab", "action": "deny",
                                                         "name": a.id})  # fmt: skip
            assert policy["rules"] == [{"action": "deny", "name": a.id}]
            s.settimeout(15)  # a bound for the test, not a speed requirement
            assert s.recv(10) == b""  # cut
        assert echo(b.local_port, b"still here") == b"still here"
        assert call_in_thread(hub, "policy_remove", {"session": "lab", "index": 1})["rules"] == []


def test_command_kind_echo_through_the_hub(home: Path, session: Session) -> None:
    with running_hub(home) as (hub, _events):
        info = hub.call(hub.launch, "command", "local", "lab", "reverse", {}, ECHO)
        info = hub.call(hub.wait, info.id)
        assert info.state == "connected"
        payload = bytes(range(256)) * 4000
        assert echo(info.local_port, payload) == payload
        assert echo(info.local_port, b"again") == b"again"
        assert hub.call(hub.stop, info.id, 5.0).state == "stopped"


def test_restart_on_failure_up_to_the_limit(home: Path, session: Session) -> None:
    failing = ["sh", "-c", "echo dying >&2; exit 3", "sh", "{port}"]
    opts = {"restart_policy": "on-failure", "restart_limit": 2}
    with running_hub(home) as (hub, events):
        info = hub.call(hub.launch, "command", "local", "lab", "reverse", opts, failing)
        final = hub.call(hub.wait, info.id, "failed")
        assert final.state == "failed" and final.restarts == 2
        reasons = [e.reason for e in events.seen if e.server_id == info.id]
        assert any("restarted after failure (1/2)" in r for r in reasons), reasons
        assert any("restarted after failure (2/2)" in r for r in reasons), reasons
        assert "exited with code" in final.reason


def test_wall_time_limit_stops_the_server(home: Path, session: Session) -> None:
    opts = {"walltime": 2, "grace": 1, "restart_policy": "on-failure"}
    with running_hub(home) as (hub, _events):
        info = hub.call(hub.launch, "command", "local", "lab", "reverse", opts, ECHO)
        assert hub.call(hub.wait, info.id).state == "connected"
        final = hub.call(hub.wait, info.id, "stopped")
        assert final.state == "stopped" and final.restarts == 0
        assert final.reason.startswith("wall-time limit of 2 s reached"), final.reason


def test_kinds_build_the_expected_command_lines() -> None:
    pv = build_kind("pvserver", {"python": "py"})
    # No --connect-id: command lines are public to every local user; the agent runs pvserver in
    # a network namespace of its own instead.
    assert pv.program == ("py", "-m", "paraconnect.servers._xvfb", "--", "pvserver",
                          "--sp={port}", "--no-mpi")  # fmt: skip
    assert (
        pv.restart == "always"
        and "NOT kept" in pv.note
        and pv.agent_args == ("--version-command", "pvserver --version")
    )
    shared = build_kind("pvserver", {"shared_leg": True})
    assert shared.agent_args == ("--shared-leg", "--version-command", "pvserver --version")
    with pytest.raises(ConfigError, match="option shared_leg must be true or false"):
        build_kind("command", {"shared_leg": "yes"}, ["nc", "-l", "{port}"])
    ranks = build_kind("pvserver", {"ranks": 2, "xvfb": "never"})
    # No wrapper of the kinds' own: the agent's Program ties every program it starts to the
    # agent's life (parent-death signal), see tests/test_faults_restart.py.
    # Through paraconnect.servers._mpi, which gives Open MPI its root consent when needed.
    assert ranks.program[1:7] == ("-m", "paraconnect.servers._mpi", "--", "mpiexec", "-n", "2")
    assert "--no-mpi" not in ranks.program
    builtin = build_kind("builtin", {"python": "py"}).program
    assert builtin[:3] == ("py", "-m", "paraconnect.render")
    assert builtin[-2:] == ("--unix", "{unix}")
    with pytest.raises(ConfigError, match="exactly one of"):
        build_kind("command", {}, ["nc", "-l"])
    with pytest.raises(ConfigError, match="choose never or on-failure"):
        RestartPolicy("always")
    assert parse_ready('x\n12:00 {"event": "ready", "listen": ["127.0.0.1:5"]}\n') == {
        "event": "ready",
        "listen": ["127.0.0.1:5"],
    }


@pytest.mark.anyio
async def test_async_api_and_event_stream_on_the_callers_loop(home: Path, session: Session) -> None:
    hub = Hub(home)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        async with hub.events() as stream:
            info = await hub.launch("command", "local", "lab", "reverse", {}, ECHO)
            seen = []
            async for event in stream:
                if event.server_id == info.id:
                    seen.append((event.previous, event.state))
                    if event.state == "connected":
                        break
        assert [i.id for i in await hub.servers()] == [info.id]
        assert (await hub.stop(info.id, 5.0)).state == "stopped"
        tg.cancel_scope.cancel()
    assert seen[0] == (None, "submitted") and seen[-1][1] == "connected"
    assert [s for _p, s in seen if s != "submitted"] == ["starting", "waiting", "connected"]


def test_pv_reverse_kind_dials_out_through_the_bridge() -> None:
    kind = build_kind("pvserver", {"pv_reverse": True, "python": "py", "xvfb": "never"})
    assert kind.program[:6] == ("py", "-m", "paraconnect.servers._kinds_pvrc", "--unix",
                                "{unix}", "--")  # fmt: skip
    assert "--rc" in kind.program and "--server-port={rc_port}" in kind.program
    assert "--client-host=127.0.0.1" in kind.program
    assert not any(a.startswith("--sp=") for a in kind.program)


@pytest.mark.parametrize(
    ("probe", "extra"),
    [("http", {"http_path": "/"}), ("log", {"log_regex": r"Serving HTTP on 127\.0\.0\.1"})],
)
def test_command_kind_http_and_log_probes(
    home: Path, session: Session, tmp_path: Path, probe: str, extra: dict[str, str]
) -> None:
    (tmp_path / "index.html").write_text("hello through the hub\n")
    server = [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1",
              "--directory", str(tmp_path), "{port}"]  # fmt: skip
    with running_hub(home) as (hub, _events):
        info = hub.call(hub.launch, "command", "local", "lab", "reverse",
                        {"probe": probe, **extra}, server)  # fmt: skip
        info = hub.call(hub.wait, info.id)
        assert info.state == "connected", info
        logs = hub.call(hub.logs, info.id, 200)
        # The agent announced itself only after the probe passed.
        assert logs.index("program ready; serving its leg") < logs.index('"event": "ready"')
        conn = http.client.HTTPConnection("127.0.0.1", info.local_port, timeout=30)
        conn.request("GET", "/index.html")
        reply = conn.getresponse()
        assert reply.status == 200 and reply.read() == b"hello through the hub\n"
        conn.close()


def test_probe_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="needs option log_regex"):
        build_kind("command", {"probe": "log"}, ["srv", "{port}"])
    with pytest.raises(ConfigError, match="choose port, log"):
        build_kind("command", {"probe": "tcp"}, ["srv", "{port}"])
    wrapped = build_kind("command", {"probe": "http", "python": "py"}, ["srv", "-p", "{port}"])
    assert wrapped.program[-3:] == ("srv", "-p", "{inner_port}") and "{unix}" in wrapped.program


def test_a_program_ends_with_its_agent_even_when_the_agent_is_killed(tmp_path: Path) -> None:
    """The tie (PR_SET_PDEATHSIG): SIGKILL of the parent still ends the program."""
    pidfile = tmp_path / "pid"
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         f"p = subprocess.Popen([sys.executable, '-m', 'paraconnect.servers._kinds_tie', '--',"
         f" 'sh', '-c', 'echo $$ > {pidfile}; exec sleep 300'])\n"
         "time.sleep(300)\n"],
    )  # fmt: skip
    try:
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert parent.poll() is None
            time.sleep(0.05)
        child = int(pidfile.read_text())
        os.kill(child, 0)  # running
    finally:
        parent.kill()
        parent.wait()
    while True:  # the kernel sends it SIGTERM as its parent dies; it is reaped by init
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)


def test_an_agent_killed_is_restarted_and_the_events_say_so(home: Path, session: Session) -> None:
    """Issue 8's server restart: the agent of a connected server is killed (SIGKILL; its
    program goes with it); the restart policy launches it again, it phones home, a new program
    answers on the same local endpoint, and the events tell each step."""
    opts = {"restart_policy": "on-failure", "restart_limit": 3}
    with running_hub(home) as (hub, events):
        info = hub.call(hub.launch, "command", "local", "lab", "reverse", opts, ECHO)
        info = hub.call(hub.wait, info.id)
        assert info.state == "connected"
        program = int(_ask(info.local_port, b"pid"))
        agent = int(Path(f"/proc/{program}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert "paraconnect" in Path(f"/proc/{agent}/cmdline").read_bytes().decode()
        os.kill(agent, signal.SIGKILL)
        final = hub.call(hub.wait, info.id, "idle")
        final = hub.call(hub.wait, info.id, "connected", 60.0)
        assert final.restarts == 1 and final.local == info.local
        assert int(_ask(info.local_port, b"pid")) != program
        reasons = [e.reason for e in events.seen if e.server_id == info.id]
        assert any("restarted after failure (1/3)" in r for r in reasons), reasons
        states = events.states(info.id)
        assert states[-1] == "connected" and states.count("connected") == 2, states
        # The first job's certificate was revoked when the new job enrolled.
        certs = [r for r in session.records() if r.name == info.id]
        assert [(r.revoked, r.revoked_reason) for r in certs] == [(True, "superseded"),
                                                                 (False, None)]  # fmt: skip
        assert hub.call(hub.stop, info.id, 5.0).state == "stopped"


def _ask(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(command + b"\n")
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out.strip()
