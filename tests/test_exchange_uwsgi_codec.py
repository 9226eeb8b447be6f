"""`Reply` with `UWSGI_CODEC`: a uWSGI reply read and re-framed from bytes alone.

uWSGI answers with an HTTP status line, or with CGI-style headers whose
`Status:` gives the status (NGINX-REFERENCE.md: else 302 with a Location,
else 200); bare LF line ends are taken. It has no keep-alive and usually
closes right after a short reply: with the close in the head's read the body
is whole and goes out with a Content-Length; otherwise it is chunked for an
HTTP/1.1 client. A close with no reply, or mid-head, is a 502 whose message
names the uwsgi server, with a hint when the request's packet was over
uWSGI's default --buffer-size (4096 bytes of vars), which it drops unanswered.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.exchange_fixtures import (
    GET_10,
    GET_11,
    HEAD_11,
    cut,
    feed,
    h11_header,
    h11_read,
    reply,
)
from workers.errors import UpstreamError
from workers.exchange import (
    LENGTH,
    MAX_RESPONSE_HEAD,
    UNTIL_CLOSE,
    UWSGI_CODEC,
    UWSGI_DEFAULT_BUFFER_SIZE,
    Reply,
    uwsgi_size_hint,
)

NOT_FOUND = b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope"
NOT_FOUND_CLIENT = (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: 4\r\n\r\nnope")
# A packet whose vars are one byte over uWSGI's default --buffer-size.
OVERSIZED_PACKET = 4 + UWSGI_DEFAULT_BUFFER_SIZE + 1


def uwsgi_reply(client: bytes = GET_11, *, keep_alive: bool = True,
                packet_size: int = 0) -> Reply:
    return reply(client, keep_alive=keep_alive, codec=UWSGI_CODEC, packet_size=packet_size)


# -- CGI-style heads --------------------------------------------------------------------------

def test_a_cgi_status_head_becomes_the_status_line() -> None:
    r = uwsgi_reply()
    assert r.feed(NOT_FOUND, True) == NOT_FOUND_CLIENT
    assert (r.status, r.body, r.complete, r.body_bytes) == (404, LENGTH, True, 4)


@pytest.mark.parametrize(("upstream", "to_client"), [
    (b"Status: 404\r\n\r\n", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    (b"Status: 599 Custom Thing\r\n\r\n",
     b"HTTP/1.1 599 Custom Thing\r\nContent-Length: 0\r\n\r\n"),
    (b"Location: /elsewhere\r\n\r\n",
     b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"),
    (b"Content-Type: text/plain\r\n\r\nok",
     b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"),
    (b"Content-Type: text/plain\n\nok",
     b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"),
    (b"Status: 301 Moved Permanently\r\nLocation: /x\r\n\r\n",
     b"HTTP/1.1 301 Moved Permanently\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n"),
], ids=["status-without-reason", "unknown-status", "location-is-302", "no-status-is-200",
        "bare-lf", "status-with-location"])
def test_cgi_heads_are_read_as_nginx_reads_them(upstream: bytes, to_client: bytes) -> None:
    r = uwsgi_reply()
    assert r.feed(upstream, True) == to_client
    assert r.complete


def test_a_cgi_head_not_followed_by_the_close_is_chunked_for_an_http11_client() -> None:
    r = uwsgi_reply()
    assert r.feed(NOT_FOUND, False) == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n")
    assert r.body == UNTIL_CLOSE
    assert r.closed() == b"0\r\n\r\n"
    assert r.complete and not r.reusable


def test_a_cgi_head_not_followed_by_the_close_goes_bare_to_an_http10_client() -> None:
    r = uwsgi_reply(GET_10)
    assert r.feed(NOT_FOUND, False) == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nnope")
    assert r.closed() == b""
    assert r.complete and not r.keep_alive


def test_a_cgi_head_cut_in_its_blank_line_is_found_whole() -> None:
    r = uwsgi_reply()
    assert r.feed(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n", False) == b""
    assert r.feed(b"\r", False) == b""
    assert r.feed(b"\nnope", True) == NOT_FOUND_CLIENT


@settings(max_examples=200, deadline=None, database=None)
@given(st.data())
def test_any_split_of_a_cgi_reply_reads_the_same_to_a_client(data: st.DataObject) -> None:
    pieces = cut(NOT_FOUND, data.draw(st.lists(st.integers(0, len(NOT_FOUND)), max_size=8)))
    r = uwsgi_reply()
    out = feed(r, pieces, close=True)
    response, body, ended = h11_read(out)
    assert (response.status_code, response.reason, body, ended) == (
        404, b"Not Found", b"nope", True)
    assert h11_header(response, b"status") == []
    assert h11_header(response, b"content-type") == [b"text/plain"]
    assert r.complete


def test_a_reply_to_head_has_no_body() -> None:
    r = uwsgi_reply(HEAD_11)
    assert r.feed(b"Content-Type: text/plain\r\nContent-Length: 9\r\n\r\n", True) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\n")
    assert r.complete


# -- HTTP heads ---------------------------------------------------------------------------------

def test_an_http_head_with_a_length_is_relayed_with_it() -> None:
    r = uwsgi_reply()
    assert r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", False) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert r.complete


def test_an_http_head_then_the_close_right_after_a_short_reply_gets_a_length() -> None:
    r = uwsgi_reply()
    assert r.feed(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<p>hi</p>", True) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 9\r\n\r\n<p>hi</p>")
    assert (r.body, r.complete, r.reusable, r.body_bytes) == (LENGTH, True, False, 9)


def test_an_http_head_with_bare_lf_is_taken() -> None:
    r = uwsgi_reply()
    assert r.feed(b"HTTP/1.1 201 Created\nContent-Type: text/plain\n\nmade", True) == (
        b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nmade")


def test_a_status_header_after_a_status_line_is_an_ordinary_header() -> None:
    r = uwsgi_reply()
    assert r.feed(b"HTTP/1.1 200 OK\r\nStatus: 404 Not Found\r\n\r\n", True) == (
        b"HTTP/1.1 200 OK\r\nStatus: 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    assert r.status == 200


def test_a_chunked_http_reply_is_rechunked() -> None:
    r = uwsgi_reply()
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    assert r.feed(chunked, True) == chunked
    assert r.complete


# -- 502s ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("received", "message"), [
    (b"", "uwsgi server closed the connection with no reply"),
    (b"Status: 200 OK\r\n", "uwsgi server closed the connection with an incomplete reply head"),
    (b"HTTP/1.1 200 OK\r\n", "uwsgi server closed the connection with an incomplete reply head"),
], ids=["no-reply", "incomplete-cgi-head", "incomplete-http-head"])
def test_the_close_before_a_whole_head_is_502(received: bytes, message: str) -> None:
    r = uwsgi_reply()
    with pytest.raises(UpstreamError) as error:
        r.feed(received, True)
    assert (error.value.status, error.value.reason) == (502, message)
    assert not r.head_done


def test_the_close_after_an_earlier_read_of_the_head_is_an_incomplete_head() -> None:
    r = uwsgi_reply(packet_size=OVERSIZED_PACKET)
    assert r.feed(b"Status: 2", False) == b""
    with pytest.raises(UpstreamError) as error:
        r.closed()
    assert error.value.reason == "uwsgi server closed the connection with an incomplete reply head"


def test_no_reply_to_a_packet_over_4_kib_gives_the_buffer_size_hint() -> None:
    r = uwsgi_reply(packet_size=OVERSIZED_PACKET)
    with pytest.raises(UpstreamError) as error:
        r.closed()
    assert (error.value.status, error.value.reason) == (
        502, "uwsgi server closed the connection with no reply (the request's vars are "
             "4097 bytes: is uWSGI's --buffer-size at least that?)")


def test_the_hint_is_only_for_no_reply() -> None:
    r = uwsgi_reply(packet_size=OVERSIZED_PACKET)
    with pytest.raises(UpstreamError) as error:
        r.feed(b"Status: 200 OK\r\n", True)
    assert error.value.reason == "uwsgi server closed the connection with an incomplete reply head"


@pytest.mark.parametrize(("packet_size", "hint"), [
    (0, ""),
    (4 + UWSGI_DEFAULT_BUFFER_SIZE, ""),  # vars of 4096 bytes: uWSGI takes them
    (OVERSIZED_PACKET,
     " (the request's vars are 4097 bytes: is uWSGI's --buffer-size at least that?)"),
    (4 + 65535,
     " (the request's vars are 65535 bytes: is uWSGI's --buffer-size at least that?)"),
], ids=["none", "at-4096", "over-4096", "largest"])
def test_uwsgi_size_hint_names_vars_over_the_default_buffer_size(
        packet_size: int, hint: str) -> None:
    assert uwsgi_size_hint(b"", packet_size) == hint
    assert uwsgi_size_hint(b"S", packet_size) == ""  # something came back: no drop


def test_the_http_codec_has_no_uwsgi_hint() -> None:
    r = reply(packet_size=OVERSIZED_PACKET)
    with pytest.raises(UpstreamError) as error:
        r.closed()
    assert error.value.reason == "upstream closed the connection before a response"


def test_a_malformed_cgi_head_is_502() -> None:
    r = uwsgi_reply()
    with pytest.raises(UpstreamError) as error:
        r.feed(b"Content-Type: text/plain\r\nnot a header\r\n\r\n", True)
    assert (error.value.status, error.value.reason) == (
        502, "uwsgi reply has a malformed header line b'not a header'")


@pytest.mark.parametrize("status", [b"Status: abc", b"Status: 42 Short", b"Status: 2000"])
def test_a_malformed_status_header_is_502(status: bytes) -> None:
    r = uwsgi_reply()
    with pytest.raises(UpstreamError) as error:
        r.feed(status + b"\r\n\r\n", True)
    assert error.value.status == 502
    assert error.value.reason.startswith("uwsgi reply has a malformed Status header")


def test_a_reply_head_over_64_kib_is_502() -> None:
    r = uwsgi_reply()
    line = b"X-Big: " + b"a" * 4000 + b"\r\n"
    with pytest.raises(UpstreamError) as error:
        for _ in range(MAX_RESPONSE_HEAD // len(line) + 1):
            assert r.feed(line, False) == b""
    assert (error.value.status, error.value.reason) == (
        502, "uwsgi server sent too big a reply head")
