"""The PROXY protocol header, v1 (text) and v2 (binary): bytes in, addresses out (pure).

A load balancer in TCP mode (HAProxy's `send-proxy`, `send-proxy-v2`) starts
each connection with one header naming the client it accepted. The rules are
those of https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt:

* v1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n` or `PROXY UNKNOWN ...\\r\\n`,
  at most 107 bytes with its CRLF (§2.1);
* v2: a 12-byte signature, version 2 and a command (LOCAL: a health check of
  the balancer's own, keep the socket's address; PROXY), a family and
  transport, a 16-bit length, the addresses, then TLVs (§2.2), which are
  checked for framing and otherwise skipped. UNSPEC and AF_UNIX addresses
  are ignored: the connection keeps its socket's address.

`parse(data)` answers None while `data` is only a prefix of a header (need
more), a ProxyHeader once it is whole, and raises ProxyProtocolError (nginx:
"broken header") for anything else; it raises nothing else, whatever the bytes.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # §2.1: the worst case, "PROXY UNKNOWN " + two full IPv6 + ports + CRLF
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER_LENGTH = 16  # signature, version/command, family/transport, length
_LOCAL, _PROXY = 0x0, 0x1
_UNSPEC, _INET, _INET6, _UNIX = 0x0, 0x1, 0x2, 0x3
# §2.2: the address block of each family (two addresses, then two ports for IP).
_ADDRESS_SIZES = {_INET: 12, _INET6: 36, _UNIX: 216}

Address = tuple[str, int]


class ProxyProtocolError(ValueError):
    """Not a valid PROXY protocol header (the connection is closed)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A whole header: how many bytes it took, and what it says.

    `source` and `destination` are None when the connection keeps its socket's
    addresses (v1 UNKNOWN; v2 LOCAL, UNSPEC or AF_UNIX)."""

    length: int
    version: int
    source: Address | None = None
    destination: Address | None = None
    tlvs: tuple[tuple[int, bytes], ...] = ()


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data`; None if `data` is a prefix of one."""
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data)
    if not data:
        return None
    raise ProxyProtocolError("no PROXY protocol signature")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    if not data.startswith(V1_PREFIX):
        if V1_PREFIX.startswith(data):
            return None
        raise ProxyProtocolError("no PROXY protocol signature")
    end = data.find(b"\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyProtocolError(f"v1 header longer than {V1_MAX_LENGTH} bytes")
        return None
    if data[end - 1:end] != b"\r":
        raise ProxyProtocolError("v1 header ends with a bare LF")
    length = end + 1
    fields = data[len(V1_PREFIX):end - 1].split(b" ")
    protocol = fields[0]
    if protocol == b"UNKNOWN":
        # §2.1: the receiver must ignore whatever follows UNKNOWN up to the CRLF.
        return ProxyHeader(length, 1)
    if protocol not in (b"TCP4", b"TCP6") or len(fields) != 5:
        raise ProxyProtocolError("v1 header is not TCP4, TCP6 or UNKNOWN with 4 fields")
    kind = ipaddress.IPv4Address if protocol == b"TCP4" else ipaddress.IPv6Address
    source = (_v1_address(kind, fields[1]), _v1_port(fields[3]))
    destination = (_v1_address(kind, fields[2]), _v1_port(fields[4]))
    return ProxyHeader(length, 1, source, destination)


def _v1_address(kind: type, text: bytes) -> str:
    if b"%" in text:  # an IPv6 scope ("fe80::1%eth0") names an interface of the sender
        raise ProxyProtocolError(f"v1 address {text[:48]!r} is not valid")
    try:
        return str(kind(text.decode("ascii")))
    except ValueError:  # UnicodeDecodeError and AddressValueError are ValueErrors
        raise ProxyProtocolError(f"v1 address {text[:48]!r} is not valid") from None


def _v1_port(text: bytes) -> int:
    # §2.1: a decimal number from 0 to 65535, with no leading zero.
    if not (text.isdigit() and len(text) <= 5) or (
            text[:1] == b"0" and len(text) > 1) or int(text) > 65535:
        raise ProxyProtocolError(f"v1 port {text[:8]!r} is not valid")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_HEADER_LENGTH:
        if V2_SIGNATURE.startswith(data[:12]):
            return None
        raise ProxyProtocolError("no PROXY protocol signature")
    if not data.startswith(V2_SIGNATURE):
        raise ProxyProtocolError("no PROXY protocol signature")
    version, command = data[12] >> 4, data[12] & 0xF
    if version != 2:
        raise ProxyProtocolError(f"v2 header with version {version}")
    if command not in (_LOCAL, _PROXY):
        raise ProxyProtocolError(f"v2 header with command {command}")
    family = data[13] >> 4
    if family > _UNIX:
        raise ProxyProtocolError(f"v2 header with address family {family}")
    length = V2_HEADER_LENGTH + int.from_bytes(data[14:16], "big")
    if len(data) < length:
        return None
    if command == _LOCAL or family == _UNSPEC:
        # §2.2: LOCAL is the balancer's own connection (a health check): the socket's
        # addresses stand and the whole block is discarded; so is an UNSPEC one.
        return ProxyHeader(length, 2)
    block = data[V2_HEADER_LENGTH:length]
    size = _ADDRESS_SIZES[family]
    if len(block) < size:
        raise ProxyProtocolError(f"v2 address block of {len(block)} bytes, family {family}")
    tlvs = _tlvs(block[size:])
    if family == _UNIX:  # no IP address to take: the socket's stands
        return ProxyHeader(length, 2, tlvs=tlvs)
    if family == _INET:
        kind, width = socket.AF_INET, 4
    else:
        kind, width = socket.AF_INET6, 16
    source = (socket.inet_ntop(kind, block[:width]),
              int.from_bytes(block[2 * width:2 * width + 2], "big"))
    destination = (socket.inet_ntop(kind, block[width:2 * width]),
                   int.from_bytes(block[2 * width + 2:2 * width + 4], "big"))
    return ProxyHeader(length, 2, source, destination, tlvs)


def _tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    """§2.2.1: type (1 byte), length (2 bytes, big-endian), value; framing checked."""
    found = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise ProxyProtocolError("v2 TLV cut short")
        kind = data[offset]
        size = int.from_bytes(data[offset + 1:offset + 3], "big")
        end = offset + 3 + size
        if end > len(data):
            raise ProxyProtocolError("v2 TLV longer than the header")
        found.append((kind, data[offset + 3:end]))
        offset = end
    return tuple(found)
