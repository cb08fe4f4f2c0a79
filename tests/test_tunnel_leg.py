"""The private leg: endpoints, who owns a socket, same-user-only local endpoints, and the
program's three ways of listening ({port}, {unix}, {fd})."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from pathlib import Path

import anyio
import pytest

from paraconnect.errors import ConfigError
from paraconnect.tunnel import Agent, Connector, Endpoint, Program, parse_endpoint, peer_uid
from paraconnect.tunnel._leg import listening_uid, private_dir

from .helpers_tunnel import Pki, ask, echo_command, sha_check

pytestmark = pytest.mark.timeout(60)
as_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")
NOBODY = 65534


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8443", Endpoint("127.0.0.1", 8443)),
        ("[::1]:0", Endpoint("::1", 0)),
        ("node-7.cluster:22", Endpoint("node-7.cluster", 22)),
        ("unix:/run/x.sock", Endpoint("", 0, "/run/x.sock")),
    ],
)
def test_parse_endpoint(text: str, expected: Endpoint) -> None:
    ep = parse_endpoint(text)
    assert ep == expected
    assert parse_endpoint(str(ep)) == ep


@pytest.mark.parametrize("text", ["8443", "host:", ":80", "::1:80", "h:99999", "h:-1", "unix:"])
def test_parse_endpoint_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="--local"):
        parse_endpoint(text, "--local")


def test_loopback_detection() -> None:
    assert parse_endpoint("127.0.0.2:1").is_loopback
    assert parse_endpoint("[::1]:1").is_loopback
    assert not parse_endpoint("0.0.0.0:1").is_loopback
    assert not parse_endpoint("10.0.0.1:1").is_loopback


def test_local_endpoint_must_be_loopback(pki: Pki) -> None:
    from paraconnect.tunnel import ReverseListener

    with pytest.raises(ConfigError, match="not a loopback address"):
        Connector(pki.client, "127.0.0.1:1", "0.0.0.0:8000")
    with pytest.raises(ConfigError, match="not a loopback address"):
        ReverseListener(pki.client, "0.0.0.0:0", "192.0.2.1:8000")


def test_private_dir_is_0700() -> None:
    path = private_dir()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    finally:
        path.rmdir()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_peer_uid_of_tcp_connections_is_ours(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, 0), family=family) as server:
        with socket.create_connection(server.getsockname()[:2]):
            conn, _ = server.accept()
            with conn:
                assert peer_uid(conn) == os.getuid()
                assert peer_uid(conn, use_netlink=False) == os.getuid()
        port = server.getsockname()[1]
        assert listening_uid(host, port) == os.getuid()
        assert listening_uid(host, port, use_netlink=False) == os.getuid()


def test_peer_uid_of_unix_connections_is_ours() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert peer_uid(a) == os.getuid()


def _as_nobody(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["/usr/bin/python3", "-c", code], user=NOBODY, group=NOBODY, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
    )  # fmt: skip


@as_root
def test_peer_uid_sees_another_user() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        proc = _as_nobody(
            f"import socket,time; s=socket.create_connection(('127.0.0.1',{port})); time.sleep(5)"
        )
        try:
            conn, _ = server.accept()
            with conn:
                assert peer_uid(conn) == NOBODY
                assert peer_uid(conn, use_netlink=False) == NOBODY
        finally:
            proc.kill()
            proc.communicate()


@as_root
def test_listening_uid_sees_another_user() -> None:
    proc = _as_nobody(
        "import socket,time; s=socket.create_server(('127.0.0.1',0)); "
        "print(s.getsockname()[1], flush=True); time.sleep(10)"
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        assert listening_uid("127.0.0.1", port) == NOBODY
        assert listening_uid("127.0.0.1", port, use_netlink=False) == NOBODY
    finally:
        proc.kill()
        proc.communicate()


@as_root
@pytest.mark.anyio
async def test_local_endpoint_refuses_another_user(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(
            Agent(pki.server, program=Program(echo_command()), listen=["127.0.0.1:0"]).run
        )
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        code = (
            f"import socket\ns=socket.create_connection(('127.0.0.1',{local.port}))\ntry:\n"
            " s.sendall(b'pid\\n'); s.shutdown(socket.SHUT_WR); print(len(s.recv(100)))\n"
            "except OSError:\n print('reset')"
        )
        proc = _as_nobody(code)
        out, err = await anyio.to_thread.run_sync(proc.communicate)
        assert out.strip() in ("0", "reset"), err  # closed without a byte of the program's answer
        assert any(f"user {NOBODY} connected" in r.getMessage() for r in caplog.records)
        assert (await ask(local, "pid")).strip().isdigit()  # we still get through
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("placeholder", ["{unix}", "{fd}"])
async def test_unix_and_inherited_legs(pki: Pki, placeholder: str) -> None:
    program = Program(echo_command(placeholder))
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(Agent(pki.server, program=program, listen=["127.0.0.1:0"]).run)
        assert program.endpoint is not None and program.endpoint.path is not None
        leg_dir = Path(program.endpoint.path).parent
        assert stat.S_IMODE(leg_dir.stat().st_mode) == 0o700
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        await sha_check(local, 300_000)
        env = json.loads(await ask(local, "env"))
        assert env["PARACONNECT_LEG"] == f"unix:{program.endpoint.path}"
        if placeholder == "{fd}":
            assert env["LISTEN_FDS"] == "1"
        tg.cancel_scope.cancel()
    assert not leg_dir.exists()  # the private directory is removed with the agent


@pytest.mark.anyio
async def test_per_connection_program_learns_the_peer(pki: Pki, home: Path) -> None:
    import sys

    from paraconnect.tunnel import PerConnection

    from .helpers_tunnel import ECHO

    bob = pki.friend("bob", home, unique_id="bob-laptop")
    program = PerConnection([sys.executable, ECHO, "--stdio"])
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(Agent(pki.server, program=program, listen=["[::1]:0"]).run)
        alice_local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        bob_local = await tg.start(Connector(bob, addr, "127.0.0.1:0", unique_id="bob-laptop").run)
        alice = json.loads(await ask(alice_local, "env"))
        assert alice["PARACONNECT_PEER_NAME"] == "alice"
        assert alice["PARACONNECT_PEER_ROLE"] == "client"
        assert alice["PARACONNECT_PEER_UNIQUE_ID"] == pki.uid
        assert alice["PARACONNECT_PEER_SESSION_ID"] == pki.session.id
        assert alice["PARACONNECT_PEER_ADDR"].startswith("[::1]:")
        assert alice["PARACONNECT_SESSION"] == pki.session.id
        bob_env = json.loads(await ask(bob_local, "env"))
        assert bob_env["PARACONNECT_PEER_NAME"] == "bob"
        assert bob_env["PARACONNECT_PEER_UNIQUE_ID"] == "bob-laptop"
        assert bob_env["PARACONNECT_PEER_SHA256"] != alice["PARACONNECT_PEER_SHA256"]
        await sha_check(alice_local, 500_000)
        pids = {(await ask(alice_local, "pid")).strip() for _ in range(3)}
        assert len(pids) == 3  # a fresh process for every connection
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_proxy_protocol_v2_tells_the_program_the_peer(pki: Pki, host: str) -> None:
    import sys

    from .helpers_tunnel import ECHO

    program = Program([sys.executable, ECHO, "--proxy", "--port", "{port}"])
    listen = f"[{host}]:0" if ":" in host else f"{host}:0"
    agent = Agent(pki.server, program=program, listen=[listen], proxy_protocol=True)
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(agent.run)
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        info = json.loads(await ask(local, "proxy"))
        assert info["family"] == (0x21 if ":" in host else 0x11)
        assert info["src"][0] == host and info["dst"] == [host, addr.port]
        assert info["ssl_verify"] == 0 and info["ssl_version"] == "TLSv1.3"
        assert info["ssl_cn"] == pki.uid
        assert info["identity"]["name"] == "alice"
        assert info["identity"]["role"] == "client"
        await sha_check(local, 100_000)  # the data after the header is intact
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_target_of_an_already_running_program(pki: Pki) -> None:
    import sys

    from .helpers_tunnel import ECHO, free_port

    port = free_port()
    program = await anyio.open_process([sys.executable, ECHO, "--port", str(port)])
    try:
        async with anyio.create_task_group() as tg:
            agent = Agent(pki.server, target=f"127.0.0.1:{port}", listen=["127.0.0.1:0"])
            [addr] = await tg.start(agent.run)
            local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
            with anyio.fail_after(20):
                while not (answer := await ask(local, "pid")):  # noqa: ASYNC110
                    await anyio.sleep(0.05)  # until the program listens
            assert int(answer) == program.pid
            tg.cancel_scope.cancel()
    finally:
        program.kill()
        await program.wait()
        await program.aclose()


@as_root
@pytest.mark.anyio
async def test_target_owned_by_another_user_is_refused(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    # The other user's program answers every connection: a client's data forwarded there
    # would come back as "LEAK", where the refusal closes the client's connection empty.
    proc = _as_nobody(
        "import socket; s=socket.create_server(('127.0.0.1',0)); "
        "print(s.getsockname()[1], flush=True)\n"
        "while True:\n c, _ = s.accept()\n while c.recv(65536): pass\n"
        " c.sendall(b'LEAK'); c.close()"
    )
    try:
        assert proc.stdout is not None
        port = int(await anyio.to_thread.run_sync(proc.stdout.readline))
        async with anyio.create_task_group() as tg:
            agent = Agent(pki.server, target=f"127.0.0.1:{port}", listen=["127.0.0.1:0"])
            [addr] = await tg.start(agent.run)
            local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
            assert await ask(local, "pid") == b""
            tg.cancel_scope.cancel()
        assert any(f"is a program of user {NOBODY}" in r.getMessage() for r in caplog.records)
    finally:
        proc.kill()
        proc.communicate()
