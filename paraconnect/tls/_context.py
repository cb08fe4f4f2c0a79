"""SSL contexts for one session: TLS 1.3 only, the session CA alone, client certs required.

Python's server-side default is CERT_NONE and its default context trusts the system store and
allows TLS 1.2 CBC suites; none of that is inherited here: contexts are built from scratch.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import ssl
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ..pki import Credentials

__all__ = ["client_context", "server_context"]

log = logging.getLogger("paraconnect")

# OpenSSL's SSL_CTX_ctrl commands and the mode bit (ssl.h); stable since OpenSSL 1.1.0.
_SSL_CTRL_MODE = 33
_SSL_CTRL_GET_MAX_PROTO_VERSION = 131
_SSL_MODE_NO_AUTO_CHAIN = 0x8
_TLS1_3_VERSION = 0x0304


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
    _send_leaf_alone(ctx)
    return ctx


@functools.cache
def _ssl_ctx_ctrl() -> Callable[[int, int, int, None], int] | None:
    """OpenSSL's SSL_CTX_ctrl, from the very library Python's ssl module runs on; None where it
    cannot be reached safely (not CPython, or no such symbol)."""
    if sys.implementation.name != "cpython":
        return None
    try:
        import _ssl

        # dlsym through _ssl's own handle finds the libssl it was linked with, not another.
        lib = ctypes.CDLL(getattr(_ssl, "__file__", None))
        ctrl = lib.SSL_CTX_ctrl
    except (OSError, AttributeError):
        return None
    ctrl.restype = ctypes.c_long
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    return ctrl


def _send_leaf_alone(ctx: ssl.SSLContext) -> None:
    """Send our certificate alone, not a chain.  Every peer of a session holds its CA (it is the
    only thing either end trusts), so the CA on the wire is never needed.  Left to itself,
    OpenSSL builds the chain to send from the trust store on every handshake (a verification
    of our own certificate, revocation list included) and sends the CA as well, which the peer
    parses for nothing: together about 150 us of a side's 550 us handshake here, and 550 bytes
    of each flight.  Python's ssl has no call for SSL_MODE_NO_AUTO_CHAIN, so it is set through
    ctypes on the SSL_CTX that CPython's SSLContext holds as its first field.  Where that cannot
    be done safely the default stays: the same handshake, a little slower."""
    ctrl = _ssl_ctx_ctrl()
    if ctrl is None:
        log.debug("TLS: OpenSSL not reachable through ctypes; sending the certificate chain")
        return
    # PyObject_HEAD, then `SSL_CTX *ctx` (Modules/_ssl.c, every CPython 3).
    handle = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not handle or ctrl(handle, _SSL_CTRL_GET_MAX_PROTO_VERSION, 0, None) != _TLS1_3_VERSION:
        log.debug("TLS: unexpected SSLContext layout; sending the certificate chain")
        return
    ctrl(handle, _SSL_CTRL_MODE, _SSL_MODE_NO_AUTO_CHAIN, None)


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
