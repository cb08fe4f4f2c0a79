"""Plain words for what goes wrong on the way to a peer: socket errors, TLS verify codes and
alerts, and the tunnel's own refusals.  `explain(exc)` gives any of them a reason and a fix
(the tunnel's one-line refusals can append it); the diagnosis steps use the same words."""

from __future__ import annotations

import errno
import re
import socket
import ssl

from ..errors import ConfigError, CredentialError, NetworkError, ProtocolError, TrustError

__all__ = ["alert_words", "bind_words", "connect_words", "explain", "verify_words"]

_AGENT_RUNNING = (
    "is the agent running ('paraconnect serve ... --listen HOST:PORT')? is it listening on "
    "that port and on an address this machine can reach (not only 127.0.0.1 of another host)?"
)


def connect_words(code: int | None, where: str) -> tuple[str, str]:
    """(reason, fix) for a failed TCP connect to `where`."""
    if code == errno.ECONNREFUSED:
        return (
            f"connection refused by {where}: nothing listens on that port (or a firewall "
            "rejects with a reset)",
            _AGENT_RUNNING,
        )
    if code in (errno.ETIMEDOUT, None):
        return (
            f"connecting to {where} timed out: no answer at all, which is what a firewall that "
            "drops packets looks like (or a host that is down)",
            "open the port in the firewall between the two machines (nftables/iptables, "
            "security groups, the site's firewall), or dial an address that is reachable, e.g. "
            "through an ssh tunnel",
        )
    if code == errno.ENETUNREACH:
        return (
            f"network unreachable for {where}: this machine has no route to that address",
            "check the address, this machine's network (ip route) and VPN, or dial through a "
            "machine that can reach it",
        )
    if code == errno.EHOSTUNREACH:
        return (
            f"host unreachable: {where} did not answer on its network, or a router/firewall "
            "answered 'host unreachable'",
            "check that the host is up and the address right; a firewall may reject the port",
        )
    if code == errno.EADDRNOTAVAIL:
        return (
            f"cannot connect to {where}: the address cannot be used from here",
            "check the address (a wildcard such as 0.0.0.0 is for listening, not dialling)",
        )
    if code == errno.EACCES or code == errno.EPERM:
        return (
            f"connecting to {where} was blocked on this machine (a local firewall rule or policy)",
            "check this machine's firewall (nft list ruleset) and security policy",
        )
    text = errno.errorcode.get(code or 0, str(code))
    return (f"cannot connect to {where}: {text}", "check the address and the network")


def bind_words(code: int | None, where: str) -> tuple[str, str]:
    """(reason, fix) for a failed bind/listen on `where`."""
    if code == errno.EADDRINUSE:
        port = where.rsplit(":", 1)[-1]
        return (
            f"address {where} is already in use: another program listens there",
            f"stop it or pick another port; 'ss -ltnp sport = :{port}' shows who holds it "
            "(a 'paraconnect listen' or an agent already running?)",
        )
    if code == errno.EADDRNOTAVAIL:
        return (
            f"{where} is not an address of this host: a listener can only bind addresses of "
            "its own network interfaces",
            "listen on one of this machine's addresses ('ip -brief address'), or on 0.0.0.0 / "
            "[::] for all of them",
        )
    if code == errno.EACCES:
        return (
            f"not allowed to listen on {where}: ports below 1024 need privileges",
            "pick a port above 1024",
        )
    text = errno.errorcode.get(code or 0, str(code))
    return (f"cannot listen on {where}: {text}", "check the address and port")


# OpenSSL X509_V_ERR_* codes: what is wrong with the certificate we were shown.
_VERIFY: dict[int, tuple[str, str]] = {
    2: ("is not signed by our session CA (unknown issuer)", "use credentials of one session"),
    3: (
        "cannot be checked for revocation (no revocation list for its CA)",
        "use credentials of one session",
    ),
    7: ("has a bad signature", "use credentials of one session"),
    9: (
        "is not valid yet (one of the two clocks is wrong)",
        "check time synchronisation (timedatectl, chrony) on both machines",
    ),
    10: ("has expired", "issue a new certificate with 'paraconnect issue'"),
    18: ("is self-signed, not issued by our session CA", "use credentials of one session"),
    19: (
        "comes from another session (its chain ends at another CA)",
        "use credentials of one session",
    ),
    20: ("is not signed by our session CA (another session?)", "use credentials of one session"),
    21: ("is not signed by our session CA (another session?)", "use credentials of one session"),
    23: ("was revoked", "issue a new certificate; a revoked one never comes back"),
    26: (
        "may not be used for this purpose (wrong role)",
        "issue a certificate of the right role",
    ),
}


def verify_words(code: int) -> tuple[str, str]:
    return _VERIFY.get(code, (f"was refused (OpenSSL verify error {code})", "check both ends"))


# Alerts a peer sends about OUR certificate, by OpenSSL reason name.
_ALERTS: dict[str, tuple[str, str]] = {
    "TLSV1_ALERT_UNKNOWN_CA": (
        "our certificate is not signed by a CA it trusts: it belongs to another session",
        "use credentials of the peer's session (or start the peer with yours)",
    ),
    "SSLV3_ALERT_CERTIFICATE_REVOKED": (
        "our certificate was revoked in the peer's revocation list",
        "ask the session owner for a new certificate ('paraconnect issue' or 'share')",
    ),
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": (
        "our certificate has expired, or is not valid yet on the peer's clock",
        "issue a new certificate, and check both clocks",
    ),
    "SSLV3_ALERT_BAD_CERTIFICATE": (
        "our certificate is not acceptable to it",
        "use credentials of the peer's session",
    ),
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": (
        "our certificate is not acceptable to it",
        "use credentials of the peer's session",
    ),
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": (
        "our certificate is of a kind it does not accept",
        "issue a new certificate",
    ),
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (
        "it requires a certificate and we sent none",
        "give --creds with a certificate and key",
    ),
    "TLSV1_ALERT_ACCESS_DENIED": ("it denies us access", "ask the peer's owner"),
    "TLSV1_ALERT_DECRYPT_ERROR": (
        "it could not verify our handshake signature (key and certificate do not match?)",
        "check our credentials with 'paraconnect debug creds'",
    ),
    "TLSV1_ALERT_PROTOCOL_VERSION": (
        "it does not accept our TLS version",
        "the peer is not a paraconnect endpoint of this version (paraconnect speaks TLS 1.3)",
    ),
}


def alert_words(reason: str) -> tuple[str, str] | None:
    return _ALERTS.get(reason)


def _cause_chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out and len(out) < 10:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _radius_words(text: str) -> str | None:
    """The accepting side's RADIUS server said no (its Reply-Message), or did not answer."""
    said = re.search(
        r"the RADIUS server (\S+) rejected (?:\w+ '[^']*'(?: on [^\s:]+)?|anonymous \(no TLS\)): "
        r"(.*)$",
        text,
    )
    if said:
        server, message = said[1], said[2]
        return (
            f"the accepting side's RADIUS server ({server}) does not let this certificate in: "
            f"{message}; fix: ask the administrators of that RADIUS server (its user directory)"
        )
    if "the RADIUS server" in text and "did not answer" in text:
        return (
            "the accepting side's RADIUS server did not answer, and that side fails closed; "
            "fix: check that RADIUS server is up and reachable from the accepting side"
        )
    return None


def explain(exc: BaseException) -> str:
    """Why `exc` happened and what to do, in one sentence each ("reason; fix: ...").

    Works on the errors the tunnel raises (NetworkError, TrustError, ...) by looking at their
    cause (the socket or TLS error) first and their message second."""
    for cause in _cause_chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            words, fix = verify_words(cause.verify_code)
            return f"the peer's certificate {words}; fix: {fix}"
        if isinstance(cause, ssl.SSLError):
            found = alert_words(str(getattr(cause, "reason", "") or ""))
            if found:
                return f"the peer refused us: {found[0]}; fix: {found[1]}"
        if isinstance(cause, socket.gaierror):
            return (
                f"the name does not resolve ({cause.strerror}); fix: check the spelling, DNS "
                "and VPN, or give the address itself"
            )
        # An SSLError is an OSError whose errno is OpenSSL's error kind, not the system's.
        if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError) and cause.errno:
            reason, fix = connect_words(cause.errno, "the peer")
            if cause.errno in (errno.EADDRINUSE,):
                reason, fix = bind_words(cause.errno, "the address")
            return f"{reason}; fix: {fix}"
    radius = _radius_words(str(exc))
    if radius:
        return radius
    text = str(exc).lower()
    table: list[tuple[tuple[str, ...], str]] = [
        (("revoked",), "a certificate was revoked; fix: ask the session owner for a new one"),
        (
            ("sent no certificate",),
            "the peer sent no certificate (not a paraconnect client, or one started without "
            "credentials); fix: connect with credentials of this session (--creds)",
        ),
        (
            ("copied certificate",),
            "the certificate was issued for another machine (its CN is another node's unique "
            "ID); fix: issue one on this machine, or set PARACONNECT_UNIQUE_ID where that is "
            "meant",
        ),
        (
            ("unknown ca", "another session", "not signed by", "not ours", "belongs to session"),
            "the two ends hold credentials of different sessions; fix: use one session's "
            "credentials on both ends (compare 'paraconnect debug creds' on each)",
        ),
        (
            ("cannot act as", "cannot talk to", "acts only in its own role"),
            "a certificate is used in the wrong role (client vs server) at level mutual; "
            "fix: issue a certificate of the right role, or a node certificate",
        ),
        (
            ("expired", "not valid until", "not valid yet"),
            "a certificate is outside its validity (expired, or a clock is wrong); fix: issue a "
            "new one and check both clocks",
        ),
        (
            ("refused", "connection refused"),
            f"nothing accepted the connection; fix: {_AGENT_RUNNING}",
        ),
        (
            ("timed out",),
            "no answer in time: a firewall that drops packets, or a peer that is not a "
            "paraconnect endpoint; fix: run 'paraconnect debug client HOST:PORT' to see which",
        ),
        (
            ("does not speak tls", "not a paraconnect endpoint"),
            "the port is served by something else than a paraconnect agent; fix: run "
            "'paraconnect debug client HOST:PORT' to see what answers",
        ),
    ]
    for keys, words in table:
        if any(k in text for k in keys):
            return words
    if isinstance(exc, CredentialError):
        return "our own credentials are unusable; fix: run 'paraconnect debug creds C'"
    if isinstance(exc, TrustError):
        return "one end refused the other's certificate; fix: run 'paraconnect debug client'"
    if isinstance(exc, (NetworkError, ProtocolError)):
        return "the connection failed; fix: run 'paraconnect debug client HOST:PORT'"
    if isinstance(exc, ConfigError):
        return "an option is wrong; fix: see the message and 'paraconnect --help'"
    return f"unexpected error ({exc.__class__.__name__})"
