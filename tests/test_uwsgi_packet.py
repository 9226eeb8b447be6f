"""The uwsgi packet, byte for byte: vars order, header joining, params, limits, replies."""

from __future__ import annotations

import struct

import pytest

from workers.document_uri import BadRequestPath, document_uri
from workers.uwsgi_packet import (
    MAX_VARS_SIZE,
    STANDARD_VARS,
    BadReply,
    UwsgiParams,
    VarsTooBig,
    build_vars,
    encode_packet,
    encode_vars,
    find_head_end,
    parse_reply_head,
    request_uri,
)


def request_vars(**fields: object) -> list[tuple[bytes, bytes]]:
    """build_vars with a plain GET as the default request."""
    defaults: dict[str, object] = dict(
        method=b"GET",
        target=b"/index?a=1",
        path=b"/index",
        query=b"a=1",
        version="1.1",
        headers=[(b"Host", b"example.test:8080"), (b"Accept", b"*/*")],
        remote_addr=b"127.0.0.1",
        remote_port=b"40000",
        server_port=b"8080",
        server_name=b"example.test",
        content_length=None,
    )
    defaults.update(fields)
    return build_vars(**defaults)


def decode_block(block: bytes) -> list[tuple[bytes, bytes]]:
    pairs, offset = [], 0
    while offset < len(block):
        (key_length,) = struct.unpack_from("<H", block, offset)
        key = block[offset + 2 : offset + 2 + key_length]
        offset += 2 + key_length
        (value_length,) = struct.unpack_from("<H", block, offset)
        pairs.append((key, block[offset + 2 : offset + 2 + value_length]))
        offset += 2 + value_length
    return pairs


# --- encoding ----------------------------------------------------------------


def test_packet_is_header_then_length_prefixed_pairs_byte_for_byte():
    packet = encode_packet([(b"A", b"xy"), (b"EMPTY", b"")], modifier1=5, modifier2=9)
    assert packet == (
        b"\x05" + b"\x10\x00" + b"\x09"  # modifier1, datasize 16 (LE), modifier2
        + b"\x01\x00A" + b"\x02\x00xy"
        + b"\x05\x00EMPTY" + b"\x00\x00"
    )  # fmt: skip


def test_datasize_is_little_endian_and_counts_only_the_vars():
    value = b"v" * 300
    packet = encode_packet([(b"K", value)])
    assert packet[0] == 0 and packet[3] == 0
    assert struct.unpack("<H", packet[1:3])[0] == len(packet) - 4 == 2 + 1 + 2 + 300


def test_vars_block_of_exactly_65535_bytes_is_allowed():
    value = b"x" * (MAX_VARS_SIZE - 2 - 1 - 2)
    assert len(encode_vars([(b"K", value)])) == MAX_VARS_SIZE


def test_vars_block_over_65535_bytes_is_an_error_never_truncated():
    value = b"x" * (MAX_VARS_SIZE - 2 - 1 - 2 + 1)
    with pytest.raises(VarsTooBig) as caught:
        encode_packet([(b"K", value)])
    assert caught.value.status == 431
    assert caught.value.size == MAX_VARS_SIZE + 1
    assert "uwsgi request is too big" in caught.value.reason


def test_a_single_value_longer_than_a_u16_is_too_big_not_a_struct_error():
    with pytest.raises(VarsTooBig) as caught:
        encode_vars([(b"HTTP_X", b"y" * 70000)])
    assert caught.value.size == 4 + 6 + 70000


def test_huge_client_headers_make_the_request_too_big():
    headers = [(b"X-Big-%d" % i, b"z" * 8000) for i in range(9)]
    with pytest.raises(VarsTooBig):
        encode_packet(request_vars(headers=headers))


# --- vars --------------------------------------------------------------------


def test_vars_follow_nginx_uwsgi_params_order_then_client_headers():
    variables = request_vars()
    names = [name for name, _ in variables]
    expected = [name for name in STANDARD_VARS if name != b"HTTPS"]
    assert names == expected + [b"HTTP_HOST", b"HTTP_ACCEPT"]
    assert dict(variables) == {
        b"QUERY_STRING": b"a=1",
        b"REQUEST_METHOD": b"GET",
        b"CONTENT_TYPE": b"",
        b"CONTENT_LENGTH": b"",
        b"REQUEST_URI": b"/index?a=1",
        b"PATH_INFO": b"/index",
        b"DOCUMENT_ROOT": b"",
        b"SERVER_PROTOCOL": b"HTTP/1.1",
        b"REQUEST_SCHEME": b"http",
        b"REMOTE_ADDR": b"127.0.0.1",
        b"REMOTE_PORT": b"40000",
        b"SERVER_PORT": b"8080",
        b"SERVER_NAME": b"example.test",
        b"HTTP_HOST": b"example.test:8080",
        b"HTTP_ACCEPT": b"*/*",
    }


def test_https_is_sent_only_for_tls_connections():
    assert b"HTTPS" not in dict(request_vars())
    variables = request_vars(https=True, scheme=b"https")
    names = [name for name, _ in variables]
    assert names.index(b"HTTPS") == names.index(b"REQUEST_SCHEME") + 1
    assert dict(variables)[b"HTTPS"] == b"on"
    assert dict(variables)[b"REQUEST_SCHEME"] == b"https"


def test_content_type_and_length_come_from_the_request_and_the_body_sent():
    headers = [(b"Content-Type", b"application/json"), (b"Transfer-Encoding", b"chunked")]
    variables = dict(request_vars(method=b"POST", headers=headers, content_length=1234))
    assert variables[b"CONTENT_TYPE"] == b"application/json"
    assert variables[b"CONTENT_LENGTH"] == b"1234"
    # nginx passes every client header on, these included.
    assert variables[b"HTTP_CONTENT_TYPE"] == b"application/json"
    assert variables[b"HTTP_TRANSFER_ENCODING"] == b"chunked"


def test_an_empty_body_is_sent_as_content_length_zero():
    assert dict(request_vars(content_length=0))[b"CONTENT_LENGTH"] == b"0"


def test_path_info_is_the_decoded_document_uri_and_request_uri_is_raw():
    variables = dict(
        request_vars(target=b"/a%20b//c/./d?x=%41", path=b"/a%20b//c/./d", query=b"x=%41")
    )
    assert variables[b"PATH_INFO"] == b"/a b/c/d"
    assert variables[b"REQUEST_URI"] == b"/a%20b//c/./d?x=%41"
    assert variables[b"QUERY_STRING"] == b"x=%41"


def test_a_fragment_stays_in_request_uri_only_as_in_nginx():
    variables = dict(request_vars(target=b"/p?q=1#frag", path=b"/p", query=b"q=1#frag"))
    assert variables[b"REQUEST_URI"] == b"/p?q=1#frag"
    assert variables[b"QUERY_STRING"] == b"q=1"
    variables = dict(request_vars(target=b"/p#frag", path=b"/p#frag", query=b""))
    assert (variables[b"PATH_INFO"], variables[b"QUERY_STRING"]) == (b"/p", b"")


def test_http_1_0_requests_say_so():
    assert dict(request_vars(version="1.0"))[b"SERVER_PROTOCOL"] == b"HTTP/1.0"


def test_header_names_become_http_vars_upper_cased_with_underscores():
    variables = dict(request_vars(headers=[(b"x-Forwarded-for", b"10.0.0.1")]))
    assert variables[b"HTTP_X_FORWARDED_FOR"] == b"10.0.0.1"


def test_header_names_nginx_ignores_are_not_passed():
    # X_Real_IP would collide with X-Real-IP as HTTP_X_REAL_IP.
    headers = [(b"X_Real_IP", b"6.6.6.6"), (b"X.Dot", b"1"), (b"X-Real-IP", b"1.2.3.4")]
    variables = request_vars(headers=headers)
    header_vars = [(n, v) for n, v in variables if n.startswith(b"HTTP_")]
    assert header_vars == [(b"HTTP_X_REAL_IP", b"1.2.3.4")]


def test_repeated_headers_are_joined_with_comma_and_cookies_with_semicolon():
    headers = [
        (b"Accept", b"text/html"),
        (b"Cookie", b"a=1"),
        (b"accept", b"*/*"),
        (b"Cookie", b"b=2"),
        (b"X-Other", b"x"),
    ]
    header_vars = [(n, v) for n, v in request_vars(headers=headers) if n.startswith(b"HTTP_")]
    # One var per name, at the place of its first appearance.
    assert header_vars == [
        (b"HTTP_ACCEPT", b"text/html, */*"),
        (b"HTTP_COOKIE", b"a=1; b=2"),
        (b"HTTP_X_OTHER", b"x"),
    ]


# --- uwsgi_param -------------------------------------------------------------


def test_param_for_a_standard_var_replaces_it_in_place():
    params = UwsgiParams([(b"SERVER_NAME", b"app.internal"), (b"DOCUMENT_ROOT", b"/srv")])
    variables = request_vars(params=params)
    names = [name for name, _ in variables]
    assert names.count(b"SERVER_NAME") == 1
    assert names.index(b"SERVER_NAME") == names.index(b"SERVER_PORT") + 1
    assert dict(variables)[b"SERVER_NAME"] == b"app.internal"
    assert dict(variables)[b"DOCUMENT_ROOT"] == b"/srv"


def test_extra_params_follow_the_standard_vars_in_config_order():
    params = UwsgiParams([(b"SCRIPT_NAME", b"/app"), (b"UWSGI_SCHEME", b"https")])
    names = [name for name, _ in request_vars(params=params)]
    assert names[names.index(b"SERVER_NAME") + 1 :] == [
        b"SCRIPT_NAME", b"UWSGI_SCHEME", b"HTTP_HOST", b"HTTP_ACCEPT",
    ]  # fmt: skip


def test_an_empty_param_removes_the_var():
    params = UwsgiParams([(b"REMOTE_PORT", b""), (b"DOCUMENT_ROOT", b""), (b"SCRIPT_NAME", b"")])
    names = [name for name, _ in request_vars(params=params)]
    assert b"REMOTE_PORT" not in names
    assert b"DOCUMENT_ROOT" not in names
    assert b"SCRIPT_NAME" not in names


def test_an_http_param_replaces_the_client_header():
    params = UwsgiParams([(b"HTTP_HOST", b"internal.test")])
    variables = request_vars(params=params)
    assert [v for n, v in variables if n == b"HTTP_HOST"] == [b"internal.test"]


def test_an_empty_http_param_suppresses_the_client_header():
    params = UwsgiParams([(b"HTTP_ACCEPT", b"")])
    assert b"HTTP_ACCEPT" not in dict(request_vars(params=params))


def test_the_last_of_repeated_params_wins():
    params = UwsgiParams([(b"SCRIPT_NAME", b"/one"), (b"SCRIPT_NAME", b"/two")])
    assert [v for n, v in request_vars(params=params) if n == b"SCRIPT_NAME"] == [b"/two"]


# --- paths -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "decoded"),
    [
        # Each pair was checked against nginx 1.22's PATH_INFO.
        (b"/plain/path", b"/plain/path"),
        (b"/x/%2e%2e/y/%2F/z", b"/y/z"),
        (b"/%7e/a+b/%41", b"/~/a+b/A"),
        (b"/a%2fb", b"/a/b"),
        (b"/a/.", b"/a/"),
        (b"/a/b/..", b"/a/"),
        (b"/a/./b/../../c/", b"/c/"),
        (b"/a//b/.%2e/c", b"/a/c"),
        (b"/%25", b"/%"),
        (b"/%3F", b"/?"),
        (b"//", b"/"),
        (b"/%C3%A9", b"/\xc3\xa9"),
    ],
)
def test_document_uri_decodes_and_normalises_like_nginx(path, decoded):
    assert document_uri(path) == decoded


@pytest.mark.parametrize("path", [b"/..", b"/a/../..", b"/a/%00", b"/a%zz", b"/a%2"])
def test_paths_nginx_rejects_are_400(path):
    with pytest.raises(BadRequestPath) as caught:
        document_uri(path)
    assert caught.value.status == 400


def test_request_uri_of_an_absolute_form_target_is_its_path_and_query():
    assert request_uri(b"http://Other.example:99/p/q?z=1") == b"/p/q?z=1"
    assert request_uri(b"http://other.example") == b"/"
    assert request_uri(b"/p?") == b"/p?"


# --- replies -----------------------------------------------------------------


def test_a_status_line_reply_is_read_as_http():
    head = parse_reply_head(b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n\r\n")
    assert (head.version, head.status, head.reason) == (b"1.0", 404, b"Not Found")
    assert head.headers == [(b"Content-Type", b"text/plain")]


def test_a_cgi_style_status_header_gives_the_status_and_is_not_passed_on():
    head = parse_reply_head(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\n")
    assert (head.version, head.status, head.reason) == (None, 404, b"Not Found")
    assert head.headers == [(b"Content-Type", b"text/plain")]
    assert head.to_http() == b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n"


def test_a_cgi_style_reply_without_status_is_302_with_location_else_200():
    assert parse_reply_head(b"Location: /next\r\n\r\n").status == 302
    plain = parse_reply_head(b"Content-Type: text/plain\r\n\r\n")
    assert (plain.status, plain.reason) == (200, b"OK")


def test_a_status_header_without_reason_gets_the_standard_phrase():
    head = parse_reply_head(b"Status: 503\n\n")
    assert (head.status, head.reason) == (503, b"Service Unavailable")


def test_a_status_line_wins_over_a_status_header_which_passes_as_in_nginx():
    head = parse_reply_head(b"HTTP/1.1 201 Created\r\nStatus: 404 Not Found\r\n\r\n")
    assert (head.status, head.headers) == (201, [(b"Status", b"404 Not Found")])


@pytest.mark.parametrize(
    "head",
    [
        b"garbage\r\n\r\n",
        b"\r\n",
        b"Status: abc\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/x 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: no\r\n\r\n",
    ],
)
def test_malformed_replies_are_502(head):
    with pytest.raises(BadReply) as caught:
        parse_reply_head(head)
    assert caught.value.status == 502


def test_head_end_is_found_with_crlf_or_bare_lf():
    assert find_head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody") == 25
    assert find_head_end(b"Status: 200\nA: b\n\nbody") == 18
    assert find_head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n") == -1
