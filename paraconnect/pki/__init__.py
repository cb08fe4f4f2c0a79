"""Session credentials: the per-session CA, issued certificates, friend bundles, revocation,
the node unique ID, and the on-disk store that never loses data."""

from ._bundle import Bundle, import_bundle, read_bundle, share
from ._certs import CertInfo, Identity, Role, cert_info, fingerprint, parse_pem_certificates
from ._creds import Credentials, check_key_matches, check_validity, load_credentials
from ._keys import KeyType, Passphrase
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

__all__ = [
    "DEFAULT_CA_DAYS",
    "DEFAULT_LEAF_DAYS",
    "Bundle",
    "CertInfo",
    "Credentials",
    "Identity",
    "Issued",
    "KeyType",
    "Passphrase",
    "Record",
    "Role",
    "SecurityLevel",
    "Session",
    "Store",
    "UniqueId",
    "cert_info",
    "check_key_matches",
    "check_validity",
    "default_home",
    "fingerprint",
    "import_bundle",
    "load_credentials",
    "node_unique_id",
    "parse_pem_certificates",
    "read_bundle",
    "share",
]
