"""The session CA and what it issues, checked by Debian's openssl as an independent verifier."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from paraconnect.errors import ConfigError, CredentialError
from paraconnect.pki import Identity, KeyType, Role, Store, load_credentials

from .conftest import openssl

KEY_TYPES = ["ec-p256", "ed25519", "rsa-3072"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_session_layout_and_permissions(store: Store) -> None:
    session = store.create_session("lab")
    assert mode(store.home) == 0o700
    assert mode(session.path) == 0o700
    assert mode(session.path / "ca.key") == 0o600
    meta = json.loads((session.path / "session.json").read_text())
    assert meta["name"] == "lab" and meta["level"] == "mutual" and meta["owner"] is True
    assert len(meta["id"]) == 32
    # No staging directories or temporary files are left behind.
    assert [p.name for p in store.sessions_dir.iterdir()] == ["lab"]
    assert not list(session.path.glob(".*.tmp-*"))


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_issued_certificates_verify_with_openssl(store: Store, key_type: str) -> None:
    session = store.create_session(f"s-{key_type}", key_type=key_type)
    ca = session.ca_path
    ca_check = openssl("verify", "-x509_strict", "-CAfile", str(ca), str(ca))
    assert ca_check.returncode == 0, ca_check.stderr
    for role in ("server", "client", "node"):
        issued = session.issue(role, f"{role}1", out=store.home / "out")
        res = openssl(
            "verify", "-x509_strict", "-purpose", "sslserver", "-crl_check",
            "-CAfile", str(ca), "-CRLfile", str(session.crl_path), str(issued.files["cert"]),
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        client = openssl("verify", "-purpose", "sslclient", "-CAfile", str(ca),
                         str(issued.files["cert"]))  # fmt: skip
        assert client.returncode == 0, client.stdout + client.stderr
        assert KeyType(issued.record.key_type) is KeyType(key_type)


def test_leaf_extensions_and_validity(store: Store) -> None:
    session = store.create_session("lab", days=30)
    before = dt.datetime.now(dt.UTC)
    issued = session.issue("server", "node7", days=2)
    cert = issued.cert
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = session.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest and ski.digest != ca_ski.digest
    assert Identity.of(cert) == Identity(session.id, Role.SERVER, "node7")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node7"
    # Backdated a few minutes for clock skew; two days long; timezone-aware.
    skew = before - cert.not_valid_before_utc
    assert dt.timedelta(minutes=4) < skew < dt.timedelta(minutes=6)
    life = cert.not_valid_after_utc - before
    assert dt.timedelta(days=2) - dt.timedelta(minutes=1) < life <= dt.timedelta(days=2)
    assert 0 < cert.serial_number < 2**159
    ca = session.ca_cert
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.subject == ca.issuer and ca.subject.rfc4514_string()


def test_leaf_never_outlives_the_session(store: Store) -> None:
    session = store.create_session("short", days=1)
    issued = session.issue("client", "c", days=30)
    assert issued.cert.not_valid_after_utc <= session.ca_cert.not_valid_after_utc


def test_openssl_text_shows_role_uri(store: Store) -> None:
    session = store.create_session("lab")
    issued = session.issue("client", "alice", out=store.home / "out")
    text = openssl("x509", "-in", str(issued.files["cert"]), "-noout", "-text").stdout
    assert f"URI:paraconnect://{session.id}/client/alice" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "CA:FALSE" in text


def test_node_certificate_carries_unique_id(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    session = store.create_session("lab")
    monkeypatch.setenv("PARACONNECT_UNIQUE_ID", "node-abc")
    issued = session.issue("node", "worker")
    cn = issued.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "node-abc"
    assert Identity.of(issued.cert) == Identity(session.id, Role.NODE, "worker", "node-abc")
    explicit = session.issue("server", "gpu1", unique_id="other-node")
    cn2 = explicit.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn2 == "other-node"


def test_out_directory_files(store: Store) -> None:
    session = store.create_session("lab")
    out = store.home / "creds"
    issued = session.issue("server", "node7", out=out)
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "crl.pem", "node7.crt", "node7.key"]
    assert mode(out / "node7.key") == 0o600
    assert mode(out) == 0o700
    # The key went to --out only: the session keeps the record and certificate, not the key.
    assert issued.key_path is None
    assert not list(session.issued_dir.glob("*.key"))
    creds = load_credentials(out)
    assert creds.identity.name == "node7" and creds.crl is not None
    pub = openssl("pkey", "-in", str(out / "node7.key"), "-pubout").stdout
    pub_from_cert = openssl("x509", "-in", str(out / "node7.crt"), "-noout", "-pubkey").stdout
    assert pub and pub == pub_from_cert


def test_encrypted_session_key(store: Store) -> None:
    session = store.create_session("secret", passphrase=b"correct horse")
    key_pem = (session.path / "ca.key").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in key_pem
    assert openssl("pkey", "-in", str(session.path / "ca.key"), "-passin",
                   "pass:correct horse", "-noout").returncode == 0  # fmt: skip
    with pytest.raises(CredentialError, match="encrypted; give its passphrase"):
        session.issue("server", "s")
    with pytest.raises(CredentialError, match="wrong passphrase") as info:
        session.issue("server", "s", passphrase="wrong")
    assert "BEGIN" not in str(info.value)
    issued = session.issue("server", "s", passphrase=lambda: b"correct horse")
    assert issued.record.name == "s"


def test_revocation_by_name_and_serial(store: Store) -> None:
    session = store.create_session("lab")
    out = store.home / "out"
    alice = session.issue("client", "alice", out=out)
    bob = session.issue("client", "bob", out=out)
    revoked = session.revoke("alice", reason="key_compromise")
    assert [r.serial for r in revoked] == [alice.record.serial]
    res = openssl("verify", "-crl_check", "-CAfile", str(session.ca_path), "-CRLfile",
                  str(session.crl_path), str(alice.files["cert"]))  # fmt: skip
    assert res.returncode != 0 and "certificate revoked" in res.stdout + res.stderr
    ok = openssl("verify", "-crl_check", "-CAfile", str(session.ca_path), "-CRLfile",
                 str(session.crl_path), str(bob.files["cert"]))  # fmt: skip
    assert ok.returncode == 0
    # By serial, with openssl's colon-separated spelling.
    colon = ":".join(bob.record.serial[i : i + 2] for i in range(0, len(bob.record.serial), 2))
    assert [r.name for r in session.revoke(colon)] == ["bob"]
    crl = session.crl()
    assert crl is not None and len(list(crl)) == 2
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
    text = openssl("crl", "-in", str(session.crl_path), "-noout", "-text").stdout
    assert "Key Compromise" in text
    # Revoking again changes nothing; an unknown name is a clear error.
    assert session.revoke("alice") == []
    with pytest.raises(ConfigError, match="no certificate named or numbered 'carol'"):
        session.revoke("carol")
    records = {r.name: r for r in session.records()}
    assert records["alice"].revoked_reason == "key_compromise" and records["bob"].revoked


def test_sessions_list_show_delete(store: Store) -> None:
    store.create_session("a")
    store.create_session("b", level="encrypt", key_type="ed25519")
    assert [s.name for s in store.list_sessions()] == ["a", "b"]
    b = store.open_session("b")
    assert b.level.value == "encrypt" and b.key_type is KeyType.ED25519
    with pytest.raises(ConfigError, match="already exists"):
        store.create_session("a")
    store.delete_session("a")
    assert [s.name for s in store.list_sessions()] == ["b"]
    with pytest.raises(ConfigError, match="no session named 'a'"):
        store.open_session("a")


def test_invalid_names_are_refused(store: Store) -> None:
    for bad in ("", "../x", "a/b", "-x", "x" * 49):
        with pytest.raises(ConfigError, match="invalid session name"):
            store.create_session(bad)
    session = store.create_session("lab")
    with pytest.raises(ConfigError, match="invalid name"):
        session.issue("server", "bad name")
    with pytest.raises(ConfigError, match="unknown role"):
        session.issue("admin", "x")


def test_credentials_from_session_prefer_this_node(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newer certificate issued for another node (to be copied there) must not shadow this
    node's own one: at level mutual it would be refused as a copied certificate."""
    monkeypatch.setenv("PARACONNECT_UNIQUE_ID", "here")
    session = store.create_session("lab")
    session.issue("node", "mine")
    session.issue("client", "for-elsewhere", unique_id="elsewhere")
    assert load_credentials("lab", role="client", store=store).identity.name == "mine"
    assert (
        load_credentials("lab", role="client", store=store, unique_id="elsewhere").identity.name
        == "for-elsewhere"
    )


def test_credentials_from_session_prefer_the_role(store: Store) -> None:
    session = store.create_session("lab")
    session.issue("server", "srv")
    session.issue("client", "cli")
    assert load_credentials("lab", role="server", store=store).identity.name == "srv"
    assert load_credentials("lab", role="client", store=store).identity.name == "cli"
    session.revoke("cli")
    with pytest.raises(CredentialError, match="no valid client certificate"):
        load_credentials("lab", role="client", store=store)
