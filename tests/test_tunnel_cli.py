"""`paraconnect serve | connect | listen` as real processes: forward, reverse, phone home on
exit, a friend's bundle, and the one-line errors (copied certificate, program dying, deadline,
clear text off loopback)."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from paraconnect.pki import SecurityLevel, share
from paraconnect.tunnel import parse_endpoint

from .helpers_cli import Proc, procs_fixture  # noqa: F401 - the fixture `procs`
from .helpers_tunnel import ECHO, PASS, Pki, ask, free_port, make_pki, pid_of, sha_check

pytestmark = pytest.mark.timeout(90)


def _serve(procs: object, *extra: str, env: dict[str, str] | None = None) -> Proc:
    return procs(  # type: ignore[operator, no-any-return]
        "serve", "--creds", "lab", "--json", *extra, "--", sys.executable, ECHO, "--port", "{port}",
        env=env,
    )  # fmt: skip


@pytest.mark.anyio
async def test_cli_forward_then_phone_home_on_exit(pki: Pki, procs: object) -> None:
    agent = _serve(procs, "--listen", "127.0.0.1:0")
    [addr] = agent.ready()["listen"]  # type: ignore[misc]
    home_port = free_port()
    client = procs(  # type: ignore[operator]
        "connect", addr, "--creds", "lab", "--local", "127.0.0.1:0", "--json",
        "--on-exit-phone-home", f"127.0.0.1:{home_port}", "--interval", "0.05",
    )  # fmt: skip
    local = parse_endpoint(str(client.ready()["local"]))
    await sha_check(local, 1_000_000)
    pid = await pid_of(local)
    assert client.stop() == 0  # SIGTERM: tells the agent where to phone, then exits cleanly
    listener = procs(  # type: ignore[operator]
        "listen", f"127.0.0.1:{home_port}", "--creds", "lab", "--local", "127.0.0.1:0", "--json"
    )
    rlocal = parse_endpoint(str(listener.ready()["local"]))
    assert await pid_of(rlocal) == pid
    await sha_check(rlocal, 200_000)
    assert agent.popen.poll() is None  # the agent kept running throughout


@pytest.mark.anyio
async def test_cli_reverse_over_ipv6(pki: Pki, procs: object) -> None:
    listener = procs(  # type: ignore[operator]
        "listen", "[::1]:0", "--creds", "lab", "--local", "[::1]:0", "--json"
    )
    event = listener.ready()
    _serve(procs, "--phone-home", str(event["listen"]), "--interval", "0.05")
    local = parse_endpoint(str(event["local"]))
    assert local.host == "::1"
    assert await ask(local, "echo", b"six") == b"six"


@pytest.mark.anyio
async def test_cli_friend_with_a_bundle(pki: Pki, procs: object, home: Path) -> None:
    share(pki.session, "bob", home / "bob.p12", PASS, unique_id="bob-laptop")
    (home / "pass").write_bytes(PASS + b"\n")
    (home / "pass").chmod(0o600)  # passphrase files others can read are refused
    agent = _serve(procs, "--listen", "127.0.0.1:0")
    [addr] = agent.ready()["listen"]  # type: ignore[misc]
    bob = procs(  # type: ignore[operator]
        "connect", addr, "--creds", str(home / "bob.p12"), "--passphrase-file",
        str(home / "pass"), "--local", "127.0.0.1:0", "--json",
        env={"PARACONNECT_UNIQUE_ID": "bob-laptop"},
    )  # fmt: skip
    await sha_check(parse_endpoint(str(bob.ready()["local"])), 50_000)


def test_cli_copied_certificate_refused_on_another_machine(pki: Pki, procs: object) -> None:
    agent = _serve(procs, "--listen", "127.0.0.1:0", env={"PARACONNECT_UNIQUE_ID": "elsewhere"})
    assert agent.wait() == 1
    [line] = agent.errors()
    assert "copied certificate" in line and "--unique-id elsewhere" in line


@pytest.mark.anyio
async def test_cli_program_dying_ends_the_agent(pki: Pki, procs: object) -> None:
    agent = _serve(procs, "--listen", "127.0.0.1:0")
    [addr] = agent.ready()["listen"]  # type: ignore[misc]
    client = procs("connect", addr, "--creds", "lab", "--local", "127.0.0.1:0", "--json")  # type: ignore[operator]
    await ask(parse_endpoint(str(client.ready()["local"])), "die 9")
    assert await anyio.to_thread.run_sync(agent.wait) == 1
    [line] = agent.errors()
    assert "exited with status 9; the agent stops" in line


def test_cli_phone_home_deadline(pki: Pki, procs: object) -> None:
    dead = f"127.0.0.1:{free_port()}"
    agent = _serve(procs, "--phone-home", dead, "--interval", "0.05", "--deadline", "0.5")
    agent.ready()
    assert agent.wait() == 1
    [line] = agent.errors()
    assert f"no listener at {dead} took this server within 0.5 s" in line


def test_cli_clear_text_refused_off_loopback(home: Path, procs: object) -> None:
    make_pki(home, "lab", SecurityLevel.NONE)
    agent = _serve(procs, "--listen", "0.0.0.0:0")
    assert agent.wait() == 1
    assert "--insecure" in agent.errors()[0]
    assert "CLEAR TEXT" in agent.log.read_text()


def test_cli_serve_needs_a_program(pki: Pki, procs: object) -> None:
    agent = procs("serve", "--creds", "lab", "--listen", "127.0.0.1:0")  # type: ignore[operator]
    assert agent.wait() == 1
    assert "after '--'" in agent.errors()[0]
