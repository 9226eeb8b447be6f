"""Property: the proxy takes an upstream's reply as h11's strict client does.

Hypothesis draws a request method (GET or HEAD) and an upstream reply
(tests/support/fuzz_strategies.py): statuses with and without a body (1xx
first, 204, 304), HTTP/1.0 and 1.1, Content-Length, chunked with extensions
and trailers, both, neither, Connection close or keep-alive, bytes after the
framed end, and an upstream that closes or stays open. workers/exchange.py's
sans-IO Reply takes the reply (its head, then its body re-framed for the
client) from the reads the bytes arrive in, fed as workers/driver.py feeds
them (tests/support/sans_io.py): whole, cut at every split point, byte by
byte, and at split points hypothesis chooses. h11 reads the same bytes after
sending the same request.

They must agree on whether the reply is taken or refused (a 502), on the status
and the body the client receives (read back from what the proxy sent, with
h11), on whether the reader waits for more, and on whether the upstream
connection may be pooled: only when the reply was framed (Content-Length,
chunked, 204, 304, HEAD), ended exactly with no byte left over, neither side
said close, and the reply is HTTP/1.1 (nginx does not reuse a connection after
an HTTP/1.0 reply; neither does h11). The connection is pooled when
the Reply says it may be (`reusable`) and the pool's peek on release
(workers/upstreams.py) finds nothing waiting.

Known differences from h11 are tags on the drawn reply, listed below with
their reason. Found cases are kept in tests/hypothesis-examples/.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.support.fuzz_strategies import (
    Exchange,
    ReplyReading,
    h11_reply,
    proxy_reply,
    reply_exchanges,
    splits,
)

EXAMPLES = DirectoryBasedExampleDatabase(Path(__file__).parent / "hypothesis-examples")
# A few seconds per property; FUZZ_EXAMPLES=5000 for a longer hunt.
FUZZ = settings(database=EXAMPLES, max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
                deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Where the proxy refuses a reply (502) that h11 takes.
REFUSED_WHERE_H11_ACCEPTS = {
    # NGINX-REFERENCE.md: both Content-Length and Transfer-Encoding, or a duplicate
    # Content-Length, is an invalid header (502); h11 lets chunked win, and merges
    # equal lengths.
    "cl_and_te",
    "duplicate_cl",
    # A length over 18 digits overflows nginx's (and llhttp's) 64-bit length: 502.
    # h11 waits for the body.
    "cl_over_18_digits",
    # RFC 9112 §7.1: the chunk-size line and the CRLF after chunk data, read
    # strictly by llhttp; h11 takes whitespace after the size, anything after a
    # ";", and skips the two bytes after the data unchecked.
    "chunk_size_ows",
    "chunk_ext_loose",
    "chunk_data_end_unchecked",
    # HTTP/1.2 and later: llhttp knows no 1.2, and the proxy reads an HTTP/1 reply
    # only; h11 takes any digit.digit.
    "version_other",
    # Two Content-Length fields in a trailer: llhttp counts them as a head's, and its
    # leniencies do not cover it; the reply is cut off (one alone is ignored).
    "trailer_duplicate_cl",
}

# Bugs found by this property and not fixed yet: a reply carrying one of these
# tags may differ in any way; a strict xfail test below keeps each one visible
# until its fix lands (then drop it from here).
PENDING_BUGS: set[str] = set()

# Where the proxy takes a reply h11 refuses.
ACCEPTED_WHERE_H11_REFUSES = {
    # RFC 9112 §7.1: chunk-size is 1*HEXDIG; h11 caps it at 20 digits.
    "chunk_size_over_20_digits",
    # A trailer's fields are dropped whatever they are, as nginx drops them; h11
    # checks a Content-Length or Transfer-Encoding there as in a head.
    "trailer_cl_or_te",
}


def explain(exchange: Exchange, proxy: ReplyReading, reference: ReplyReading) -> str | None:
    """None if the proxy took the reply as h11 did, else the known difference met;
    an AssertionError for any other difference."""
    if proxy.summary() == reference.summary():
        return None
    pending = sorted(exchange.tags & PENDING_BUGS)
    if pending:
        return "pending bug: " + pending[0]
    if proxy.outcome == "error" and reference.outcome != "error":
        known = sorted(exchange.tags & REFUSED_WHERE_H11_ACCEPTS)
        assert known, "the proxy refused a reply h11 takes"
        return "refused: " + known[0]
    if proxy.outcome == "error" and reference.outcome == "waits" and \
            "cl_over_18_digits" in exchange.tags:
        return "refused: cl_over_18_digits"
    if reference.outcome == "error" and proxy.outcome != "error":
        known = sorted(exchange.tags & ACCEPTED_WHERE_H11_REFUSES)
        assert known, "the proxy took a reply h11 refuses"
        return "accepted: " + known[0]
    assert proxy.outcome == reference.outcome, "one reader waits for more, the other not"
    assert (proxy.status, proxy.body) == (reference.status, reference.body), "status or body"
    # The one that matters most: a connection pooled that h11 would not reuse
    # carries one client's bytes into another client's exchange.
    assert not proxy.reusable, "pooled a connection h11 would not reuse"
    if "version_other" in exchange.tags:
        # The proxy pools after an HTTP/1.1 reply only (response_head._check_framing);
        # h11 reuses after any version from 1.1 up. Not pooling is the safe side.
        return "not pooled: version_other"
    raise AssertionError("did not pool a connection h11 would reuse")


def check_exchange(exchange: Exchange, cuts: list[int] = ()) -> None:  # noqa: PT028
    """The property for one exchange: the proxy takes the reply the same way for
    any reads, and as h11 does but for a known difference."""
    data = exchange.reply
    whole = proxy_reply(exchange.method, [data], exchange.closes)
    reference = h11_reply(exchange.method, data, exchange.closes)
    try:
        difference = explain(exchange, whole, reference)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{exchange.method.decode()} reply: {data!r} "
                             f"(upstream {'closes' if exchange.closes else 'stays open'})\n"
                             f"proxy: {whole}\nh11:   {reference}") from None
    event(difference or "same taking")
    if exchange.tags & PENDING_BUGS:
        return  # its own reads may differ too, until the fix
    readings = [[data[i:i + 1] for i in range(len(data))], splits(data, list(cuts))]
    readings += [splits(data, [cut]) for cut in range(1, len(data))]
    for pieces in readings:
        got = proxy_reply(exchange.method, pieces, exchange.closes)
        assert got.summary() == whole.summary(), (
            f"reads {[len(piece) for piece in pieces]} of {data!r}:\n  {got}\nwhole: {whole}")


POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON"


@FUZZ
@given(reply_exchanges(), st.lists(st.integers(0, 300), max_size=6))
# Bytes past the framed end never leave a connection pooled (the pooling rule).
@example(Exchange(b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + POISON, False),
         []).via("Content-Length shorter than what follows")
@example(Exchange(b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
         []).via("a body on a reply to HEAD")
@example(Exchange(b"GET", b"HTTP/1.1 204 No Content\r\n\r\n" + POISON, False),
         []).via("bytes after a 204")
@example(Exchange(b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 2\r\n\r\nok", False),
         []).via("a body on a 304")
@example(Exchange(b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"2\r\nok\r\n0\r\n\r\n" + POISON, False), []).via("after the last chunk")
@example(Exchange(b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"2\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n", False), []).via("a trailer")
@example(Exchange(b"GET", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                          b"Content-Length: 2\r\n\r\nok", False), []).via("HTTP/1.0 keep-alive")
@example(Exchange(b"GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                          b"Content-Length: 2\r\n\r\nok", False), []).via("an interim 100")
@example(Exchange(b"GET", b"HTTP/1.1 200 OK\r\n\r\nuntil the close", True), []).via("no framing")
def test_replies_are_taken_as_h11_takes_them_in_any_reads(exchange: Exchange,
                                                          cuts: list[int]) -> None:
    check_exchange(exchange, cuts)


@FUZZ
@given(st.sampled_from([8192, 65536]), st.integers(-70, 70), st.booleans(),
       st.sampled_from([b"", b"X", POISON]), st.lists(st.integers(0, 70_000), max_size=4))
def test_replies_ending_near_the_read_sizes_are_pooled_only_when_exact(
        boundary: int, shift: int, chunked: bool, extra: bytes, cuts: list[int]) -> None:
    """A reply whose end (and the bytes after it) falls near the 8 KiB head read
    or the 64 KiB body read: pooled exactly when h11 would reuse it."""
    head_size = 40
    size = max(1, boundary + shift - head_size)
    body = (bytes(range(256)) * (size // 256 + 1))[:size]
    if chunked:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        framed = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    else:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        framed = body
    data = head + framed + extra
    reference = h11_reply(b"GET", data, False)
    assert reference.outcome == "done" and reference.body == body
    assert reference.reusable == (not extra)
    for pieces in ([data], splits(data, cuts), splits(data, [len(data) - len(extra)])):
        got = proxy_reply(b"GET", pieces, False)
        assert got.summary() == reference.summary(), [len(piece) for piece in pieces]


# -- bugs these properties found, kept as cases ------------------------------------------

def test_a_content_length_in_a_reply_trailer_is_ignored_with_the_trailer() -> None:
    data = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\nContent-Length: 5\r\n\r\n")
    proxy = proxy_reply(b"GET", [data], False)
    assert proxy.summary() == h11_reply(b"GET", data, False).summary(), proxy


def test_an_empty_line_after_the_last_chunk_is_excess() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n\r\n"
    proxy = proxy_reply(b"GET", [data], False)
    assert proxy.summary() == h11_reply(b"GET", data, False).summary(), proxy
