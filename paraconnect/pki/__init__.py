"""Session credentials: the per-session CA, issued certificates, friend bundles, revocation,
the node unique ID, and the on-disk store that never loses data.

Submodules are imported on first use (PEP 562), so a command that only issues a certificate
does not pay for PKCS#12 support, and `paraconnect --help` loads no cryptography at all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._bundle import Bundle, import_bundle, read_bundle, share
    from ._certs import (
        CertInfo,
        Identity,
        Role,
        build_leaf,
        cert_info,
        fingerprint,
        load_crl,
        parse_pem_certificates,
        parse_pem_crl,
        revocation_reason,
        revoked_entry,
        signed_by,
    )
    from ._creds import Credentials, check_validity, human_duration, load_credentials
    from ._keys import (
        KeyType,
        Passphrase,
        PublicKey,
        check_key_matches,
        key_type_of,
        load_private_key,
        spki_der,
    )
    from ._names import check_name, check_unique_id
    from ._policy import (
        POLICY_FILE,
        Policy,
        Rule,
        add_rule,
        crl_number,
        load_policy,
        policy_path,
        policy_warnings,
        remove_rule,
        save_policy,
        set_default,
        sign_policy,
        update_policy,
        verify_crl,
        verify_policy,
        write_crl_beside,
    )
    from ._store import (
        DEFAULT_CA_DAYS,
        DEFAULT_LEAF_DAYS,
        Issued,
        Record,
        SecurityLevel,
        Session,
        Store,
        default_home,
    )
    from ._uniqueid import UniqueId, node_unique_id

_WHERE = {
    "Bundle": "_bundle",
    "import_bundle": "_bundle",
    "read_bundle": "_bundle",
    "share": "_bundle",
    "CertInfo": "_certs",
    "Identity": "_certs",
    "Role": "_certs",
    "build_leaf": "_certs",
    "cert_info": "_certs",
    "fingerprint": "_certs",
    "load_crl": "_certs",
    "parse_pem_certificates": "_certs",
    "revocation_reason": "_certs",
    "revoked_entry": "_certs",
    "parse_pem_crl": "_certs",
    "signed_by": "_certs",
    "Credentials": "_creds",
    "check_key_matches": "_keys",
    "check_validity": "_creds",
    "human_duration": "_creds",
    "load_credentials": "_creds",
    "KeyType": "_keys",
    "Passphrase": "_keys",
    "PublicKey": "_keys",
    "key_type_of": "_keys",
    "load_private_key": "_keys",
    "spki_der": "_keys",
    "check_name": "_names",
    "check_unique_id": "_names",
    "POLICY_FILE": "_policy",
    "Policy": "_policy",
    "Rule": "_policy",
    "add_rule": "_policy",
    "remove_rule": "_policy",
    "set_default": "_policy",
    "crl_number": "_policy",
    "load_policy": "_policy",
    "policy_path": "_policy",
    "policy_warnings": "_policy",
    "save_policy": "_policy",
    "update_policy": "_policy",
    "sign_policy": "_policy",
    "verify_crl": "_policy",
    "verify_policy": "_policy",
    "write_crl_beside": "_policy",
    "DEFAULT_CA_DAYS": "_store",
    "DEFAULT_LEAF_DAYS": "_store",
    "Issued": "_store",
    "Record": "_store",
    "SecurityLevel": "_store",
    "Session": "_store",
    "Store": "_store",
    "default_home": "_store",
    "UniqueId": "_uniqueid",
    "node_unique_id": "_uniqueid",
}

__all__ = [
    "DEFAULT_CA_DAYS",
    "DEFAULT_LEAF_DAYS",
    "POLICY_FILE",
    "Bundle",
    "CertInfo",
    "Credentials",
    "Identity",
    "Issued",
    "KeyType",
    "Passphrase",
    "Policy",
    "PublicKey",
    "Record",
    "Role",
    "Rule",
    "SecurityLevel",
    "Session",
    "Store",
    "UniqueId",
    "add_rule",
    "build_leaf",
    "cert_info",
    "check_key_matches",
    "check_name",
    "check_unique_id",
    "check_validity",
    "crl_number",
    "default_home",
    "fingerprint",
    "human_duration",
    "import_bundle",
    "key_type_of",
    "load_credentials",
    "load_crl",
    "load_policy",
    "load_private_key",
    "node_unique_id",
    "parse_pem_certificates",
    "parse_pem_crl",
    "policy_path",
    "policy_warnings",
    "read_bundle",
    "remove_rule",
    "revocation_reason",
    "revoked_entry",
    "save_policy",
    "set_default",
    "share",
    "sign_policy",
    "signed_by",
    "spki_der",
    "update_policy",
    "verify_crl",
    "verify_policy",
    "write_crl_beside",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
