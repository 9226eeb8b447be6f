"""The PROXY protocol parser (workers/proxy_protocol.py): bytes in, a header or an error out.

The cases follow https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt:
v1 TCP4, TCP6 and UNKNOWN; v2 PROXY over TCP4 and TCP6, LOCAL, AF_UNIX and
UNSPEC ignored, TLVs; every prefix of a valid header is "need more"; garbage
and a v1 line over 107 bytes are errors; and no input raises anything else.
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.proxy_protocol import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    parse,
)

pytestmark = pytest.mark.timeout(60)


def v2(command: int = 1, family: int = 1, transport: int = 1, block: bytes = b"",
       version: int = 2) -> bytes:
    return (V2_SIGNATURE + bytes([(version << 4) | command, (family << 4) | transport])
            + struct.pack("!H", len(block)) + block)


def inet4(source: str, destination: str, sport: int, dport: int) -> bytes:
    return (socket.inet_pton(socket.AF_INET, source) + socket.inet_pton(socket.AF_INET, destination)
            + struct.pack("!HH", sport, dport))


def inet6(source: str, destination: str, sport: int, dport: int) -> bytes:
    return (socket.inet_pton(socket.AF_INET6, source)
            + socket.inet_pton(socket.AF_INET6, destination) + struct.pack("!HH", sport, dport))


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


# -- v1 --------------------------------------------------------------------------------

def test_v1_tcp4_gives_both_addresses_and_its_length() -> None:
    line = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n"
    assert parse(line + b"GET / HTTP/1.1\r\n") == ProxyHeader(
        len(line), 1, ("203.0.113.7", 56324), ("192.0.2.1", 443))


def test_v1_tcp6_gives_canonical_addresses() -> None:
    line = b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 65535 0\r\n"
    assert parse(line) == ProxyHeader(len(line), 1, ("2001:db8::1", 65535), ("::1", 0))


def test_v1_unknown_keeps_the_socket_address_whatever_follows() -> None:
    assert parse(b"PROXY UNKNOWN\r\n") == ProxyHeader(15, 1)
    line = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"
    assert parse(line + b"rest") == ProxyHeader(len(line), 1)


def test_v1_longest_headers_are_accepted() -> None:
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    assert parse(line).source == (full, 65535)
    worst = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()  # §2.1's worst case
    assert len(worst) == V1_MAX_LENGTH
    assert parse(worst) == ProxyHeader(V1_MAX_LENGTH, 1)


def test_v1_over_107_bytes_without_its_end_is_an_error() -> None:
    with pytest.raises(ProxyProtocolError, match="longer than 107"):
        parse(b"PROXY UNKNOWN " + b"x" * 93)
    assert parse(b"PROXY UNKNOWN " + b"x" * 92) is None  # 106 bytes: may still end


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n",
    b"PROXY TCP6 ::1 ::1 1 2\r\n",
    b"PROXY UNKNOWN\r\n",
])
def test_every_prefix_of_a_v1_header_needs_more(line: bytes) -> None:
    for size in range(len(line)):
        assert parse(line[:size]) is None, line[:size]


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\n",        # bare LF
    b"PROXY TCP5 203.0.113.7 192.0.2.1 56324 443\r\n",      # no such protocol
    b"PROXY TCP4 ::1 192.0.2.1 56324 443\r\n",              # IPv6 under TCP4
    b"PROXY TCP6 203.0.113.7 ::1 56324 443\r\n",            # IPv4 under TCP6
    b"PROXY TCP4 203.0.113.07 192.0.2.1 56324 443\r\n",     # leading zero in an octet
    b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 443\r\n",      # port out of range
    b"PROXY TCP4 203.0.113.7 192.0.2.1 0443 443\r\n",       # port with a leading zero
    b"PROXY TCP4 203.0.113.7 192.0.2.1 -1 443\r\n",
    b"PROXY TCP4 203.0.113.7  192.0.2.1 56324 443\r\n",     # two spaces
    b"PROXY TCP4 203.0.113.7 192.0.2.1 56324\r\n",          # a field missing
    b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",                 # a scope is no address
    b"PROXY tcp4 203.0.113.7 192.0.2.1 56324 443\r\n",      # case matters
    b"proxy TCP4 203.0.113.7 192.0.2.1 56324 443\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",                    # no header at all
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",        # a TLS ClientHello
    b"\r\n\r\nGET",                                          # not the v2 signature
])
def test_a_broken_header_is_an_error(line: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(line)


# -- v2 --------------------------------------------------------------------------------

def test_v2_tcp4_gives_both_addresses() -> None:
    header = v2(block=inet4("203.0.113.7", "192.0.2.1", 56324, 443))
    assert parse(header + b"GET /") == ProxyHeader(
        28, 2, ("203.0.113.7", 56324), ("192.0.2.1", 443))


def test_v2_tcp6_gives_both_addresses() -> None:
    header = v2(family=2, block=inet6("2001:db8::7", "::1", 1, 65535))
    assert parse(header) == ProxyHeader(52, 2, ("2001:db8::7", 1), ("::1", 65535))


def test_v2_local_keeps_the_socket_address() -> None:
    # LOCAL: the balancer's own health check; any address block is ignored.
    assert parse(v2(command=0, family=0, transport=0)) == ProxyHeader(16, 2)
    assert parse(v2(command=0, block=inet4("203.0.113.7", "192.0.2.1", 1, 2))) == \
        ProxyHeader(28, 2)


def test_v2_unix_and_unspec_addresses_are_ignored() -> None:
    block = b"/run/a.sock".ljust(108, b"\0") + b"/run/b.sock".ljust(108, b"\0")
    assert parse(v2(family=3, block=block)) == ProxyHeader(232, 2)
    assert parse(v2(family=0, transport=0, block=b"anything")) == ProxyHeader(24, 2)


def test_v2_tlvs_are_read_and_skipped() -> None:
    tlvs = tlv(0x01, b"h2") + tlv(0x04, b"") + tlv(0xE0, b"x" * 300)
    header = v2(block=inet4("203.0.113.7", "192.0.2.1", 1, 2) + tlvs)
    parsed = parse(header + b"GET /")
    assert parsed.length == len(header)
    assert parsed.source == ("203.0.113.7", 1)
    assert parsed.tlvs == ((0x01, b"h2"), (0x04, b""), (0xE0, b"x" * 300))


def test_every_prefix_of_a_v2_header_needs_more() -> None:
    header = v2(block=inet4("203.0.113.7", "192.0.2.1", 1, 2) + tlv(1, b"h2"))
    for size in range(len(header)):
        assert parse(header[:size]) is None, size


@pytest.mark.parametrize("header", [
    v2(version=1, block=inet4("203.0.113.7", "192.0.2.1", 1, 2)),
    v2(command=2, block=inet4("203.0.113.7", "192.0.2.1", 1, 2)),
    v2(family=4, block=inet4("203.0.113.7", "192.0.2.1", 1, 2)),
    v2(block=inet4("203.0.113.7", "192.0.2.1", 1, 2)[:11]),      # block too short for TCP4
    v2(family=2, block=inet4("203.0.113.7", "192.0.2.1", 1, 2)),  # too short for TCP6
    v2(block=inet4("203.0.113.7", "192.0.2.1", 1, 2) + b"\x01\x00"),        # TLV cut short
    v2(block=inet4("203.0.113.7", "192.0.2.1", 1, 2) + b"\x01\x00\x05ab"),  # TLV too long
    b"\r\n\r\n\x00\r\nQUIx\n\x21\x11\x00\x0c" + bytes(12),                  # bad signature
])
def test_a_broken_v2_header_is_an_error(header: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(header)


def test_the_largest_v2_header_is_read_whole() -> None:
    block = inet4("203.0.113.7", "192.0.2.1", 1, 2)
    block += tlv(0xE0, b"y" * (65535 - len(block) - 3))
    header = v2(block=block)
    assert parse(header[:-1]) is None
    assert parse(header).length == 16 + 65535


# -- fuzz ------------------------------------------------------------------------------

def _valid_headers() -> st.SearchStrategy[bytes]:
    ipv4 = st.ip_addresses(v=4).map(str)
    ipv6 = st.ip_addresses(v=6).map(str)
    port = st.integers(0, 65535)
    v1_tcp4 = st.builds(lambda a, b, p, q: f"PROXY TCP4 {a} {b} {p} {q}\r\n".encode(),
                        ipv4, ipv4, port, port)
    v2_tcp4 = st.builds(lambda a, b, p, q, t: v2(block=inet4(a, b, p, q) + t),
                        ipv4, ipv4, port, port,
                        st.lists(st.builds(tlv, st.integers(0, 255), st.binary(max_size=20)),
                                 max_size=3).map(b"".join))
    v2_tcp6 = st.builds(lambda a, b, p, q: v2(family=2, block=inet6(a, b, p, q)),
                        ipv6, ipv6, port, port)
    return st.one_of(v1_tcp4, v2_tcp4, v2_tcp6)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.binary(max_size=200).map(lambda tail: b"PROXY " + tail),
                 st.binary(max_size=200).map(lambda tail: V2_SIGNATURE + tail)))
def test_arbitrary_bytes_raise_nothing_but_the_module_error(data: bytes) -> None:
    try:
        result = parse(data)
    except ProxyProtocolError:
        return
    assert result is None or 0 < result.length <= len(data)


@settings(max_examples=200, deadline=None)
@given(_valid_headers(), st.binary(max_size=40), st.data())
def test_a_valid_header_is_read_whatever_follows_and_mangled_it_never_crashes(
        header: bytes, rest: bytes, data: st.DataObject) -> None:
    parsed = parse(header + rest)
    assert parsed is not None and parsed.length == len(header)
    assert parsed.source is not None
    index = data.draw(st.integers(0, len(header) - 1))
    mangled = header[:index] + bytes([data.draw(st.integers(0, 255))]) + header[index + 1:]
    try:
        result = parse(mangled + rest)
    except ProxyProtocolError:
        return
    assert result is None or 0 < result.length <= len(mangled + rest)
