"""Property: the proxy reads a client's requests as h11's strict server does.

Hypothesis draws request streams (tests/support/fuzz_strategies.py): every
framing, the conflicting and malformed kinds, pipelined requests, garbage and
cut-off ends. workers/http1.py's sans-IO RequestReader reads them, fed as
workers/driver.py feeds it (tests/support/sans_io.py), from the reads a
client's bytes arrive in: whole, cut at every split point, byte by byte, and
at split points hypothesis chooses. Its
reading must be the same for all of these, and equal h11's: the same method,
target, headers, body, keep-alive and request boundaries, or a 4xx/505
where h11 refuses. Never another exception.

The proxy deliberately differs from h11 in a few places; each is a tag the
strategy puts on the messages that hold it, and is listed below with its
reason. A difference only passes when the message it appears at carries one
of its tags. Found cases are kept in tests/hypothesis-examples/.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.support.fuzz_strategies import (
    Message,
    Reading,
    ReadRequest,
    Stream,
    h11_requests,
    proxy_requests,
    request_streams,
    splits,
)
from tests.support.sans_io import PiecesReader
from workers.errors import HttpError

EXAMPLES = DirectoryBasedExampleDatabase(Path(__file__).parent / "hypothesis-examples")
# A few seconds per property; FUZZ_EXAMPLES=5000 for a longer hunt.
FUZZ = settings(database=EXAMPLES, max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
                deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# The statuses the proxy may answer a request it refuses with (workers/http1.py).
REFUSALS = {400, 405, 413, 414, 417, 431, 505}

# Where the proxy refuses (4xx/505) and h11 accepts.
REFUSED_WHERE_H11_ACCEPTS = {
    # RFC 9112 §2.2 lets a recipient take a bare LF as a line end; DESIGN.md's rule
    # is to refuse it, since two parsers may split such a head differently.
    "bare_lf": 400,
    # RFC 9112 §5.2: a server MUST either refuse obs-fold with 400 or unfold it.
    "obs_fold": 400,
    # RFC 9110 §5.5: CTLs are not field-value characters (h11 takes all but NUL,
    # CR, LF, VT, FF; llhttp refuses them).
    "ctl_in_value": 400,
    # llhttp knows a fixed table of methods, all upper case; h11 takes any token.
    # nginx also refuses lower case; it accepts unknown upper-case methods.
    "unknown_method": 400,
    # A reverse proxy has no tunnel to offer for CONNECT (DESIGN.md).
    "connect": 405,
    # HTTP/2 or later on an HTTP/1 connection: 505, as nginx answers.
    "version_2": 505,
    # HTTP/1.2 (llhttp knows only 0.9, 1.0, 1.1, 2, 3) and HTTP/0.9 with a head:
    # DESIGN.md refuses HTTP/0.9; h11 takes any digit.digit.
    "version_other": 400,
    # RFC 9110 §10.1.1: an expectation the server cannot meet may be answered 417.
    "expect_other": 417,
    # RFC 9112 §3.2: origin-form, absolute-form, or `*` for OPTIONS only; nginx
    # answers 400 to `GET abc` and to `GET *`; h11 takes any VCHARs.
    "non_origin_target": 400,
    "asterisk_not_options": 400,
    # nginx decodes and normalises the path it routes on ($document_uri) and
    # answers 400 to a bad %-escape, %00, or a ".." above the root; so does the
    # proxy (workers/document_uri.py). h11 leaves the target alone.
    "bad_path": 400,
    # RFC 9112 §6.3: two Content-Length fields, a list, or Content-Length with
    # Transfer-Encoding may be read differently by another parser (smuggling):
    # nginx refuses them (400); h11 merges equal lengths and lets chunked win.
    "duplicate_cl": 400,
    "cl_list": 400,
    "cl_and_te": 400,
    # RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing
    # (nginx: 400); h11 reads it as chunked.
    "te_http10": 400,
    # RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF, the extension a token (=
    # token / quoted-string) after BWS ";". h11 takes whitespace after the size,
    # and anything after a ";".
    "chunk_size_ows": 400,
    "chunk_ext_loose": 400,
    # RFC 9112 §7.1: chunk-data CRLF. h11 skips the two bytes after a chunk's data
    # without looking at them; llhttp checks they are CRLF.
    "chunk_data_end_unchecked": 400,
    # llhttp refuses `chunked<TAB>` (it allows trailing spaces only), and the proxy
    # reads framing as llhttp does, so the two never read one body two ways.
    "te_trailing_htab": 400,
    # nginx skips only spaces before a value and refuses a tab before a
    # Transfer-Encoding, Content-Length or Host value; so does the proxy.
    "tab_before_framing_value": 400,
    # llhttp counts the Content-Length fields of a trailer as a head's, and its
    # leniencies do not cover two of them: 400 where nginx ignores the trailer.
    "trailer_duplicate_cl": 400,
}

# Where the proxy accepts and h11 refuses.
ACCEPTED_WHERE_H11_REFUSES = {
    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line (CRLF) before
    # a request line, as nginx does; h11 refuses it.
    "empty_line_before",
    # RFC 9112 §3: a recipient MAY parse the request line on whitespace
    # boundaries; nginx and llhttp take several spaces between its parts.
    "extra_spaces",
    # RFC 9112 §7.1: chunk-size is 1*HEXDIG, leading zeros and all; h11 caps it
    # at 20 digits.
    "chunk_size_over_20_digits",
    # A trailer's fields are dropped, as nginx drops them, whatever they are;
    # h11 checks a Content-Length or Transfer-Encoding there as in a head.
    "trailer_framing_field",
}

# Where both accept the same request and read one part of it differently.
READ_DIFFERENTLY = {
    # RFC 9112 §3.2.2: of an absolute-form target the proxy keeps the path and
    # query as the target, and the authority replaces Host (as_origin_form).
    "absolute_target",
    # nginx keeps an HTTP/1.0 connection open on `Connection: keep-alive`; h11
    # never keeps HTTP/1.0 alive.
    "http10_keep_alive",
    # llhttp reads Proxy-Connection as Connection, so `Proxy-Connection: close`
    # closes after the answer (h11 ignores it). Closing is always safe.
    "proxy_connection",
}

# Bugs found by these properties and not fixed yet: the property lets a message
# carrying one of these tags differ in any way, and a strict xfail test below
# keeps each one visible until its fix lands (then drop it from here).
PENDING_BUGS = {
    # An HTTP/0.9 request line (`GET /` CRLF, no version) is refused at once (400)
    # only when its LF comes in the read in which the request began: the check
    # (http1._refuse_http09, from RequestReader.head_from) looks at that read
    # alone. Split across reads (`GET /\r`, `\n`), the reader waits for header
    # lines that never come, until client_header_timeout or the client's close.
    "http09_request_line",
}

# Where the verdict may depend on how the bytes were cut into reads; each reading
# is still checked against h11's with the tables above.
SPLIT_DEPENDENT = {
    # The tab check reads the raw bytes of the first head in each read (llhttp drops
    # the tab); a pipelined head after it in the same read is read by llhttp alone,
    # which takes the tab as OWS, as RFC 9110 §5.6.3 and h11 do. So such a request is
    # refused, or read as h11 reads it: never read any other way.
    "tab_before_framing_value",
}


def as_origin_form(request: ReadRequest) -> ReadRequest:
    """An absolute-form request as the proxy takes it (RFC 9112 §3.2.2): the path
    and query are the target, and the target's authority replaces the first Host
    (or is added, at the end, when there was none)."""
    target = request.target
    if not target.startswith((b"http://", b"https://")):
        return request
    authority, _, rest = target.partition(b"//")[2].partition(b"/")
    authority, mark, query = authority.partition(b"?")
    path = b"/" + rest if not mark else b"/?" + query
    headers = list(request.headers)
    for index, (name, _) in enumerate(headers):
        if name == b"host":
            headers[index] = (name, authority)
            break
    else:
        headers.append((b"host", authority))
    return replace(request, target=path, headers=tuple(headers))


def _refusal_allowed(tags: set[str], status: int | None) -> str:
    known = sorted(tag for tag in tags if tag in REFUSED_WHERE_H11_ACCEPTS)
    assert known, "the proxy refused a request h11 accepts"
    return "refused: " + known[0]


def _acceptance_allowed(tags: set[str]) -> str:
    known = sorted(tags & ACCEPTED_WHERE_H11_REFUSES)
    assert known, "the proxy accepted a request h11 refuses"
    return "accepted: " + known[0]


def explain(stream: Stream, proxy: Reading, reference: Reading) -> str | None:
    """None if the proxy read what h11 read, else the known difference met; an
    AssertionError for any other difference."""
    if proxy.end == "error":
        assert proxy.status in REFUSALS, proxy
    pending = set().union(*(message.tags for message in stream.messages)) & PENDING_BUGS
    if pending:
        return "pending bug: " + sorted(pending)[0]
    for index, (mine, theirs) in enumerate(zip(proxy.requests, reference.requests,
                                               strict=False)):
        tags = stream.tags_of(index)
        if "absolute_target" in tags:
            theirs = as_origin_form(theirs)
        assert replace(mine, keep_alive=theirs.keep_alive) == theirs, f"request {index}"
        if mine.keep_alive != theirs.keep_alive:
            known = tags & {"http10_keep_alive", "proxy_connection"}
            assert known, f"request {index}: keep-alive {mine.keep_alive} (h11: not)"
            return "keep-alive: " + sorted(known)[0]
    mine, theirs = len(proxy.requests), len(reference.requests)
    if mine < theirs:
        assert proxy.ending == "error", "the proxy stopped before h11 did"
        return _refusal_allowed(stream.tags_of(mine), proxy.status)
    if mine > theirs:
        assert reference.ending == "error", "the proxy read a request h11 did not"
        return _acceptance_allowed(stream.tags_of(theirs))
    if proxy.ending == reference.ending:
        return None
    if proxy.ending == "error":
        assert reference.ending == "eof"
        if stream.cut is not None:
            # A head cut off by the client's close: h11 waits for the rest, the
            # proxy may have seen enough to refuse it. Fine if h11 refuses it whole.
            whole = h11_requests(replace(stream, cut=None).data)
            if len(whole.requests) == mine and whole.ending == "error":
                return "refused a cut-off head that h11 refuses whole"
        return _refusal_allowed(stream.tags_of(mine), proxy.status)
    assert (proxy.ending, reference.ending) == ("eof", "error"), (proxy.end, reference.end)
    return _acceptance_allowed(stream.tags_of(mine))


def check_stream(stream: Stream, cuts: list[int] = ()) -> None:  # noqa: PT028
    """The property, for one stream: the proxy's reading is the same for any reads,
    and equals h11's but for a known difference."""
    data = stream.data
    whole = proxy_requests([data])
    reference = h11_requests(data)
    split_dependent = any(message.tags & SPLIT_DEPENDENT for message in stream.messages)
    try:
        difference = (_explain_split_dependent(stream, whole, reference) if split_dependent
                      else explain(stream, whole, reference))
    except AssertionError as error:
        raise AssertionError(f"{error}\nbytes: {data!r}\nproxy: {whole}\n"
                             f"h11:   {reference}") from None
    event(difference or "same reading")
    if any(message.tags & PENDING_BUGS for message in stream.messages):
        return  # its own reads may differ too, until the fix
    expected = whole.summary()
    readings = [[data[i:i + 1] for i in range(len(data))], splits(data, list(cuts))]
    step = 1 if len(data) <= 600 else len(data) // 300
    readings += [splits(data, [cut]) for cut in range(1, len(data), step)]
    for pieces in readings:
        got = proxy_requests(pieces)
        if split_dependent:  # each reading on its own must be h11's or a known difference
            _explain_split_dependent(stream, got, reference)
            continue
        assert got.summary() == expected, (
            f"reads {[len(piece) for piece in pieces]} of {data!r}:\n"
            f"  {got}\nwhole: {whole}")


def _explain_split_dependent(stream: Stream, proxy: Reading, reference: Reading) -> str | None:
    """explain(), where a tab before a framing or Host value was refused: the read
    that held it is refused whole, so the requests before it in that read too."""
    if proxy.status == 400 and proxy.reason.startswith("a tab before"):
        for index, (mine, theirs) in enumerate(zip(proxy.requests, reference.requests,
                                                   strict=False)):
            if "absolute_target" in stream.tags_of(index):
                theirs = as_origin_form(theirs)
            assert mine == replace(theirs, keep_alive=mine.keep_alive), "a request read wrong"
        return "refused a read with a tab before a value"
    return explain(stream, proxy, reference)


# -- the properties --------------------------------------------------------------------

def _stream(*parts: bytes | tuple[bytes, set[str]]) -> Stream:
    return Stream([Message(part, set()) if isinstance(part, bytes) else Message(*part)
                   for part in parts])


HOST = b"Host: example.test\r\n"


@FUZZ
@given(request_streams(), st.lists(st.integers(0, 400), max_size=6))
# Cases worth keeping whatever hypothesis draws. An Upgrade request with a body:
# the body is framed as a body, and the request after it is read as one.
@example(_stream(b"GET / HTTP/1.1\r\n" + HOST + b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Content-Length: 3\r\n\r\nabc",
                 b"GET /admin HTTP/1.1\r\n" + HOST + b"\r\n"), [60, 70]).via("upgrade with body")
@example(_stream((b"POST / HTTP/1.1\r\n" + HOST + b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
                  {"trailer"}),
                 b"GET /next HTTP/1.1\r\n" + HOST + b"\r\n"), []).via("upgrade with chunked body")
# Trailer fields never join the head (dropped, as nginx drops them).
@example(_stream((b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
                  b"1\r\na\r\n0\r\nHost: evil.internal\r\nX-Injected: 1\r\n\r\n", {"trailer"})),
         []).via("trailer fields")
@example(_stream((b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
                  b"1\r\na\r\n0\r\nContent-Length: 5\r\n\r\n", {"trailer"})),
         []).via("Content-Length in a trailer")
# A valid request followed by garbage in the same read: the request, then 400.
@example(_stream(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nabc",
                 (b"XYZ\r\n\r\n", {"garbage"})), []).via("body then garbage")
@example(_stream(b"GET / HTTP/1.1\r\n" + HOST + b"X-Forwarded-For: 1\r\n\r\n",
                 (b"XYZ\r\n\r\n", {"garbage"})), []).via("X-Forwarded-For then garbage")
# `Connection: close` (or llhttp's Proxy-Connection) then more bytes: the request
# is answered and the rest is never read.
@example(_stream(b"POST / HTTP/1.1\r\n" + HOST + b"Connection: close\r\nContent-Length: 1\r\n\r\na",
                 b"GET / HTTP/1.1\r\n" + HOST + b"\r\n"), []).via("close then more")
@example(_stream((b"GET / HTTP/1.1\r\n" + HOST + b"Proxy-Connection: close\r\n\r\n",
                  {"proxy_connection"}),
                 b"GET / HTTP/1.1\r\n" + HOST + b"\r\n"), []).via("Proxy-Connection: close")
def test_requests_are_read_as_h11_reads_them_in_any_reads(stream: Stream, cuts: list[int]) -> None:
    check_stream(stream, cuts)


@FUZZ
@given(st.sampled_from([8190, 8192, 8193, 65535, 65536, 65537]), st.integers(-40, 40),
       st.booleans(), st.lists(st.integers(0, 70_000), max_size=6))
def test_bodies_across_the_read_sizes_are_read_whole_and_the_next_request_after(
        size: int, shift: int, chunked: bool, cuts: list[int]) -> None:
    """Bodies whose end falls near the 8 KiB head read and the 64 KiB body read,
    followed by a pipelined request: the same reading for any reads."""
    body = bytes(range(256)) * (size // 256 + 1)
    body = body[:max(1, size + shift - 60)]
    if chunked:
        head = b"POST /b HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
        half = len(body) // 2
        framed = b"%x\r\n%b\r\n%x\r\n%b\r\n0\r\n\r\n" % (half, body[:half],
                                                         len(body) - half, body[half:])
    else:
        head = b"POST /b HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % len(body)
        framed = body
    stream = _stream(head + framed, b"GET /next HTTP/1.1\r\n" + HOST + b"\r\n")
    data = stream.data
    reference = h11_requests(data)
    assert [request.target for request in reference.requests] == [b"/b", b"/next"]
    assert reference.requests[0].body == body
    for pieces in ([data], splits(data, cuts), splits(data, [len(head)]),
                   splits(data, [len(data) - 40]), splits(data, [8192, 65536 + 8192])):
        reading = proxy_requests(pieces)
        assert explain(stream, reading, reference) is None, [len(p) for p in pieces]


# -- bugs these properties found, kept as cases ------------------------------------------

def _same_reading(stream: Stream) -> None:
    data = stream.data
    proxy, reference = proxy_requests([data]), h11_requests(data)
    assert proxy.summary() == reference.summary(), f"\nproxy: {proxy}\nh11:   {reference}"


def test_a_chunked_coding_followed_by_a_tab_is_refused() -> None:
    """h11 reads `chunked<TAB>` as chunked (OWS); llhttp refuses it, and so do we, so
    that the two parsers of the proxy never read one body two ways."""
    reading = proxy_requests([b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\t\r\n"
                              b"\r\n3\r\nabc\r\n0\r\n\r\nGET /x HTTP/1.1\r\n" + HOST + b"\r\n"])
    assert reading.status == 400 and not reading.requests, reading


def test_two_content_lengths_in_a_trailer_are_refused() -> None:
    """A deliberate difference (REFUSED_WHERE_H11_ACCEPTS, trailer_duplicate_cl):
    one Content-Length in a trailer is ignored, two are a 400 from llhttp."""
    reading = proxy_requests([b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked"
                              b"\r\n\r\n1\r\na\r\n0\r\nContent-Length: 5\r\n"
                              b"Content-Length: 5\r\n\r\n"])
    assert reading.status == 400, reading


def test_a_tab_before_a_transfer_encoding_value_is_refused_in_any_reads() -> None:
    head = b"POST / HTTP/1.1\r\n" + HOST
    data = head + b"Transfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert proxy_requests([data]).status == 400
    reading = proxy_requests([head, data[len(head):]])
    assert reading.status == 400, reading


def test_a_body_holding_a_tab_after_a_host_colon_is_read_as_a_body() -> None:
    body = b"a\nHost:\tb"
    _same_reading(_stream(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n"
                          % len(body) + body))


def test_whitespace_after_a_host_value_is_not_part_of_the_host() -> None:
    _same_reading(_stream(b"GET / HTTP/1.1\r\nHost: example.test \r\n\r\n"))


def test_a_refusal_after_a_declined_upgrade_keeps_its_status() -> None:
    first = (b"GET / HTTP/1.1\r\n" + HOST + b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    second = b"CONNECT / HTTP/1.1\r\n" + HOST + b"\r\n"
    assert proxy_requests([first, second]).status == 405
    reading = proxy_requests([first + second])
    assert reading.status == 405, reading


@pytest.mark.parametrize("pieces", [
    (b"GET /\r", b"\n"),
    (b"GET /", b"\r\n"),
    (b"GET /1 HTTP/1.1\r\n" + HOST + b"\r\nGET /", b"\r\n"),
], ids=["cr-then-lf", "line-then-crlf", "after-a-request"])
def test_an_http09_request_line_split_across_reads_is_400_at_once(
        pieces: tuple[bytes, ...]) -> None:
    reads = PiecesReader(*pieces, then_wait=True)
    if pieces[0].startswith(b"GET /1 "):
        assert reads.head().target == b"/1"
    with pytest.raises(HttpError) as caught:
        reads.head()
    assert caught.value.status == 400
