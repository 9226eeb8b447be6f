"""Client-side request reading, from plain bytes (workers/http1.py).

The sans-IO reader is fed the given pieces as a client's reads, as
workers/driver.py feeds them (tests/support/sans_io.py), so every rule is
checked without a process: ambiguous framing, obfuscated Transfer-Encoding,
bare LF, obs-fold, control characters, HTTP/0.9 and Host rules are
HttpError(400); pipelined heads come out in order; bodies come out
de-chunked, a piece at a time.
"""

from __future__ import annotations

import pytest

from tests.support.sans_io import PiecesReader, read_requests
from workers.errors import HttpError
from workers.http1 import NEED_MORE, Request, RequestReader


def read(*pieces: bytes) -> tuple[Request, bytes]:
    """The first request of `pieces` and its whole (de-chunked) body."""
    reads = PiecesReader(*pieces)
    request = reads.head()
    assert request is not None
    return request, reads.whole_body(request)


def status_of(*pieces: bytes) -> int:
    """The status an HttpError carries for these bytes (the test fails if none)."""
    with pytest.raises(HttpError) as caught:
        read(*pieces)
    return caught.value.status


HEAD = b"POST /submit HTTP/1.1\r\nHost: example.test\r\n"


# -- well-formed requests -------------------------------------------------------------

def test_a_simple_get_is_read_with_its_target_path_query_and_headers() -> None:
    request, body = read(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.test\r\n"
                         b"Accept: */*\r\nX-Two: a\r\nX-Two: b\r\n\r\n")
    assert (request.method, request.target, request.path, request.query) == (
        b"GET", b"/a/b?x=1&y=2", b"/a/b", b"x=1&y=2")
    assert request.version == "1.1"
    assert request.host == b"example.test"
    assert request.headers == [(b"Host", b"example.test"), (b"Accept", b"*/*"),
                               (b"X-Two", b"a"), (b"X-Two", b"b")]
    assert request.keep_alive and not request.has_body and body == b""


def test_a_head_split_across_many_reads_is_assembled() -> None:
    data = b"GET /split HTTP/1.1\r\nHost: example.test\r\nX-Long: " + b"v" * 3000 + b"\r\n\r\n"
    request, _ = read(*[data[i:i + 7] for i in range(0, len(data), 7)])
    assert request.target == b"/split"
    assert request.header(b"x-long") == b"v" * 3000


def test_a_content_length_body_is_read_exactly() -> None:
    request, body = read(HEAD + b"Content-Length: 11\r\n\r\nhello", b" world")
    assert request.content_length == 11 and not request.chunked
    assert body == b"hello world"


def test_a_chunked_body_comes_out_de_chunked_with_extensions_and_trailers_ignored() -> None:
    request, body = read(HEAD + b"Transfer-Encoding: chunked\r\n\r\n",
                         b"5;name=value\r\nhello\r\n1", b"\r\n \r\n",
                         b"5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert request.chunked and request.content_length is None
    assert body == b"hello world"


def test_whitespace_around_a_content_length_is_allowed() -> None:
    request, body = read(HEAD + b"Content-Length:  5 \t\r\n\r\nhello")
    assert (request.content_length, body) == (5, b"hello")


def test_transfer_encoding_chunked_is_case_insensitive() -> None:
    request, body = read(HEAD + b"Transfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert request.chunked and body == b"abc"


def test_pipelined_requests_come_out_in_order_with_their_bodies() -> None:
    seen = read_requests(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
                         b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                         b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [(request.target, body) for request, body in seen] == [
        (b"/1", b""), (b"/2", b"abc"), (b"/3", b"")]


def test_a_clean_close_between_requests_is_not_an_error() -> None:
    reads = PiecesReader(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reads.head() is not None
    assert reads.head() is None


def test_the_reader_asks_for_more_until_a_head_or_a_body_piece_is_whole() -> None:
    """The sans-IO steps themselves: None or NEED_MORE until the bytes are fed."""
    reader = RequestReader()
    assert reader.idle and reader.head_from(b"POST / HTTP/1.1\r\nHost: h\r\n") is None
    assert not reader.idle
    request = reader.head_from(b"Content-Length: 5\r\n\r\nhe")
    assert (request.target, request.content_length) == (b"/", 5)
    assert reader.body_event() == b"he"
    assert reader.body_event() is NEED_MORE
    reader.feed_body(b"llo")
    assert [reader.body_event(), reader.body_event()] == [b"llo", None]
    assert reader.idle and reader.head_from(b"") is None
    with pytest.raises(HttpError) as caught:
        RequestReader().feed_body(b"")
    assert (caught.value.status, caught.value.reason) == (
        400, "client closed the connection mid-body")


def test_http10_may_omit_host_and_does_not_keep_alive_by_default() -> None:
    request, _ = read(b"GET / HTTP/1.0\r\n\r\n")
    assert request.version == "1.0" and not request.keep_alive
    request, _ = read(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert request.keep_alive


def test_an_absolute_form_target_becomes_origin_form() -> None:
    request, _ = read(b"GET http://example.test/p?q HTTP/1.1\r\nHost: example.test\r\n\r\n")
    assert (request.target, request.path, request.query) == (b"/p?q", b"/p", b"q")


def test_tab_and_obs_text_are_allowed_in_a_header_value() -> None:
    request, _ = read(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\tb\xe9\r\n\r\n")
    assert request.header(b"x-a") == b"a\tb\xe9"


def test_expect_100_continue_is_noted_for_http11() -> None:
    request, _ = read(HEAD + b"Expect: 100-continue\r\nContent-Length: 1\r\n\r\nx")
    assert request.expect_continue


def test_an_upgrade_needs_connection_upgrade() -> None:
    request, _ = read(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")
    assert request.upgrade is None


# -- ambiguous framing: 400 -----------------------------------------------------------

@pytest.mark.parametrize("framing", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: 5, 5\r\n",
    b"Content-Length: +5\r\n",
    b"Content-Length: -5\r\n",
    b"Content-Length: 0x5\r\n",
    b"Content-Length: 5\r\nTransfer-Encoding: identity\r\n",
], ids=["cl-then-te", "te-then-cl", "same-cl-twice", "two-lengths", "cl-list", "cl-plus",
        "cl-negative", "cl-hex", "cl-and-te-identity"])
def test_ambiguous_lengths_are_400(framing: bytes) -> None:
    assert status_of(HEAD + framing + b"\r\nhello0\r\n\r\n") == 400


@pytest.mark.parametrize("line", [
    b"Transfer-Encoding: xchunked\r\n",
    b"Transfer-Encoding: chunked-false\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
    b"Transfer-Encoding: identity, chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: identity\r\n",
    b'Transfer-Encoding: "chunked"\r\n',
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: \x0bchunked\r\n",
    b"Transfer-Encoding: \x0cchunked\r\n",
    b"Transfer-Encoding : chunked\r\n",
    b"Transfer_Encoding: chunked\r\nTransfer-Encoding: x\r\n",
    b"X-Padding: x\r\n Transfer-Encoding: chunked\r\n",
], ids=["xchunked", "chunked-false", "chunked-identity", "identity-chunked", "gzip-chunked",
        "identity", "quoted", "twice", "vertical-tab", "form-feed", "space-before-colon",
        "underscore-name", "folded-onto-previous"])
def test_obfuscated_transfer_encoding_is_400(line: bytes) -> None:
    assert status_of(HEAD + line + b"\r\n0\r\n\r\n") == 400


def test_transfer_encoding_in_an_http10_request_is_400() -> None:
    # nginx: "client sent HTTP/1.0 request with Transfer-Encoding header" (RFC 9112 §6.1:
    # an HTTP/1.0 hop may not understand it, so its framing is faulty).
    assert status_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400


@pytest.mark.parametrize("chunks", [
    b"5\nhello\r\n0\r\n\r\n",
    b"5x\r\nhello\r\n0\r\n\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n",
    b"5\r\nhelloXX0\r\n\r\n",
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"f" * 20 + b"\r\nhello\r\n0\r\n\r\n",
], ids=["lf-after-size", "junk-in-size", "space-after-size", "no-crlf-after-data",
        "negative-size", "size-overflow"])
def test_a_malformed_chunk_is_400(chunks: bytes) -> None:
    assert status_of(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunks) == 400


# -- line endings, folding, control characters: 400 ---------------------------------

@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\nHost: h\n\n",
    b"GET / HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n\n",
    b"GET / HTTP/1.1\r\nHost: h\rX-A: b\r\n\r\n",
], ids=["all-bare-lf", "bare-lf-after-header", "bare-lf-ending-head", "bare-cr"])
def test_bare_line_endings_are_400(data: bytes) -> None:
    assert status_of(data) == 400


@pytest.mark.parametrize("fold", [b" ", b"\t"], ids=["space", "tab"])
def test_obs_fold_is_400(fold: bytes) -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n" + fold + b"b\r\n\r\n") == 400


@pytest.mark.parametrize("char", [b"\x00", b"\x01", b"\x08", b"\x1b", b"\x7f", b"\r"],
                         ids=["nul", "soh", "backspace", "escape", "del", "lone-cr"])
def test_a_control_character_in_a_header_value_is_400(char: bytes) -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a" + char + b"b\r\n\r\n") == 400


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: h\r\nX\x01A: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX A: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
    b"GET /a\x01b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
    b"GET / http/1.1\r\nHost: h\r\n\r\n",
], ids=["ctl-in-name", "space-in-name", "empty-name", "no-colon", "ctl-in-target",
        "space-in-target", "lowercase-method", "space-after-version",
        "lowercase-version"])
def test_a_malformed_request_line_or_header_line_is_400(data: bytes) -> None:
    assert status_of(data) == 400


# -- versions and Host -------------------------------------------------------------------

def test_http09_with_a_blank_line_is_400() -> None:
    assert status_of(b"GET /\r\n\r\n") == 400


def test_http09_without_headers_is_400_at_once() -> None:
    # `GET /\r\n` is a whole HTTP/0.9 request: the client waits for an answer.
    reads = PiecesReader(b"GET /\r\n", then_wait=True)
    with pytest.raises(HttpError) as caught:
        reads.head()
    assert caught.value.status == 400


def test_http09_after_a_kept_alive_request_is_400_at_once() -> None:
    reads = PiecesReader(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n", b"GET /\r\n",
                         then_wait=True)
    assert reads.head().target == b"/1"
    with pytest.raises(HttpError) as caught:
        reads.head()
    assert caught.value.status == 400


@pytest.mark.parametrize("pieces", [
    (b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HT", b"TP/1.1\r\nHo", b"st: h\r\n\r\n"),
    (b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHo", b"st: h\r\n\r\n"),
    (b"GET /1 HTTP/1.1\r\n", b"Host: h\r\n\r\n", b"GET /2 HTTP/1.1\r\nX-A: b c\r\n",
     b"Host: h\r\n\r\n"),
    (b"GET /1", b" HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\n", b"Host: h\r\n\r\n"),
    (b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n\r\nGET /2 HTTP/1.1\r\n", b"Host: h\r\n\r\n"),
], ids=["split-in-request-line", "split-in-header", "keep-alive-split-heads",
        "split-before-version", "empty-line-between"])
def test_heads_split_anywhere_are_not_mistaken_for_http09(pieces: tuple[bytes, ...]) -> None:
    reads = PiecesReader(*pieces)
    assert [reads.head().target, reads.head().target] == [b"/1", b"/2"]


def test_an_http11_request_without_host_is_400() -> None:
    assert status_of(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n") == 400


@pytest.mark.parametrize("hosts", [
    b"Host: a\r\nHost: b\r\n", b"Host: a\r\nHost: a\r\n", b"Host: a\r\nhost: b\r\n"],
    ids=["different", "same", "case"])
def test_two_host_headers_are_400(hosts: bytes) -> None:
    assert status_of(b"GET / HTTP/1.1\r\n" + hosts + b"\r\n") == 400


def test_two_host_headers_are_400_in_http10_too() -> None:
    assert status_of(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n") == 400


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.2"])
def test_versions_above_11_are_not_served(version: bytes) -> None:
    assert status_of(b"GET / " + version + b"\r\nHost: h\r\n\r\n") in (400, 505)


def test_an_unsupported_expectation_is_417() -> None:
    assert status_of(HEAD + b"Expect: 200-ok\r\nContent-Length: 1\r\n\r\nx") == 417


def test_a_target_over_8_kib_is_414() -> None:
    assert status_of(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n") == 414


def test_a_header_block_over_32_kib_is_431() -> None:
    """nginx's large_client_header_buffers 4 8k: a head over 4 x 8 KiB is refused."""
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(34))
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\n" + headers + b"\r\n") == 431


@pytest.mark.parametrize("filler", [b" ", b"v"])
def test_a_header_line_over_8_kib_is_431(filler: bytes) -> None:
    """Spaces too: llhttp drops them from the value, nginx counts the line."""
    head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + filler * 60000 + b"v\r\n\r\n"
    pages = [head[index:index + 8192] for index in range(0, len(head), 8192)]
    assert status_of(*pages) == 431


@pytest.mark.parametrize("host", [b"a.example/x", b"a example", b"a..example", b"", b"a\\b"])
def test_an_invalid_host_is_400(host: bytes) -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n") == 400


@pytest.mark.parametrize("line", [b"Transfer-Encoding:\tchunked", b"Content-Length: \t5",
                                  b"Host:\th"])
def test_a_tab_before_a_framing_or_host_value_is_400(line: bytes) -> None:
    head = b"POST / HTTP/1.1\r\n" + (b"" if line.startswith(b"Host") else b"Host: h\r\n")
    assert status_of(head + line + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n") == 400


def test_a_client_that_closes_mid_head_is_400() -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\n") == 400


def test_a_client_that_closes_mid_body_is_400() -> None:
    assert status_of(HEAD + b"Content-Length: 10\r\n\r\nabc") == 400
