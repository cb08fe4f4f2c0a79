"""The TLS Pool call: hand over a connected socket, get back a stream and the proven peer.

`Side` holds what one end needs for every connection (credentials, level, acting role, unique
ID, SSL contexts) and checks its own credentials once, before any peer sees them.  `secure()`
is the one-shot form for Python programs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import ssl
from pathlib import Path

from ..errors import ConfigError, CredentialError, ParaconnectError
from ..pki import Credentials, Role, SecurityLevel, Store, load_crl
from ..tls import ANONYMOUS, PeerIdentity, client_context, server_context
from ._hello import HELLO_TIMEOUT, Hello, Purpose, exchange_hello
from ._stream import ByteStream, PlainConnection

__all__ = ["HANDSHAKE_TIMEOUT", "Side", "secure"]

log = logging.getLogger("paraconnect.tunnel")

HANDSHAKE_TIMEOUT = 10.0


def _acting_role(role: Role | str) -> Role:
    acting = Role.parse(role)
    if acting not in (Role.SERVER, Role.CLIENT):
        raise ConfigError(f"a connection end acts as server or client, not {acting.value}")
    return acting


class Side:
    """One end of every tunnel connection it makes or accepts."""

    def __init__(
        self,
        creds: Credentials,
        role: Role | str,
        *,
        level: SecurityLevel | str | None = None,
        server_id: str = "",
        unique_id: str | None = None,
        store: Store | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        hello_timeout: float = HELLO_TIMEOUT,
    ) -> None:
        self.creds = creds
        self.role = _acting_role(role)
        self.level = SecurityLevel.parse(level) if level is not None else creds.level
        self.server_id = server_id
        self.handshake_timeout = handshake_timeout
        self.hello_timeout = min(hello_timeout, max(handshake_timeout, 1.0))
        self.unique_id = unique_id or (store or Store()).unique_id().value
        self._check_own()
        self._crl_path = self._find_crl()
        self._crl_stamp = self._stamp()
        self._contexts: dict[bool, ssl.SSLContext] = {}

    @property
    def session_id(self) -> str:
        return self.creds.identity.session_id

    def _check_own(self) -> None:
        creds, ident = self.creds, self.creds.identity
        if self.level is SecurityLevel.NONE:
            return
        creds.check()
        if self.level is not SecurityLevel.MUTUAL:
            return
        if ident.role is not Role.NODE and ident.role is not self.role:
            raise CredentialError(
                f"{creds.source} holds a {ident.role.value} certificate ({ident.name!r}), which "
                f"cannot act as a {self.role.value} at level mutual; issue a "
                f"{self.role.value} or node certificate"
            )
        if ident.unique_id != self.unique_id:
            raise CredentialError(
                f"the certificate {ident.name!r} from {creds.source} was issued for node "
                f"{ident.unique_id!r}, but this node is {self.unique_id!r}; a copied "
                "certificate is refused at level mutual: issue one here with "
                f"'paraconnect issue {self.role.value} NAME --unique-id {self.unique_id}'"
            )

    # -- revocation list, re-read when it changes on disk -----------------------------------
    # Credentials from a session follow that session's crl.pem; credentials from a directory
    # of PEM files (what an agent on a remote node holds) follow the crl.pem beside them, so
    # copying a fresh CRL there revokes a friend without restarting the agent.

    def _find_crl(self) -> Path | None:
        return self.creds.crl_path

    def _stamp(self) -> int | None:
        if self._crl_path is None:
            return None
        try:
            return os.stat(self._crl_path).st_mtime_ns
        except OSError:
            return None

    def _refresh(self) -> None:
        stamp = self._stamp()
        if stamp == self._crl_stamp or self._crl_path is None or stamp is None:
            return
        self._crl_stamp = stamp
        try:
            crl = load_crl(self._crl_path, self.creds.ca_cert)
        except ParaconnectError as exc:
            # A broken list never weakens a running side: the previous one stays in force.
            log.error("%s; keeping the previous revocation list", exc)
            return
        if crl is None:
            return
        self.creds = dataclasses.replace(self.creds, crl=crl)
        self._contexts.clear()
        log.info("revocation list %s changed: reloaded", self._crl_path)

    def context(self, server_side: bool) -> ssl.SSLContext:
        self._refresh()
        ctx = self._contexts.get(server_side)
        if ctx is None:
            ctx = server_context(self.creds) if server_side else client_context(self.creds)
            self._contexts[server_side] = ctx
        return ctx

    def hello(self, purpose: Purpose, channel: str | None = None) -> Hello:
        return Hello(
            session=self.session_id,
            role=self.role,
            server_id=self.server_id,
            purpose=purpose,
            unique_id=self.unique_id if self.level is SecurityLevel.MUTUAL else None,
            channel=channel,
        )

    async def establish(
        self,
        sock: socket.socket,
        *,
        server_side: bool,
        purpose: Purpose = Purpose.DATA,
        channel: str | None = None,
        expect_server_id: str | None = None,
    ) -> tuple[ByteStream, Hello]:
        """Handshake (unless level none) and hello. Closes the socket on failure."""
        conn: ByteStream
        try:
            if self.level is SecurityLevel.NONE:
                conn = PlainConnection(sock, ANONYMOUS)
            else:
                from ._tlsconn import TLSConnection

                conn = await TLSConnection.handshake(
                    sock,
                    self.context(server_side),
                    server_side=server_side,
                    timeout=self.handshake_timeout,
                )
        except BaseException:
            sock.close()
            raise
        try:
            theirs = await exchange_hello(
                conn,
                self.hello(purpose, channel),
                initiator=not server_side,
                level=self.level,
                session_id=self.session_id,
                expect_server_id=expect_server_id,
                timeout=self.hello_timeout,
            )
        except BaseException:
            await conn.aclose()
            raise
        return conn, theirs


async def secure(
    sock: socket.socket,
    creds: Credentials,
    *,
    role: Role | str,
    server_side: bool,
    purpose: Purpose | str = Purpose.DATA,
    level: SecurityLevel | str | None = None,
    server_id: str = "",
) -> tuple[ByteStream, PeerIdentity]:
    """Secure a connected socket for a Python program: TLS handshake (TLS 1.3, the session CA
    alone), then the hello and the security level's checks.  Returns the stream (send, recv,
    send_eof, aclose) and the identity TLS proved; raises TrustError with the reason when
    either side refuses, NetworkError or ProtocolError otherwise.  Closes `sock` on failure."""
    side = Side(creds, role, level=level, server_id=server_id)
    conn, _hello = await side.establish(sock, server_side=server_side, purpose=Purpose(purpose))
    return conn, conn.peer
