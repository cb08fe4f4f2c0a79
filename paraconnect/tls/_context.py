"""SSL contexts for one session: TLS 1.3 only, the session CA alone, client certs required.

Python's server-side default is CERT_NONE and its default context trusts the system store and
allows TLS 1.2 CBC suites; none of that is inherited here: contexts are built from scratch.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..pki import Credentials

__all__ = ["client_context", "server_context"]


@contextlib.contextmanager
def _private_files(*blobs: bytes) -> Iterator[list[str]]:
    """Python's ssl loads keys and CRLs only from files: write them to a 0700 directory in
    memory-backed /dev/shm where there is one, and remove them as soon as they are loaded."""
    shm = "/dev/shm"  # noqa: S108 - a fresh 0700 directory from mkdtemp, not a fixed name
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="paraconnect-", dir=base) as tmp:
        paths = []
        for i, blob in enumerate(blobs):
            path = Path(tmp) / f"{i}.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            paths.append(str(path))
        yield paths


def _base(creds: Credentials, purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    # No tickets: a resumed session would skip the revocation check of a fresh handshake.
    ctx.options |= ssl.OP_NO_TICKET | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    trust = creds.ca_pem()
    crl = creds.crl_pem()
    if crl is not None:
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        trust += crl
    with _private_files(creds.cert_pem() + creds.key_pem(), trust) as (chain, cafile):
        ctx.load_cert_chain(chain)
        # The session CA (and its CRL) and nothing else: never load_default_certs().
        ctx.load_verify_locations(cafile=cafile)
    return ctx


def server_context(creds: Credentials) -> ssl.SSLContext:
    """The side that accepts TLS (the agent in forward mode, the client's listener in reverse)."""
    ctx = _base(creds, ssl.PROTOCOL_TLS_SERVER)
    ctx.num_tickets = 0
    return ctx


def client_context(creds: Credentials) -> ssl.SSLContext:
    """The side that dials. Host names are not checked: peers are identified by the session
    identity in their certificate (checked after the handshake), not by DNS names."""
    ctx = _base(creds, ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
