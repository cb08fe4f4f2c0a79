"""The notebook API's sessions without traps (issue 18): opening is not creating, a session
name is never a path, an encrypted session key takes a Python passphrase, the widgets take a
session object, and ``launcher="manual"`` gives the line to run by hand.  Real sessions on disk
in the test's data directory, a hub embedded in this process, the real ``paraconnect`` command
where the CLI's wording is compared."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

import paraconnect as pc
from paraconnect.api import Hub
from paraconnect.errors import ConfigError, CredentialError, NotFoundError

from .conftest import PARACONNECT

pytest.importorskip("zmq")
pytest_plugins = ["tests.helpers_api"]
pytestmark = pytest.mark.timeout(90)


def _on_disk(home: Path) -> list[str]:
    folder = home / "sessions"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_a_typo_opens_nothing_and_names_the_sessions(api_hub: Hub, home: Path, cli: Any) -> None:
    made = pc.Session.create("cfd-run")
    refusal = r"no session named 'cfd-rnu' \(sessions: 'cfd-run'\); create it with pc.Session"
    with pytest.raises(NotFoundError, match=refusal):
        pc.Session("cfd-rnu")
    for call in (
        lambda: pc.connect_reverse(kind="builtin", session="cfd_run"),
        lambda: pc.connect_forward("127.0.0.1:0", kind="builtin", session="cfd_run"),
        lambda: pc.share("cfd_run", "alice", passphrase="correct horse battery"),
    ):
        with pytest.raises(
            NotFoundError, match=r"no session named 'cfd_run' \(sessions: 'cfd-run'"
        ):
            call()
    assert _on_disk(home) == ["cfd-run"] and api_hub.request("servers") == []
    # The command line refuses the same typo in the same words, with its own way to create.
    shown = cli("session", "show", "cfd-rnu")
    assert shown.returncode != 0
    assert "no session named 'cfd-rnu' (sessions: 'cfd-run'); create it with 'paraconnect" in (
        shown.stderr
    )
    # Creating is asked for by name; an existing name is opened, never made again.
    with pytest.raises(ConfigError, match=r"'cfd-run' already exists; open it with pc\.Session"):
        pc.Session.create("cfd-run")
    assert pc.Session("cfd-run").ca_sha256 == made.ca_sha256
    assert pc.Session("cfd-run", create=True).ca_sha256 == made.ca_sha256
    assert pc.Session("second", create=True, level="encrypt").info["level"] == "encrypt"
    with pytest.raises(ConfigError, match="chosen when a session is created"):
        pc.Session("cfd-run", key_type="ed25519")  # would be silently ignored otherwise
    assert _on_disk(home) == ["cfd-run", "second"]


def test_a_session_name_is_never_read_as_a_path(
    api_hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)  # a scientist's data folder beside the notebook
    (work / "data" / "ca.crt").write_text("not a certificate\n")
    monkeypatch.chdir(work)
    s = pc.Session.create("data")
    assert s.info["phone_home"]  # the hub loaded the session's own credentials, by name
    assert pc.Session("data").ca_sha256 == s.ca_sha256
    assert {c["name"] for c in s.certificates()} == {"hub"}


def _secret_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "passphrase.txt"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_an_encrypted_session_key_takes_a_python_passphrase(
    api_hub: Hub, home: Path, tmp_path: Path, cli: Any
) -> None:
    secret = _secret_file(tmp_path, "a long session passphrase")
    made = cli("session", "create", "sealed", "--passphrase-file", str(secret))
    assert made.returncode == 0, made.stderr
    with pytest.raises(CredentialError) as refused:
        pc.Session("sealed")
    message = str(refused.value)
    assert "pc.Session('sealed', passphrase=FILE)" in message and "--passphrase" not in message
    with pytest.raises(CredentialError, match=r"wrong passphrase for .*ca\.key"):
        pc.Session("sealed", passphrase=lambda: "not the passphrase")
    open_to_all = tmp_path / "open.txt"
    open_to_all.write_text("a long session passphrase\n")
    open_to_all.chmod(0o644)
    with pytest.raises(pc.ParaconnectError, match="passphrase file"):
        pc.Session("sealed", passphrase=open_to_all)
    s = pc.Session("sealed", passphrase=secret)
    assert s.info["ca_key_encrypted"] and s.info["ca_key_unlocked"] and s.info["phone_home"]
    bundle = s.share("alice", "correct horse battery")  # signed with the decrypted key
    assert [f["serial"] for f in s.friends()] == [bundle.serial]
    # The hub now holds the key: opening again needs no passphrase (and asks for none).
    asked: list[int] = []
    assert pc.Session("sealed", passphrase=lambda: asked.append(1) or "x").info["phone_home"]
    assert asked == []


def test_a_new_session_key_is_encrypted_with_the_passphrase_function(
    api_hub: Hub, home: Path
) -> None:
    s = pc.Session.create("vault", passphrase=lambda: b"another long passphrase")
    key = home / "sessions" / "vault" / "ca.key"
    assert b"ENCRYPTED" in key.read_bytes() and key.stat().st_mode & 0o777 == 0o600
    assert s.info["ca_key_encrypted"] and s.info["ca_key_unlocked"]
    s.share("bob", "correct horse battery")
    assert [f["name"] for f in s.friends()] == ["bob"]


def test_widgets_take_a_session_object_or_its_name(api_hub: Hub) -> None:
    pytest.importorskip("ipywidgets")
    from paraconnect.widgets import CredentialsWidget, PhoneHomeWatcher, ShareWidget

    s = pc.Session.create("cfd-run")
    widgets = [CredentialsWidget(s), ShareWidget(s), PhoneHomeWatcher(s)]
    try:
        cw, sw, watcher = widgets
        assert cw.name.value == "cfd-run" and s.ca_sha256 in cw.summary.value
        assert sw.session == "cfd-run" and watcher.session == "cfd-run"
        assert CredentialsWidget("cfd-run").name.value == "cfd-run"
        with pytest.raises(TypeError, match=r"its name or a pc\.Session"):
            ShareWidget(42)  # type: ignore[arg-type]
    finally:
        for widget in widgets:
            widget.close()


def test_the_manual_launcher_returns_the_line_to_run(api_hub: Hub, tmp_path: Path) -> None:
    pytest.importorskip("vtk")
    s = pc.Session.create("lab")
    with pytest.raises(ConfigError, match="started by hand phones home: use connect_reverse"):
        pc.connect_forward("127.0.0.1:0", kind="builtin", launcher="manual", session=s)
    with pytest.raises(ConfigError, match="manual takes no launcher options \\(given: host\\)"):
        pc.connect_reverse(kind="builtin", launcher="manual", session=s, host="node7")
    srv = pc.connect_reverse(kind="builtin", launcher="manual", session=s)
    assert srv.state == "submitted" and srv.info["launcher"] == "manual"
    line = srv.agent_line
    assert line is not None and line.startswith("PARACONNECT_ENROLL_TOKEN=")
    assert " paraconnect serve " in line and "Run this on the remote host before" in srv.note
    # Run it by hand, as on the remote host (paraconnect on PATH there).
    env = {**os.environ, "PATH": f"{Path(PARACONNECT).parent}:{os.environ['PATH']}"}
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        ["sh", "-c", line], env=env, stdout=log, stderr=log, start_new_session=True, cwd=tmp_path
    )
    try:
        srv.wait_connected(timeout=60, quiet=True)
        assert srv.local and srv.stop(grace=5)["state"] == "stopped"
    finally:
        os.killpg(agent.pid, signal.SIGTERM)  # the shell, the agent and its renderer
        agent.wait(timeout=60)
        log.close()


def test_the_note_keeps_its_sentences_apart(api_hub: Hub) -> None:
    s = pc.Session.create("paraview")
    srv = pc.connect_reverse(kind="pvserver", launcher="manual", session=s)
    lines = srv.note.splitlines()
    assert len(lines) == 3 and all(line.endswith(".") for line in lines), srv.note
    assert lines[0].endswith("NOT kept between clients.")
    assert lines[1].startswith("Connect ParaView: pvpython") and "simple.Connect(" in lines[1]
    assert lines[2].startswith("Run this on the remote host before")
    srv.stop(grace=1)
