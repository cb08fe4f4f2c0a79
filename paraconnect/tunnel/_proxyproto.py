"""PROXY protocol v2 headers for the private leg (``serve --proxy-protocol``), as ghostunnel
sends them: the program behind the agent learns, per connection, the peer's address and the
identity TLS proved, without touching TLS.

The header carries the TLS peer's address as source and the agent's as destination, the
standard ``PP2_TYPE_SSL`` TLV (TLS version, CN, cipher; "verified") and one custom TLV
(``0xE0``) holding `PeerIdentity.as_dict()` as JSON.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct

from ..tls import PeerIdentity

__all__ = ["PP2_TYPE_PARACONNECT", "SIGNATURE", "proxy_header"]

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_TYPE_PARACONNECT = 0xE0  # PP2_TYPE_MIN_CUSTOM: the peer identity as JSON
_PP2_CLIENT_SSL = 0x01
_PP2_CLIENT_CERT_CONN = 0x02


def _tlv(kind: int, value: bytes) -> bytes:
    return struct.pack(">BH", kind, len(value)) + value


def _addresses(sock: socket.socket) -> tuple[int, bytes]:
    """(family byte, address block) from a connected TCP socket; UNSPEC when unknown."""
    try:
        src_host, src_port = sock.getpeername()[:2]
        dst_host, dst_port = sock.getsockname()[:2]
        src, dst = ipaddress.ip_address(src_host), ipaddress.ip_address(dst_host)
    except (OSError, ValueError, TypeError):
        return 0x00, b""
    if isinstance(src, ipaddress.IPv6Address) and src.ipv4_mapped:
        src = src.ipv4_mapped
    if isinstance(dst, ipaddress.IPv6Address) and dst.ipv4_mapped:
        dst = dst.ipv4_mapped
    if src.version != dst.version:
        return 0x00, b""
    family = 0x11 if src.version == 4 else 0x21  # TCP over IPv4 / IPv6
    return family, src.packed + dst.packed + struct.pack(">HH", src_port, dst_port)


def proxy_header(peer: PeerIdentity, tls_sock: socket.socket) -> bytes:
    family, addresses = _addresses(tls_sock)
    tlvs = b""
    if peer.identity is not None:
        subs = b""
        if peer.tls_version:
            subs += _tlv(PP2_SUBTYPE_SSL_VERSION, peer.tls_version.encode())
        if peer.common_name:
            subs += _tlv(PP2_SUBTYPE_SSL_CN, peer.common_name.encode())
        if peer.cipher:
            subs += _tlv(PP2_SUBTYPE_SSL_CIPHER, peer.cipher.encode())
        flags = _PP2_CLIENT_SSL | _PP2_CLIENT_CERT_CONN
        tlvs += _tlv(PP2_TYPE_SSL, struct.pack(">BI", flags, 0) + subs)
    tlvs += _tlv(PP2_TYPE_PARACONNECT, json.dumps(peer.as_dict(), separators=(",", ":")).encode())
    body = addresses + tlvs
    return SIGNATURE + struct.pack(">BBH", 0x21, family, len(body)) + body
