"""Our own credentials, checked one piece at a time so that every problem is named at once:
the files and their permissions, key vs certificate, the CA beside them, validity against this
clock, revocation, the revocation list itself, the role, and the node binding (level mutual)."""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ..errors import ConfigError, ParaconnectError
from ..pki import (
    Credentials,
    Identity,
    Passphrase,
    Role,
    SecurityLevel,
    Store,
    fingerprint,
    load_credentials,
    load_crl,
    parse_pem_certificates,
    spki_der,
)
from ..tunnel import Endpoint, parse_endpoint
from ._chain import freshest_crl
from ._net import Address, resolve
from ._ownchecks import (
    crl_steps,
    level_of,
    peer_ca_step,
    read_raw,
    unique_id_step,
    validity_step,
    why,
)
from ._report import Report

__all__ = ["check_creds"]


@dataclass(slots=True)
class _Pieces:
    source: str
    ca: x509.Certificate | None = None
    cert: x509.Certificate | None = None
    key: object | None = None
    key_path: Path | None = None
    crl: x509.CertificateRevocationList | None = None
    crl_path: Path | None = None
    session_level: SecurityLevel | None = None


def _secret(passphrase: Passphrase | None) -> bytes | None:
    if passphrase is None:
        return None
    value = passphrase() if callable(passphrase) else passphrase
    return value.encode() if isinstance(value, str) else bytes(value)


def _key_file_step(report: Report, path: Path, what: str) -> bool:
    """Permissions of a secret file; True when it may be read at all."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        report.fail(
            "key-file",
            f"{what} {path} does not exist",
            "check the path, or issue a new certificate with its key",
        )
        return False
    if stat.S_ISLNK(st.st_mode):
        report.fail(
            "key-file",
            f"{what} {path} is a symbolic link; paraconnect refuses symlinked key files",
            "replace the link with the file itself",
        )
        return False
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.geteuid():
        report.fail(
            "key-file",
            f"{what} {path} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()})",
            "copy it into a file of your own with mode 0600",
        )
        return os.access(path, os.R_OK)
    if mode & 0o077:
        report.fail(
            "key-file",
            f"{what} {path} is readable by group/others (mode {mode:04o}); paraconnect refuses "
            "a private key others can read",
            f"chmod 600 {path}",
            mode=f"{mode:04o}",
        )
        return True
    report.ok("key-file", f"{what} {path} is private (mode {mode:04o}, yours)", mode=f"{mode:04o}")
    return True


def _load_key(report: Report, data: bytes, path: Path, secret: bytes | None) -> object | None:
    try:
        return serialization.load_pem_private_key(data, secret)
    except TypeError:
        report.fail("key", f"the key {path} is encrypted", "give --passphrase-file FILE")
    except ValueError:
        report.fail(
            "key",
            f"the key {path} cannot be read: corrupt, or a wrong passphrase",
            "check the passphrase, or issue a new certificate and key",
        )
    return None


def _gather_dir(report: Report, directory: Path, secret: bytes | None) -> _Pieces:
    pieces = _Pieces(str(directory))
    ca_path = directory / "ca.crt"
    try:
        pieces.ca = parse_pem_certificates(read_raw(ca_path), ca_path)[0]
    except (OSError, ParaconnectError) as exc:
        report.fail(
            "files",
            f"cannot read the session certificate {ca_path}: {why(exc)}",
            "copy ca.crt from the session ('paraconnect issue ... --out DIR')",
        )
        return pieces
    candidates = sorted(p for p in directory.glob("*.crt") if p.name != "ca.crt")
    with_keys = [p for p in candidates if p.with_suffix(".key").exists()]
    if len(with_keys) != 1:
        found = ", ".join(p.name for p in with_keys) or "none"
        report.fail(
            "files",
            f"{directory} must hold exactly one NAME.crt with its NAME.key "
            f"besides ca.crt (found: {found})",
            "keep one certificate and its key per directory",
        )
        return pieces
    cert_path = with_keys[0]
    pieces.cert = _read_cert(report, cert_path, "export it again")
    if pieces.cert is None:
        return pieces
    report.ok(
        "files",
        f"{directory}: ca.crt, {cert_path.name}, {cert_path.stem}.key"
        + (", crl.pem" if (directory / "crl.pem").exists() else ""),
    )
    pieces.key_path = cert_path.with_suffix(".key")
    if _key_file_step(report, pieces.key_path, "private key"):
        pieces.key = _load_key(report, read_raw(pieces.key_path), pieces.key_path, secret)
    pieces.crl_path = directory / "crl.pem"
    return pieces


def _gather_bundle(report: Report, path: Path, secret: bytes | None) -> _Pieces:
    pieces = _Pieces(str(path))
    if not _key_file_step(report, path, "bundle"):
        return pieces
    try:
        parsed = pkcs12.load_pkcs12(read_raw(path), secret)
    except ValueError:
        report.fail(
            "files",
            f"cannot open bundle {path}: "
            + (
                "it is encrypted (give --passphrase-file) or not a PKCS#12 file"
                if secret is None
                else "wrong passphrase, or not a PKCS#12 file"
            ),
            "give the bundle's passphrase with --passphrase-file",
        )
        return pieces
    if parsed.cert is None or parsed.key is None:
        report.fail("files", f"bundle {path} lacks a certificate or its key", "ask for a new one")
        return pieces
    pieces.cert, pieces.key = parsed.cert.certificate, parsed.key
    ident = Identity.of(pieces.cert)
    for extra in parsed.additional_certs:
        ci = Identity.of(extra.certificate)
        if ci and ci.role is Role.SESSION and ident and ci.session_id == ident.session_id:
            pieces.ca = extra.certificate
    if pieces.ca is None:
        report.fail(
            "files",
            f"bundle {path} holds no session certificate of its session",
            "ask the session owner for a new bundle ('paraconnect share')",
        )
        return pieces
    report.ok("files", f"bundle {path}: certificate, key and session certificate")
    return pieces


def _gather_session(report: Report, name: str, role: Role | None, store: Store) -> _Pieces:
    pieces = _Pieces(f"session {name!r}")
    try:
        session = store.open_session(name)
        pieces.ca = session.ca_cert
    except ParaconnectError as exc:
        report.fail(
            "files", f"cannot open session {name!r}: {exc}", "see 'paraconnect session list'"
        )
        return pieces
    pieces.session_level = session.level
    wanted = role or Role.NODE
    rec = session.credentials_record(wanted) if role else None
    if rec is None:
        # Nothing usable: pick the newest candidate anyway, so the steps below say why.
        candidates = [
            r
            for r in session.records()
            if r.key_kept and (role is None or r.role in (wanted.value, Role.NODE.value))
        ]
        if not candidates:
            report.fail(
                "files",
                f"session {name!r} holds no {wanted.value if role else ''} certificate with "
                "its key".replace("  ", " "),
                f"issue one with 'paraconnect issue {wanted.value} NAME --session {name}'",
            )
            return pieces
        rec = candidates[-1]
    cert_path = session.issued_dir / f"{rec.serial}.crt"
    pieces.key_path = session.issued_dir / f"{rec.serial}.key"
    pieces.cert = _read_cert(report, cert_path, "issue a new certificate")
    if pieces.cert is None:
        return pieces
    report.ok(
        "files",
        f"session {name!r}: {rec.role} certificate {rec.name!r} (serial {rec.serial})",
        serial=rec.serial,
    )
    if _key_file_step(report, pieces.key_path, "private key"):
        pieces.key = _load_key(report, read_raw(pieces.key_path), pieces.key_path, None)
    pieces.crl_path = session.crl_path
    return pieces


def _read_cert(report: Report, path: Path, fix: str) -> x509.Certificate | None:
    """The first certificate in `path`, or None with a failed "files" step saying why."""
    try:
        return parse_pem_certificates(read_raw(path), path)[0]
    except (OSError, ParaconnectError) as exc:
        report.fail("files", f"cannot read {path}: {why(exc)}", fix)
        return None


def check_creds(
    report: Report,
    spec: str | Path | Credentials,
    *,
    role: Role | None,
    passphrase: Passphrase | None = None,
    store: Store | None = None,
    peer_ca: Path | None = None,
    unique_id: str | None = None,
    level: SecurityLevel | None = None,
    now: dt.datetime | None = None,
) -> Credentials | None:
    """Add the credential steps to `report`; return the credentials the tunnel itself would
    load (None when it would refuse them)."""
    now = now or dt.datetime.now(dt.UTC)
    store = store or Store()
    secret = _secret(passphrase)
    if isinstance(spec, Credentials):
        pieces = _Pieces(
            spec.source, spec.ca_cert, spec.cert, spec.key, None, spec.crl, spec.crl_path
        )
        report.ok("files", f"credentials given by the caller ({spec.source})")
    else:
        path = Path(spec)
        if path.is_file():
            pieces = _gather_bundle(report, path, secret)
        elif path.is_dir():
            pieces = _gather_dir(report, path, secret)
        elif path.suffix in (".p12", ".pfx") or "/" in str(spec):
            report.fail("files", f"credentials {spec} do not exist", "check the path")
            pieces = _Pieces(str(spec))
        else:
            pieces = _gather_session(report, str(spec), role, store)
    _check_pieces(
        report,
        pieces,
        role=role,
        store=store,
        peer_ca=peer_ca,
        unique_id=unique_id,
        level=level,
        now=now,
    )
    if isinstance(spec, Credentials):
        return spec
    load_role = role
    if load_role is None and pieces.cert is not None and (found := Identity.of(pieces.cert)):
        load_role = found.role  # `debug creds` of a session: the certificate examined above
    try:
        return load_credentials(spec, role=load_role, store=store, passphrase=passphrase)
    except ParaconnectError as exc:
        if report.passed:
            report.fail("load", f"paraconnect refuses these credentials: {exc}")
        return None


def _check_pieces(
    report: Report,
    p: _Pieces,
    *,
    role: Role | None,
    store: Store,
    peer_ca: Path | None,
    unique_id: str | None,
    level: SecurityLevel | None,
    now: dt.datetime,
) -> None:
    if p.cert is None or p.ca is None:
        return
    ident = Identity.of(p.cert)
    if ident is None:
        report.fail(
            "identity",
            f"the certificate from {p.source} is not a paraconnect "
            "certificate (no paraconnect:// URI)",
            "issue one with 'paraconnect issue'",
        )
        return
    report.ok(
        "identity",
        f"{ident.role.value} {ident.name!r} of session "
        f"{ident.session_id[:8]}…" + (f", node {ident.unique_id!r}" if ident.unique_id else ""),
        role=ident.role.value,
        name=ident.name,
        session_id=ident.session_id,
        unique_id=ident.unique_id,
        sha256=fingerprint(p.cert),
    )

    # key vs certificate
    if p.key is not None:
        public = p.key.public_key()  # type: ignore[attr-defined]
        if spki_der(public) == spki_der(p.cert.public_key()):
            report.ok("key-matches", "the private key matches the certificate")
        else:
            report.fail(
                "key-matches",
                f"the private key {p.key_path or ''} does NOT match the certificate from "
                f"{p.source}: they come from different issuances",
                "put the key issued with this certificate beside it, or issue a new pair",
            )

    # the CA beside it
    try:
        p.cert.verify_directly_issued_by(p.ca)
        report.ok(
            "chain",
            f"signed by the session CA beside it (SHA256 {fingerprint(p.ca)[:23]}…)",
            ca_sha256=fingerprint(p.ca),
        )
    except Exception:  # any failure means "not issued by it"
        ca_ident = Identity.of(p.ca)
        report.fail(
            "chain",
            f"the certificate (session {ident.session_id[:8]}…) was not issued by the session "
            f"CA beside it (session {ca_ident.session_id[:8] if ca_ident else '?'}…, SHA256 "
            f"{fingerprint(p.ca)})",
            "use the ca.crt of the certificate's own session",
        )

    # validity against this clock
    for what, cert in (("certificate", p.cert), ("session certificate (CA)", p.ca)):
        validity_step(report, what, cert, now)

    # revocation list: present, signed, fresh; and our certificate in it
    if p.crl_path is not None and p.crl is None:
        try:
            p.crl = load_crl(p.crl_path, p.ca)
        except ParaconnectError as exc:
            report.fail("crl", str(exc), "copy the session's own crl.pem here")
    crl = _our_crl_from(p, ident, store)
    crl_steps(report, p.cert, ident, p.source, p.crl, p.crl_path, crl, store, now)

    # role
    sess_level = p.session_level or level_of(p.ca)
    lvl = level or sess_level
    if role is None:
        fits = {
            Role.CLIENT: "'connect', 'listen', 'debug client/server'",
            Role.SERVER: "'serve' (the agent)",
            Role.NODE: "either side",
        }
        report.ok("role", f"a {ident.role.value} certificate: fits {fits.get(ident.role, '?')}")
    elif lvl is not SecurityLevel.MUTUAL or ident.role in (role, Role.NODE):
        report.ok(
            "role", f"a {ident.role.value} certificate may act as {role.value} at level {lvl.value}"
        )
    else:
        report.fail(
            "role",
            f"a {ident.role.value} certificate ({ident.name!r}) cannot act as a {role.value} "
            "at level mutual",
            f"issue a {role.value} or node certificate ('paraconnect issue {role.value} NAME "
            "--session S')",
        )

    # node binding
    unique_id_step(report, p.cert, ident, lvl, unique_id, store)

    if peer_ca is not None:
        peer_ca_step(report, p.ca, peer_ca)


def _our_crl_from(
    p: _Pieces, ident: Identity, store: Store
) -> x509.CertificateRevocationList | None:
    return freshest_crl(
        Credentials(p.ca, p.cert, None, p.crl, ident, p.source),  # type: ignore[arg-type]
        store,
    )


async def begin(
    report: Report,
    address: str,
    creds: str | Path | Credentials,
    tcp_only: str,
    passphrase: Passphrase | None,
    store: Store | None,
    unique_id: str | None,
    level: SecurityLevel | str | None,
    *,
    passive: bool = False,
) -> tuple[Endpoint, Store, Credentials | None, SecurityLevel, list[Address]] | None:
    """What `debug client` and `debug server` both do first: read the TCP address, check our
    own credentials (as a client: the side that verifies the agent), settle the level, and
    resolve the address (`passive`: to listen on).  None when the address is unusable or
    resolves to nothing (the report says why)."""
    try:
        ep = parse_endpoint(address, "HOST:PORT")
    except ConfigError as exc:
        report.fail("resolve", str(exc), "write HOST:PORT, or [IPv6]:PORT")
        return None
    if ep.path is not None:
        report.fail("resolve", tcp_only, "give HOST:PORT")
        return None
    store = store or Store()
    wanted = SecurityLevel.parse(level) if level else None
    ours = check_creds(
        report,
        creds,
        role=Role.CLIENT,
        passphrase=passphrase,
        store=store,
        unique_id=unique_id,
        level=wanted,
    )
    lvl = wanted or (ours.level if ours else SecurityLevel.MUTUAL)
    addresses = await resolve(report, ep.host, ep.port, passive=passive)
    if not addresses:
        return None
    return ep, store, ours, lvl, addresses
