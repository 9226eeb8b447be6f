"""What goes upstream for proxy_pass, decided by workers/exchange.py from bytes alone.

`http_request_head` (nginx's proxy module, DESIGN.md's data paths): HTTP/1.1;
the client's Host passed through (taken from an absolute-form target);
X-Forwarded-For appended to, X-Real-IP, X-Forwarded-Proto and
X-Forwarded-Host set; hop-by-hop headers and those the Connection header
names dropped (never Host or the framing); the framing regenerated from the
body sent; Upgrade only for a WebSocket upgrade a location allows.
`frame_body`/`body_tail` frame the body's pieces; `check_request` answers 404
and 413 before anything goes upstream; `buffers_request_body` says when a
chunked body is read whole first.
"""

from __future__ import annotations

import dataclasses

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefork_proxy.config import Location
from tests.support.exchange_fixtures import (
    CLIENT_IP,
    lines_named,
    location,
    request,
)
from workers.errors import HttpError
from workers.exchange import (
    BODY_AS_IS,
    BODY_CHUNKED,
    BODY_NONE,
    body_tail,
    buffers_request_body,
    check_request,
    frame_body,
    http_request_head,
    upgrade_asked,
)

LOCATION = location()
FORWARDED = (b"X-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n"
             b"X-Forwarded-Host: a\r\n")
WEBSOCKET = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"


def head_for(raw: bytes, where: Location = LOCATION,
             body_size: int | None = None) -> tuple[bytes, int]:
    return http_request_head(request(raw), where, CLIENT_IP, body_size)


# -- the head -----------------------------------------------------------------------------

def test_a_plain_get_goes_with_its_headers_then_the_forwarded_set() -> None:
    assert head_for(b"GET /x?q=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n") == (
        b"GET /x?q=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\nAccept: */*\r\n" + FORWARDED
        + b"\r\n", BODY_NONE)


def test_an_http10_request_goes_as_http11() -> None:
    head, _ = head_for(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")
    assert head == b"GET / HTTP/1.1\r\nHost: a\r\n" + FORWARDED + b"\r\n"


def test_the_client_host_is_passed_through_with_its_port() -> None:
    head, _ = head_for(b"GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n")
    assert lines_named(head, b"host") == [b"Host: a.example:8080"]
    assert lines_named(head, b"x-forwarded-host") == [b"X-Forwarded-Host: a.example:8080"]


def test_an_absolute_form_target_gives_the_host_and_the_origin_form() -> None:
    head, _ = head_for(b"GET http://b.example/p?q HTTP/1.1\r\nHost: a\r\n\r\n")
    assert head == (b"GET /p?q HTTP/1.1\r\nHost: b.example\r\nX-Forwarded-For: 10.0.0.1\r\n"
                    b"X-Real-IP: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n"
                    b"X-Forwarded-Host: b.example\r\n\r\n")


def test_an_http10_request_without_host_still_goes_upstream_with_one() -> None:
    head, _ = head_for(b"GET / HTTP/1.0\r\n\r\n")
    assert head.startswith(b"GET / HTTP/1.1\r\n")
    assert len(lines_named(head, b"host")) == 1


def test_x_forwarded_for_appends_the_client_to_every_list_it_sent() -> None:
    head, _ = head_for(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\n"
                       b"X-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\r\n")
    assert lines_named(head, b"x-forwarded-for") == [
        b"X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1"]


def test_the_clients_forwarded_headers_are_replaced() -> None:
    head, _ = head_for(b"GET / HTTP/1.1\r\nHost: a\r\nX-Real-IP: 6.6.6.6\r\n"
                       b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n")
    assert head == b"GET / HTTP/1.1\r\nHost: a\r\n" + FORWARDED + b"\r\n"


@pytest.mark.parametrize("method", [b"GET", b"POST"], ids=["plain-get", "post"])
def test_hop_by_hop_proxy_and_underscore_headers_are_dropped(method: bytes) -> None:
    framing = b"Content-Length: 1\r\n" if method == b"POST" else b""
    head, _ = head_for(method + b" / HTTP/1.1\r\nHost: a\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
                       b"Trailer: X-T\r\nProxy-Authorization: x\r\nProxy: evil\r\n"
                       b"X_Under: u\r\nX-Keep: k\r\nConnection: keep-alive\r\n" + framing
                       + b"\r\n")
    assert head == (method + b" / HTTP/1.1\r\nHost: a\r\nX-Keep: k\r\n" + FORWARDED
                    + framing + b"\r\n")


def test_the_headers_connection_names_are_dropped() -> None:
    head, _ = head_for(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret, close\r\n"
                       b"X-Secret: s\r\nX-Kept: k\r\n\r\n")
    assert head == b"GET / HTTP/1.1\r\nHost: a\r\nX-Kept: k\r\n" + FORWARDED + b"\r\n"


def test_connection_never_drops_host_nor_the_framing() -> None:
    head, body = head_for(b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Host, Content-Length, "
                          b"X-Gone\r\nX-Gone: 1\r\nContent-Length: 3\r\n\r\n")
    assert head == (b"POST / HTTP/1.1\r\nHost: a\r\n" + FORWARDED
                    + b"Content-Length: 3\r\n\r\n")
    assert body == BODY_AS_IS


def test_the_two_head_builders_agree() -> None:
    # A plain GET is copied from its lines; `Content-Length: 0` sends the same request
    # through llhttp and the (name, value) builder.
    plain = b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\nAccept: */*\r\n"
    assert request(plain + b"\r\n").lines is not None
    assert request(plain + b"Content-Length: 0\r\n\r\n").lines is None
    assert head_for(plain + b"\r\n") == head_for(plain + b"Content-Length: 0\r\n\r\n")


def test_a_location_uri_part_replaces_the_matched_prefix() -> None:
    where = dataclasses.replace(LOCATION, path="/api/", uri_prefix=b"/v2/")
    head, _ = head_for(b"GET /api/x%20y?q=1 HTTP/1.1\r\nHost: a\r\n\r\n", where)
    assert head.startswith(b"GET /v2/x%20y?q=1 HTTP/1.1\r\n")


# -- the framing ----------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "framing", "body"), [
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
     [b"Content-Length: 3"], BODY_AS_IS),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
     [b"Content-Length: 3"], BODY_AS_IS),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", [b"Content-Length: 0"],
     BODY_NONE),
    (b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", [b"Content-Length: 0"],
     BODY_NONE),
    (b"PATCH / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", [b"Content-Length: 0"],
     BODY_NONE),
    (b"DELETE / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", [], BODY_NONE),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", [], BODY_NONE),
    (b"POST / HTTP/1.0\r\nHost: a\r\n\r\n", [], BODY_NONE),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
     [b"Transfer-Encoding: chunked"], BODY_CHUNKED),
], ids=["post-length", "get-length", "post-0", "put-0", "patch-0", "delete-0", "get-0",
        "post-no-framing", "chunked-streamed"])
def test_the_framing_follows_the_body_sent(raw: bytes, framing: list[bytes],
                                           body: int) -> None:
    head, mode = head_for(raw)
    assert mode == body
    # The framing comes last, after the forwarded set, and only ours.
    assert head.endswith(b"X-Forwarded-Host: a\r\n" + b"".join(
        line + b"\r\n" for line in framing) + b"\r\n")
    assert len(lines_named(head, b"content-length")
               + lines_named(head, b"transfer-encoding")) == len(framing)


def test_a_buffered_chunked_body_goes_with_its_length() -> None:
    head, body = head_for(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                          body_size=11)
    assert head == (b"POST / HTTP/1.1\r\nHost: a\r\n" + FORWARDED
                    + b"Content-Length: 11\r\n\r\n")
    assert body == BODY_AS_IS


def test_an_empty_buffered_body_goes_with_length_zero() -> None:
    head, _ = head_for(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                       body_size=0)
    assert lines_named(head, b"content-length") == [b"Content-Length: 0"]
    assert lines_named(head, b"transfer-encoding") == []


def test_frame_body_and_body_tail_frame_a_streamed_chunked_body() -> None:
    assert frame_body(b"hello", BODY_CHUNKED) == b"5\r\nhello\r\n"
    assert frame_body(b"x" * 26, BODY_CHUNKED) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert body_tail(BODY_CHUNKED) == b"0\r\n\r\n"


@pytest.mark.parametrize("mode", [BODY_AS_IS, BODY_NONE])
def test_frame_body_passes_other_bodies_as_they_are(mode: int) -> None:
    assert frame_body(b"5\r\nhello", mode) == b"5\r\nhello"
    assert body_tail(mode) == b""


def test_an_empty_piece_of_a_chunked_body_frames_to_nothing() -> None:
    assert frame_body(b"", BODY_CHUNKED) == b""


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.binary(min_size=1, max_size=40), max_size=8))
def test_a_framed_chunked_body_reads_back_whole_to_h11(pieces: list[bytes]) -> None:
    head, mode = head_for(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    wire = head + b"".join(frame_body(piece, mode) for piece in pieces) + body_tail(mode)
    server = h11.Connection(h11.SERVER)
    server.receive_data(wire)
    events = []
    while (event := server.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
        events.append(event)
    assert isinstance(events[0], h11.Request)
    assert isinstance(events[-1], h11.EndOfMessage)
    assert b"".join(event.data for event in events[1:-1]) == b"".join(pieces)


# -- upgrades ------------------------------------------------------------------------------

def test_a_websocket_upgrade_goes_with_upgrade_and_connection_last() -> None:
    head, body = head_for(WEBSOCKET.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Key: k\r\n\r\n"))
    assert head == (b"GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\n" + FORWARDED
                    + b"Upgrade: websocket\r\nConnection: upgrade\r\n\r\n")
    assert body == BODY_NONE


def test_the_upgrade_value_goes_as_the_client_wrote_it() -> None:
    raw = WEBSOCKET.replace(b"Upgrade: websocket", b"Upgrade: WebSocket").replace(
        b"Connection: Upgrade", b"Connection: keep-alive, Upgrade")
    assert upgrade_asked(request(raw), LOCATION) == b"WebSocket"
    head, _ = head_for(raw)
    assert head.endswith(b"Upgrade: WebSocket\r\nConnection: upgrade\r\n\r\n")


@pytest.mark.parametrize(("raw", "where"), [
    (WEBSOCKET, dataclasses.replace(LOCATION, websocket=False)),
    (WEBSOCKET.replace(b"websocket", b"h2c"), LOCATION),
    (WEBSOCKET.replace(b"Connection: Upgrade\r\n", b""), LOCATION),
], ids=["websocket-off", "not-websocket", "no-connection-upgrade"])
def test_no_upgrade_goes_upstream_unless_a_websocket_location_allows_it(
        raw: bytes, where: Location) -> None:
    assert upgrade_asked(request(raw), where) is None
    head, _ = head_for(raw, where)
    assert head == b"GET /ws HTTP/1.1\r\nHost: a\r\n" + FORWARDED + b"\r\n"


# -- answers due before anything goes upstream ------------------------------------------------

def test_no_location_is_404() -> None:
    with pytest.raises(HttpError) as error:
        check_request(request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None)
    assert error.value.status == 404


def post_of(length: int) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length


def test_a_body_over_client_max_body_size_is_413() -> None:
    with pytest.raises(HttpError) as error:
        check_request(request(post_of((1 << 20) + 1)), LOCATION)
    assert (error.value.status, error.value.reason) == (
        413, "request body of 1048577 bytes is over client_max_body_size (1048576)")


@pytest.mark.parametrize(("length", "limit"), [(1 << 20, 1 << 20), (10 << 20, 0), (0, 1)],
                         ids=["at-the-limit", "unlimited", "empty"])
def test_a_body_within_client_max_body_size_passes(length: int, limit: int) -> None:
    check_request(request(post_of(length)),
                  dataclasses.replace(LOCATION, client_max_body_size=limit))


def test_a_chunked_body_is_not_measured_before_it_is_read() -> None:
    check_request(request(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
                  dataclasses.replace(LOCATION, client_max_body_size=1))


# -- request buffering ------------------------------------------------------------------------

CHUNKED_POST = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(("raw", "protocol", "buffering", "buffered"), [
    (CHUNKED_POST, "http", True, True),
    (CHUNKED_POST, "http", False, False),
    (CHUNKED_POST, "uwsgi", True, True),
    (CHUNKED_POST, "uwsgi", False, True),
    (post_of(5), "http", True, False),
    (post_of(5), "uwsgi", True, False),
], ids=["chunked-http", "chunked-http-unbuffered", "chunked-uwsgi",
        "chunked-uwsgi-unbuffered", "length-http", "length-uwsgi"])
def test_only_a_chunked_body_is_buffered_and_always_for_uwsgi(
        raw: bytes, protocol: str, buffering: bool, buffered: bool) -> None:
    where = dataclasses.replace(LOCATION, protocol=protocol, request_buffering=buffering)
    assert buffers_request_body(request(raw), where) is buffered
