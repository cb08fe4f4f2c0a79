"""Issue 12 through the hub's launcher: `paraconnect launch command` of a TCP program that binds
0.0.0.0; another local user reaches none of its ports, and reads no secret (enrolment token,
connect id) in any command line while the agent runs."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paraconnect.pki import Session

from .helpers_leg import (
    as_other,
    host_netns,
    other_connects,
    other_user_fixture,  # noqa: F401 - the fixture `other_user`
    others_view_of_cmdlines,
    program_listeners,
)
from .test_hub_cli import hub_proc  # noqa: F401 - the fixture
from .test_leg_private import MARKER, _get, _site, _unreachable_by_other

TOKEN_ENV = "PARACONNECT_ENROLL_TOKEN"


def _agent_of(server_id: str) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in argv and server_id.encode() in argv:
                return int(entry)
    raise AssertionError(f"no agent process of {server_id}")


@contextlib.contextmanager
def _launched(cli: Any, *args: str) -> Iterator[dict[str, Any]]:
    """`paraconnect launch command … --wait`; the server is stopped afterwards, whatever
    happened (the hub's local agents outlive the hub by design)."""
    r = cli("launch", "command", "--session", "lab", "--wait", "--json", *args)
    assert r.returncode == 0, r
    info = json.loads(r.stdout)
    try:
        yield info
    finally:
        r = cli("servers", "stop", info["id"], "--json")
        assert json.loads(r.stdout)["state"] == "stopped", r


@pytest.mark.usefixtures("hub_proc")
def test_launched_program_is_private_and_no_secret_in_ps(
    cli: object, home: Path, session: Session, tmp_path: Path, other_user: str
) -> None:
    site = _site(tmp_path)
    os.chmod(tmp_path, 0o755)  # noqa: S103 - so that only the namespace, not the mode, protects
    program = [sys.executable, "-m", "http.server", "--bind", "0.0.0.0", "--directory",  # noqa: S104
               str(site), "{port}"]  # fmt: skip
    with _launched(cli, "--", *program) as info:
        _private_and_no_secret(info, other_user)


def _private_and_no_secret(info: dict[str, Any], other_user: str) -> None:
    assert info["state"] == "connected", info
    assert MARKER in _get(info["local"])  # the session, through the hub's tunnel
    agent = _agent_of(info["id"])
    _unreachable_by_other(agent, other_user)

    # The agent enrolled with a one-time token from its environment; nobody else sees it.
    token = dict(
        line.split("=", 1)
        for line in Path(f"/proc/{agent}/environ").read_text().split("\0")
        if "=" in line
    ).get(TOKEN_ENV)
    assert token, "the local launcher passes the token in the environment"
    lines = others_view_of_cmdlines(other_user, agent)
    assert any(info["id"] in line for line in lines)  # the other user does see the agent
    assert not [line for line in lines if token in line]
    peek = as_other(other_user, f"print(open('/proc/{agent}/environ').read())")
    assert peek.returncode == 1 and "PermissionError" in peek.stderr, peek


@pytest.mark.usefixtures("hub_proc")
def test_launch_shared_leg_reaches_the_agent(
    cli: object, session: Session, tmp_path: Path, other_user: str
) -> None:
    """`launch --shared-leg` (kind option shared_leg) reaches the agent: its program is then in
    the host's network, where the other user CAN connect, as the option says."""
    site = _site(tmp_path)
    os.chmod(tmp_path, 0o755)  # noqa: S103 - only the leg is under test
    program = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
               str(site), "{port}"]  # fmt: skip
    with _launched(cli, "--shared-leg", "--", *program) as info:
        agent = _agent_of(info["id"])
        assert b"--shared-leg" in Path(f"/proc/{agent}/cmdline").read_bytes().split(b"\0")
        found = program_listeners(agent)
        assert [netns for _pid, _port, netns in found] == [host_netns()]
        seen = other_connects(other_user, [("127.0.0.1", found[0][1])])
        assert MARKER in next(iter(seen.values()))
