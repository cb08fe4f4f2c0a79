"""A session whose key is in a PKCS#11 token (a real SoftHSM2 token made here): it issues,
revokes and signs policy through the token, works with only its public files left, and a wrong
PIN, a missing token or a removed key each give one line."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, ObjectClass

from paraconnect.errors import ConfigError, TrustError
from paraconnect.pki import (
    Role,
    Rule,
    Store,
    add_rule,
    load_credentials,
    read_bundle,
    sign_policy,
    signed_by,
    spki_der,
    verify_crl,
    verify_policy,
)
from paraconnect.pki._token import TokenUri
from paraconnect.servers._enroll import EnrollServer, enroll, issue_token
from paraconnect.servers._registry import ServerRegistry
from paraconnect.tunnel import Connector, parse_endpoint
from paraconnect.tunnel._trust import Trust

from .conftest import openssl
from .helpers_cli import procs_fixture  # noqa: F401 - the fixture `procs`
from .helpers_tunnel import ECHO, sha_check

pytestmark = pytest.mark.timeout(90)

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN = "pc-test"
PIN = "4711-pc-user"


@dataclass(frozen=True)
class Token:
    pin_file: Path

    def uri(self, obj: str, token: str = TOKEN) -> str:
        return f"pkcs11:token={token};object={obj}"

    def create_args(self, name: str, obj: str, *extra: str) -> list[str]:
        return [
            "session", "create", name, "--ca-key", self.uri(obj), "--pin-file",
            str(self.pin_file), "--pkcs11-module", MODULE, *extra,
        ]  # fmt: skip


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Token]:
    """One SoftHSM2 token for the run, in a temporary token directory.  SoftHSM2 reads its
    configuration and finds its tokens once per process, so the token is made before any test
    loads the module, and SOFTHSM2_CONF stays set for the whole run (the CLI inherits it)."""
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin", PIN,
             "--so-pin", "so-" + PIN],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        pin_file = root / "pin"
        pin_file.write_text(PIN + "\n")
        pin_file.chmod(0o600)
        yield Token(pin_file)


def _token_objects(label: str) -> list[object]:
    token = pkcs11.lib(MODULE).get_token(token_label=TOKEN)
    with token.open(user_pin=PIN) as s:
        return [(o.object_class, dict(_attrs(o))) for o in s.get_objects({Attribute.LABEL: label})]


def _attrs(obj: object) -> Iterator[tuple[str, object]]:
    for attr in (Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.NEVER_EXTRACTABLE):
        with contextlib.suppress(pkcs11.PKCS11Error):  # an attribute the token does not have
            yield attr.name, obj[attr]  # type: ignore[index]


def _destroy(label: str) -> None:
    token = pkcs11.lib(MODULE).get_token(token_label=TOKEN)
    with token.open(user_pin=PIN, rw=True) as s:
        for obj in list(s.get_objects({Attribute.LABEL: label})):
            obj.destroy()


def _ca_key_nowhere_in(session_dir: Path, ca: x509.Certificate) -> None:
    """No file of the session holds the CA's private key, in any form a program could load."""
    ca_spki = spki_der(ca.public_key())
    for path in session_dir.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        assert PIN.encode() not in data, path
        for load in (serialization.load_pem_private_key, serialization.load_der_private_key):
            try:
                key = load(data, None)
            except (ValueError, TypeError):
                continue
            assert spki_der(key.public_key()) != ca_spki, f"{path} holds the session key"


def _verified(ca: Path, cert: Path) -> None:
    result = openssl("verify", "-CAfile", str(ca), str(cert))
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result


@pytest.mark.anyio
async def test_token_session_issues_connects_revokes_and_signs_policy(
    softhsm: Token, cli: object, procs: object, home: Path, tmp_path: Path
) -> None:
    obj = f"ca-{secrets.token_hex(4)}"
    # Level encrypt: both sides still show certificates the session signed (mutual TLS), without
    # binding them to this machine's unique ID, which is not what this test is about.
    made = cli(*softhsm.create_args("tok", obj, "--level", "encrypt"))  # type: ignore[operator]
    assert made.returncode == 0, made
    sdir = home / "sessions" / "tok"
    assert not (sdir / "ca.key").exists()
    # Made in the token, sensitive and never extractable: the key cannot leave it.
    objects = _token_objects(obj)
    [priv] = [a for cls, a in objects if cls == ObjectClass.PRIVATE_KEY]  # type: ignore[misc]
    assert priv == {"SENSITIVE": True, "EXTRACTABLE": False, "NEVER_EXTRACTABLE": True}
    assert {cls for cls, _ in objects} == {ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY}  # type: ignore[misc]
    out = tmp_path / "alice"
    for args in (["server", "pv"], ["client", "alice", "--out", str(out)]):
        issued = cli("issue", *args, "--session", "tok")  # type: ignore[operator]
        assert issued.returncode == 0, issued
    store = Store(home)
    session = store.open_session("tok")
    for rec in session.records():
        _verified(sdir / "ca.crt", session.issued_dir / f"{rec.serial}.crt")
        cert = x509.load_pem_x509_certificate(
            (session.issued_dir / f"{rec.serial}.crt").read_bytes()
        )
        cert.verify_directly_issued_by(session.ca_cert)
    _verified(out / "ca.crt", out / "alice.crt")

    # A real mutual-TLS tunnel with the token-signed certificates.
    agent = procs(  # type: ignore[operator]
        "serve", "--creds", "tok", "--json", "--listen", "127.0.0.1:0", "--",
        sys.executable, ECHO, "--port", "{port}",
    )  # fmt: skip
    [addr] = agent.ready()["listen"]
    client = procs("connect", addr, "--creds", str(out), "--local", "127.0.0.1:0", "--json")  # type: ignore[operator]
    await sha_check(parse_endpoint(str(client.ready()["local"])), 100_000)
    assert client.stop() == 0

    # Revoked through the token: the CRL verifies, and the agent refuses alice's certificate.
    revoked = cli("revoke", "alice", "--session", "tok")  # type: ignore[operator]
    assert revoked.returncode == 0, revoked
    crl_check = openssl(
        "crl", "-in", str(sdir / "crl.pem"), "-CAfile", str(sdir / "ca.crt"), "-noout"
    )
    assert crl_check.returncode == 0 and "verify OK" in crl_check.stderr + crl_check.stdout
    crl = verify_crl((sdir / "crl.pem").read_bytes(), session.ca_cert, "the test")
    assert {e.serial_number for e in crl} == {
        int(r.serial, 16) for r in session.records() if r.name == "alice"
    }
    alice = load_credentials(out)
    with anyio.fail_after(30), pytest.raises(TrustError, match="revoked"):
        await Connector(alice, addr, "127.0.0.1:0").run()

    # The owner's policy, signed for agents by the token.
    add_rule(session, Rule.make("deny", name="mallory"))
    text = Trust(load_credentials("tok", role="server", store=store)).signed_policy()
    assert text is not None
    policy, _number = verify_policy(text, session.ca_cert, "the test")
    assert [r.name for r in policy.rules] == ["mallory"]
    _ca_key_nowhere_in(sdir, session.ca_cert)


def test_only_the_public_files_left_still_issue_and_revoke(
    softhsm: Token, cli: object, home: Path
) -> None:
    obj = f"ca-{secrets.token_hex(4)}"
    assert cli(*softhsm.create_args("pub", obj)).returncode == 0  # type: ignore[operator]
    assert cli("issue", "client", "old", "--session", "pub").returncode == 0  # type: ignore[operator]
    sdir = home / "sessions" / "pub"
    for path in sorted(sdir.rglob("*"), reverse=True):
        if path.name in ("ca.crt", "session.json"):
            continue
        path.rmdir() if path.is_dir() else path.unlink()
    assert sorted(p.name for p in sdir.iterdir()) == ["ca.crt", "session.json"]
    issued = cli("issue", "client", "bob", "--session", "pub")  # type: ignore[operator]
    assert issued.returncode == 0, issued
    session = Store(home).open_session("pub")
    [rec] = session.records()
    _verified(sdir / "ca.crt", session.issued_dir / f"{rec.serial}.crt")
    assert cli("revoke", "bob", "--session", "pub").returncode == 0  # type: ignore[operator]
    crl = verify_crl((sdir / "crl.pem").read_bytes(), session.ca_cert, "the test")
    assert [e.serial_number for e in crl] == [int(rec.serial, 16)]
    # A friend's bundle, certified by the token, opens and checks on the friend's side.
    shared = cli("share", "carol", "--session", "pub", "--out", str(home / "carol.p12"), "--json")  # type: ignore[operator]
    assert shared.returncode == 0, shared
    bundle = read_bundle(home / "carol.p12", json.loads(shared.stdout)["passphrase"])
    assert signed_by(bundle.cert, session.ca_cert) and bundle.identity.name == "carol"
    _ca_key_nowhere_in(sdir, session.ca_cert)


@pytest.mark.anyio
async def test_the_hub_enrols_an_agent_through_the_token(
    softhsm: Token, store: Store, registry: ServerRegistry, tmp_path: Path
) -> None:
    """The hub's enrolment endpoint signs its own TLS leaf and the agent's certificate in the
    token; the agent's certificate checks against the session CA."""
    session = store.create_session(
        "lab", ca_key=softhsm.uri(f"ca-{secrets.token_hex(4)}"), pin_file=softhsm.pin_file,
        pkcs11_module=MODULE,
    )  # fmt: skip
    uid = store.unique_id().value
    session.issue(Role.CLIENT, "hub", unique_id=uid)
    creds = load_credentials("lab", role=Role.CLIENT, store=store, unique_id=uid)
    out = tmp_path / "agent"
    async with anyio.create_task_group() as tg:
        host, port = await tg.start(EnrollServer(registry, {"lab": (session, creds)}).run)
        token = issue_token(registry, "srv-a", "lab")
        with anyio.fail_after(30):
            await enroll(f"{host}:{port}", session.ca_fingerprint, token, "srv-a", out, uid)
        tg.cancel_scope.cancel()
    _verified(session.ca_path, out / "srv-a.crt")
    assert load_credentials(out).identity.name == "srv-a"


def _one_line(result: object) -> str:
    assert result.returncode != 0, result  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("paraconnect:"), result
    assert PIN not in result.stderr + result.stdout  # type: ignore[attr-defined]
    return str(lines[0])


def test_wrong_pin_missing_token_and_removed_key_each_one_line(
    softhsm: Token, cli: object, home: Path, tmp_path: Path
) -> None:
    # A missing token: nothing made, the line names the label and how to find the right one.
    missing = cli(  # type: ignore[operator]
        "session", "create", "gone", "--ca-key", softhsm.uri("k", token="no-such-token"),
        "--pin-file", str(softhsm.pin_file), "--pkcs11-module", MODULE,
    )  # fmt: skip
    line = _one_line(missing)
    assert "no PKCS#11 token 'no-such-token'" in line and "softhsm2-util --show-slots" in line
    assert not (home / "sessions" / "gone").exists()

    obj = f"ca-{secrets.token_hex(4)}"
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN)
    pin_file.chmod(0o600)
    # The PIN's file and the module given in the URI itself (RFC 7512 pin-source, module-path).
    uri = f"{softhsm.uri(obj)}?pin-source=file:{pin_file}&module-path={MODULE}"
    made = cli("session", "create", "s", "--ca-key", uri)  # type: ignore[operator]
    assert made.returncode == 0, made
    # A wrong PIN in the session's PIN file.
    pin_file.write_text("0000")
    line = _one_line(cli("issue", "client", "c", "--session", "s"))  # type: ignore[operator]
    assert f"wrong PIN for PKCS#11 token '{TOKEN}'" in line and str(pin_file) in line
    pin_file.write_text(PIN)
    assert cli("issue", "client", "c", "--session", "s").returncode == 0  # type: ignore[operator]
    # The key object removed from the token.
    _destroy(obj)
    line = _one_line(cli("revoke", "c", "--session", "s"))  # type: ignore[operator]
    assert f"token '{TOKEN}' holds no private key '{obj}'" in line and "restore it" in line


def test_an_existing_token_key_is_used_and_rsa_signs_too(softhsm: Token, home: Path) -> None:
    """The second session takes the key the first one made; an RSA key signs certificates
    (PKCS#1 v1.5) and policies (PSS) that cryptography and openssl accept."""
    store = Store(home)
    obj = f"rsa-{secrets.token_hex(4)}"
    kwargs = {"pin_file": softhsm.pin_file, "pkcs11_module": MODULE, "key_type": "rsa-3072"}
    first = store.create_session("r1", ca_key=softhsm.uri(obj), **kwargs)  # type: ignore[arg-type]
    second = store.create_session("r2", ca_key=softhsm.uri(obj), **kwargs)  # type: ignore[arg-type]
    assert first.key_type.value == "rsa-3072"
    assert spki_der(first.ca_cert.public_key()) == spki_der(second.ca_cert.public_key())
    issued = second.issue("server", "pv", key_type="ec-p256")
    _verified(second.ca_path, issued.cert_path)
    text = sign_policy(add_rule(second, Rule.make("deny", name="eve")), second.signer(), 3)
    assert verify_policy(text, second.ca_cert, "the test")[1] == 3
    assert not verify_policy_ok(text, first_ca=store.create_session("other").ca_cert)
    with pytest.raises(ConfigError, match="not a passphrase"):
        second.signer(b"a passphrase")


def verify_policy_ok(text: str, first_ca: x509.Certificate) -> bool:
    try:
        verify_policy(text, first_ca, "the test")
    except TrustError:
        return False
    return True


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("pkcs11:token=t;object=k?pin-value=1234", "a PIN in the URI"),
        ("pkcs11:token=t;objet=k", "unknown or malformed attribute 'objet'"),
        ("pkcs11:object=k", "names no token"),
        ("pkcs11:token=t;object=k;type=public", "type=private"),
        ("file:/tmp/key.pem", "must start with 'pkcs11:'"),
        ("pkcs11:token=t;object=k?pin-source=%7Cecho%201234", "pin-source must be a file"),
        ("pkcs11:token=t;object=k;model=x", "unknown or malformed attribute 'model'"),
    ],
)
def test_bad_uris_are_refused_with_the_reason(uri: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why.replace("(", r"\(")):
        TokenUri.parse(uri)


def test_the_uri_survives_a_round_trip() -> None:
    text = "pkcs11:token=My%20Token;object=ca;id=%01%02?pin-source=file:/p/pin&module-path=/m.so"
    uri = TokenUri.parse(text)
    assert (uri.path["token"], uri.pin_file, uri.module) == ("My Token", Path("/p/pin"), "/m.so")
    assert TokenUri.parse(str(uri)) == uri
    assert os.fspath(uri.pin_file) == "/p/pin"
