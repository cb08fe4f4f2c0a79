"""Names and unique IDs are whole-string matches at every entry point (issue 12, item 6): a
trailing newline once made a second 'bob' that 'revoke bob' and 'policy deny --name bob' never
found.  Each door is tried for real: the command line, REST through a running Jupyter server,
the notebook API, the hub's operations and an enrolment request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import paraconnect as pc
from paraconnect.errors import ConfigError, TrustError
from paraconnect.pki import Role, Session, Store, load_credentials
from paraconnect.pki._names import check_name, check_unique_id

from .helpers_api import api_hub  # noqa: F401 - a fixture
from .helpers_hub import running_hub
from .helpers_jupyter import JupyterServer, start_jupyter

pytestmark = pytest.mark.timeout(120)

BAD_NAMES = ["bob\n", "bob\r\n", "\nbob", "bo\nb", "bob "]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_the_checks_take_the_whole_string(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid name"):
        check_name(bad)
    with pytest.raises(ConfigError, match="invalid unique ID"):
        check_unique_id(bad)
    assert check_name("bob") == "bob" and check_unique_id("bob-laptop") == "bob-laptop"


def test_cli_refuses_a_name_with_a_newline(cli: object, home: Path) -> None:
    run = cli  # type: ignore[assignment]
    r = run("session", "create", "lab\n")  # type: ignore[operator]
    assert r.returncode != 0 and "invalid session name 'lab\\n'" in r.stderr, r
    assert run("session", "create", "lab").returncode == 0  # type: ignore[operator]
    r = run("issue", "client", "bob\n", "--session", "lab")  # type: ignore[operator]
    assert r.returncode != 0 and "invalid name 'bob\\n'" in r.stderr, r
    r = run("issue", "client", "bob", "--session", "lab", "--unique-id", "laptop\n")  # type: ignore[operator]
    assert r.returncode != 0 and "invalid unique ID 'laptop\\n'" in r.stderr, r
    assert Store(home).open_session("lab").records() == []  # nothing was issued
    assert [p.name for p in (home / "sessions").iterdir()] == ["lab"]


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with start_jupyter(tmp_path_factory.mktemp("jupyter")) as server:
        yield server


def test_rest_refuses_a_name_with_a_newline(jupyter: JupyterServer) -> None:
    resp = jupyter.api("POST", "sessions", {"name": "lab\n"})
    assert resp.status == 400 and resp.json()["category"] == "ConfigError", resp.body
    assert "invalid session name" in resp.json()["error"]
    assert "lab\n" not in [s["name"] for s in jupyter.ok("GET", "sessions")]
    jupyter.ok("POST", "sessions", {"name": "lab"})
    for body in (
        {"name": "bob\n", "passphrase": "pw"},
        {"name": "bob", "passphrase": "pw", "unique_id": "laptop\n"},
    ):
        resp = jupyter.api("POST", "sessions/lab/friends", body)
        assert resp.status == 400 and resp.json()["category"] == "ConfigError", resp.body
        assert "invalid" in resp.json()["error"]
    assert jupyter.ok("GET", "sessions/lab/friends") == []


def test_api_refuses_a_name_with_a_newline(api_hub: object, home: Path) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match="invalid session name"):
        pc.Session("lab\n", home=home)
    session = pc.Session.create("lab", home=home)
    with pytest.raises(ConfigError, match="invalid name 'bob\\\\n'"):
        pc.share(session, "bob\n", "pw")
    with pytest.raises(ConfigError, match="invalid unique ID"):
        session.share("bob", "pw", unique_id="laptop\n")
    assert session.friends() == []


def test_hub_operations_refuse_a_name_with_a_newline(home: Path, session: Session) -> None:
    from paraconnect._hub._ops import call_in_thread

    with running_hub(home) as (hub, _events):
        with pytest.raises(ConfigError, match="invalid session name"):
            call_in_thread(hub, "session_create", {"name": "cfd\n"})
        with pytest.raises(ConfigError, match="invalid name"):
            call_in_thread(
                hub, "friend_issue", {"session": "lab", "name": "bob\n", "passphrase": "pw"}
            )
        with pytest.raises(ConfigError, match="invalid unique ID"):
            call_in_thread(
                hub,
                "friend_issue",
                {"session": "lab", "name": "bob", "passphrase": "pw", "unique_id": "laptop\n"},
            )
        assert [s["name"] for s in call_in_thread(hub, "sessions", {})] == ["lab"]
    assert session.records() == []


@pytest.mark.anyio
async def test_enrolment_with_a_unique_id_ending_in_a_newline_is_not_certified(
    store: Store, session: Session, tmp_path: Path
) -> None:
    import time

    import anyio

    from paraconnect.servers._enroll import EnrollServer, enroll, issue_token
    from paraconnect.servers._registry import ServerRecord, ServerRegistry

    registry = ServerRegistry(store.home / "servers.sqlite3")
    now = time.time()
    registry.add(
        ServerRecord("srv-a", "builtin", "lab", "reverse", "local", "submitted", "test", now, now)
    )
    uid = store.unique_id().value
    session.issue(Role.CLIENT, "hub", unique_id=uid)
    creds = load_credentials("lab", role=Role.CLIENT, store=store, unique_id=uid)
    before = [r.serial for r in session.records()]
    server = EnrollServer(registry, {"lab": (session, creds)})
    async with anyio.create_task_group() as tg:
        host, port = await tg.start(server.run)
        token = issue_token(registry, "srv-a", "lab")
        with pytest.raises(TrustError, match=r"refused enrolment: .*invalid unique ID 'node\\n'"):
            await enroll(
                f"{host}:{port}", session.ca_fingerprint, token, "srv-a", tmp_path / "c", "node\n"
            )
        tg.cancel_scope.cancel()
    assert [r.serial for r in session.records()] == before  # no certificate was made
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("bad", ["job\n", "job\r\n"])
def test_launch_names_and_options_are_whole_words(bad: str) -> None:
    from paraconnect.servers._launch import LaunchSpec
    from paraconnect.servers._slurm_options import SlurmOptions
    from paraconnect.servers._ssh import SshShell

    with pytest.raises(ConfigError, match="job name"):
        LaunchSpec(["true"], name=bad)
    with pytest.raises(ConfigError, match="environment variable name"):
        LaunchSpec(["true"], env={"PC_" + bad: "x"})
    with pytest.raises(ConfigError, match="partition"):
        SlurmOptions(partition=bad)  # a newline there would start a new #SBATCH line
    with pytest.raises(ConfigError, match="time"):
        SlurmOptions(time="10" + bad[3:])
    with pytest.raises(ConfigError, match="ssh host"):
        SshShell("node7" + bad[3:])


def test_a_policy_rule_for_a_name_with_a_newline_is_refused(cli: object, home: Path) -> None:
    """Such a deny would never match bob: it would silently do nothing."""
    run = cli  # type: ignore[assignment]
    assert run("session", "create", "lab").returncode == 0  # type: ignore[operator]
    r = run("policy", "deny", "--session", "lab", "--name", "bob\n")  # type: ignore[operator]
    assert r.returncode != 0 and "invalid name 'bob\\n'" in r.stderr, r
    r = run("policy", "deny", "--session", "lab", "--unique-id", "laptop\n")  # type: ignore[operator]
    assert r.returncode != 0 and "invalid unique ID 'laptop\\n'" in r.stderr, r
    assert not (home / "sessions" / "lab" / "policy.json").exists()
    (home / "sessions" / "lab" / "policy.json").write_text(
        '{"rules": [{"action": "deny", "name": "bob\\n"}]}'
    )
    r = run("policy", "show", "--session", "lab")  # type: ignore[operator]
    assert r.returncode != 0 and "rule #1: invalid name 'bob\\n'" in r.stderr, r
