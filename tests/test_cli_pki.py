"""The command-line contract of the credential commands, run as the real installed program."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import openssl

COMMANDS = [
    [], ["session"], ["session", "create"], ["session", "list"], ["session", "show"],
    ["session", "delete"], ["issue"], ["share"], ["import"], ["revoke"], ["inspect"],
    ["unique-id"], ["demo"],
]  # fmt: skip


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "top")
def test_help(cli: Any, words: list[str]) -> None:
    res = cli(*words, "--help")
    assert res.returncode == 0 and "usage: paraconnect" in res.stdout


def test_full_round_trip(cli: Any, tmp_path: Path) -> None:
    res = cli("session", "create", "cfd", "--key-type", "ed25519", "--level", "encrypt", "--json")
    assert res.returncode == 0, res
    info = json.loads(res.stdout)
    assert info["name"] == "cfd" and info["level"] == "encrypt" and info["key_type"] == "ed25519"

    out = tmp_path / "srv"
    res = cli("issue", "server", "node7", "--session", "cfd", "--out", str(out), "--json")
    assert res.returncode == 0, res
    issued = json.loads(res.stdout)
    assert Path(issued["files"]["key"]).stat().st_mode & 0o777 == 0o600
    ok = openssl("verify", "-CAfile", str(out / "ca.crt"), str(out / "node7.crt"))
    assert ok.returncode == 0

    res = cli("share", "alice", "--session", "cfd", "--out", str(tmp_path / "alice.p12"), "--json")
    assert res.returncode == 0, res
    shared = json.loads(res.stdout)
    passphrase = shared["passphrase"]  # generated, shown once
    assert len(passphrase) >= 20

    friend_home = tmp_path / "friend"
    res = cli("import", str(tmp_path / "alice.p12"), "--passphrase-file", "-",
              input=passphrase + "\n", env={"PARACONNECT_HOME": str(friend_home)})  # fmt: skip
    assert res.returncode == 0, res
    assert "imported client certificate 'alice' into session 'cfd'" in res.stdout

    res = cli("session", "show", "cfd", "--json")
    shown = json.loads(res.stdout)
    assert sorted(r["name"] for r in shown["issued"]) == ["alice", "node7"]

    res = cli("revoke", "alice", "--session", "cfd", "--reason", "cessation_of_operation")
    assert res.returncode == 0 and "REVOKED" in res.stdout

    res = cli("inspect", str(out / "node7.crt"), "--json")
    described = json.loads(res.stdout)["certificates"][0]
    assert described["role"] == "server" and described["session"] == "cfd"
    assert described["revoked"] == "no" and described["validity"].startswith("valid")

    res = cli("session", "list", "--json")
    assert [s["name"] for s in json.loads(res.stdout)] == ["cfd"]
    res = cli("session", "delete", "cfd")
    assert res.returncode == 0
    assert json.loads(cli("session", "list", "--json").stdout) == []


def test_inspect_reports_revocation_and_foreign_session(cli: Any, tmp_path: Path) -> None:
    assert cli("session", "create", "a").returncode == 0
    assert cli("session", "create", "b").returncode == 0
    cli("issue", "client", "x", "--session", "a", "--out", str(tmp_path / "x"))
    cli("revoke", "x", "--session", "a", "--reason", "key_compromise")
    res = cli("inspect", str(tmp_path / "x" / "x.crt"), "--session", "b")
    assert res.returncode == 0, res
    assert "revoked       yes" in res.stdout and "key_compromise" in res.stdout
    assert "NOT issued by session 'b'" in res.stdout
    res = cli("inspect", str(tmp_path / "x" / "x.key"))
    assert "private key (never printed)" in res.stdout and "BEGIN" not in res.stdout
    res = cli("inspect", str(tmp_path / "x" / "crl.pem"), "--json")
    assert json.loads(res.stdout)["kind"] == "certificate revocation list"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "/nonexistent/file.crt"], "does not exist"),
        (["session", "show", "ghost"], "no session named 'ghost'"),
        (["issue", "server", "x", "--session", "ghost"], "no session named 'ghost'"),
        (["session", "create", "../evil"], "invalid session name"),
        (["revoke", "nobody", "--session", "lab"], "no certificate named or numbered"),
        (["issue", "server", "x", "--session", "lab", "--days", "-1"], "must be positive"),
        (
            ["share", "f", "--session", "lab", "--out", "/nonexistent/dir/f.p12"],
            "directory /nonexistent/dir does not exist",
        ),
    ],
)
def test_errors_are_one_line(cli: Any, args: list[str], message: str) -> None:
    assert cli("session", "create", "lab").returncode == 0
    res = cli(*args)
    assert res.returncode == 1
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paraconnect: error: "), res.stderr
    assert message in lines[0]
    assert "Traceback" not in res.stderr
    # A failed command records nothing: the session still holds no certificate.
    assert json.loads(cli("session", "show", "lab", "--json").stdout)["issued"] == []


def test_passphrase_file_must_be_private(cli: Any, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2 hunter2\n")
    pw.chmod(0o644)
    res = cli("session", "create", "enc", "--passphrase-file", str(pw))
    assert res.returncode == 1 and "chmod 600" in res.stderr
    pw.chmod(0o600)
    assert cli("session", "create", "enc", "--passphrase-file", str(pw)).returncode == 0
    res = cli("issue", "server", "s", "--session", "enc")
    assert res.returncode == 1 and "encrypted; give its passphrase" in res.stderr
    res = cli("issue", "server", "s", "--session", "enc", "--passphrase-file", str(pw))
    assert res.returncode == 0, res


def test_share_names_the_session_key_flag(cli: Any, tmp_path: Path) -> None:
    """In share, --passphrase-file is the bundle's: a missing session-key passphrase must name
    --ca-passphrase-file, in one line, and write no bundle."""
    pw = tmp_path / "pw"
    pw.write_text("hunter2 hunter2\n")
    pw.chmod(0o600)
    assert cli("session", "create", "enc", "--passphrase-file", str(pw)).returncode == 0
    out = tmp_path / "bob.p12"
    res = cli("share", "bob", "--session", "enc", "--out", str(out), "--passphrase-file", str(pw))
    assert res.returncode == 1 and not out.exists()
    [line] = res.stderr.strip().splitlines()
    assert "--ca-passphrase-file" in line and "(--passphrase-file FILE)" not in line, line
    res = cli("share", "bob", "--session", "enc", "--out", str(out), "--passphrase-file", str(pw),
              "--ca-passphrase-file", str(pw))  # fmt: skip
    assert res.returncode == 0 and out.exists(), res


def test_unique_id_command(cli: Any) -> None:
    res = cli("unique-id", env={"PARACONNECT_UNIQUE_ID": "node-42"})
    assert res.stdout.strip() == "node-42"
    res = cli("unique-id", "--json")
    data = json.loads(res.stdout)
    assert len(data["unique_id"]) == 32 and data["source"]
