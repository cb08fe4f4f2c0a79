"""Friend bundles (PKCS#12) read by openssl, imported into a friend's own store, and the node
unique ID."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from paraconnect.errors import ConfigError, CredentialError
from paraconnect.pki import Store, import_bundle, load_credentials, node_unique_id, share

from .conftest import openssl


def write_pw(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_bundle_is_read_by_openssl(store: Store, tmp_path: Path) -> None:
    session = store.create_session("lab")
    bundle = tmp_path / "alice.p12"
    issued = share(session, "alice", bundle, "s3cret pass")
    assert bundle.stat().st_mode & 0o777 == 0o600
    info = openssl("pkcs12", "-in", str(bundle), "-info", "-noout", "-passin", "pass:s3cret pass")
    assert info.returncode == 0, info.stderr
    assert "AES-256-CBC" in info.stderr + info.stdout
    dump = openssl("pkcs12", "-in", str(bundle), "-nodes", "-passin", "pass:s3cret pass").stdout
    assert dump.count("BEGIN CERTIFICATE") == 2 and "BEGIN PRIVATE KEY" in dump
    wrong = openssl("pkcs12", "-in", str(bundle), "-noout", "-passin", "pass:nope")
    assert wrong.returncode != 0
    # The session records the friend but never keeps the friend's key.
    rec = next(r for r in session.records() if r.name == "alice")
    assert rec.for_friend == "alice" and not rec.key_kept
    assert not (session.issued_dir / f"{issued.record.serial}.key").exists()


def test_friend_imports_into_own_store(store: Store, tmp_path: Path) -> None:
    session = store.create_session("cfd")
    bundle = tmp_path / "bob.p12"
    share(session, "bob", bundle, b"pw for bob")
    friend = Store(tmp_path / "friend-home")
    imported, record = import_bundle(friend, bundle, b"pw for bob")
    assert imported.name == "cfd" and imported.id == session.id and not imported.owner
    assert record.name == "bob" and record.role == "client"
    creds = load_credentials("cfd", role="client", store=friend)
    assert creds.identity.name == "bob" and creds.ca_cert == session.ca_cert
    with pytest.raises(CredentialError, match="has no session key"):
        imported.issue("client", "mallory")
    with pytest.raises(ConfigError, match="already imported"):
        import_bundle(friend, bundle, b"pw for bob")
    # A second bundle of the same session lands in the same local session.
    share(session, "bob2", tmp_path / "bob2.p12", b"pw2")
    again, _ = import_bundle(friend, tmp_path / "bob2.p12", b"pw2")
    assert again.path == imported.path and len(again.records()) == 2


def test_bundle_carries_the_session_level(store: Store, tmp_path: Path) -> None:
    """A friend's imported session gets the owner's level from the session certificate, so
    the two ends agree without being told (an encrypt session stays encrypt)."""
    session = store.create_session("shared", level="encrypt")
    share(session, "carol", tmp_path / "carol.p12", b"pw")
    friend = Store(tmp_path / "friend-home")
    imported, _ = import_bundle(friend, tmp_path / "carol.p12", b"pw")
    assert imported.level.value == "encrypt"
    assert load_credentials(tmp_path / "carol.p12", passphrase=b"pw").level.value == "encrypt"
    out = tmp_path / "pem"
    session.issue("server", "s", out=out)
    assert load_credentials(out).level.value == "encrypt"
    assert load_credentials(out).crl_path == out / "crl.pem"


def test_import_name_clash_needs_as(store: Store, tmp_path: Path) -> None:
    theirs = Store(tmp_path / "their-home").create_session("lab")
    share(theirs, "me", tmp_path / "me.p12", b"pw")
    store.create_session("lab")  # my own, different session of the same name
    with pytest.raises(ConfigError, match="--as NAME"):
        import_bundle(store, tmp_path / "me.p12", b"pw")
    imported, _ = import_bundle(store, tmp_path / "me.p12", b"pw", as_name="their-lab")
    assert imported.name == "their-lab" and imported.id == theirs.id


def test_bundle_wrong_passphrase(store: Store, tmp_path: Path) -> None:
    session = store.create_session("lab")
    share(session, "alice", tmp_path / "a.p12", b"right")
    with pytest.raises(CredentialError, match="wrong passphrase"):
        import_bundle(Store(tmp_path / "f"), tmp_path / "a.p12", b"wrong")
    with pytest.raises(CredentialError, match="encrypted"):
        import_bundle(Store(tmp_path / "f"), tmp_path / "a.p12", None)
    assert not (tmp_path / "f" / "sessions" / "lab").exists()


def test_unique_id_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARACONNECT_UNIQUE_ID", raising=False)
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    uid = node_unique_id(tmp_path / "h", (machine_id,))
    expected = hmac.new(
        bytes.fromhex("3d1219c7c4c5404aaa1f6d2a48adfda4"),
        b"paraconnect node unique id v1",
        hashlib.sha256,
    ).hexdigest()[:32]
    # App-specific: the raw machine ID never appears in a certificate.
    assert uid.value == expected and "3d1219c7" not in uid.value
    assert node_unique_id(tmp_path / "h", (machine_id,)) == uid
    # Fallback: no machine ID -> a random ID kept in the data directory, stable afterwards.
    fallback = node_unique_id(tmp_path / "h2", (tmp_path / "missing",))
    assert fallback.source.endswith("node-id") and len(fallback.value) == 32
    assert node_unique_id(tmp_path / "h2", (tmp_path / "missing",)) == fallback
    assert (tmp_path / "h2" / "node-id").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("PARACONNECT_UNIQUE_ID", "my-node")
    assert node_unique_id(tmp_path / "h", (machine_id,)).value == "my-node"
    monkeypatch.setenv("PARACONNECT_UNIQUE_ID", "bad id!")
    with pytest.raises(ConfigError, match="invalid unique ID"):
        node_unique_id(tmp_path / "h", (machine_id,))
