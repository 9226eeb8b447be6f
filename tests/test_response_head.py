"""Parsing an upstream's response head (workers/response_head.py).

The regular-expression fast path must give exactly what llhttp gives for every
head it accepts: status, reason, version, headers, framing, reuse and
Connection tokens, and the head relayed to the client must be byte for byte the
one headers.client_response_head builds. Heads it does not fully understand go
to llhttp (bare LF, obs-fold, control characters, ...); ambiguous framing is a
502; keep_alive follows llhttp's should_keep_alive.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from workers import headers
from workers.errors import UpstreamError
from workers.response_head import (
    _PLAIN_HEAD,
    ResponseHead,
    _parse_with_llhttp,
    parse_response_head,
)

DATE = b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
NGINX = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.25.3\r\n" + DATE
         + b"Content-Type: text/html; charset=utf-8\r\nContent-Length: 612\r\n"
         b"Connection: keep-alive\r\n\r\n")
FRAMING = b"Content-Length: 3\r\n"


def fields(response: ResponseHead) -> tuple:
    return (response.status, response.reason, response.version, response.headers,
            response.content_length, response.chunked, response.keep_alive,
            response.connection_tokens)


def general_head(response: ResponseHead, framing: bytes, connection: bytes) -> bytes:
    """The client head built by the (name, value) rules, for comparison."""
    return headers.client_response_head(response.status_line, response.headers,
                                        framing=framing, connection=connection,
                                        tokens=response.connection_tokens)


def status_of(parse: Callable[[bytes], ResponseHead], head: bytes) -> int:
    """The status of the UpstreamError `parse` raises for `head` (fails if none)."""
    with pytest.raises(UpstreamError) as caught:
        parse(head)
    return caught.value.status


# Each head with (status, content_length, chunked, keep_alive) as the core must give them.
PLAIN_HEADS = {
    "nginx": (NGINX, (200, 612, False, True)),
    "chunked": (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nVary: Accept-Encoding\r\n\r\n",
                (200, None, True, True)),
    "close": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
              (200, 2, False, False)),
    "http10-length": (b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", (200, 5, False, False)),
    "http10-no-length": (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n",
                         (200, None, False, False)),
    "204": (b"HTTP/1.1 204 No Content\r\n" + DATE + b"\r\n", (204, None, False, True)),
    "304": (b'HTTP/1.1 304 Not Modified\r\nETag: "abc"\r\nCache-Control: max-age=60\r\n\r\n',
            (304, None, False, True)),
    "101": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            (101, None, False, True)),
    "no-reason": (b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", (200, 0, False, True)),
    "empty-value": (b"HTTP/1.1 200 OK\r\nX-Empty: \r\nContent-Length: 1\r\n\r\n",
                    (200, 1, False, True)),
    "obs-text": (b"HTTP/1.1 200 Caf\xc3\xa9\r\nX-Name: caf\xc3\xa9 \x80\xff\r\n"
                 b"Content-Length: 1\r\n\r\n", (200, 1, False, True)),
    "mixed-case": (b"HTTP/1.1 404 Not Found\r\ncontent-TYPE: text/plain\r\nCONTENT-LENGTH: 3\r\n"
                   b"x-MiXeD: v\r\ncOnNeCtIoN: Keep-Alive\r\nkeep-ALIVE: timeout=5\r\n\r\n",
                   (404, 3, False, True)),
}
# Values with odd spacing: the fields agree; the fast path relays the lines as received.
ODD_SPACING = {
    "trailing-whitespace": b"HTTP/1.1 200 OK\r\nX-A: b \t \r\nContent-Length: 1 \r\n\r\n",
    "no-space-after-colon": b"HTTP/1.1 200 OK\r\nX-A:b\r\nContent-Length: 1\r\n\r\n",
    "empty-value-no-space": b"HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 1\r\n\r\n",
}


@pytest.mark.parametrize("head", [head for head, _ in PLAIN_HEADS.values()]
                         + list(ODD_SPACING.values()), ids=[*PLAIN_HEADS, *ODD_SPACING])
def test_the_fast_path_reads_a_plain_head_as_llhttp_does(head: bytes) -> None:
    assert _PLAIN_HEAD.fullmatch(head) is not None  # the fast path, not llhttp, reads it
    assert fields(parse_response_head(head)) == fields(_parse_with_llhttp(head))


@pytest.mark.parametrize(("head", "expected"), PLAIN_HEADS.values(), ids=PLAIN_HEADS)
def test_a_plain_head_has_the_expected_framing_and_reuse(
        head: bytes, expected: tuple[int, int | None, bool, bool]) -> None:
    response = parse_response_head(head)
    assert (response.status, response.content_length, response.chunked,
            response.keep_alive) == expected


@pytest.mark.parametrize("connection", [b"", b"Connection: close\r\n",
                                        b"Connection: keep-alive\r\n"])
@pytest.mark.parametrize("head", [head for head, _ in PLAIN_HEADS.values()], ids=PLAIN_HEADS)
def test_client_head_is_byte_for_byte_the_general_rule(head: bytes, connection: bytes) -> None:
    for response in (parse_response_head(head), _parse_with_llhttp(head)):
        assert response.client_head(FRAMING, connection) == general_head(
            response, FRAMING, connection)


@pytest.mark.parametrize("head", ODD_SPACING.values(), ids=ODD_SPACING)
def test_odd_spacing_is_relayed_as_received_on_the_fast_path(head: bytes) -> None:
    # headers.py: the fast path copies header lines as they came (`X-A:b`, `X-A: b \t `),
    # which means the same on the wire (OWS, RFC 9110 §5.5); llhttp's path rewrites them.
    fast, slow = parse_response_head(head), _parse_with_llhttp(head)
    assert slow.client_head(FRAMING, b"") == general_head(slow, FRAMING, b"")
    odd_line = head.split(b"\r\n")[1]  # the Content-Length line after it is ours to write
    assert fast.client_head(FRAMING, b"") == b"HTTP/1.1 200 OK\r\n%s\r\n%s\r\n" % (
        odd_line, FRAMING)


def test_the_nginx_head_is_relayed_without_its_hop_by_hop_lines() -> None:
    assert parse_response_head(NGINX).client_head(
        b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n") == (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.25.3\r\n" + DATE
        + b"Content-Type: text/html; charset=utf-8\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")


# -- heads the fast path leaves to llhttp ----------------------------------------------

@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\nContent-Length: 5\n\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 5\r\n\r\n",
], ids=["bare-lf", "bare-lf-in-header", "obs-fold", "control-char", "del", "space-before-colon"])
def test_an_odd_head_goes_to_llhttp_and_is_502(head: bytes) -> None:
    assert _PLAIN_HEAD.fullmatch(head) is None
    assert status_of(parse_response_head, head) == 502


def test_an_http2_status_line_goes_to_llhttp_which_accepts_it() -> None:
    # llhttp's verdict, kept: version "2.0", never reused.
    head = b"HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\n"
    assert _PLAIN_HEAD.fullmatch(head) is None
    response = parse_response_head(head)
    assert fields(response) == (200, b"OK", "2.0", [(b"Content-Length", b"5")], 5, False,
                                False, frozenset())
    assert fields(response) == fields(_parse_with_llhttp(head))


# -- framing ----------------------------------------------------------------------------

@pytest.mark.parametrize("framing", [
    b"Content-Length: 5\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Content-Length: abc\r\n",
    b"Content-Length: 5, 5\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: \r\n",
], ids=["same-length-twice", "two-lengths", "length-then-chunked", "chunked-then-length",
        "gzip", "gzip-chunked", "non-numeric", "length-list", "negative", "empty"])
def test_ambiguous_or_unsupported_framing_is_502_on_both_paths(framing: bytes) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n"
    assert _PLAIN_HEAD.fullmatch(head) is not None
    assert status_of(parse_response_head, head) == 502
    assert status_of(_parse_with_llhttp, head) == 502


@pytest.mark.parametrize("length", [b"18446744073709551616", b"9" * 30])
def test_a_content_length_over_64_bits_is_502_on_both_paths(length: bytes) -> None:
    # llhttp refuses it ("Content-Length overflow"); the fast path caps a length at 18 digits.
    head = b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\n"
    assert status_of(_parse_with_llhttp, head) == 502
    assert status_of(parse_response_head, head) == 502


# -- reuse (llhttp's should_keep_alive) -------------------------------------------------

@pytest.mark.parametrize(("head", "keep_alive"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: x, Close\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", False),
    (b"HTTP/1.1 204 No Content\r\n\r\n", True),
    (b"HTTP/1.1 304 Not Modified\r\n\r\n", True),
    (b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", False),
], ids=["length", "chunked", "close", "close-in-list", "http10", "read-to-eof", "204", "304",
        "204-close"])
def test_keep_alive_follows_llhttp(head: bytes, keep_alive: bool) -> None:
    assert parse_response_head(head).keep_alive is keep_alive
    assert _parse_with_llhttp(head).keep_alive is keep_alive


# -- Connection naming other headers ------------------------------------------------------

def test_a_header_named_by_connection_is_not_relayed() -> None:
    head = (b"HTTP/1.1 200 OK\r\nConnection: x-secret, keep-alive\r\nX-Secret: 1\r\n"
            b"X-Public: 2\r\nContent-Length: 3\r\n\r\n")
    expected = b"HTTP/1.1 200 OK\r\nX-Public: 2\r\nContent-Length: 3\r\n\r\n"
    response = parse_response_head(head)
    assert response.connection_tokens == frozenset({b"x-secret", b"keep-alive"})
    assert response.client_head(FRAMING, b"") == expected
    assert _parse_with_llhttp(head).client_head(FRAMING, b"") == expected
