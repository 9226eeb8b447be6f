"""`Reply.feed(data, closed)`: an upstream reply re-framed for the client, bytes only.

The rules (workers/exchange.py, nginx's proxy module, RFC 9112 §6.3):

* a Content-Length body goes out with that length, whole and no more, however
  the reads cut it;
* a chunked body is de-chunked and, for an HTTP/1.1 client, re-chunked (its
  extensions and trailer dropped); an HTTP/1.0 client gets the bare bytes and
  a close;
* a body only the close can end is chunked for an HTTP/1.1 client, unless the
  close came with the head's read: then the body is whole and goes with a
  Content-Length;
* a reply to HEAD, a 204 and a 304 have no body whatever their headers say;
* interim 1xx replies are skipped; a 101 hands the rest to the tunnel;
* invalid framing, a head over 64 KiB, and a close before the head or
  mid-body are UpstreamError 502.
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
    every_split,
    feed,
    h11_header,
    h11_read,
    reply,
)
from workers.errors import UpstreamError
from workers.exchange import (
    CHUNKED,
    LENGTH,
    MAX_RESPONSE_HEAD,
    NO_BODY,
    UNTIL_CLOSE,
)

SPLITS = settings(max_examples=200, deadline=None, database=None)


def cuts_of(data: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(data)), max_size=12)


# -- Content-Length ---------------------------------------------------------------------

LENGTH_REPLY = (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\n"
                b"hello world")
# The head as relayed: the length regenerated after the end-to-end headers.
LENGTH_CLIENT = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n"
                 b"hello world")


def test_a_content_length_reply_in_one_read_goes_out_whole_with_its_length() -> None:
    r = reply()
    assert r.feed(LENGTH_REPLY, False) == LENGTH_CLIENT
    assert (r.body, r.complete, r.reusable, r.excess, r.body_bytes) == (LENGTH, True, True, 0, 11)


@pytest.mark.parametrize("pieces", every_split(LENGTH_REPLY),
                         ids=lambda pieces: f"cut-at-{len(pieces[0])}")
def test_a_content_length_reply_cut_at_any_byte_gives_the_same_client_bytes(
        pieces: list[bytes]) -> None:
    r = reply()
    assert feed(r, pieces) == LENGTH_CLIENT
    assert r.complete and r.reusable and r.excess == 0


def test_nothing_goes_out_until_the_head_is_whole() -> None:
    r = reply()
    head_end = LENGTH_REPLY.index(b"\r\n\r\n") + 4
    for byte in range(head_end - 1):
        assert r.feed(LENGTH_REPLY[byte:byte + 1], False) == b""
        assert not r.head_done
    assert r.feed(LENGTH_REPLY[head_end - 1:head_end], False) == LENGTH_CLIENT[:head_end]
    assert r.head_done and not r.complete
    assert r.feed(b"hello", False) == b"hello"
    assert r.feed(b" world", False) == b" world"
    assert r.complete


@SPLITS
@given(st.data())
def test_any_split_of_a_content_length_reply_gives_the_same_client_bytes(
        data: st.DataObject) -> None:
    pieces = cut(LENGTH_REPLY, data.draw(cuts_of(LENGTH_REPLY)))
    r = reply()
    assert feed(r, pieces) == LENGTH_CLIENT
    assert r.complete and r.reusable and r.excess == 0


def test_the_body_ends_exactly_at_its_length_and_what_follows_is_not_relayed() -> None:
    r = reply()
    assert r.feed(LENGTH_REPLY + b"HTTP/1.1 200 OK\r\n", False) == LENGTH_CLIENT
    assert r.complete and r.body_bytes == 11
    assert (r.reusable, r.excess) == (False, 17)


def test_the_end_is_found_when_the_last_body_byte_comes_alone() -> None:
    r = reply()
    assert r.feed(LENGTH_REPLY[:-1], False) == LENGTH_CLIENT[:-1]
    assert not r.complete and r.remaining == 1
    assert r.feed(b"d", False) == b"d"
    assert r.complete and r.remaining == 0


def test_a_zero_length_body_ends_with_the_head() -> None:
    r = reply()
    assert r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert r.complete and r.reusable


def test_a_content_length_reply_to_an_http10_client_keeps_its_length() -> None:
    r = reply(GET_10, keep_alive=False)
    assert r.feed(LENGTH_REPLY, False) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
        b"Connection: close\r\n\r\nhello world")


# -- chunked ----------------------------------------------------------------------------

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
CHUNKED_BODY = b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nX-Trailer: dropped\r\n\r\n"
CHUNKED_REPLY = CHUNKED_HEAD + CHUNKED_BODY
CHUNKED_CLIENT_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n")


def test_a_chunked_reply_is_rechunked_for_an_http11_client() -> None:
    r = reply()
    assert r.feed(CHUNKED_REPLY, False) == (
        CHUNKED_CLIENT_HEAD + b"b\r\nhello world\r\n0\r\n\r\n")
    assert (r.body, r.complete, r.reusable, r.excess, r.body_bytes) == (
        CHUNKED, True, True, 0, 11)


def test_each_read_of_a_chunked_body_becomes_one_chunk() -> None:
    r = reply()
    assert r.feed(CHUNKED_HEAD, False) == CHUNKED_CLIENT_HEAD
    assert r.feed(b"5\r\nhel", False) == b"3\r\nhel\r\n"
    assert r.feed(b"lo\r\n", False) == b"2\r\nlo\r\n"
    assert r.feed(b"6\r\n", False) == b""  # a size line alone: no empty chunk
    assert r.feed(b" world\r\n0\r\n\r\n", False) == b"6\r\n world\r\n0\r\n\r\n"
    assert r.complete and r.reusable


def test_a_chunked_reply_is_dechunked_for_an_http10_client() -> None:
    r = reply(GET_10, keep_alive=True)
    assert r.feed(CHUNKED_REPLY, False) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        b"hello world")
    assert r.complete and r.reusable and not r.keep_alive


@SPLITS
@given(st.data())
def test_any_split_of_a_chunked_reply_reads_the_same_to_a_client(
        data: st.DataObject) -> None:
    pieces = cut(CHUNKED_REPLY, data.draw(cuts_of(CHUNKED_REPLY)))
    r = reply()
    out = feed(r, pieces)
    assert out.startswith(CHUNKED_CLIENT_HEAD) and out.endswith(b"\r\n0\r\n\r\n")
    response, body, ended = h11_read(out)
    assert (response.status_code, body, ended) == (200, b"hello world", True)
    assert h11_header(response, b"transfer-encoding") == [b"chunked"]
    assert h11_header(response, b"x-trailer") == []
    assert r.complete and r.reusable and r.excess == 0


@SPLITS
@given(st.data())
def test_any_split_of_a_chunked_reply_gives_an_http10_client_the_same_bytes(
        data: st.DataObject) -> None:
    pieces = cut(CHUNKED_REPLY, data.draw(cuts_of(CHUNKED_REPLY)))
    r = reply(GET_10)
    assert feed(r, pieces) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        b"hello world")
    assert r.complete


def test_an_empty_chunked_body_is_the_last_chunk_alone() -> None:
    r = reply()
    assert r.feed(CHUNKED_HEAD + b"0\r\n\r\n", False) == CHUNKED_CLIENT_HEAD + b"0\r\n\r\n"
    assert r.complete and r.body_bytes == 0


@pytest.mark.parametrize("bad", [b"zz\r\nhello\r\n", b"5\r\nhelloXX", b"5 x\r\nhello\r\n"],
                         ids=["bad-size", "no-crlf-after-data", "junk-after-size"])
def test_a_malformed_chunked_body_is_502(bad: bytes) -> None:
    r = reply()
    with pytest.raises(UpstreamError) as error:
        r.feed(CHUNKED_HEAD + bad, False)
    assert error.value.status == 502
    assert r.head_done  # mid-reply: only closing the client connection can say so


# -- bodies only the close can end ------------------------------------------------------

UNTIL_CLOSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"


def test_a_close_delimited_body_is_chunked_for_an_http11_client() -> None:
    r = reply()
    assert r.feed(UNTIL_CLOSE_HEAD + b"hello", False) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n")
    assert r.body == UNTIL_CLOSE and not r.complete
    assert r.feed(b"", False) == b""  # an empty read is no last chunk
    assert r.feed(b" world", False) == b"6\r\n world\r\n"
    assert r.closed() == b"0\r\n\r\n"
    assert r.complete and not r.reusable and r.body_bytes == 11


def test_a_close_delimited_body_ending_with_data_and_the_close_together() -> None:
    r = reply()
    r.feed(UNTIL_CLOSE_HEAD, False)
    assert r.feed(b"hello", True) == b"5\r\nhello\r\n0\r\n\r\n"
    assert r.complete


def test_a_close_delimited_body_goes_bare_to_an_http10_client_then_the_close() -> None:
    r = reply(GET_10)
    assert r.feed(UNTIL_CLOSE_HEAD + b"hello", False) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nhello")
    assert r.feed(b" world", True) == b" world"
    assert r.complete and not r.keep_alive


@pytest.mark.parametrize("client", [GET_11, GET_10], ids=["http11", "http10"])
def test_with_the_close_in_the_first_read_the_body_goes_with_a_content_length(
        client: bytes) -> None:
    r = reply(client, keep_alive=False)
    assert r.feed(UNTIL_CLOSE_HEAD + b"hello world", True) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
        b"Connection: close\r\n\r\nhello world")
    assert (r.body, r.complete, r.reusable, r.body_bytes) == (LENGTH, True, False, 11)


def test_with_the_close_in_the_first_read_an_empty_body_has_length_zero() -> None:
    r = reply()
    assert r.feed(UNTIL_CLOSE_HEAD, True) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n")
    assert r.complete and not r.reusable


def test_the_close_after_a_head_read_alone_still_means_a_chunked_body() -> None:
    # The length is only known when the close comes with the head's read.
    r = reply()
    assert r.feed(UNTIL_CLOSE_HEAD, False).endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert r.feed(b"hi", True) == b"2\r\nhi\r\n0\r\n\r\n"


@SPLITS
@given(st.data())
def test_any_split_of_a_close_delimited_reply_reads_the_same_to_a_client(
        data: st.DataObject) -> None:
    raw = UNTIL_CLOSE_HEAD + b"hello world"
    pieces = cut(raw, data.draw(cuts_of(raw)))
    r = reply()
    out = feed(r, pieces, close=True)
    response, body, ended = h11_read(out)
    assert (response.status_code, body, ended) == (200, b"hello world", True)
    assert r.complete and not r.reusable


# -- no body whatever the headers say ---------------------------------------------------

@pytest.mark.parametrize(("client", "upstream", "to_client"), [
    (HEAD_11, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
    (HEAD_11, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
     b"HTTP/1.1 200 OK\r\n\r\n"),
    (GET_11, b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
     b"HTTP/1.1 204 No Content\r\n\r\n"),
    (GET_11, b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
     b"HTTP/1.1 204 No Content\r\n\r\n"),
    (GET_11, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\n",
     b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 5\r\n\r\n"),
    (GET_11, b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
     b"HTTP/1.1 304 Not Modified\r\n\r\n"),
    (GET_11, b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"),
], ids=["head-length", "head-chunked", "204-length", "204-chunked", "304-length",
        "304-chunked", "204-plain"])
def test_head_204_and_304_replies_have_no_body(client: bytes, upstream: bytes,
                                               to_client: bytes) -> None:
    r = reply(client)
    assert r.feed(upstream, False) == to_client
    assert (r.body, r.complete, r.reusable, r.excess, r.body_bytes) == (
        NO_BODY, True, True, 0, 0)


@pytest.mark.parametrize("upstream", [
    b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello",
], ids=["204", "304"])
def test_body_bytes_after_a_bodiless_head_are_not_relayed(upstream: bytes) -> None:
    r = reply()
    out = r.feed(upstream, False)
    assert out.endswith(b"\r\n\r\n") and b"hello" not in out
    assert r.complete and not r.reusable and r.excess == len(upstream) - upstream.index(
        b"\r\n\r\n") - 4


def test_a_head_reply_announcing_a_body_gets_none_even_when_the_body_follows() -> None:
    r = reply(HEAD_11)
    assert r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", False) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert r.complete and not r.reusable and r.excess == 5


# -- interim replies and 101 -------------------------------------------------------------

def test_interim_1xx_replies_are_skipped() -> None:
    r = reply()
    upstream = (b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    assert r.feed(upstream, False) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    assert r.status == 200 and r.complete and r.reusable


@pytest.mark.parametrize("pieces", every_split(
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
    ids=lambda pieces: f"cut-at-{len(pieces[0])}")
def test_an_interim_reply_cut_anywhere_is_still_skipped(pieces: list[bytes]) -> None:
    r = reply()
    assert feed(r, pieces) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    assert r.complete


def test_an_interim_reply_alone_then_the_close_is_502() -> None:
    r = reply()
    assert r.feed(b"HTTP/1.1 100 Continue\r\n\r\n", False) == b""
    assert not r.head_done
    with pytest.raises(UpstreamError) as error:
        r.closed()
    assert (error.value.status, error.value.reason) == (
        502, "upstream closed the connection before a response")


def test_a_101_sets_switching_and_keeps_the_tunnel_bytes_after_its_head() -> None:
    r = reply(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    upstream = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n\x81\x02hi")
    assert r.feed(upstream, False) == b""  # the tunnel sends the head (driver)
    assert (r.switching, r.rest, r.complete, r.status, r.head_done) == (
        True, b"\x81\x02hi", True, 101, True)


def test_a_101_cut_in_its_head_keeps_only_what_follows_the_head() -> None:
    r = reply()
    assert r.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r", False) == b""
    assert not r.switching
    assert r.feed(b"\ntunnel", False) == b""
    assert r.switching and r.rest == b"tunnel"


def test_a_101_after_an_interim_100_is_still_a_switch() -> None:
    r = reply()
    r.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n"
           b"Upgrade: websocket\r\n\r\n", False)
    assert r.switching and r.rest == b""


# -- invalid replies ----------------------------------------------------------------------

@pytest.mark.parametrize(("lines", "reason"), [
    (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "upstream sent ambiguous framing"),
    (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "upstream sent ambiguous framing"),
    (b"Content-Length: 5\r\nContent-Length: 5\r\n", "upstream sent ambiguous framing"),
    (b"Content-Length: 5\r\nContent-Length: 6\r\n", "upstream sent ambiguous framing"),
    (b"Transfer-Encoding: gzip\r\n", "upstream sent an unsupported Transfer-Encoding"),
    (b"Transfer-Encoding: gzip, chunked\r\n",
     "upstream sent an unsupported Transfer-Encoding"),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
     "upstream sent an unsupported Transfer-Encoding"),
    (b"Content-Length: five\r\n", "upstream sent an invalid Content-Length"),
    (b"Content-Length: -1\r\n", "upstream sent an invalid Content-Length"),
    (b"Content-Length: 1234567890123456789\r\n", "upstream sent an invalid Content-Length"),
], ids=["length-then-chunked", "chunked-then-length", "two-equal-lengths",
        "two-lengths", "gzip", "gzip-chunked", "chunked-twice", "word-length",
        "negative-length", "19-digit-length"])
def test_invalid_framing_in_a_reply_head_is_502(lines: bytes, reason: str) -> None:
    r = reply()
    with pytest.raises(UpstreamError) as error:
        r.feed(b"HTTP/1.1 200 OK\r\n" + lines + b"\r\nhello", False)
    assert (error.value.status, error.value.reason) == (502, reason)
    assert not r.head_done  # before the head: a failed attempt


def big_head(size: int) -> bytes:
    """A reply head of exactly `size` bytes, blank line included."""
    start, end = b"HTTP/1.1 200 OK\r\nX-Big: ", b"\r\nContent-Length: 0\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def reads_of(data: bytes, size: int) -> list[bytes]:
    return [data[start:start + size] for start in range(0, len(data), size)]


def test_a_head_over_64_kib_read_in_pieces_is_502() -> None:
    r = reply()
    pieces = reads_of(big_head(2 * MAX_RESPONSE_HEAD), 4096)
    for piece in pieces[:16]:  # 64 KiB, and no end yet: more may come
        assert r.feed(piece, False) == b""
    with pytest.raises(UpstreamError) as error:
        r.feed(pieces[16], False)
    assert (error.value.status, error.value.reason) == (502, "upstream sent too big a header")
    assert not r.head_done


def test_a_head_of_64_kib_exactly_is_taken() -> None:
    head = big_head(MAX_RESPONSE_HEAD)
    r = reply()
    assert feed(r, reads_of(head, 4096)) == head  # relayed as received: its length was last
    assert r.complete


@pytest.mark.parametrize("read_size", [MAX_RESPONSE_HEAD + 4096, 4096],
                         ids=["one-read", "4k-reads"])
def test_a_head_over_64_kib_is_502_however_it_is_read(read_size: int) -> None:
    r = reply()
    with pytest.raises(UpstreamError) as error:
        feed(r, reads_of(big_head(MAX_RESPONSE_HEAD + 4096), read_size))
    assert (error.value.status, error.value.reason) == (502, "upstream sent too big a header")


@pytest.mark.parametrize("received", [b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\n\r"],
                         ids=["nothing", "a-status-line", "all-but-one-byte"])
def test_the_close_before_the_head_is_whole_is_502(received: bytes) -> None:
    r = reply()
    with pytest.raises(UpstreamError) as error:
        r.feed(received, True)
    assert (error.value.status, error.value.reason) == (
        502, "upstream closed the connection before a response")
    assert not r.head_done


def test_the_close_before_the_head_after_earlier_reads_is_502() -> None:
    r = reply()
    assert r.feed(b"HTTP/1.1 200", False) == b""
    with pytest.raises(UpstreamError) as error:
        r.closed()
    assert error.value.status == 502 and not r.head_done


def test_the_close_mid_content_length_body_is_502() -> None:
    r = reply()
    assert r.feed(LENGTH_REPLY[:-5], False) == LENGTH_CLIENT[:-5]
    with pytest.raises(UpstreamError) as error:
        r.closed()
    assert (error.value.status, error.value.reason) == (
        502, "upstream closed the connection mid-body")
    assert r.head_done and not r.complete


def test_the_close_with_the_head_and_a_short_body_is_502() -> None:
    r = reply()
    with pytest.raises(UpstreamError) as error:
        r.feed(LENGTH_REPLY[:-1], True)
    assert (error.value.status, error.value.reason) == (
        502, "upstream closed the connection mid-body")


@pytest.mark.parametrize("cut_at", range(len(CHUNKED_HEAD), len(CHUNKED_REPLY)))
def test_the_close_mid_chunked_body_is_502(cut_at: int) -> None:
    r = reply()
    with pytest.raises(UpstreamError) as error:
        r.feed(CHUNKED_REPLY[:cut_at], True)
    assert (error.value.status, error.value.reason) == (
        502, "upstream closed the connection mid-body")
    assert not r.complete
