"""The request fast path (RequestReader._plain_head, workers/http1.py).

A plain bodiless GET/HEAD/DELETE/OPTIONS in origin form is read with regular
expressions; every field of the Request must be exactly what llhttp gives.
Anything else (a body, an Upgrade, Expect, X-Forwarded-For, Host problems, odd
bytes or line ends) must be left to llhttp, which answers as before. Pipelined
and split heads come out in order, and the upstream head built from the raw
header lines is byte for byte the one built from (name, value) pairs.
"""

from __future__ import annotations

import pytest

from tests.support.sans_io import PiecesReader
from workers.errors import HttpError
from workers.headers import PLAIN_TOKENS, upstream_request_head, upstream_request_head_from_lines
from workers.http1 import Request, RequestReader


def read_head(data: bytes, *, llhttp: bool = False) -> Request:
    reads = PiecesReader(data)
    # head_from tries _plain_head only while llhttp has not seen an Upgrade.
    reads.reader.upgraded = llhttp
    request = reads.head()
    assert request is not None
    return request


def fields(request: Request) -> tuple:
    return (request.method, request.target, request.path, request.query, request.version,
            request.host, request.keep_alive, request.connection_tokens, request.has_body,
            request.headers)


def status_of(data: bytes) -> int:
    with pytest.raises(HttpError) as caught:
        read_head(data)
    return caught.value.status


def fast_is_refused(data: bytes) -> bool:
    return RequestReader()._plain_head(data) is None


BROWSER = (b"GET /search?q=proxy&page=2 HTTP/1.1\r\nHost: example.test\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101\r\n"
           b"Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n"
           b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
           b"Cookie: a=1; b=2\r\nUpgrade-Insecure-Requests: 1\r\nConnection: keep-alive\r\n\r\n")
MANY = b"".join(b"X-Header-%d: value %d\r\n" % (i, i) for i in range(60))
PLAIN_REQUESTS = {
    "get": b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n",
    "browser": BROWSER,
    "head-close": b"HEAD /index.html HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "delete": b"DELETE /items/42?force=1 HTTP/1.1\r\nHost: h:8080\r\n"
              b"Authorization: Bearer x\r\n\r\n",
    "options": b"OPTIONS /api HTTP/1.1\r\nHost: h\r\nOrigin: http://o.test\r\n"
               b"Access-Control-Request-Method: PUT\r\n\r\n",
    "empty-query": b"GET /a/b/? HTTP/1.1\r\nHost: h\r\n\r\n",
    "http10": b"GET /old HTTP/1.0\r\nHost: h\r\nUser-Agent: ab/2.3\r\n\r\n",
    "http10-keep-alive": b"GET / HTTP/1.0\r\nHost: h\r\nConnection: Keep-Alive\r\n\r\n",
    "many-headers": b"GET / HTTP/1.1\r\n" + MANY + b"Host: h\r\n\r\n",
    "odd-names": b"GET / HTTP/1.1\r\nHost: h\r\nX-!#$%&'*+.^_`|~: 1\r\nx_under: 2\r\n"
                 b"HOST-NAME: 3\r\nConnection-Extra: 4\r\n\r\n",
    "odd-values": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: \"q\", a;b=c\tz\r\nX-Empty: \r\n"
                  b"X-Colon: a:b\r\nX-Long: " + b"v" * 4000 + b"\r\n\r\n",
    "obs-text": b"GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9 \x80\xff\r\n\r\n",
    "hop-by-hop": b"GET / HTTP/1.1\r\nHost: h\r\nKeep-Alive: 300\r\nTE: trailers\r\n"
                  b"Proxy-Authorization: Basic eA==\r\nX-Real-IP: 6.6.6.6\r\n"
                  b"Connection: keep-alive, close\r\n\r\n",
}


@pytest.mark.parametrize("data", PLAIN_REQUESTS.values(), ids=PLAIN_REQUESTS)
def test_a_plain_request_is_read_by_the_fast_path_as_llhttp_reads_it(data: bytes) -> None:
    fast, slow = read_head(data), read_head(data, llhttp=True)
    assert fast.lines is not None and slow.lines is None  # each path did read it
    assert fields(fast) == fields(slow)


@pytest.mark.parametrize(("data", "version", "keep_alive"), [
    (PLAIN_REQUESTS["get"], "1.1", True),
    (PLAIN_REQUESTS["head-close"], "1.1", False),
    (PLAIN_REQUESTS["http10"], "1.0", False),
    (PLAIN_REQUESTS["http10-keep-alive"], "1.0", True),
], ids=["http11", "http11-close", "http10", "http10-keep-alive"])
def test_keep_alive_of_a_plain_request(data: bytes, version: str, keep_alive: bool) -> None:
    request = read_head(data)
    assert (request.version, request.keep_alive) == (version, keep_alive)


@pytest.mark.parametrize("data", PLAIN_REQUESTS.values(), ids=PLAIN_REQUESTS)
def test_the_upstream_head_from_lines_is_byte_for_byte_the_general_one(data: bytes) -> None:
    request = read_head(data)
    assert request.lines is not None and request.connection_tokens <= PLAIN_TOKENS
    common = {"client_ip": b"10.0.0.1", "scheme": b"http", "host": request.host}
    assert upstream_request_head_from_lines(
        request.method, request.target, request.lines, framing=b"", **common,
    ) == upstream_request_head(request.method, request.target, request.headers, framing=b"",
                               tokens=request.connection_tokens, **common)


# -- requests the fast path must leave to llhttp ---------------------------------------

@pytest.mark.parametrize(("data", "expected"), [
    (b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", {"has_body": True}),
    (b"GET /f HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", {"content_length": 3}),
    (b"GET /f HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     {"chunked": True}),
    (b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
     {"upgrade": b"websocket"}),
    (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", {"expect_continue": True}),
    (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", None),  # an empty Host is 400, as nginx answers
    (b"GET http://h/p?q HTTP/1.1\r\nHost: h\r\n\r\n", {"target": b"/p?q", "query": b"q"}),
    (b"\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n", {"target": b"/x"}),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n",
     {"headers": [(b"Host", b"h"), (b"X-Forwarded-For", b"192.0.2.1")]}),
    (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", None),
], ids=["post-length", "get-length", "chunked", "websocket", "expect", "empty-host",
        "absolute-form", "leading-crlf", "x-forwarded-for", "asterisk"])
def test_a_request_that_is_not_plain_is_read_by_llhttp(data: bytes, expected: dict | None) -> None:
    assert fast_is_refused(data)
    if expected is None:  # refused by llhttp's path (GET * is only valid for OPTIONS)
        assert status_of(data) == 400
        return
    request = read_head(data)
    assert request.lines is None
    assert {name: getattr(request, name) for name in expected} == expected


@pytest.mark.parametrize(("data", "status"), [
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    (b"GET / HTTP/1.1\nHost: h\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7fb\r\n\r\n", 400),
], ids=["two-hosts", "same-host-twice", "no-host", "target-over-8k", "bare-lf",
        "bare-lf-in-header", "obs-fold", "del-in-value"])
def test_a_bad_request_is_left_to_llhttp_and_refused(data: bytes, status: int) -> None:
    assert fast_is_refused(data)
    assert status_of(data) == status


# -- pipelining and split heads ----------------------------------------------------------

def test_two_plain_requests_in_one_recv_come_out_in_order() -> None:
    reads = PiecesReader(
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"HEAD /2?x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    first, second = reads.head(), reads.head()
    assert (first.method, first.target, first.keep_alive) == (b"GET", b"/1", True)
    assert (second.method, second.target, second.keep_alive) == (b"HEAD", b"/2?x", False)
    assert first.lines == b"\r\nHost: h\r\n"
    assert second.lines == b"\r\nHost: h\r\nConnection: close\r\n"
    assert reads.head() is None


def test_a_post_pipelined_after_a_plain_request_keeps_its_body() -> None:
    reads = PiecesReader(
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reads.head().target == b"/1"
    post = reads.head()
    assert (post.method, post.target, post.lines, post.content_length) == (
        b"POST", b"/2", None, 5)
    assert [reads.body(), reads.body()] == [b"hello", None]
    assert reads.head().target == b"/3"
    assert reads.head() is None


@pytest.mark.parametrize("cut", [1, 9, 20, 28], ids=["method", "target", "header", "blank"])
def test_a_plain_request_then_half_a_head_then_the_rest(cut: int) -> None:
    second = b"GET /2 HTTP/1.1\r\nHost: h2\r\n\r\n"
    reads = PiecesReader(b"GET /1 HTTP/1.1\r\nHost: h1\r\n\r\n" + second[:cut], second[cut:])
    first = reads.head()
    assert (first.target, first.host) == (b"/1", b"h1")
    request = reads.head()
    assert (request.method, request.target, request.host, request.keep_alive) == (
        b"GET", b"/2", b"h2", True)
    assert request.headers == [(b"Host", b"h2")]
    assert reads.head() is None


# -- where llhttp has rules of its own ---------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: h \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-A: b\t\r\n\r\n",
], ids=["host", "other-header"])
def test_trailing_whitespace_in_a_value_is_read_as_llhttp_reads_it(data: bytes) -> None:
    # llhttp keeps trailing OWS (host b"h ", X-A b"b\t"), and so does the fast path.
    assert fields(read_head(data)) == fields(read_head(data, llhttp=True))


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: h\r\nProxy-Connection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: h\r\nProxy-Connection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n",
], ids=["proxy-connection-close", "proxy-connection-keep-alive", "http10-keep-alive-close"])
def test_keep_alive_is_llhttps_should_keep_alive(data: bytes) -> None:
    # llhttp counts Proxy-Connection as Connection (the fast path leaves those requests to
    # it), and for HTTP/1.0 looks only at keep-alive.
    assert read_head(data).keep_alive is read_head(data, llhttp=True).keep_alive


def test_the_upstream_head_copies_header_lines_as_received() -> None:
    # headers.py: the fast path sends `X-A:b` and `X-B: c  ` as they came (the same on the
    # wire, RFC 9110 §5.5); the llhttp path would write `X-A: b`.
    data = b"GET / HTTP/1.1\r\nHost: h\r\nX-A:b\r\nX-B: c  \r\n\r\n"
    fast = read_head(data)
    assert fast.headers == read_head(data, llhttp=True).headers
    assert upstream_request_head_from_lines(
        fast.method, fast.target, fast.lines, host=fast.host, client_ip=b"10.0.0.1",
        scheme=b"http", framing=b"",
    ) == (b"GET / HTTP/1.1\r\nHost: h\r\nX-A:b\r\nX-B: c  \r\nX-Forwarded-For: 10.0.0.1\r\n"
          b"X-Real-IP: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n")
