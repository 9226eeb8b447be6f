"""workers/known_replies.py: the lane's table of reply heads seen before."""

from __future__ import annotations

from workers import known_replies as known_module
from workers.known_replies import KnownReplies
from workers.response_head import parse_response_head


def head(number: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nX-N: %d\r\nContent-Length: 2\r\n\r\n" % number


def test_a_kept_head_gives_back_its_parse_and_client_head() -> None:
    replies = KnownReplies()
    response = parse_response_head(head(1))
    replies.add(head(1), response, b"client head")
    assert replies.heads.get(head(1)) == (response, b"client head")
    assert replies.heads.get(head(2)) is None


def test_the_table_starts_over_when_full() -> None:
    replies = KnownReplies()
    for number in range(known_module._LIMIT):
        replies.add(head(number), parse_response_head(head(number)), b"")
    assert len(replies.heads) == known_module._LIMIT
    replies.add(head(10_000), parse_response_head(head(10_000)), b"")
    assert list(replies.heads) == [head(10_000)]


def test_a_long_head_is_not_kept() -> None:
    replies = KnownReplies()
    long_head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 2000 + b"\r\nContent-Length: 2\r\n\r\n"
    replies.add(long_head, parse_response_head(long_head), b"")
    assert replies.heads == {}
