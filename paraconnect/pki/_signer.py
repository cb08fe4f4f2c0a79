"""The session key as something that signs: a key file in memory, or a key in a PKCS#11 token
that never leaves it.  Every signature a session makes (its certificate, the leaves, the CRL,
signed policies) goes through a :class:`Signer`, so nothing else knows where the key lives.

`cryptography` builds and signs X.509 in one call and has no hook for an outside signer; for a
token the structure is built and signed with a throw-away key of the same algorithm, its
to-be-signed bytes are signed in the token, and the DER is reassembled around them."""

from __future__ import annotations

import abc
import hashlib
import threading
from collections.abc import Callable
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import CredentialError
from ._keys import (
    KeyType,
    PrivateKey,
    PublicKey,
    generate_key,
    sign_data,
    signing_hash,
    verify_data,
)
from ._keys import key_type_of as _key_type_of

__all__ = ["FileSigner", "Signer", "as_signer", "der_signed", "raw_ecdsa_to_der", "verify_x509"]

_Built = TypeVar("_Built", x509.Certificate, x509.CertificateRevocationList)


class Signer(abc.ABC):
    """Signs for a session.  `sign_x509` signs as certificates are signed (ECDSA, RSA PKCS#1
    v1.5, Ed25519); `sign_data` as :func:`._keys.sign_data` does (RSA-PSS for RSA)."""

    source: str

    @abc.abstractmethod
    def public_key(self) -> PublicKey: ...

    @abc.abstractmethod
    def sign_data(self, data: bytes) -> bytes: ...

    @abc.abstractmethod
    def sign_x509(self, tbs: bytes) -> bytes: ...

    @property
    def key_type(self) -> KeyType:
        return _key_type_of(self.public_key())

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        draft = builder.sign(_stand_in(self.key_type), signing_hash(_stand_in(self.key_type)))
        return self._resign(draft, draft.tbs_certificate_bytes, x509.load_der_x509_certificate)

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        draft = builder.sign(_stand_in(self.key_type), signing_hash(_stand_in(self.key_type)))
        return self._resign(draft, draft.tbs_certlist_bytes, x509.load_der_x509_crl)

    def _resign(self, draft: _Built, tbs: bytes, load: Callable[[bytes], _Built]) -> _Built:
        from cryptography.hazmat.primitives.serialization import Encoding

        signature = self.sign_x509(tbs)
        # A token that signed with another key (its object replaced under the same label) must
        # not produce a certificate nobody will accept: check before anything is written.
        if not verify_x509(self.public_key(), signature, tbs):
            raise CredentialError(
                f"{self.source}: the token's signature does not verify with the session's "
                "public key; the key object was replaced: restore the original key, or create "
                "a new session"
            )
        der = der_signed(draft.public_bytes(Encoding.DER), tbs, signature)
        return load(der)


class FileSigner(Signer):
    """A key file's key, in memory: `cryptography` signs as it always has."""

    def __init__(self, key: PrivateKey, source: str = "the session key") -> None:
        self.key = key
        self.source = source

    def public_key(self) -> PublicKey:
        return self.key.public_key()

    def sign_data(self, data: bytes) -> bytes:
        return sign_data(self.key, data)

    def sign_x509(self, tbs: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes

        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(tbs)
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
        return self.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())

    # cryptography signs its own builders with a key in memory, as before tokens existed.
    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self.key, signing_hash(self.key))

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        return builder.sign(self.key, signing_hash(self.key))


def as_signer(key: PrivateKey | Signer) -> Signer:
    return key if isinstance(key, Signer) else FileSigner(key)


_STAND_INS: dict[KeyType, PrivateKey] = {}
_STAND_IN_LOCK = threading.Lock()


def _stand_in(key_type: KeyType) -> PrivateKey:
    """A throw-away key of `key_type`, made once per process: only its algorithm is used (the
    draft's signature is discarded), and an RSA-3072 key takes a good part of a second."""
    with _STAND_IN_LOCK:
        if key_type not in _STAND_INS:
            _STAND_INS[key_type] = generate_key(key_type)
        return _STAND_INS[key_type]


def _tlv_end(der: bytes, pos: int) -> tuple[int, int]:
    """(start of the content, end of the element) of the DER element at `pos`."""
    first = der[pos + 1]
    if first < 0x80:
        return pos + 2, pos + 2 + first
    count = first & 0x7F
    length = int.from_bytes(der[pos + 2 : pos + 2 + count], "big")
    return pos + 2 + count, pos + 2 + count + length


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def der_signed(draft_der: bytes, tbs: bytes, signature: bytes) -> bytes:
    """`SEQUENCE { tbs, algorithm, BIT STRING signature }`: the draft's own algorithm
    identifier (the same as the one inside `tbs`) with the token's signature."""
    content, _end = _tlv_end(draft_der, 0)
    if draft_der[content : content + len(tbs)] != tbs:
        raise ValueError("the draft does not start with its to-be-signed part")
    alg_start = content + len(tbs)
    _c, alg_end = _tlv_end(draft_der, alg_start)
    algorithm = draft_der[alg_start:alg_end]
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))


def raw_ecdsa_to_der(raw: bytes) -> bytes:
    """PKCS#11 returns ECDSA as r||s; X.509 and `cryptography` want DER."""
    half = len(raw) // 2
    return encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def verify_x509(public: object, signature: bytes, tbs: bytes) -> bool:
    """Whether `signature` over `tbs` is by `public`, as X.509 signs (RSA in PKCS#1 v1.5)."""
    return verify_data(public, signature, tbs, rsa_padding=padding.PKCS1v15())
