"""`paraconnect debug creds`: each problem with our own credentials is named, with its fix."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from paraconnect.debug import Report, Status, diagnose_creds
from paraconnect.pki import Session, Store

NODE = "node-a"


def _out(session: Session, role: str, name: str, tmp_path: Path, **kw: object) -> Path:
    out = tmp_path / name
    session.issue(role, name, unique_id=NODE, out=out, **kw)  # type: ignore[arg-type]
    return out


def _failed(report: Report) -> list[str]:
    return [s.name for s in report.steps if s.status is Status.FAIL]


def test_good_pem_directory_passes_every_step(session: Session, tmp_path: Path) -> None:
    out = _out(session, "client", "alice", tmp_path)
    report = diagnose_creds(out, role="client", unique_id=NODE)
    assert report.passed, report.render()
    names = [s.name for s in report.steps]
    for name in ("files", "key-file", "key-matches", "chain", "validity", "role", "unique-id"):
        assert name in names
    assert report.step("unique-id").status is Status.PASS


def test_key_readable_by_others_is_named_with_chmod(session: Session, tmp_path: Path) -> None:
    out = _out(session, "client", "alice", tmp_path)
    os.chmod(out / "alice.key", 0o644)
    report = diagnose_creds(out, unique_id=NODE)
    step = report.step("key-file")
    assert step.status is Status.FAIL
    assert "mode 0644" in step.reason and "group/others" in step.reason
    assert step.fix == f"chmod 600 {out / 'alice.key'}"
    # The other checks still ran: everything else about these credentials is fine.
    assert report.step("key-matches").status is Status.PASS
    assert "BEGIN" not in report.render()  # the key itself is never printed


def test_key_not_matching_the_certificate(session: Session, tmp_path: Path) -> None:
    out = _out(session, "client", "alice", tmp_path)
    other = _out(session, "client", "bob", tmp_path)
    (out / "alice.key").write_bytes((other / "bob.key").read_bytes())
    report = diagnose_creds(out, unique_id=NODE)
    step = report.step("key-matches")
    assert step.status is Status.FAIL
    assert "does NOT match" in step.reason
    assert "issued with this certificate" in (step.fix or "")


def test_expired_certificate_explains_the_clock(session: Session, tmp_path: Path) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    out = _out(session, "client", "old", tmp_path, days=1, now=past)
    report = diagnose_creds(out, unique_id=NODE)
    step = report.step("validity")
    assert step.status is Status.FAIL
    assert "expired at" in step.reason and "ago by this machine's clock" in step.reason
    assert step.details["clock_difference_s"] < -8 * 86400
    assert "paraconnect issue" in (step.fix or "")


def test_not_yet_valid_certificate_blames_a_clock(session: Session, tmp_path: Path) -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    out = _out(session, "client", "early", tmp_path, now=future)
    report = diagnose_creds(out, unique_id=NODE)
    step = report.step("validity")
    assert step.status is Status.FAIL
    assert "not valid until" in step.reason and "ahead of this machine's clock" in step.reason
    assert "1 d 23 h" in step.reason
    assert "time synchronisation" in (step.fix or "")


def test_expiring_within_a_day_is_a_warning(session: Session, tmp_path: Path) -> None:
    out = _out(session, "client", "short", tmp_path, days=0.5)
    report = diagnose_creds(out, unique_id=NODE)
    assert report.passed
    step = report.step("validity")
    assert step.status is Status.WARN and "expires in" in step.reason


def test_copied_node_certificate(session: Session, tmp_path: Path) -> None:
    out = _out(session, "client", "alice", tmp_path)
    report = diagnose_creds(out, unique_id="another-machine")
    step = report.step("unique-id")
    assert step.status is Status.FAIL
    assert "COPIED certificate" in step.reason
    assert "node-a" in step.reason and "another-machine" in step.reason


def test_unbound_certificate_at_level_mutual(session: Session, tmp_path: Path) -> None:
    out = tmp_path / "loose"
    session.issue("client", "loose", out=out)  # no unique ID
    step = diagnose_creds(out, unique_id=NODE).step("unique-id")
    assert step.status is Status.FAIL and "not bound to a node" in step.reason


def test_revoked_certificate_in_the_list_beside_it(session: Session, tmp_path: Path) -> None:
    out = _out(session, "client", "alice", tmp_path)
    session.revoke("alice", reason="key_compromise")
    (out / "crl.pem").write_bytes(session.crl_path.read_bytes())
    report = diagnose_creds(out, unique_id=NODE)
    step = report.step("revoked")
    assert step.status is Status.FAIL
    assert "REVOKED" in step.reason and "keyCompromise" in step.reason


def test_stale_revocation_list_is_a_warning(session: Session, tmp_path: Path) -> None:
    session.issue("client", "eve", unique_id=NODE)
    session.revoke("eve")
    out = _out(session, "client", "alice", tmp_path)  # carries the CRL with eve
    session.issue("client", "mallory", unique_id=NODE)
    session.revoke("mallory")  # the session's list moves on; the copy does not
    step = diagnose_creds(out, unique_id=NODE).step("crl")
    assert step.status is Status.WARN and "older than the session's" in step.reason


def test_wrong_role_for_the_command(session: Session, tmp_path: Path) -> None:
    out = _out(session, "client", "alice", tmp_path)
    step = diagnose_creds(out, role="server", unique_id=NODE).step("role")
    assert step.status is Status.FAIL
    assert "client certificate ('alice') cannot act as a server" in step.reason


def test_peer_ca_of_another_session(session: Session, store: Store, tmp_path: Path) -> None:
    other = store.create_session("other")
    out = _out(session, "client", "alice", tmp_path)
    report = diagnose_creds(out, peer_ca=other.ca_path, unique_id=NODE)
    step = report.step("peer-ca")
    assert step.status is Status.FAIL
    assert other.ca_fingerprint in step.reason and session.ca_fingerprint in step.reason
    assert diagnose_creds(out, peer_ca=session.ca_path, unique_id=NODE).passed


def test_session_with_only_expired_certificates(session: Session) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    session.issue("client", "old", unique_id=NODE, days=1, now=past)
    report = diagnose_creds("lab", role="client", unique_id=NODE)
    assert report.step("validity").status is Status.FAIL
    assert not report.passed


def test_cli_creds_json_and_exit_codes(cli: object, session: Session, tmp_path: Path) -> None:
    out = _out(session, "client", "alice", tmp_path)
    ok = cli("debug", "creds", str(out), "--json", env={"PARACONNECT_UNIQUE_ID": NODE})  # type: ignore[operator]
    assert ok.returncode == 0, ok
    data = json.loads(ok.stdout)
    assert data["ok"] is True and {s["status"] for s in data["steps"]} <= {"PASS", "WARN"}
    os.chmod(out / "alice.key", 0o640)
    bad = cli("debug", "creds", str(out), env={"PARACONNECT_UNIQUE_ID": "elsewhere"})  # type: ignore[operator]
    assert bad.returncode == 1, bad
    assert "FAIL  key-file" in bad.stdout and "chmod 600" in bad.stdout
    assert "COPIED certificate" in bad.stdout
