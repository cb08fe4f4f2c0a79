"""Key types, generation, and (de)serialisation with passphrases that are never prompted for."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ..errors import ConfigError, CredentialError
from ..vocab import KeyType

if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "KeyType",
    "Passphrase",
    "PrivateKey",
    "PublicKey",
    "check_key_matches",
    "dump_private_key",
    "generate_key",
    "key_type_of",
    "load_private_key",
    "resolve_passphrase",
    "sign_data",
    "signing_hash",
    "spki_der",
    "verify_data",
]

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
# A passphrase is given, never asked for: bytes, str, or a callback returning either.
Passphrase = bytes | str | Callable[[], bytes | str]


def spki_der(obj: object) -> bytes:
    """The DER SubjectPublicKeyInfo of a public key: what two keys share when they match."""
    return obj.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_key_matches(key: PrivateKey, cert: x509.Certificate, source: object) -> None:
    if spki_der(key.public_key()) != spki_der(cert.public_key()):
        raise CredentialError(
            f"{source}: the private key does not match the certificate; "
            "use the key that was issued with it, or issue a new certificate"
        )


def generate_key(key_type: KeyType) -> PrivateKey:
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def key_type_of(key: object) -> KeyType:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return KeyType.EC_P256
        raise CredentialError(f"unsupported elliptic curve {key.curve.name}; use P-256")
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise CredentialError(f"RSA key of {key.key_size} bits is too weak; use 3072")
        return KeyType.RSA_3072
    raise CredentialError(f"unsupported key algorithm {type(key).__name__}")


def signing_hash(key: PrivateKey) -> hashes.SHA256 | None:
    # Ed25519 signs the message itself; the others sign a SHA-256 digest.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def sign_data(key: PrivateKey, data: bytes) -> bytes:
    """A signature over `data` as certificates are signed: ECDSA or RSA-PSS over SHA-256, or
    Ed25519 over the data itself."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    return key.sign(data, _pss(), hashes.SHA256())


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def verify_data(
    public: object,
    signature: bytes,
    data: bytes,
    *,
    rsa_padding: padding.AsymmetricPadding | None = None,
) -> bool:
    """Whether `signature` (from :func:`sign_data`) over `data` is by `public`'s key.  RSA
    signatures are PSS, as `sign_data` makes them, unless `rsa_padding` says otherwise (X.509
    signs in PKCS#1 v1.5)."""
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, data)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, rsa_padding or _pss(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


def resolve_passphrase(passphrase: Passphrase | None) -> bytes | None:
    if passphrase is None:
        return None
    value = passphrase() if callable(passphrase) else passphrase
    data = value.encode() if isinstance(value, str) else value
    if not data:
        raise ConfigError("an empty passphrase was given; give a non-empty one or none at all")
    return data


def dump_private_key(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def load_private_key(data: bytes, source: Path | str, passphrase: bytes | None) -> PrivateKey:
    """Parse a PEM private key; every failure names `source` and never echoes key material."""
    if b"-----BEGIN" not in data:
        raise CredentialError(f"{source} holds no PEM private key; check that it is a key file")
    encrypted = b"ENCRYPTED" in data
    if encrypted and passphrase is None:
        raise CredentialError(
            f"{source} is encrypted; give its passphrase (--passphrase-file or the "
            "passphrase argument)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except TypeError:
        raise CredentialError(f"{source} is not encrypted, but a passphrase was given") from None
    except (ValueError, UnsupportedAlgorithm):
        if encrypted:
            raise CredentialError(f"wrong passphrase for {source}") from None
        raise CredentialError(
            f"{source} is not a valid PEM private key (truncated or corrupt); "
            "restore it from a backup or issue a new one"
        ) from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise CredentialError(f"{source}: unsupported key algorithm {type(key).__name__}")
    key_type_of(key)
    return key
