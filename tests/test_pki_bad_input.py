"""Bad input gets a clear one-line error naming the file and the fix, and loses nothing."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from paraconnect.errors import CredentialError, StorageError, TrustError
from paraconnect.pki import Session, Store, load_credentials
from paraconnect.pki._certs import parse_pem_certificates

from .conftest import PARACONNECT


@pytest.fixture
def creds_dir(session: Session, tmp_path: Path) -> Path:
    out = tmp_path / "creds"
    session.issue("server", "node7", out=out)
    return out


def test_truncated_pem(creds_dir: Path) -> None:
    cert = creds_dir / "node7.crt"
    cert.write_bytes(cert.read_bytes()[:200])
    with pytest.raises(CredentialError, match=r"node7\.crt is not a PEM certificate \(it is trunc"):
        load_credentials(creds_dir)


def test_garbage_pem(creds_dir: Path) -> None:
    (creds_dir / "node7.crt").write_bytes(os.urandom(300))
    with pytest.raises(CredentialError, match=r"node7\.crt is not a PEM certificate"):
        load_credentials(creds_dir)
    body = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(CredentialError, match="corrupt PEM certificate"):
        parse_pem_certificates(body, "x.crt")


def test_valid_pem_followed_by_garbage(creds_dir: Path) -> None:
    cert = creds_dir / "node7.crt"
    cert.write_bytes(cert.read_bytes() + b"trailing junk\n")
    with pytest.raises(CredentialError, match="unexpected data besides its PEM certificate"):
        load_credentials(creds_dir)


def test_missing_file(creds_dir: Path) -> None:
    (creds_dir / "node7.key").unlink()
    with pytest.raises(Exception, match=r"exactly one NAME\.crt with its NAME\.key"):
        load_credentials(creds_dir)
    with pytest.raises(CredentialError, match=r"credentials .*nowhere\.p12 do not exist"):
        load_credentials(creds_dir / "nowhere.p12")


def test_key_not_matching_certificate(session: Session, creds_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    session.issue("server", "node7", out=other)
    shutil.copy(other / "node7.key", creds_dir / "node7.key")
    with pytest.raises(CredentialError, match="private key does not match the certificate"):
        load_credentials(creds_dir)


def test_certificate_from_another_session(creds_dir: Path, tmp_path: Path) -> None:
    stranger = Store(tmp_path / "elsewhere").create_session("lab")
    shutil.copy(stranger.ca_path, creds_dir / "ca.crt")
    with pytest.raises(TrustError, match="belongs to another session"):
        load_credentials(creds_dir)


def test_crl_signed_by_another_ca(creds_dir: Path, tmp_path: Path) -> None:
    stranger = Store(tmp_path / "elsewhere").create_session("lab")
    shutil.copy(stranger.crl_path, creds_dir / "crl.pem")
    with pytest.raises(TrustError, match=r"crl\.pem is not signed by the session CA"):
        load_credentials(creds_dir)


def test_wrong_passphrase_never_echoes_the_key(store: Store) -> None:
    session = store.create_session("enc", passphrase="right")
    with pytest.raises(CredentialError) as info:
        session.issue("client", "c", passphrase="wrong")
    assert "wrong passphrase" in str(info.value) and "ca.key" in str(info.value)
    assert "PRIVATE" not in str(info.value)


def test_key_readable_by_others(creds_dir: Path) -> None:
    (creds_dir / "node7.key").chmod(0o644)
    with pytest.raises(CredentialError, match=r"readable by group/others.*chmod 600"):
        load_credentials(creds_dir)


def test_symlinked_key(creds_dir: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    (creds_dir / "node7.key").rename(real)
    (creds_dir / "node7.key").symlink_to(real)
    with pytest.raises(CredentialError, match="is a symbolic link"):
        load_credentials(creds_dir)


def test_session_directory_owned_by_someone_else(store: Store, session: Session) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a directory to another user")
    os.chown(session.path, 65534, 65534)
    try:
        with pytest.raises(CredentialError, match=r"belongs to uid 65534, not to you"):
            store.open_session("lab")
    finally:
        os.chown(session.path, 0, 0)


def test_session_directory_open_to_others(store: Store, session: Session) -> None:
    session.path.chmod(0o755)
    with pytest.raises(CredentialError, match="chmod 700"):
        store.open_session("lab")


def test_corrupt_session_file(store: Store, session: Session) -> None:
    (session.path / "session.json").write_text("{not json")
    with pytest.raises(CredentialError, match=r"session\.json is corrupt"):
        store.open_session("lab")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, so that writes fail with a real ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=700", "tmpfs", str(mnt)],
                   check=True)  # fmt: skip
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(directory: Path) -> None:
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "filler"
    }


def test_disk_full_loses_nothing(small_disk: Path) -> None:
    store = Store(small_disk / "home")
    session = store.create_session("lab")
    session.issue("client", "alice")
    before = _snapshot(store.home)
    _fill(small_disk)
    with pytest.raises(StorageError, match=r"disk full while writing .*\(nothing was changed\)"):
        session.issue("client", "bob")
    with pytest.raises(StorageError, match="disk full"):
        session.revoke("alice")
    with pytest.raises(StorageError, match="disk full"):
        store.create_session("another")
    after = _snapshot(store.home)
    after.pop("sessions/lab/.lock", None)
    before.pop("sessions/lab/.lock", None)
    assert after == before  # every old file intact, byte for byte, and no new file
    assert [r.name for r in session.records()] == ["alice"] and not session.records()[0].revoked
    (small_disk / "filler").unlink()
    assert session.issue("client", "bob").record.name == "bob"


def test_thousand_concurrent_issuances(store: Store, session: Session) -> None:
    """4 processes x 250 issuances on 10 threads each: all serials unique, the record complete."""
    script = textwrap.dedent(
        """
        import sys
        from concurrent.futures import ThreadPoolExecutor
        from pathlib import Path
        from paraconnect.pki import Store
        session = Store(Path(sys.argv[1])).open_session("lab")
        tag = sys.argv[2]
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(lambda i: session.issue("client", f"c{tag}-{i}"), range(250)))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(store.home), str(n)]) for n in range(4)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    records = session.records()
    assert len(records) == 1000
    assert len({r.serial for r in records}) == 1000
    assert len({r.name for r in records}) == 1000
    files = list(session.issued_dir.iterdir())
    assert len([f for f in files if f.suffix == ".crt"]) == 1000
    assert len([f for f in files if f.suffix == ".key"]) == 1000
    assert not [f for f in files if ".tmp-" in f.name]


def test_certificate_not_yet_valid_explains_clock_skew(session: Session, tmp_path: Path) -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)
    session.issue("server", "later", out=tmp_path / "later", now=future)
    creds = load_credentials(tmp_path / "later")
    with pytest.raises(CredentialError, match=r"not valid until .*clock is probably behind"):
        creds.check()


def test_faketime_clock_behind(cli: object, session: Session, tmp_path: Path) -> None:
    """The real program under libfaketime, a day in the past: inspect explains the skew."""
    if shutil.which("faketime") is None:
        pytest.fail("faketime is missing: run 'make system-deps'")
    session.issue("server", "node7", out=tmp_path / "c")
    proc = subprocess.run(
        ["faketime", "-f", "-1d", PARACONNECT, "inspect", str(tmp_path / "c" / "node7.crt")],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PARACONNECT_HOME": str(session.path.parent.parent)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "is not valid until" in proc.stdout and "clock is probably behind" in proc.stdout
