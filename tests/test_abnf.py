"""The HTTP grammar of workers/abnf.py, and the head expressions built from it.

Each grammar piece is checked against the RFC's own definition, byte by byte
for the character classes, and against RFC examples for the composite rules.
Each expression the head readers and header filters build from the pieces is
checked against the pattern it had when it spelled its character classes
itself: the same source bytes and flags, and the same matches on a set of
cases that includes adversarial ones (CR or LF alone, NUL, DEL, a space before
the colon, obs-text, runs of 10,000 spaces).
"""

from __future__ import annotations

import re

import pytest

from workers import abnf, headers, http1, response_head
from workers.errors import REASONS, error_page, reason_phrase
from workers.uwsgi_packet import parse_reply_head

ALL_BYTES = [bytes([value]) for value in range(256)]
# RFC 9110 §5.6.2: tchar is any VCHAR but these delimiters.
DELIMITERS = b'"(),/:;<=>?@[\\]{}'


def full(piece: bytes) -> re.Pattern[bytes]:
    return re.compile(piece)


def accepted_bytes(piece: bytes) -> set[int]:
    pattern = full(piece)
    return {byte[0] for byte in ALL_BYTES if pattern.fullmatch(byte)}


# -- the pieces ----------------------------------------------------------------------

def test_no_piece_has_a_capture_group_and_each_compiles():
    pieces = {name: value for name, value in vars(abnf).items()
              if name.isupper() and isinstance(value, bytes)}
    assert len(pieces) > 15
    for name, piece in pieces.items():
        assert full(piece).groups == 0, name


def test_vchar_and_obs_text_are_rfc_5234_and_9110_ranges():
    assert accepted_bytes(abnf.VCHAR) == set(range(0x21, 0x7F))
    assert accepted_bytes(abnf.OBS_TEXT) == set(range(0x80, 0x100))
    assert accepted_bytes(abnf.FIELD_VCHAR) == set(range(0x21, 0x7F)) | set(range(0x80, 0x100))
    assert accepted_bytes(abnf.DIGIT) == set(b"0123456789")
    assert accepted_bytes(abnf.HEXDIG) == set(b"0123456789abcdefABCDEF")


def test_tchar_is_every_vchar_but_the_delimiters():
    assert accepted_bytes(abnf.TCHAR) == set(range(0x21, 0x7F)) - set(DELIMITERS)
    assert set(b"!#$%&'*+-.^_`|~") <= accepted_bytes(abnf.TCHAR)


@pytest.mark.parametrize("token", [b"GET", b"x-forwarded-for", b"Content-Length",
                                   b"!#$%&'*+-.^_`|~09AZaz", b"a"])
def test_tokens(token):
    assert full(abnf.TOKEN).fullmatch(token)
    assert full(abnf.FIELD_NAME).fullmatch(token)


@pytest.mark.parametrize("not_token", [b"", b"a b", b"a:b", b"Host ", b"(x)", b'"x"', b"a/b",
                                       b"caf\xc3\xa9", b"a\tb", b"a\x00", b"a\x7f"])
def test_not_tokens(not_token):
    assert not full(abnf.TOKEN).fullmatch(not_token)


def test_ows_and_field_line_values():
    ows = full(abnf.OWS)
    for good in (b"", b" ", b"\t", b" \t \t"):
        assert ows.fullmatch(good)
    for bad in (b"\r", b"\n", b"\x0b", b"a"):
        assert not ows.fullmatch(bad)
    # A field line's value with its OWS: HTAB / SP / VCHAR / obs-text, any length.
    assert accepted_bytes(abnf.FIELD_LINE_VALUE) == (
        {0x09, 0x20} | set(range(0x21, 0x7F)) | set(range(0x80, 0x100)))
    assert full(abnf.FIELD_LINE_VALUE).fullmatch(b"")
    assert accepted_bytes(abnf.REASON_PHRASE) == accepted_bytes(abnf.FIELD_LINE_VALUE)


@pytest.mark.parametrize("line", [
    b"Host: www.example.com",  # RFC 9112 §3.2
    b"Example-Field: Foo, Bar",  # RFC 9110 §5.2
    b"Content-Type: text/plain; charset=utf-8",
    b"Cache-Control: max-age=0",
    b"X-Empty:",
    b"X-Spaced:  value with spaces \t",
    b"X-Obs: caf\xc3\xa9",
])
def test_field_lines(line):
    assert full(abnf.FIELD_LINE).fullmatch(line)


@pytest.mark.parametrize("line", [
    b"Host : www.example.com",  # RFC 9112 §5.1: no whitespace before the colon
    b" Host: x",  # obs-fold, or a line starting with space
    b"Bad Name: x",
    b"Host www.example.com",
    b"X-A: b\rc",
    b"X-A: b\nc",
    b"X-A: b\x00c",
    b"X-A: b\x7fc",
    b": no name",
])
def test_not_field_lines(line):
    assert not full(abnf.FIELD_LINE).fullmatch(line)


def test_http_versions():
    version = full(abnf.HTTP_VERSION)
    for good in (b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9"):
        assert version.fullmatch(good)
    for bad in (b"http/1.1", b"HTTP/1.10", b"HTTP/11", b"HTTP/1", b"HTTP 1.1", b"HTTP/1,1"):
        assert not version.fullmatch(bad)
    fast = full(abnf.HTTP_1_VERSION)
    assert [v for v in (b"HTTP/1.0", b"HTTP/1.1", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9")
            if fast.fullmatch(v)] == [b"HTTP/1.0", b"HTTP/1.1"]
    assert abnf.HTTP_1_PREFIX + abnf.HTTP_1_MINOR == abnf.HTTP_1_VERSION


def test_status_codes():
    code = full(abnf.STATUS_CODE)
    for good in (b"200", b"404", b"599", b"099", b"000"):
        assert code.fullmatch(good)
    for bad in (b"20", b"2000", b"2a0", b" 200", b""):
        assert not code.fullmatch(bad)
    fast = full(abnf.STATUS_CODE_FROM_100)
    assert fast.fullmatch(b"100") and fast.fullmatch(b"999")
    assert not fast.fullmatch(b"099")


def test_origin_form_and_chunk_size():
    origin = full(abnf.ORIGIN_FORM)
    assert origin.fullmatch(b"/where?q=now")  # RFC 9112 §3.2.1
    assert origin.fullmatch(b"/")
    for bad in (b"http://www.example.org/pub/WWW/TheProject.html", b"*", b"/a b", b"/a\x80",
                b"", b"www.example.com:80"):
        assert not origin.fullmatch(bad)
    size = full(abnf.CHUNK_SIZE)
    for good in (b"0", b"1a", b"FFFF", b"00000000000000000001"):
        assert size.fullmatch(good)
    for bad in (b"", b"g", b"-1", b"0x10", b" 1", b"1 "):
        assert not size.fullmatch(bad)


# -- the expressions built from them ---------------------------------------------------

# The patterns as they were spelled before the grammar moved to abnf.py.
BEFORE = {
    "http1._PLAIN_REQUEST_HEAD": (
        rb"(GET|HEAD|DELETE|OPTIONS) (/[\x21-\x7e]*) HTTP/1\.([01])"
        rb"((?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t \x21-\x7e\x80-\xff]*)*\r\n)\r\n", 0),
    "http1._NOTABLE_LINE": (
        rb"\n(host|connection|content-length|transfer-encoding|upgrade|expect|x-forwarded-for"
        rb"|proxy-connection):[ \t]*([^\r]*)", re.IGNORECASE),
    "http1._HEADER_LINE": (rb"\n([^:\r\n]+):[ \t]*([^\r]*)", 0),
    "headers._NOT_RELAYED_LINE": (
        rb"\r\n(?:connection|content\-length|expect|keep\-alive|proxy\-connection|te|trailer"
        rb"|transfer\-encoding|upgrade|x\-accel\-buffering|x\-accel\-charset|x\-accel\-expires"
        rb"|x\-accel\-limit\-rate|x\-accel\-redirect|proxy[!#$%&'*+\-.^_`|~0-9A-Za-z]*)"
        rb":[^\r]*", re.IGNORECASE),
    "headers._NOT_FORWARDED_LINE": (
        rb"\r\n(?:connection|content\-length|expect|keep\-alive|proxy\-connection|te|trailer"
        rb"|transfer\-encoding|upgrade|x\-forwarded\-for|x\-forwarded\-host"
        rb"|x\-forwarded\-proto|x\-real\-ip|proxy[!#$%&'*+\-.^_`|~0-9A-Za-z]*"
        rb"|[!#$%&'*+\-.^`|~0-9A-Za-z]*_[!#$%&'*+\-.^_`|~0-9A-Za-z]*):[^\r]*", re.IGNORECASE),
    "response_head._PLAIN_HEAD": (
        rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: ([\t \x21-\x7e\x80-\xff]*))?"
        rb"(\r\n(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t \x21-\x7e\x80-\xff]*\r\n)*)"
        rb"\r\n", 0),
    "response_head._FRAMING_LINE": (
        rb"\n(content-length|transfer-encoding|connection):[ \t]*([^\r]*)", 0),
}
MODULES = {"http1": http1, "headers": headers, "response_head": response_head}


def current(name: str) -> re.Pattern[bytes]:
    module, attribute = name.split(".")
    return getattr(MODULES[module], attribute)


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_each_rebuilt_expression_is_the_pattern_it_was(name):
    source, flags = BEFORE[name]
    pattern = current(name)
    assert pattern.pattern == source
    assert pattern.flags & ~re.UNICODE == flags  # (bytes patterns carry no re.UNICODE)


SPACES = b" " * 10_000
REQUEST_CASES = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /x?y=1 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    b"HEAD /a HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Obs: \xc3\xa9\r\n\r\n",
    b"OPTIONS / HTTP/1.1\r\nHost:" + SPACES + b"a" + SPACES + b"\r\n\r\n",
    b"DELETE / HTTP/1.1\r\nHost: a\r\nX_Under: 1\r\nProxy: evil\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # space before the colon
    b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",  # bare LF
    b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",  # bare CR
    b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n",
    b"GET / HTTP/1.1\r\n folded\r\n\r\n",
    b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n",  # unfinished
    b"GET / HTTP/1.1\r\n" + b"X:" + SPACES,  # a run with no CR after it
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\nX-A: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nhOsT: a\r\nCONNECTION: close\r\nproxy-connection: x\r\n\r\n",
]
LINES_CASES = [
    b"\r\nHost: a\r\nConnection: close\r\nKeep-Alive: 5\r\nX-A: b\r\n",
    b"\r\nTE: trailers\r\nTrailer: x\r\nUpgrade: h2c\r\nExpect: 100-continue\r\n",
    b"\r\nX-Forwarded-For: 1.2.3.4\r\nx-real-ip: 5\r\nX-Forwarded-Proto: http\r\n",
    b"\r\nX-Forwarded-Host: h\r\nProxy: evil\r\nProxy-Authorization: x\r\nProxyX: y\r\n",
    b"\r\nX_Under: 1\r\n_: 2\r\nA_B_C: 3\r\nX-Accel-Redirect: /x\r\nX-Accel-Buffering: no\r\n",
    b"\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nTEx: kept\r\nXTE: kept\r\n",
    b"\r\nX-A:" + SPACES + b"b" + SPACES + b"\r\nX-B:\t\t\r\nX_" + b"a" * 10_000 + b": c\r\n",
    b"\r\nHost: a",  # no CR after the last value
    b"\r\nx-forwarded-for:" + SPACES,
]
REPLY_CASES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.0 404 Not Found\r\nConnection: keep-alive\r\nX-A: b\r\n\r\n",
    b"HTTP/1.1 204\r\n\r\n",  # no reason, no SP
    b"HTTP/1.1 204 \r\n\r\n",  # SP, empty reason
    b"HTTP/1.1 200 \xc3\xa9 \t ok\r\nX-Obs: \xff\r\n\r\n",
    b"HTTP/1.1 099 Low\r\n\r\n",
    b"HTTP/1.1 1000 Long\r\n\r\n",
    b"HTTP/1.2 200 OK\r\n\r\n",
    b"HTTP/2.0 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A : b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: b\nX-B: c\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: b\x00\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n folded\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A:" + SPACES + b"b" + SPACES + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A:" + SPACES,  # unfinished
    b"HTTP/1.1 200 " + SPACES + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nTRANSFER-ENCODING: chunked\r\n"
    b"Connection: close\r\n\r\n",
]


def outcomes(pattern: re.Pattern[bytes], text: bytes) -> tuple:
    match = pattern.match(text)
    full_match = pattern.fullmatch(text)
    return (match and (match.span(), match.groups()), full_match and full_match.groups(),
            [found.span() for found in pattern.finditer(text)],
            pattern.sub(b"", text), pattern.findall(text.lower()))


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_each_rebuilt_expression_matches_what_it_matched(name):
    source, flags = BEFORE[name]
    before, now = re.compile(source, flags), current(name)
    for text in REQUEST_CASES + LINES_CASES + REPLY_CASES:
        assert outcomes(now, text) == outcomes(before, text), text[:80]


def test_the_fast_paths_still_take_and_leave_the_same_heads():
    plain = current("http1._PLAIN_REQUEST_HEAD")
    taken = [case for case in REQUEST_CASES if plain.match(case)]
    assert taken == REQUEST_CASES[:5] + REQUEST_CASES[-2:]
    head = current("response_head._PLAIN_HEAD")
    taken = [case for case in REPLY_CASES if head.fullmatch(case)]
    assert taken == REPLY_CASES[:5] + [REPLY_CASES[13], REPLY_CASES[15], REPLY_CASES[16]]


def test_the_underscore_rule_drops_every_name_with_one():
    out = headers.upstream_request_head_from_lines(
        b"GET", b"/", LINES_CASES[4], client_ip=b"1.2.3.4", scheme=b"http", host=b"h",
        framing=b"")
    assert b"_" not in out.split(b"\r\nX-Forwarded-For")[0]
    assert b"X-Accel-Redirect: /x\r\n" in out  # only the client-bound filter drops it


# -- the one reason-phrase table ----------------------------------------------------------

def test_the_error_pages_keep_their_phrases():
    before = {
        100: "Continue", 101: "Switching Protocols", 200: "OK", 204: "No Content",
        301: "Moved Permanently", 302: "Found", 304: "Not Modified", 400: "Bad Request",
        403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
        411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
        417: "Expectation Failed", 431: "Request Header Fields Too Large",
        500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
        503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    }
    assert {status: REASONS[status] for status in before} == before
    assert error_page(502, close=False).startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert error_page(599, close=True).startswith(b"HTTP/1.1 599 Error\r\n")


def test_a_cgi_status_without_a_phrase_gets_the_tables():
    head = parse_reply_head(b"Status: 404\r\nContent-Type: text/plain\r\n\r\n")
    assert (head.status, head.reason) == (404, b"Not Found")
    assert head.to_http() == b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n"
    assert parse_reply_head(b"Status: 201\r\n\r\n").reason == b"Created"
    assert parse_reply_head(b"Status: 413\r\n\r\n").reason == b"Content Too Large"
    assert parse_reply_head(b"HTTP/1.1 429\r\n\r\n").reason == b"Too Many Requests"
    assert parse_reply_head(b"Status: 404 Gone Fishing\r\n\r\n").reason == b"Gone Fishing"


def test_an_unknown_code_gets_no_phrase_as_before():
    # The status line then carries the code and its SP alone, as nginx writes it.
    head = parse_reply_head(b"Status: 599\r\n\r\n")
    assert (head.status, head.reason) == (599, b"")
    assert head.to_http() == b"HTTP/1.1 599 \r\n\r\n"
    assert reason_phrase(299) == b""
    assert parse_reply_head(b"HTTP/1.1 299\r\n\r\n").reason == b""
