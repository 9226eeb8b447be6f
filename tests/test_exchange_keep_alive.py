"""Keep-alive on both sides of one exchange, decided by `Reply` from bytes alone.

The client's (`reply.keep_alive`): the permission the driver gives (the
client asked for it, no drain, keepalive_requests not reached) stands, but
an HTTP/1.0 client whose body only the close can end (a close-delimited or
chunked reply) is closed; the head says which with its Connection line:
none for HTTP/1.1 keep-alive, `keep-alive` for HTTP/1.0, `close` otherwise.
The upstream's Connection header never reaches the client (nginx).

The upstream's (`reply.reusable`, DESIGN.md's pooling rule): only after an
exact end of a framed reply that allows keep-alive (HTTP/1.1, no `close`);
`excess` counts the bytes read past the end (None: some after a chunked
body's end, in the read that ended it, uncounted).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.exchange_fixtures import (
    GET_10,
    GET_10_KEEP_ALIVE,
    GET_11,
    HEAD_11,
    cut,
    feed,
    lines_named,
    reply,
)

SPLITS = settings(max_examples=200, deadline=None, database=None)

LENGTH_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
CHUNKED_REPLY = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
UNTIL_CLOSE_REPLY = b"HTTP/1.1 200 OK\r\n\r\nhi"


def client_head(out: bytes) -> bytes:
    return out[:out.index(b"\r\n\r\n") + 4]


# -- the client's keep-alive ----------------------------------------------------------------

@pytest.mark.parametrize(("client", "permitted", "connection", "keeps"), [
    (GET_11, True, [], True),
    (GET_11, False, [b"Connection: close"], False),
    (GET_10_KEEP_ALIVE, True, [b"Connection: keep-alive"], True),
    (GET_10_KEEP_ALIVE, False, [b"Connection: close"], False),
    (GET_10, False, [b"Connection: close"], False),
], ids=["11-permitted", "11-refused", "10-permitted", "10-refused", "10-not-asked"])
def test_the_given_permission_decides_a_framed_reply(
        client: bytes, permitted: bool, connection: list[bytes], keeps: bool) -> None:
    r = reply(client, keep_alive=permitted)
    out = r.feed(LENGTH_REPLY, False)
    assert lines_named(client_head(out), b"connection") == connection
    assert r.keep_alive is keeps


def test_an_http11_client_kept_alive_gets_the_head_without_a_connection_line() -> None:
    assert reply().feed(LENGTH_REPLY, False) == LENGTH_REPLY


def test_an_http10_client_kept_alive_is_told_so() -> None:
    assert reply(GET_10_KEEP_ALIVE).feed(LENGTH_REPLY, False) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi")


def test_a_refused_http11_client_is_told_the_close_after_the_framing() -> None:
    assert reply(keep_alive=False).feed(LENGTH_REPLY, False) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")


@pytest.mark.parametrize("upstream", [UNTIL_CLOSE_REPLY, CHUNKED_REPLY],
                         ids=["close-delimited", "chunked"])
def test_an_http10_client_is_closed_when_only_the_close_can_end_its_body(
        upstream: bytes) -> None:
    r = reply(GET_10_KEEP_ALIVE, keep_alive=True)
    out = r.feed(upstream, False)
    assert client_head(out) == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
    assert r.keep_alive is False


def test_an_http10_client_keeps_alive_when_the_close_came_with_the_head() -> None:
    r = reply(GET_10_KEEP_ALIVE, keep_alive=True)
    assert r.feed(UNTIL_CLOSE_REPLY, True) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi")
    assert r.keep_alive is True


def test_an_http11_client_keeps_alive_through_a_close_delimited_reply() -> None:
    r = reply(GET_11, keep_alive=True)
    out = r.feed(UNTIL_CLOSE_REPLY, False)
    assert client_head(out) == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert r.keep_alive is True


@pytest.mark.parametrize("client", [GET_10_KEEP_ALIVE, HEAD_11],
                         ids=["http10-204", "head-11"])
def test_a_bodiless_reply_keeps_the_client_alive(client: bytes) -> None:
    r = reply(client)
    out = r.feed(b"HTTP/1.1 204 No Content\r\n\r\n", False)
    assert r.keep_alive is True
    assert lines_named(client_head(out), b"connection") == (
        [b"Connection: keep-alive"] if client == GET_10_KEEP_ALIVE else [])


def test_the_upstreams_connection_close_is_not_relayed_nor_closes_the_client() -> None:
    r = reply()
    out = r.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nKeep-Alive: timeout=5\r\n"
                 b"Content-Length: 2\r\n\r\nhi", False)
    assert out == LENGTH_REPLY
    assert r.keep_alive is True and r.reusable is False


def test_headers_the_upstreams_connection_names_are_dropped() -> None:
    out = reply().feed(b"HTTP/1.1 200 OK\r\nConnection: X-Hop, keep-alive\r\nX-Hop: 1\r\n"
                       b"X-End: 2\r\nContent-Length: 2\r\n\r\nhi", False)
    assert out == b"HTTP/1.1 200 OK\r\nX-End: 2\r\nContent-Length: 2\r\n\r\nhi"


def test_the_permission_can_change_until_the_head_arrives() -> None:
    # The driver sets it again before each read of the head (a drain may have begun).
    r = reply(keep_alive=True)
    assert r.feed(b"HTTP/1.1 200 OK\r\n", False) == b""
    r.keep_alive = False
    assert r.feed(b"Content-Length: 2\r\n\r\nhi", False) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")


# -- the upstream connection's reuse ----------------------------------------------------------

@pytest.mark.parametrize("upstream", [
    LENGTH_REPLY,
    CHUNKED_REPLY,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
], ids=["length", "chunked", "chunked-trailer", "204", "304", "keep-alive-token"])
def test_a_framed_http11_reply_ended_exactly_is_reusable(upstream: bytes) -> None:
    r = reply()
    r.feed(upstream, False)
    assert (r.complete, r.reusable, r.excess) == (True, True, 0)


@pytest.mark.parametrize("upstream", [
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nConnection: Close\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
], ids=["http10", "http10-keep-alive", "close", "close-chunked", "close-204"])
def test_a_reply_that_refuses_keep_alive_is_not_reusable(upstream: bytes) -> None:
    r = reply()
    r.feed(upstream, False)
    assert (r.complete, r.reusable, r.excess) == (True, False, 0)


def test_a_close_delimited_reply_is_not_reusable() -> None:
    r = reply()
    r.feed(UNTIL_CLOSE_REPLY, False)
    assert not r.reusable
    r.closed()
    assert (r.complete, r.reusable) == (True, False)


@pytest.mark.parametrize("upstream", [LENGTH_REPLY, CHUNKED_REPLY], ids=["length", "chunked"])
def test_nothing_is_reusable_before_the_end(upstream: bytes) -> None:
    r = reply()
    r.feed(upstream[:-1], False)
    assert (r.complete, r.reusable) == (False, False)
    r.feed(upstream[-1:], False)
    assert (r.complete, r.reusable) == (True, True)


def test_bytes_after_a_content_length_end_are_counted_and_stop_reuse() -> None:
    r = reply()
    r.feed(LENGTH_REPLY + b"xyz", False)
    assert (r.reusable, r.excess) == (False, 3)


def test_bytes_in_a_later_read_after_the_end_are_counted_and_stop_reuse() -> None:
    r = reply()
    r.feed(LENGTH_REPLY, False)
    assert r.reusable
    assert r.feed(b"late", False) == b""
    assert (r.reusable, r.excess) == (False, 4)
    assert r.feed(b"r", False) == b""
    assert r.excess == 5


@pytest.mark.parametrize("after", [b"x", b"\r\n", b"HTTP/1.1 200 OK\r\n\r\n"],
                         ids=["a-byte", "an-empty-line", "a-head"])
def test_bytes_after_a_chunked_end_in_the_same_read_are_excess_uncounted(
        after: bytes) -> None:
    r = reply()
    out = r.feed(CHUNKED_REPLY + after, False)
    assert out.endswith(b"2\r\nhi\r\n0\r\n\r\n")
    assert (r.complete, r.reusable, r.excess) == (True, False, None)


def test_bytes_after_a_chunked_end_in_a_later_read_are_counted() -> None:
    r = reply()
    r.feed(CHUNKED_REPLY, False)
    assert (r.reusable, r.excess) == (True, 0)
    r.feed(b"\r\n", False)
    assert (r.reusable, r.excess) == (False, 2)


def test_bytes_after_a_bodiless_reply_are_counted() -> None:
    r = reply(HEAD_11)
    r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody", False)
    assert (r.reusable, r.excess) == (False, 4)


@SPLITS
@given(junk=st.binary(max_size=20), data=st.data())
def test_any_split_of_a_length_reply_and_junk_counts_the_junk_exactly(
        junk: bytes, data: st.DataObject) -> None:
    raw = LENGTH_REPLY + junk
    pieces = cut(raw, data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    r = reply()
    assert feed(r, pieces) == LENGTH_REPLY
    assert (r.reusable, r.excess) == (not junk, len(junk))


@SPLITS
@given(st.data())
def test_any_split_of_a_chunked_reply_ends_exactly_and_is_reusable(
        data: st.DataObject) -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4\r\n\r\n\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")
    pieces = cut(raw, data.draw(st.lists(st.integers(0, len(raw)), max_size=10)))
    r = reply()
    feed(r, pieces)
    assert (r.complete, r.reusable, r.excess, r.body_bytes) == (True, True, 0, 7)


@SPLITS
@given(junk=st.sampled_from([b"\r\n", b"\r\n\r\n", b"0\r\n\r\n", b"x"]), data=st.data())
def test_any_split_of_a_chunked_reply_and_junk_is_never_reusable(
        junk: bytes, data: st.DataObject) -> None:
    raw = CHUNKED_REPLY + junk
    pieces = cut(raw, data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    r = reply()
    feed(r, pieces)
    assert r.complete and not r.reusable
    assert r.excess is None or 0 < r.excess <= len(junk)


def test_a_reply_to_head_without_framing_headers_is_reusable() -> None:
    r = reply(HEAD_11)
    assert r.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", False) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n")
    assert (r.complete, r.excess) == (True, 0)
    assert r.reusable
