"""The TLS Pool call: hand over a connected socket, get back a stream and the proven peer.

`Side` holds what one end needs for every connection (credentials, level, acting role, unique
ID, SSL contexts, and in `Trust` the revocation list and policy in force) and checks its own
credentials once, before any peer sees them.  `secure()` is the one-shot form for Python
programs.

A side also keeps the registry of its open connections (`Tracked`, each with the identity TLS
proved and a cancel scope), an accounting record for every attempt, and the process metrics.
When its revocation list or policy changes (a file change seen by `refresh`, cheap enough for
every handshake and polled by `watch`, or pushed by the owner over a control channel), every open
connection is checked again and the ones now refused are closed, with the reason logged.
"""

from __future__ import annotations

import functools
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ..errors import (
    ConfigError,
    CredentialError,
    NetworkError,
    ParaconnectError,
    StorageError,
    TrustError,
)
from ..pki import (
    Credentials,
    Identity,
    Role,
    SecurityLevel,
    Store,
)
from ..tls import ANONYMOUS, PeerIdentity, PolicyWatcher, client_context, server_context
from ._accounting import Accounting, Attempt
from ._hello import HELLO_TIMEOUT, Hello, Purpose, exchange_hello
from ._ledger import Ledger
from ._radius import Radius
from ._radius_wire import RadiusConfig
from ._status import METRICS, Metrics, classify_failure
from ._stream import ByteStream, PlainConnection
from ._tracked import Tracked
from ._trust import Trust
from ._util import handshake_done, peer_addr

__all__ = ["HANDSHAKE_TIMEOUT", "Side", "Tracked", "identity_label", "secure"]

log = logging.getLogger("paraconnect.tunnel")


HANDSHAKE_TIMEOUT = 10.0


WATCH_INTERVAL = 0.25  # how often a running side looks at its CRL and policy files
PROGRESS_INTERVAL = 2.0  # how often open connections' byte counts reach the accounting


def identity_label(ident: Identity | None) -> str | None:
    """`Identity.label`, or None for no identity (what logs and accounting record)."""
    return ident.label if ident is not None else None


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
        accounting: Accounting | bool = True,
        metrics: Metrics | None = None,
        radius: RadiusConfig | None = None,
    ) -> None:
        """`accounting`: True (default) for the data directory's database, opened on the
        first connection and closed by `close()`; False for none; or an `Accounting` the
        caller owns.  `metrics`: the process-wide `METRICS` unless another is given.
        `radius`: ask this RADIUS server who may connect (every peer this side accepts, after
        revocation and policy) and tell it what every connection did."""
        # The list on disk now, not the one read with the credentials (maybe long ago); the
        # policy beside it.  A malformed policy stops the start here.
        self.trust = Trust(creds)
        self.role = _acting_role(role)
        self.level = SecurityLevel.parse(level) if level is not None else creds.level
        self.server_id = server_id
        self.handshake_timeout = handshake_timeout
        self.hello_timeout = min(hello_timeout, max(handshake_timeout, 1.0))
        self.unique_id = unique_id or (store or Store()).unique_id().value
        self._store = store
        self._contexts: dict[bool, ssl.SSLContext] = {}
        self._contexts_for = self.trust.crl_generation
        self._check_own(self.creds)
        self.open: set[Tracked] = set()
        self.draining = False  # a stop signal came: no new connections, open ones finish
        self._drained: anyio.Event | None = None
        self.metrics = metrics or METRICS
        self._accounting_wanted = accounting
        self._accounting: Accounting | None = (
            accounting if isinstance(accounting, Accounting) else None
        )
        self._accounting_failed = False
        self._ledger = Ledger(lambda: self.accounting)
        self.local_identity = identity_label(creds.identity) or "anonymous"
        # Who is told of connections opened, closed and refused (the hub's live events).
        # Called on the side's loop with a JSON-able dict and, for a refusal, the error; a
        # failing observer never stops a tunnel.
        self.observers: list[Callable[[dict[str, Any], BaseException | None], None]] = []
        self.radius = (
            Radius(radius, local_identity=self.local_identity, session_id=self.session_id,
                   accounting_db=lambda: self.accounting)
            if radius is not None else None
        )  # fmt: skip

    @property
    def session_id(self) -> str:
        return self.creds.identity.session_id

    def _check_own(self, creds: Credentials) -> None:
        ident = creds.identity
        if self.level is SecurityLevel.NONE:
            return
        creds.check()
        if ident.role is not Role.NODE and ident.role is not self.role:
            raise CredentialError(
                f"{creds.source} holds a {ident.role.value} certificate ({ident.name!r}), which "
                f"cannot act as a {self.role.value}; issue a "
                f"{self.role.value} or node certificate"
            )
        if self.level is not SecurityLevel.MUTUAL:
            return
        if ident.unique_id != self.unique_id:
            raise CredentialError(
                f"the certificate {ident.name!r} from {creds.source} was issued for node "
                f"{ident.unique_id!r}, but this node is {self.unique_id!r}; a copied "
                "certificate is refused at level mutual: issue one here with "
                f"'paraconnect issue {self.role.value} NAME --unique-id {self.unique_id}'"
            )

    # -- what this side trusts now (revocation list and policy: `Trust`) ------------------

    @property
    def creds(self) -> Credentials:
        """Our credentials, with the revocation list in force."""
        return self.trust.creds

    @property
    def policy(self) -> PolicyWatcher:
        return self.trust.policy

    def refresh(self) -> bool:
        """Look at the CRL and policy files, and our own certificate and key where they are a
        directory of PEM files (a few stats); on a change, reload, and close the open
        connections a new list or policy refuses.  True when something changed."""
        changed = self.trust.refresh()
        if changed:
            self.recheck()
        return self._renew() or changed

    def _renew(self) -> bool:
        """Take renewed credentials from our directory of PEM files: the same identity, valid,
        for this node; open connections keep the ones they were made with."""
        fresh = self.trust.own_changed()
        if fresh is None:
            return False
        old = self.creds.identity
        try:
            if (fresh.identity.role, fresh.identity.name) != (old.role, old.name):
                raise CredentialError(
                    f"{fresh.source} now names {fresh.identity.role.value} "
                    f"{fresh.identity.name!r}, not {old.role.value} {old.name!r}"
                )
            self._check_own(fresh)
        except ParaconnectError as exc:
            log.error("%s; keeping the credentials in force", exc)
            return False
        self.trust.adopt_own(fresh)
        log.info(
            "credentials %s renewed: certificate serial %x, valid until %s UTC",
            fresh.source, fresh.cert.serial_number,
            f"{fresh.cert.not_valid_after_utc:%Y-%m-%d %H:%M}",
        )  # fmt: skip
        return True

    def refusal(self, peer: PeerIdentity) -> str | None:
        """Why this side would refuse `peer` now (revoked, or denied by policy), or None."""
        if self.level is SecurityLevel.NONE or peer.identity is None:
            return None
        return self.trust.refusal(peer)

    def recheck(self) -> list[Tracked]:
        """Close every open connection this side would now refuse; returns them."""
        closed = []
        for tracked in list(self.open):
            why = self.refusal(tracked.peer)
            if why is not None:
                log.warning(
                    "closing the %s connection with %s at %s: %s",
                    tracked.kind,
                    tracked.peer.label,
                    tracked.where,
                    why,
                )
                tracked.close(why)
                closed.append(tracked)
        return closed

    def accept_crl(self, data: bytes | str, source: str) -> bool:
        """A revocation list pushed by the session owner: see :meth:`Trust.accept_crl`; open
        connections it now refuses are closed.  True when applied."""
        applied = self.trust.accept_crl(data, source)
        if applied:
            self.recheck()
        return applied

    def accept_policy(self, text: str, source: str) -> bool:
        """A policy pushed by the session owner: see :meth:`Trust.accept_policy`; open
        connections it now refuses are closed.  True when applied."""
        applied = self.trust.accept_policy(text, source)
        if applied:
            self.recheck()
        return applied

    def signed_policy(self) -> str | None:
        return self.trust.signed_policy()

    def crl_pem(self) -> str | None:
        return self.trust.crl_pem()

    # -- accounting and the registry of open connections -----------------------------------

    @property
    def accounting(self) -> Accounting | None:
        if self._accounting is None and self._accounting_wanted and not self._accounting_failed:
            try:
                self._accounting = Accounting.in_home((self._store or Store()).home)
            except StorageError as exc:
                self._accounting_failed = True
                log.error("%s; connections are NOT being accounted", exc)
        return self._accounting

    def open_accounting(self) -> Accounting | None:
        """Open the accounting now (a starting agent or client: rows that a killed
        predecessor left open are marked lost at once, not at the first connection)."""
        return self.accounting

    def data_open(self) -> int:
        return sum(1 for t in self.open if t.kind == "data")

    async def drain(self, grace: float) -> int:
        """Take no new connections and wait, up to `grace` s, for the open data streams to
        end; returns how many are still open (the caller then cuts them)."""
        self.draining = True
        self._drained = anyio.Event()
        if self.data_open():
            with anyio.move_on_after(grace):
                await self._drained.wait()
        return self.data_open()

    def close(self) -> None:
        """Write what the accounting has queued and release the database (reopened on the
        next connection)."""
        self._ledger.flush()
        if self.radius is not None:
            self.radius.close()
        if self._accounting is not None and self._accounting_wanted is True:
            self._accounting.close()
            self._accounting = None

    def _attempt(self, kind: str, where: str, peer: PeerIdentity | None, server_id: str) -> Attempt:
        ident = peer.identity if peer is not None else None
        return Attempt(
            session=self.session_id,
            server_id=server_id,
            kind=kind,
            side=self.role.value,
            local_identity=self.local_identity,
            remote_address=where,
            remote_identity=identity_label(ident),
            remote_role=ident.role.value if ident else None,
            remote_name=ident.name if ident else None,
            remote_serial=format(peer.serial, "x") if peer and peer.serial is not None else None,
            remote_unique_id=ident.unique_id if ident else None,
        )

    def _account(self, call: Callable[[Accounting], object]) -> object:
        acc = self.accounting
        if acc is None:
            return None
        try:
            return call(acc)
        except Exception as exc:  # sqlite3.Error, OSError: accounting never stops a tunnel
            log.error("accounting %s failed: %s", acc.path, exc)
            return None

    def track(self, conn: ByteStream, hello: Hello, where: str) -> Tracked:
        """Register an established connection (and start its accounting record).  Use the
        result as a context manager around the connection's work."""
        tracked = Tracked(self._untrack, conn, hello, where)
        server_id = hello.server_id if self.role is Role.CLIENT else self.server_id
        attempt = self._attempt(tracked.kind, where, conn.peer, server_id)
        if self.accounting is not None:
            tracked.row = self._ledger.start(attempt, tracked.started)
        self.open.add(tracked)
        if self.radius is not None:
            self.radius.accounting.opened(tracked)
        self.metrics.opened(tracked)
        self._tell(tracked, "open")
        # A change between the handshake and now is caught here.
        why = self.refusal(conn.peer)
        if why is not None:
            tracked.close(why)
        return tracked

    def _untrack(self, tracked: Tracked) -> None:
        self.open.discard(tracked)
        if self._drained is not None and not self.data_open():
            self._drained.set()
        self.metrics.closed(tracked)
        bytes_in, bytes_out = tracked.byte_counts()
        reason = (
            f"closed by this side: {tracked.closed_by}" if tracked.closed_by else tracked.reason
        )
        if tracked.row is not None:
            self._ledger.finish(tracked.row, bytes_in=bytes_in, bytes_out=bytes_out, reason=reason)
        if self.radius is not None:
            self.radius.accounting.closed(tracked, bytes_in, bytes_out, reason)
        self._tell(tracked, "closed", bytes_in=bytes_in, bytes_out=bytes_out, reason=reason)

    def _progress(self) -> None:
        self._ledger.flush()
        rows = [
            (t.row.id, *t.byte_counts())
            for t in self.open
            if t.row is not None and t.row.id is not None
        ]
        if rows:
            self._account(lambda acc: acc.progress(rows))

    async def watch(
        self,
        on_crl_change: Callable[[], Awaitable[None]] | None = None,
        *,
        interval: float = WATCH_INTERVAL,
    ) -> None:
        """Run while the side serves: notice CRL and policy changes (and close what they now
        refuse) within `interval`, keep open rows' byte counts current in the accounting,
        and call `on_crl_change` (the owner pushes the new list to its agents)."""
        last_progress = time.monotonic()
        async with anyio.create_task_group() as tg:
            if self.radius is not None:
                tg.start_soon(self.radius.accounting.run)
            while True:
                await anyio.sleep(interval)
                self.refresh()
                if self.trust.unpushed:
                    self.trust.unpushed = False
                    if on_crl_change is not None:
                        await on_crl_change()
                now = time.monotonic()
                if now - last_progress >= PROGRESS_INTERVAL:
                    last_progress = now
                    self._progress()

    def context(self, server_side: bool) -> ssl.SSLContext:
        self.refresh()
        if self._contexts_for != self.trust.crl_generation:
            self._contexts.clear()  # they hold the old revocation list
            self._contexts_for = self.trust.crl_generation
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
        lead: Callable[[], bytes] | None = None,
    ) -> tuple[ByteStream, Hello]:
        """Handshake (unless level none) and hello, with the policy checked on the peer.
        Closes the socket on failure.  Every failure is counted and accounted as a refused
        attempt; a success is counted, and the caller tracks it (`track`).  `lead`: a dialler
        about to relay gives the first bytes it has for the peer (b"" if none yet); they go
        out with its hello and its yes, a round trip before the acceptor's answer
        (`exchange_hello`)."""
        try:
            return await self._establish(
                sock, server_side=server_side, purpose=purpose, channel=channel,
                expect_server_id=expect_server_id, lead=lead,
            )  # fmt: skip
        finally:
            # The listener that accepted `sock` may take the next connection now.
            handshake_done()

    async def _establish(
        self,
        sock: socket.socket,
        *,
        server_side: bool,
        purpose: Purpose,
        channel: str | None,
        expect_server_id: str | None,
        lead: Callable[[], bytes] | None = None,
    ) -> tuple[ByteStream, Hello]:
        conn: ByteStream
        started = time.time()
        where = peer_addr(sock)
        if self.draining:
            sock.close()
            raise NetworkError(f"not taking the connection from {where}: shutting down")
        # The acceptor learns the purpose only from the hello.
        kind = purpose.value if not server_side else "unknown"
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
                    # The dialler speaks first (its hello): that write carries the flight.
                    hold_last_flight=not server_side,
                )
        except ParaconnectError as exc:
            sock.close()
            self._failed(exc, kind, where, None, expect_server_id or self.server_id, started)
            raise
        except BaseException:
            sock.close()
            raise
        seen: list[Hello] = []

        def check_policy(peer: PeerIdentity, hello: Hello) -> None:
            seen.append(hello)
            why = self.policy.refusal(peer) if self.level is not SecurityLevel.NONE else None
            if why is not None:
                raise TrustError(why)

        try:
            theirs = await exchange_hello(
                conn,
                self.hello(purpose, channel),
                initiator=not server_side,
                level=self.level,
                session_id=self.session_id,
                expect_server_id=expect_server_id,
                timeout=self.hello_timeout,
                check=check_policy,
                # Who may connect, asked of RADIUS once revocation and policy let the peer by.
                authorize=(
                    functools.partial(self.radius.authorize, where=where)
                    if self.radius is not None and server_side else None
                ),
                lead=lead if not server_side else None,
            )  # fmt: skip
        except ParaconnectError as exc:
            await conn.aclose()
            peer = getattr(conn, "peer", None)
            kind = seen[0].purpose.value if seen else kind
            self._failed(exc, kind, where, peer, expect_server_id or self.server_id, started)
            raise
        except BaseException:
            await conn.aclose()
            raise
        self.metrics.handshake_ok()
        return conn, theirs

    def refuse(self, conn: ByteStream, hello: Hello, where: str, why: str) -> None:
        """Account and announce a peer refused after its hello (by a listener's own admission
        rule), as a refused handshake is; the caller closes the connection."""
        self._failed(
            TrustError(why), hello.purpose.value, where, conn.peer, hello.server_id, time.time()
        )

    def _failed(
        self,
        exc: ParaconnectError,
        kind: str,
        where: str,
        peer: PeerIdentity | None,
        server_id: str,
        started: float,
    ) -> None:
        self.metrics.handshake_failed(classify_failure(exc))
        attempt = self._attempt(kind, where, peer, server_id)
        self._account(lambda acc: acc.refused(attempt, str(exc), started))
        self._notify({
            "event": "refused", "session": self.session_id, "server_id": server_id,
            "kind": kind, "where": where, "peer": attempt.remote_identity,
            "reason": str(exc), "at": time.time(),
        }, exc)  # fmt: skip

    def _tell(self, tracked: Tracked, state: str, **extra: object) -> None:
        if not self.observers:
            return
        hello = tracked.hello
        event = {
            "event": "connection", "state": state, "session": self.session_id,
            "server_id": hello.server_id or self.server_id, "kind": tracked.kind,
            "peer": identity_label(tracked.peer.identity), "where": tracked.where,
            "at": time.time(), **extra,
        }  # fmt: skip
        # Whoever hears of a connection (the hub's events) finds it in the accounting already:
        # told after the ledger's next commit (within FLUSH_DELAY), which gathers many
        # connections, rather than a commit forced for each event.
        self._ledger.then(lambda: self._notify(event))

    def _notify(self, event: dict[str, Any], exc: BaseException | None = None) -> None:
        for observer in list(self.observers):
            try:
                observer(event, exc)
            except Exception:  # an observer's bug never stops a tunnel
                log.exception("a connection observer failed")


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
    try:
        # A refusal is accounted here; an accepted stream belongs to the caller from now on.
        conn, _hello = await side.establish(sock, server_side=server_side, purpose=Purpose(purpose))
    finally:
        side.close()
    return conn, conn.peer
