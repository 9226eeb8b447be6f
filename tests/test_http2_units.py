"""The pure parts of HTTP/2: a request's header list checked and written as an HTTP/1.1
head (workers/http2/request.py), and the driver's reply read back (reply.py)."""

from __future__ import annotations

import pytest

from workers.http2.reply import ReplyHead, ReplyReader
from workers.http2.request import LAST_CHUNK, MalformedRequest, chunk, request_head

pytestmark = pytest.mark.timeout(10)

BASE = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"example.com"),
        (b":path", b"/a?b=1")]


# -- request synthesis ------------------------------------------------------------------

def test_a_get_becomes_an_http11_head_with_the_authority_as_host() -> None:
    head = request_head([*BASE, (b"accept", b"*/*")], ended=True)
    assert head.head == (b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\naccept: */*\r\n\r\n")
    assert (head.has_body, head.chunked) == (False, False)


def test_a_body_with_a_content_length_keeps_it() -> None:
    fields = [(b":method", b"POST"), *BASE[1:], (b"content-length", b"5")]
    head = request_head(fields, ended=False)
    assert head.head == (b"POST /a?b=1 HTTP/1.1\r\nHost: example.com\r\n"
                         b"content-length: 5\r\n\r\n")
    assert (head.has_body, head.chunked) == (True, False)


def test_a_body_of_unknown_length_goes_chunked() -> None:
    head = request_head([(b":method", b"POST"), *BASE[1:]], ended=False)
    assert head.head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert (head.has_body, head.chunked) == (True, True)
    assert chunk(b"hello") + LAST_CHUNK == b"5\r\nhello\r\n0\r\n\r\n"


def test_host_alone_stands_in_for_authority() -> None:
    fields = [BASE[0], BASE[1], BASE[3], (b"host", b"h.example")]
    assert request_head(fields, ended=True).head == (
        b"GET /a?b=1 HTTP/1.1\r\nHost: h.example\r\n\r\n")


def test_neither_authority_nor_host_writes_no_host_line_for_the_reader_to_refuse() -> None:
    assert b"Host" not in request_head([BASE[0], BASE[1], BASE[3]], ended=True).head


def test_a_split_cookie_is_passed_as_written() -> None:
    # h2's normalize_inbound_headers joins the cookie fields before us (RFC 9113 §8.2.3).
    head = request_head([*BASE, (b"cookie", b"a=1; b=2")], ended=True)
    assert b"cookie: a=1; b=2\r\n" in head.head


@pytest.mark.parametrize(("fields", "why"), [
    ([*BASE, (b"Accept", b"x")], "uppercase name"),
    ([*BASE, (b"connection", b"close")], "connection-specific"),
    ([*BASE, (b"upgrade", b"websocket")], "upgrade"),
    ([*BASE, (b"transfer-encoding", b"chunked")], "transfer-encoding"),
    ([*BASE, (b"keep-alive", b"5")], "keep-alive"),
    ([*BASE, (b"proxy-connection", b"x")], "proxy-connection"),
    ([*BASE, (b"te", b"gzip")], "te other than trailers"),
    ([*BASE, (b"x", b"a\r\nInjected: 1")], "CR LF in a value"),
    ([*BASE, (b"x", b"a\x00b")], "NUL in a value"),
    ([*BASE, (b"x", b" padded")], "leading whitespace"),
    ([*BASE, (b"bad name", b"1")], "space in a name"),
    ([*BASE, (b"", b"1")], "empty name"),
    ([*BASE, (b":method", b"GET")], "repeated pseudo-header"),
    ([BASE[0], (b"accept", b"x"), *BASE[1:]], "pseudo-header after a field"),
    ([*BASE, (b":protocol", b"websocket")], "extended CONNECT"),
    ([*BASE, (b":status", b"200")], "response pseudo-header"),
    (BASE[1:], "no :method"),
    ([BASE[0], BASE[2], BASE[3]], "no :scheme"),
    (BASE[:3], "no :path"),
    ([BASE[0], BASE[1], BASE[2], (b":path", b"")], "empty :path"),
    ([BASE[0], BASE[1], BASE[2], (b":path", b"a b")], "not origin-form"),
    ([BASE[0], BASE[1], BASE[2], (b":path", b"/a b")], "space in :path"),
    ([BASE[0], BASE[1], BASE[2], (b":path", b"*")], "* with GET"),
    ([(b":method", b"CONNECT"), (b":authority", b"a:1")], "CONNECT"),
    ([(b":method", b"G T"), *BASE[1:]], "method not a token"),
    ([BASE[0], (b":scheme", b"ftp"), *BASE[2:]], "scheme"),
    ([*BASE, (b"host", b"other")], "authority and host differ"),
    ([*BASE, (b"content-length", b"1"), (b"content-length", b"1")], "content-length twice"),
    ([*BASE, (b"content-length", b"-1")], "content-length not a number"),
])
def test_a_malformed_request_is_refused(fields: list, why: str) -> None:
    with pytest.raises(MalformedRequest):
        request_head(fields, ended=True)


def test_a_content_length_with_no_data_is_malformed() -> None:
    with pytest.raises(MalformedRequest):
        request_head([*BASE, (b"content-length", b"3")], ended=True)


def test_options_star_is_allowed() -> None:
    fields = [(b":method", b"OPTIONS"), BASE[1], BASE[2], (b":path", b"*")]
    assert request_head(fields, ended=True).head.startswith(b"OPTIONS * HTTP/1.1\r\n")


# -- the reply read back ------------------------------------------------------------------

def _all(reader: ReplyReader, data: bytes, step: int) -> list:
    items: list = []
    for start in range(0, len(data), step):
        items.extend(reader.feed(data[start:start + step]))
    return items


def _body(items: list) -> bytes:
    return b"".join(item for item in items if isinstance(item, bytes))


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_a_content_length_reply_is_read_to_its_exact_end(step: int) -> None:
    reader = ReplyReader(head_request=False)
    items = _all(reader, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n"
                         b"X-A: b\r\n\r\nhello", step)
    head = items[0]
    assert isinstance(head, ReplyHead)
    assert (head.status, head.final, head.ends) == (200, True, False)
    assert head.fields == [(b"content-length", b"5"), (b"x-a", b"b")]  # Connection dropped
    assert _body(items) == b"hello"
    assert reader.complete


@pytest.mark.parametrize("step", [1, 7, 1000])
def test_a_chunked_reply_is_de_chunked_and_its_framing_dropped(step: int) -> None:
    reader = ReplyReader(head_request=False)
    items = _all(reader, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nKeep-Alive: 5\r\n"
                         b"Upgrade: x\r\nProxy-Connection: y\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", step)
    assert items[0].fields == []
    assert _body(items) == b"hello world"
    assert reader.complete


def test_a_reply_cut_short_is_not_complete() -> None:
    reader = ReplyReader(head_request=False)
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
    assert not reader.complete


@pytest.mark.parametrize(("status", "head_request"), [(204, False), (304, False), (200, True)])
def test_a_bodiless_reply_ends_with_its_head(status: int, head_request: bool) -> None:
    reader = ReplyReader(head_request)
    items = reader.feed(b"HTTP/1.1 %d X\r\nContent-Length: 42\r\n\r\n" % status)
    assert items[0].ends and reader.complete
    assert items[0].fields == [(b"content-length", b"42")]


def test_an_interim_100_comes_before_the_final_head() -> None:
    reader = ReplyReader(head_request=False)
    items = reader.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
                        b"Content-Length: 2\r\n\r\nok")
    assert [(i.status, i.final, i.ends) for i in items[:2]] == [(100, False, False),
                                                                (201, True, False)]
    assert _body(items) == b"ok" and reader.complete


def test_an_empty_length_ends_with_the_head() -> None:
    reader = ReplyReader(head_request=False)
    items = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert items[0].ends and reader.complete


def test_bytes_past_the_end_are_not_relayed() -> None:
    reader = ReplyReader(head_request=False)
    items = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    assert _body(items) == b"ok"
