"""The on-disk store: one directory per session, every write atomic, issuance under a lock.

Layout of ``<home>/sessions/<name>/`` (directories 0700, keys 0600)::

    session.json          id, name, level, key type, owner or imported
    ca.crt                the session certificate (self-signed CA)
    ca.key                the session key (owner only; optionally passphrase-encrypted), unless
                          the key is in a PKCS#11 token: session.json's ca_key names it then
    crl.pem               the signed revocation list: the single source of truth for revocation
    issued/<serial>.crt   every certificate issued, by serial (hex)
    issued/<serial>.key   its key, when this store keeps it (not for friends' bundles)
    issued/<serial>.json  the record (who, role, serial, validity, when, for whom); written last
    .lock                 flock: issuance and revocation are serialised across threads/processes
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

from cryptography import x509

from .._fs import ensure_private_dir, locked, read_private, read_public, write_atomic
from ..errors import ConfigError, CredentialError
from ._certs import (
    Identity,
    RevokedEntry,
    Role,
    build_ca,
    build_crl,
    build_leaf,
    check_name,
    check_unique_id,
    fingerprint,
    load_crl,
    parse_pem_certificates,
    pem,
    revocation_reason,
    revoked_entry,
)
from ._keys import (
    KeyType,
    Passphrase,
    PrivateKey,
    PublicKey,
    dump_private_key,
    generate_key,
    load_private_key,
    resolve_passphrase,
)
from ._names import no_such_session
from ._records import (
    DEFAULT_CA_DAYS,
    DEFAULT_LEAF_DAYS,
    FORMAT,
    Issued,
    Record,
    SecurityLevel,
    default_home,
    revocation_flag,
    utcnow,
)
from ._signer import FileSigner, Signer
from ._uniqueid import UniqueId, node_unique_id

__all__ = [
    "DEFAULT_CA_DAYS",
    "DEFAULT_LEAF_DAYS",
    "Issued",
    "Record",
    "SecurityLevel",
    "Session",
    "Store",
    "default_home",
]


class Session:
    """One session directory: its CA, everything it issued, and its revocation list."""

    def __init__(self, path: Path) -> None:
        self.path = path
        meta_path = path / "session.json"
        try:
            meta = json.loads(read_public(meta_path, "session file"))
            self.id: str = meta["id"]
            self.name: str = meta["name"]
            self.level = SecurityLevel.parse(meta["level"])
            self.key_type = KeyType.parse(meta["key_type"])
            self.owner: bool = bool(meta["owner"])
            self.ca_key_encrypted: bool = bool(meta.get("ca_key_encrypted", False))
            # A PKCS#11 URI when the session key is in a token (no ca.key then).
            self.ca_key_uri: str | None = meta.get("ca_key")
            self.created: str = meta["created"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CredentialError(
                f"{meta_path} is corrupt ({exc.__class__.__name__}); restore it from a backup "
                "or delete the session"
            ) from None
        self._ca_cert: x509.Certificate | None = None
        # Decrypted by Store.unlock: a long-running hub keeps it rather than ask at every issue.
        self.unlocked_key: PrivateKey | None = None

    def __repr__(self) -> str:
        return f"Session({self.name!r}, id={self.id!r}, level={self.level.value})"

    # -- reading -------------------------------------------------------------------------

    @property
    def ca_path(self) -> Path:
        return self.path / "ca.crt"

    @property
    def crl_path(self) -> Path:
        return self.path / "crl.pem"

    @property
    def issued_dir(self) -> Path:
        return self.path / "issued"

    @property
    def ca_cert(self) -> x509.Certificate:
        if self._ca_cert is None:
            certs = parse_pem_certificates(
                read_public(self.ca_path, "session certificate"), self.ca_path
            )
            self._ca_cert = certs[0]
        return self._ca_cert

    @property
    def ca_fingerprint(self) -> str:
        return fingerprint(self.ca_cert)

    def crl(self) -> x509.CertificateRevocationList | None:
        return load_crl(self.crl_path, self.ca_cert)

    def revocation_of(self, serial: int) -> x509.RevokedCertificate | None:
        crl = self.crl()
        return None if crl is None else revoked_entry(crl, serial)

    def records(self) -> list[Record]:
        revoked: dict[str, tuple[str, str]] = {}
        crl = self.crl()
        if crl is not None:
            for entry in crl:
                revoked[format(entry.serial_number, "x")] = (
                    entry.revocation_date_utc.isoformat(),
                    revocation_reason(entry).name,
                )
        out: list[Record] = []
        if not self.issued_dir.is_dir():
            return out
        for meta in sorted(self.issued_dir.glob("*.json")):
            try:
                data = json.loads(read_public(meta, "certificate record"))
                rec = Record(**{k: v for k, v in data.items() if k in Record.__slots__})
            except (ValueError, TypeError) as exc:
                raise CredentialError(
                    f"{meta} is corrupt ({exc.__class__.__name__}); move it away and retry"
                ) from None
            if rec.serial in revoked:
                at, why = revoked[rec.serial]
                rec = replace(rec, revoked_at=at, revoked_reason=why)
            out.append(rec)
        out.sort(key=lambda r: r.issued_at)
        return out

    def find(self, name_or_serial: str) -> list[Record]:
        """Records matching a serial (hex, ':' allowed) first, else a name."""
        records = self.records()
        wanted = name_or_serial.lower().replace(":", "").removeprefix("0x").lstrip("0")
        by_serial = [r for r in records if r.serial == wanted]
        if by_serial:
            return by_serial
        return [r for r in records if r.name == name_or_serial]

    def load_ca_key(self, passphrase: Passphrase | None = None) -> PrivateKey:
        if not self.owner:
            raise CredentialError(
                f"session {self.name!r} was imported from a bundle: it has no session key, "
                "so it cannot issue or revoke; ask the session's owner"
            )
        if self.ca_key_uri is not None:
            raise CredentialError(
                f"the session key of {self.name!r} is in a PKCS#11 token ({self.ca_key_uri}) "
                "and never leaves it; sign with Session.signer()"
            )
        key_path = self.path / "ca.key"
        secret = resolve_passphrase(passphrase)
        if secret is None and self.unlocked_key is not None:
            return self.unlocked_key
        if self.ca_key_encrypted and secret is None:
            raise CredentialError(
                f"the session key of {self.name!r} ({key_path}) is encrypted; give its "
                "passphrase (--passphrase-file FILE)"
            )
        return load_private_key(read_private(key_path, "session key"), key_path, secret)

    def signer(self, passphrase: Passphrase | None = None) -> Signer:
        """What signs for this session: its key file's key, or its key in a PKCS#11 token."""
        if self.ca_key_uri is None or not self.owner:
            return FileSigner(self.load_ca_key(passphrase), f"the session key of {self.name!r}")
        if passphrase is not None:
            raise ConfigError(
                f"the session key of {self.name!r} is in a PKCS#11 token: it has a PIN (read "
                "from the session's PIN file), not a passphrase; drop the passphrase"
            )
        from ._token import TokenSigner, TokenUri

        uri = TokenUri.parse(self.ca_key_uri, f"{self.path / 'session.json'}: ca_key")
        return TokenSigner(uri, self.ca_cert.public_key(), f"the session key of {self.name!r}")  # type: ignore[arg-type]

    def info(self) -> dict[str, object]:
        ca = self.ca_cert
        return {
            "name": self.name,
            "id": self.id,
            "level": self.level.value,
            "key_type": self.key_type.value,
            "owner": self.owner,
            "created": self.created,
            "path": str(self.path),
            "ca_sha256": self.ca_fingerprint,
            "ca_not_after": ca.not_valid_after_utc.isoformat(),
            "ca_key_encrypted": self.ca_key_encrypted,
            "ca_key": self.ca_key_uri or "file",
        }

    # -- writing -------------------------------------------------------------------------

    def _lock(self) -> AbstractContextManager[None]:
        return locked(self.path / ".lock")

    def issue(
        self, role: Role | str, name: str, *, unique_id: str | None = None,
        days: float = DEFAULT_LEAF_DAYS, key_type: KeyType | str | None = None,
        out: Path | None = None, for_friend: str | None = None, keep_key: bool = True,
        passphrase: Passphrase | None = None, now: dt.datetime | None = None,
    ) -> Issued:  # fmt: skip
        """Issue a certificate signed by the session key and record it.

        A `node` certificate is bound to a unique ID (this machine's unless one is given);
        a `server` or `client` certificate is bound only if `unique_id` is given.
        """
        ktype = KeyType.parse(key_type) if key_type else self.key_type
        key = generate_key(ktype)
        record, cert, cert_path, key_path = self._certify(
            role, name, key.public_key(), ktype.value, unique_id=unique_id, days=days,
            for_friend=for_friend, key=key if keep_key and out is None else None,
            passphrase=passphrase, now=now,
        )  # fmt: skip
        files: dict[str, Path] = {}
        if out is not None:
            files = self.export(out, name, cert, key)
        return Issued(record, cert, key, cert_path, key_path, files)

    def certify(
        self,
        role: Role | str,
        name: str,
        public_key: PublicKey,
        *,
        unique_id: str | None = None,
        days: float = DEFAULT_LEAF_DAYS,
        passphrase: Passphrase | None = None,
        now: dt.datetime | None = None,
    ) -> tuple[Record, x509.Certificate]:
        """Certify a key made elsewhere (an agent's enrolment CSR): recorded like any issued
        certificate, without a key, so that revocation finds it."""
        record, cert, _path, _key = self._certify(
            role, name, public_key, "enrolled", unique_id=unique_id, days=days,
            for_friend=None, key=None, passphrase=passphrase, now=now,
        )  # fmt: skip
        return record, cert

    def _certify(
        self, role: Role | str, name: str, public_key: PublicKey, key_type: str, *,
        unique_id: str | None, days: float, for_friend: str | None, key: PrivateKey | None,
        passphrase: Passphrase | None, now: dt.datetime | None,
    ) -> tuple[Record, x509.Certificate, Path, Path | None]:  # fmt: skip
        """Check, sign and record one certificate (and `key`, if it is to be kept), all its
        files or none, under the session's lock."""
        role = Role.parse(role)
        if role is Role.SESSION:
            raise ConfigError("the session certificate is made by 'session create', not issued")
        check_name(name)
        if days <= 0:
            raise ConfigError(f"--days must be positive, not {days}")
        if role is Role.NODE and unique_id is None:
            unique_id = Store(self.path.parent.parent).unique_id().value
        if unique_id is not None:
            check_unique_id(unique_id)
        ca_key = self.signer(passphrase)
        ca_cert = self.ca_cert
        now = now or utcnow()
        if ca_cert.not_valid_after_utc <= now:
            raise CredentialError(
                f"session {self.name!r} expired at {ca_cert.not_valid_after_utc:%Y-%m-%d %H:%M} "
                "UTC; create a new session"
            )
        identity = Identity(self.id, role, name, unique_id)
        cert = build_leaf(ca_key, ca_cert, public_key, identity, days, now=now)
        serial = format(cert.serial_number, "x")
        record = Record(
            serial=serial,
            name=name,
            role=role.value,
            unique_id=unique_id,
            key_type=key_type,
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
            issued_at=now.isoformat(),
            for_friend=for_friend,
            sha256=fingerprint(cert),
            key_kept=key is not None,
        )
        cert_path = self.issued_dir / f"{serial}.crt"
        key_path = self.issued_dir / f"{serial}.key" if key is not None else None
        written: list[Path] = []
        with self._lock():
            ensure_private_dir(self.issued_dir)
            try:
                for path, data, mode in (
                    (cert_path, pem(cert), 0o644),
                    (key_path, dump_private_key(key) if key is not None else b"", 0o600),
                    (
                        self.issued_dir / f"{serial}.json",
                        json.dumps(record.as_dict(), indent=1).encode(),
                        0o644,
                    ),
                ):
                    if path is None:
                        continue
                    write_atomic(path, data, mode=mode, exclusive=True)
                    written.append(path)
            except BaseException:
                # Leave nothing half-issued behind: the record is written last, so an
                # issuance either has all its files or none of them.
                for path in written:
                    path.unlink(missing_ok=True)
                raise
        return record, cert, cert_path, key_path

    def export(
        self, out: Path, name: str, cert: x509.Certificate, key: PrivateKey
    ) -> dict[str, Path]:
        """Write NAME.crt, NAME.key (0600), ca.crt and crl.pem into `out` for other programs."""
        if not out.exists():
            ensure_private_dir(out)
        files = {
            "cert": out / f"{name}.crt",
            "key": out / f"{name}.key",
            "ca": out / "ca.crt",
            "crl": out / "crl.pem",
        }
        write_atomic(files["key"], dump_private_key(key), mode=0o600)
        write_atomic(files["cert"], pem(cert), mode=0o644)
        write_atomic(files["ca"], pem(self.ca_cert), mode=0o644)
        if self.crl_path.exists():
            write_atomic(files["crl"], read_public(self.crl_path), mode=0o644)
        else:
            del files["crl"]
        return files

    def revoke(
        self,
        name_or_serial: str,
        *,
        reason: str | None = None,
        passphrase: Passphrase | None = None,
        now: dt.datetime | None = None,
    ) -> list[Record]:
        """Revoke every unrevoked certificate with that serial or name; re-sign the CRL."""
        flag = revocation_flag(reason)
        ca_key = self.signer(passphrase)
        now = now or utcnow()
        with self._lock():
            matches = self.find(name_or_serial)
            if not matches:
                raise ConfigError(
                    f"session {self.name!r} has issued no certificate named or numbered "
                    f"{name_or_serial!r}; see 'paraconnect session show {self.name}'"
                )
            fresh = [r for r in matches if not r.revoked]
            if not fresh:
                return []
            crl = self.crl()
            entries: list[RevokedEntry] = []
            number = 1
            if crl is not None:
                entries = [
                    RevokedEntry(old.serial_number, old.revocation_date_utc, revocation_reason(old))
                    for old in crl
                ]
                try:
                    number = (
                        crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
                    )
                except x509.ExtensionNotFound:
                    number = len(entries) + 1
            entries += [RevokedEntry(int(r.serial, 16), now, flag) for r in fresh]
            new_crl = build_crl(ca_key, self.ca_cert, entries, number, now=now)
            write_atomic(self.crl_path, pem(new_crl), mode=0o644)
        return [r for r in self.records() if r.serial in {f.serial for f in fresh}]

    def credentials_record(self, role: Role | str, unique_id: str | None = None) -> Record | None:
        """The newest valid, unrevoked certificate with a kept key that can act as `role`."""
        role = Role.parse(role)
        now = utcnow()
        usable = []
        for rec in self.records():
            if rec.revoked or not rec.key_kept:
                continue
            if dt.datetime.fromisoformat(rec.not_after) <= now:
                continue
            if rec.role != role.value and rec.role != Role.NODE.value:
                continue
            if unique_id is not None and rec.unique_id != unique_id:
                continue
            usable.append(rec)
        return usable[-1] if usable else None


class Store:
    """All sessions of one user: ``<home>/sessions/<name>/``."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = (home or default_home()).absolute()
        self.unlocked: dict[str, PrivateKey] = {}  # session name -> its decrypted key

    @property
    def sessions_dir(self) -> Path:
        return self.home / "sessions"

    def unique_id(self) -> UniqueId:
        return node_unique_id(self.home)

    def _session_path(self, name: str) -> Path:
        return self.sessions_dir / check_name(name, "session name")

    def create_session(
        self,
        name: str,
        *,
        key_type: KeyType | str = KeyType.EC_P256,
        days: int = DEFAULT_CA_DAYS,
        level: SecurityLevel | str = SecurityLevel.MUTUAL,
        passphrase: Passphrase | None = None,
        ca_key: str | None = None,
        pin_file: Path | None = None,
        pkcs11_module: str | None = None,
    ) -> Session:
        """A new session; its key made here into ca.key, or in (or taken from) the PKCS#11 token
        that the URI `ca_key` names, with the PIN in `pin_file` and the token's module."""
        path = self._session_path(name)
        ktype = KeyType.parse(key_type)
        lvl = SecurityLevel.parse(level)
        if days <= 0:
            raise ConfigError(f"--days must be positive, not {days}")
        secret = resolve_passphrase(passphrase)
        token = None
        if ca_key is not None:
            from ._token import TokenUri

            if secret is not None:
                raise ConfigError("a session key in a PKCS#11 token has a PIN, not a passphrase")
            pin = f"file:{pin_file.absolute()}" if pin_file is not None else None
            token = TokenUri.parse(ca_key).with_query(pin_source=pin, module_path=pkcs11_module)
        undo = None
        ensure_private_dir(self.home)
        ensure_private_dir(self.sessions_dir)
        # Build the whole session in a hidden directory, then rename it into place: a crash
        # or a full disk leaves no half-made session behind.
        staging = self.sessions_dir / f".creating-{name}-{secrets.token_hex(4)}"
        os.mkdir(staging, 0o700)
        try:
            session_id = secrets.token_hex(16)
            if token is None:
                key = generate_key(ktype)
                signer: Signer = FileSigner(key)
                write_atomic(staging / "ca.key", dump_private_key(key, secret), exclusive=True)
            else:
                from ._token import destroy_token_key, open_token_key

                signer, generated = open_token_key(token, ktype)
                undo = (lambda: destroy_token_key(token)) if generated else None
            ca = build_ca(signer, session_id, name, days, level=lvl.value)
            crl = build_crl(signer, ca, [], 1)
            meta = {
                "format": FORMAT,
                "id": session_id,
                "name": name,
                "level": lvl.value,
                "key_type": signer.key_type.value,
                "owner": True,
                "ca_key_encrypted": secret is not None,
                "created": utcnow().isoformat(),
                **({"ca_key": str(token)} if token is not None else {}),
            }
            write_atomic(staging / "ca.crt", pem(ca), mode=0o644)
            write_atomic(staging / "crl.pem", pem(crl), mode=0o644)
            write_atomic(staging / "session.json", json.dumps(meta, indent=1).encode(), mode=0o644)
            try:
                os.rename(staging, path)  # fails if `path` exists and is not empty
            except OSError:
                if path.exists():
                    raise ConfigError(
                        f"a session named {name!r} already exists at {path}; choose another "
                        f"name or delete it with 'paraconnect session delete {name}'"
                    ) from None
                raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if undo is not None:
                undo()  # a key made for a session that was not made: leave the token as it was
            raise
        return Session(path)

    def open_session(self, name: str) -> Session:
        path = self._session_path(name)
        if not (path / "session.json").exists():
            hint = f"create it with 'paraconnect session create {name}' (in {self.sessions_dir})"
            raise no_such_session(name, [s.name for s in self.list_sessions()], hint)
        ensure_private_dir(path)
        session = Session(path)
        session.unlocked_key = self.unlocked.get(name)
        return session

    def unlock(self, name: str, passphrase: Passphrase) -> Session:
        """Decrypt the session key once (a wrong passphrase fails here); kept in `unlocked`."""
        session = self.open_session(name)
        if session.owner and session.ca_key_encrypted:
            session.unlocked_key = self.unlocked[name] = session.load_ca_key(passphrase)
        return session

    def list_sessions(self) -> list[Session]:
        if not self.sessions_dir.is_dir():
            return []
        return [
            Session(p)
            for p in sorted(self.sessions_dir.iterdir())
            if not p.name.startswith(".") and (p / "session.json").exists()
        ]

    def delete_session(self, name: str) -> None:
        path = self.open_session(name).path
        trash = self.sessions_dir / f".deleting-{name}-{secrets.token_hex(4)}"
        os.rename(path, trash)
        shutil.rmtree(trash)
        self.unlocked.pop(name, None)

    def find_session_by_id(self, session_id: str) -> Session | None:
        for session in self.list_sessions():
            if session.id == session_id:
                return session
        return None
