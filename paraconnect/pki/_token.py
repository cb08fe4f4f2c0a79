"""A session key in a PKCS#11 token (RFC 7512 URIs, python-pkcs11).

The key is generated in the token as sensitive and non-extractable (or an existing one is
used); every signature is made by the token.  The PIN is read from its file for each use and
never written anywhere: the session records the URI, which names the PIN's file
(``pin-source``), so that later commands and the hub sign without asking anyone."""

from __future__ import annotations

import os
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .._fs import read_private
from ..errors import ConfigError, CredentialError
from ._keys import KeyType, PublicKey
from ._signer import Signer, raw_ecdsa_to_der, sha256

__all__ = ["TokenSigner", "TokenUri", "open_token_key"]

# RFC 7512 path attributes this module matches on; any other is refused, not ignored: a typo
# (`objet=`) must not quietly match every key in the token.
_PATH_ATTRS = {"token", "object", "id", "type", "serial"}
_QUERY_ATTRS = {"pin-source", "module-path"}
SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


@dataclass(frozen=True, slots=True)
class TokenUri:
    """A parsed ``pkcs11:`` URI naming one private key."""

    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, option: str = "--ca-key") -> TokenUri:
        def bad(why: str) -> ConfigError:
            return ConfigError(
                f"{option} {text!r}: {why}; give a PKCS#11 URI such as "
                "'pkcs11:token=LABEL;object=NAME?pin-source=file:/path/pin'"
            )

        if not text.startswith("pkcs11:"):
            raise bad("not a PKCS#11 URI (it must start with 'pkcs11:')")
        body, _, query = text[len("pkcs11:") :].partition("?")
        path: dict[str, str] = {}
        params: dict[str, str] = {}
        for part, sep, into, allowed in (
            (body, ";", path, _PATH_ATTRS),
            (query, "&", params, _QUERY_ATTRS),
        ):
            for item in filter(None, part.split(sep)):
                name, eq, value = item.partition("=")
                if name == "pin-value":
                    raise bad(
                        "a PIN in the URI would be recorded with the session; put it in a file "
                        "only you can read and give --pin-file FILE (or pin-source=file:FILE)"
                    )
                if not eq or name not in allowed:
                    raise bad(f"unknown or malformed attribute {name!r}")
                # id= is bytes: kept percent-encoded until it is matched.
                into[name] = value if name == "id" else urllib.parse.unquote(value)
        if "token" not in path and "serial" not in path:
            raise bad("it names no token (token=LABEL)")
        if "object" not in path and "id" not in path:
            raise bad("it names no key (object=LABEL)")
        if path.get("type", "private") != "private":
            raise bad("the session key is a private key (type=private, or leave type out)")
        source = params.get("pin-source", "file:/")
        if not source.startswith(("file:", "/")):
            raise bad("pin-source must be a file (file:/path, or an absolute path)")
        return cls(path, params)

    def with_query(self, **values: str | None) -> TokenUri:
        query = dict(self.query)
        query.update({k.replace("_", "-"): v for k, v in values.items() if v})
        return replace(self, query=query)

    def __str__(self) -> str:
        def enc(value: str) -> str:
            return urllib.parse.quote(value, safe="/:")

        text = "pkcs11:" + ";".join(
            f"{k}={v if k == 'id' else enc(v)}" for k, v in self.path.items()
        )
        if self.query:
            text += "?" + "&".join(f"{k}={enc(v)}" for k, v in self.query.items())
        return text

    @property
    def token_name(self) -> str:
        return self.path.get("token") or f"serial {self.path['serial']}"

    @property
    def pin_file(self) -> Path | None:
        source = self.query.get("pin-source")
        if source is None:
            return None
        return Path(source.removeprefix("file://").removeprefix("file:"))

    @property
    def module(self) -> str | None:
        return self.query.get("module-path")


_LIBS: dict[str, Any] = {}
# One login at a time per process: PKCS#11 logins are per application, and a second session's
# logout would end the first one's.
_TOKEN_LOCK = threading.Lock()


def _lib(uri: TokenUri) -> Any:
    module = uri.module
    if module is None:
        raise ConfigError(
            f"{uri}: no PKCS#11 module; give --pkcs11-module PATH or module-path= in the URI "
            f"(SoftHSM2: {SOFTHSM2_MODULE})"
        )
    if module not in _LIBS:
        try:
            import pkcs11
        except ImportError:
            raise ConfigError(
                "keys in a PKCS#11 token need python-pkcs11: pip install 'paraconnect[pkcs11]'"
            ) from None
        if not os.path.isfile(module):
            raise ConfigError(
                f"the PKCS#11 module {module} does not exist; install the token's module "
                f"(SoftHSM2: apt-get install softhsm2) or give its path with --pkcs11-module"
            )
        try:
            _LIBS[module] = pkcs11.lib(module)
        except (pkcs11.PKCS11Error, OSError, RuntimeError) as exc:
            raise ConfigError(
                f"cannot load the PKCS#11 module {module} ({type(exc).__name__}); check that it "
                "is the token's PKCS#11 library"
            ) from None
    return _LIBS[module]


def _read_pin(uri: TokenUri) -> str:
    pin_file = uri.pin_file
    if pin_file is None:
        raise ConfigError(
            f"{uri}: no PIN source; give --pin-file FILE (a file only you can read holding the "
            "token's user PIN), recorded as the URI's pin-source"
        )
    pin = read_private(pin_file, "PIN file").rstrip(b"\r\n")
    if not pin:
        raise ConfigError(f"the PIN file {pin_file} of {uri} is empty; write the token's PIN in it")
    return pin.decode()


@contextmanager
def _logged_in(uri: TokenUri) -> Iterator[Any]:
    """A read-write session with the token, logged in; every PKCS#11 failure as one line that
    names the URI and what to do (never the PIN)."""
    import pkcs11

    lib = _lib(uri)
    pin = _read_pin(uri)
    name = uri.token_name
    with _TOKEN_LOCK:
        try:
            token = lib.get_token(token_label=uri.path.get("token"), token_serial=_serial(uri))
        except pkcs11.NoSuchToken:
            raise CredentialError(
                f"no PKCS#11 token {name!r} in {uri.module} ({uri}); insert the token or fix "
                "the label (softhsm2-util --show-slots, or pkcs11-tool -L)"
            ) from None
        except pkcs11.MultipleTokensReturned:
            raise CredentialError(
                f"several PKCS#11 tokens match {name!r} ({uri}); name one with serial= in the URI"
            ) from None
        try:
            with token.open(user_pin=pin, rw=True) as session:
                yield session
        except pkcs11.PinIncorrect:
            raise CredentialError(
                f"wrong PIN for PKCS#11 token {name!r} (the PIN file {uri.pin_file}); put the "
                "right PIN in that file (the token locks after a few wrong ones)"
            ) from None
        except pkcs11.PinLocked:
            raise CredentialError(
                f"PKCS#11 token {name!r} is locked after wrong PINs; its security officer must "
                "unlock it (softhsm2-util / pkcs11-tool --init-pin)"
            ) from None
        except pkcs11.PKCS11Error as exc:
            raise CredentialError(
                f"PKCS#11 token {name!r} ({uri}) failed: {type(exc).__name__}; check the token "
                "and its module"
            ) from None


def _serial(uri: TokenUri) -> bytes | None:
    serial = uri.path.get("serial")
    return serial.encode() if serial is not None else None


def _key_filter(uri: TokenUri) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if "object" in uri.path:
        found["label"] = uri.path["object"]
    if "id" in uri.path:
        found["id"] = urllib.parse.unquote_to_bytes(uri.path["id"])
    return found


def _private_key(session: Any, uri: TokenUri) -> Any:
    import pkcs11
    from pkcs11 import ObjectClass

    try:
        return session.get_key(object_class=ObjectClass.PRIVATE_KEY, **_key_filter(uri))
    except pkcs11.NoSuchKey:
        raise CredentialError(
            f"PKCS#11 token {uri.token_name!r} holds no private key "
            f"{uri.path.get('object') or uri.path.get('id')!r} ({uri}); it was removed or "
            "renamed: restore it from the token's backup, or create a new session"
        ) from None
    except pkcs11.MultipleObjectsReturned:
        raise CredentialError(
            f"several private keys in token {uri.token_name!r} match {uri}; add id= to the URI"
        ) from None


def _public_of(session: Any, uri: TokenUri, priv: Any) -> PublicKey:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass
    from pkcs11.util.ec import encode_ec_public_key

    try:
        pub = session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=priv[Attribute.ID])
    except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned):
        try:
            pub = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=priv.label)
        except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned):
            raise CredentialError(
                f"PKCS#11 token {uri.token_name!r} holds the private key of {uri} but no single "
                "public key object with its id or label; import the public key into the token"
            ) from None
    if pub.key_type == pkcs11.KeyType.EC:
        key = serialization.load_der_public_key(encode_ec_public_key(pub))
    elif pub.key_type == pkcs11.KeyType.RSA:
        n = int.from_bytes(pub[Attribute.MODULUS], "big")
        e = int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big")
        key = rsa.RSAPublicNumbers(e, n).public_key()
    else:
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CredentialError(
            f"the key {uri} is of a type paraconnect cannot use from a token; use an EC P-256 "
            "or RSA key"
        )
    return key


def _generate(session: Any, uri: TokenUri, key_type: KeyType) -> None:
    from pkcs11 import Attribute
    from pkcs11 import KeyType as P11KeyType
    from pkcs11.util.ec import encode_named_curve_parameters

    label = uri.path.get("object")
    if label is None:
        raise ConfigError(f"{uri}: to make a new key in the token, name it with object=LABEL")
    wanted_id = uri.path.get("id")
    key_id = urllib.parse.unquote_to_bytes(wanted_id) if wanted_id else secrets.token_bytes(16)
    # Sensitive and never extractable: the token signs, nobody can read the key out of it.
    private = {
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
    }
    common = {"store": True, "label": label, "id": key_id, "private_template": private}
    if key_type is KeyType.EC_P256:
        params = session.create_domain_parameters(
            P11KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        params.generate_keypair(**common)
    elif key_type is KeyType.RSA_3072:
        session.generate_keypair(P11KeyType.RSA, 3072, **common)
    else:
        raise ConfigError(
            f"a {key_type.value} session key cannot be made in a PKCS#11 token by paraconnect; "
            "use --key-type ec-p256 or rsa-3072"
        )


class TokenSigner(Signer):
    """Signs in the token named by `uri`, logging in for each signature (the PIN read from its
    file each time; a SoftHSM2 login costs under a millisecond)."""

    def __init__(self, uri: TokenUri, public: PublicKey | None = None, what: str = "") -> None:
        self.uri = uri
        self.source = f"{what or 'the session key'} in PKCS#11 token {uri.token_name!r} ({uri})"
        self._public = public

    def public_key(self) -> PublicKey:
        if self._public is None:
            with _logged_in(self.uri) as session:
                self._public = _public_of(session, self.uri, _private_key(session, self.uri))
        return self._public

    def _sign(self, data: bytes, *, pss: bool) -> bytes:
        from pkcs11 import MGF, Mechanism

        public = self.public_key()
        with _logged_in(self.uri) as session:
            key = _private_key(session, self.uri)
            if isinstance(public, ec.EllipticCurvePublicKey):
                # Hashed here (a digest is no secret), so any token with plain CKM_ECDSA works;
                # SoftHSM2 has no CKM_ECDSA_SHA256.
                return raw_ecdsa_to_der(key.sign(sha256(data), mechanism=Mechanism.ECDSA))
            if pss:
                return bytes(
                    key.sign(
                        data,
                        mechanism=Mechanism.SHA256_RSA_PKCS_PSS,
                        mechanism_param=(Mechanism.SHA256, MGF.SHA256, 32),
                    )
                )
            return bytes(key.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS))

    def sign_data(self, data: bytes) -> bytes:
        return self._sign(data, pss=True)

    def sign_x509(self, tbs: bytes) -> bytes:
        return self._sign(tbs, pss=False)


def open_token_key(uri: TokenUri, key_type: KeyType) -> tuple[TokenSigner, bool]:
    """The token key of `uri`, generated there first if no such key exists; and whether it was
    generated (so a failed session creation can remove it again)."""
    import pkcs11
    from pkcs11 import ObjectClass

    with _logged_in(uri) as session:
        try:
            session.get_key(object_class=ObjectClass.PRIVATE_KEY, **_key_filter(uri))
            generated = False
        except pkcs11.NoSuchKey:
            _generate(session, uri, key_type)
            generated = True
        except pkcs11.MultipleObjectsReturned:
            raise CredentialError(
                f"several private keys in token {uri.token_name!r} match {uri}; add id= to the URI"
            ) from None
        public = _public_of(session, uri, _private_key(session, uri))
    return TokenSigner(uri, public), generated


def destroy_token_key(uri: TokenUri) -> None:
    """Remove a key this process just generated for a session that was not made after all."""
    from pkcs11 import Attribute, ObjectClass

    with _logged_in(uri) as session:
        priv = _private_key(session, uri)
        key_id = priv[Attribute.ID]
        for obj in list(session.get_objects({Attribute.ID: key_id})):
            if obj.object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                obj.destroy()
