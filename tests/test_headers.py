"""Header rules of proxy_pass, as pure functions (workers/headers.py).

Requests and responses both lose their hop-by-hop headers (RFC 9110 §7.6.1:
the fixed set plus every token named in Connection, and Proxy-*); framing is
regenerated, never copied; X-Forwarded-For is appended to; X-Real-IP,
X-Forwarded-Proto and X-Forwarded-Host are set; Host passes through unchanged.
"""

from __future__ import annotations

import pytest

from workers.headers import (
    LAST_CHUNK,
    chunk,
    client_response_head,
    connection_tokens,
    switching_protocols_head,
    upstream_request_head,
)


def request_head(headers: list[tuple[bytes, bytes]], *, client_ip: bytes = b"192.0.2.7",
                 host: bytes = b"example.test", framing: bytes = b"",
                 upgrade: bytes | None = None, target: bytes = b"/a?b=1") -> bytes:
    return upstream_request_head(b"GET", target, headers, client_ip=client_ip,
                                 scheme=b"http", host=host, framing=framing, upgrade=upgrade)


def split_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(first line, [(name, value)]) of a head that ends with CRLF CRLF."""
    assert head.endswith(b"\r\n\r\n"), head
    first, *lines = head[:-4].split(b"\r\n")
    pairs = []
    for line in lines:
        name, sep, value = line.partition(b": ")
        assert sep, f"not a header line: {line!r}"
        pairs.append((name, value))
    return first, pairs


def names(pairs: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [name.lower() for name, _ in pairs]


def values_of(pairs: list[tuple[bytes, bytes]], lower_name: bytes) -> list[bytes]:
    return [value for name, value in pairs if name.lower() == lower_name]


# -- towards the upstream --------------------------------------------------------

def test_request_line_is_http11_with_the_given_target() -> None:
    first, _ = split_head(request_head([(b"Host", b"example.test")], target=b"/x/y?z=1"))
    assert first == b"GET /x/y?z=1 HTTP/1.1"


def test_end_to_end_request_headers_pass_in_order_with_names_and_values_untouched() -> None:
    headers = [(b"Host", b"example.test"), (b"Accept", b"*/*"), (b"X-Custom", b"a,  b"),
               (b"cookie", b"a=1"), (b"Cookie", b"b=2")]
    _, pairs = split_head(request_head(headers))
    assert pairs[:5] == headers


@pytest.mark.parametrize("name", [
    b"Connection", b"Keep-Alive", b"TE", b"Trailer", b"Transfer-Encoding", b"Upgrade",
    b"Proxy-Connection", b"Content-Length", b"Expect",
])
def test_hop_by_hop_request_headers_are_not_forwarded(name: bytes) -> None:
    _, pairs = split_head(request_head([(b"Host", b"h"), (name, b"whatever")]))
    assert name.lower() not in names(pairs)


def test_hop_by_hop_names_match_in_any_case() -> None:
    headers = [(b"Host", b"h"), (b"CONNECTION", b"close"), (b"keep-alive", b"timeout=5"),
               (b"tRaNsFeR-eNcOdInG", b"chunked")]
    _, pairs = split_head(request_head(headers))
    assert names(pairs)[0] == b"host"
    assert not {b"connection", b"keep-alive", b"transfer-encoding"} & set(names(pairs))


def test_headers_named_in_connection_are_dropped_from_the_request() -> None:
    headers = [(b"Host", b"h"), (b"Connection", b"X-Secret, keep-alive"),
               (b"connection", b"x-other"), (b"X-Secret", b"1"), (b"X-Other", b"2"),
               (b"X-Kept", b"3")]
    _, pairs = split_head(request_head(headers))
    assert b"x-secret" not in names(pairs)
    assert b"x-other" not in names(pairs)
    assert values_of(pairs, b"x-kept") == [b"3"]


@pytest.mark.parametrize("name", [b"Proxy-Authorization", b"Proxy-Authenticate", b"Proxy"])
def test_proxy_headers_are_dropped_from_the_request(name: bytes) -> None:
    # Proxy-* is hop-by-hop; a bare "Proxy:" header is httpoxy (CVE-2016-5385).
    _, pairs = split_head(request_head([(b"Host", b"h"), (name, b"x")]))
    assert name.lower() not in names(pairs)


def test_host_is_passed_through_unchanged() -> None:
    _, pairs = split_head(request_head([(b"Host", b"Example.TEST:8080")],
                                       host=b"Example.TEST:8080"))
    assert values_of(pairs, b"host") == [b"Example.TEST:8080"]


def test_x_forwarded_for_is_the_client_address_when_the_client_sent_none() -> None:
    _, pairs = split_head(request_head([(b"Host", b"h")], client_ip=b"192.0.2.7"))
    assert values_of(pairs, b"x-forwarded-for") == [b"192.0.2.7"]


def test_x_forwarded_for_appends_the_client_address_to_the_clients_list() -> None:
    headers = [(b"Host", b"h"), (b"X-Forwarded-For", b"203.0.113.1, 10.0.0.1"),
               (b"x-forwarded-for", b"10.0.0.2")]
    _, pairs = split_head(request_head(headers, client_ip=b"192.0.2.7"))
    # nginx's $proxy_add_x_forwarded_for: one header, the client's values then ours.
    assert values_of(pairs, b"x-forwarded-for") == [b"203.0.113.1, 10.0.0.1, 10.0.0.2, 192.0.2.7"]


def test_x_real_ip_proto_and_host_are_set_replacing_what_the_client_sent() -> None:
    headers = [(b"Host", b"example.test"), (b"X-Real-IP", b"6.6.6.6"),
               (b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Host", b"evil.test")]
    _, pairs = split_head(request_head(headers, client_ip=b"192.0.2.7", host=b"example.test"))
    assert values_of(pairs, b"x-real-ip") == [b"192.0.2.7"]
    assert values_of(pairs, b"x-forwarded-proto") == [b"http"]
    assert values_of(pairs, b"x-forwarded-host") == [b"example.test"]


def test_framing_is_regenerated_from_the_body_actually_sent() -> None:
    headers = [(b"Host", b"h"), (b"Content-Length", b"999"), (b"Transfer-Encoding", b"chunked")]
    _, pairs = split_head(request_head(headers, framing=b"Transfer-Encoding: chunked\r\n"))
    assert values_of(pairs, b"transfer-encoding") == [b"chunked"]
    assert values_of(pairs, b"content-length") == []
    _, pairs = split_head(request_head(headers, framing=b"Content-Length: 12\r\n"))
    assert values_of(pairs, b"content-length") == [b"12"]
    assert values_of(pairs, b"transfer-encoding") == []


def test_a_websocket_upgrade_is_forwarded_with_its_own_upgrade_and_connection() -> None:
    headers = [(b"Host", b"h"), (b"Connection", b"Upgrade, X-Drop"), (b"Upgrade", b"websocket"),
               (b"X-Drop", b"1"), (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ==")]
    _, pairs = split_head(request_head(headers, upgrade=b"websocket"))
    assert values_of(pairs, b"upgrade") == [b"websocket"]
    assert values_of(pairs, b"connection") == [b"upgrade"]
    assert values_of(pairs, b"sec-websocket-key") == [b"dGhlIHNhbXBsZSBub25jZQ=="]
    assert b"x-drop" not in names(pairs)


def test_connection_tokens_are_lower_cased_trimmed_and_collected_from_every_header() -> None:
    headers = [(b"Connection", b" Keep-Alive ,X-A,,"), (b"CONNECTION", b"x-b"), (b"X-A", b"1")]
    assert connection_tokens(headers) == {b"keep-alive", b"x-a", b"x-b"}


# -- towards the client ---------------------------------------------------------------

def response_head(headers: list[tuple[bytes, bytes]], *, framing: bytes = b"",
                  connection: bytes = b"") -> bytes:
    return client_response_head(b"HTTP/1.1 200 OK\r\n", headers, framing=framing,
                                connection=connection)


@pytest.mark.parametrize("name", [
    b"Connection", b"Keep-Alive", b"TE", b"Trailer", b"Transfer-Encoding", b"Upgrade",
    b"Proxy-Connection", b"Proxy-Authenticate", b"Content-Length",
])
def test_hop_by_hop_response_headers_are_not_relayed(name: bytes) -> None:
    _, pairs = split_head(response_head([(b"Content-Type", b"text/plain"), (name, b"x")]))
    assert names(pairs) == [b"content-type"]


def test_headers_named_in_the_upstreams_connection_are_dropped_from_the_response() -> None:
    headers = [(b"Connection", b"x-internal"), (b"X-Internal", b"secret"), (b"ETag", b'"1"')]
    _, pairs = split_head(response_head(headers))
    assert names(pairs) == [b"etag"]


def test_date_server_and_set_cookie_pass_through_and_nothing_is_added() -> None:
    headers = [(b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"), (b"Server", b"app/1"),
               (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")]
    first, pairs = split_head(response_head(headers))
    assert first == b"HTTP/1.1 200 OK"
    assert pairs == headers


def test_response_framing_and_connection_lines_are_ours() -> None:
    headers = [(b"Content-Length", b"5"), (b"Connection", b"keep-alive")]
    head = response_head(headers, framing=b"Transfer-Encoding: chunked\r\n",
                         connection=b"Connection: close\r\n")
    _, pairs = split_head(head)
    assert pairs == [(b"Transfer-Encoding", b"chunked"), (b"Connection", b"close")]


def test_a_101_keeps_upgrade_connection_and_websocket_headers() -> None:
    headers = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
               (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
               (b"Keep-Alive", b"timeout=5"), (b"Proxy-Authenticate", b"x")]
    first, pairs = split_head(
        switching_protocols_head(b"HTTP/1.1 101 Switching Protocols\r\n", headers))
    assert first == b"HTTP/1.1 101 Switching Protocols"
    assert pairs == headers[:3]


def test_a_chunk_is_hex_size_crlf_data_crlf() -> None:
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"
