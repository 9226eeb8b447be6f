"""No head parser backtracks super-linearly: a 64 KiB adversarial line costs milliseconds.

A reply header line holding 60,000 spaces inside its value (`a<spaces>b`) once
froze a worker for seconds: the value expression (a lazy run, then the
whitespace before the CR) retried the run of spaces at every position. The
unit tests parse such lines, with spaces and with tabs, with and without a CR
after them, in every way a reply head is read: the plain fast path, a
Connection that names a header (the general relay rule), a 101, a uwsgi
CGI-style head, and the expressions themselves on lines with no CR at all.
Linear parsing takes about a millisecond; the bound is generous. The
integration test shows the worker (workers = 1) answering another client
while an upstream sends such replies.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from tests.support.processes import wait_for
from tests.support.raw_http import read_reply
from tests.support.scripted_http import ScriptedHttp
from tests.support.scripted_uwsgi import ScriptedUwsgi
from workers import headers, response_head
from workers.response_head import parse_response_head
from workers.uwsgi_packet import find_head_end, parse_reply_head

BOUND = 0.2  # seconds; a linear parse of 64 KiB takes about 1 ms
SPACES = b" " * 60_000
TABS = b"\t" * 60_000
VALUES = {
    "spaces-inside": b"a" + SPACES + b"b",
    "tabs-inside": b"a" + TABS + b"b",
    "spaces-mixed": b"a" + b" \t" * 30_000 + b"b",
    "spaces-trailing": b"a" + SPACES,
    "spaces-only": SPACES,
}


def timed(function, *args):  # noqa: ANN001, ANN201
    start = time.perf_counter()
    result = function(*args)
    elapsed = time.perf_counter() - start
    assert elapsed < BOUND, f"{function.__name__} took {elapsed:.2f} s"
    return result


def relay(head: bytes) -> bytes:
    """Parse a reply head and build the client's copy, as the proxy relays it."""
    response = parse_response_head(head)
    if response.status == 101:
        return headers.switching_protocols_head(response.status_line, response.headers)
    return response.client_head(b"Content-Length: 0\r\n", b"")


def relay_cgi(head: bytes) -> bytes:
    """A uwsgi CGI-style head: rewritten into HTTP, then relayed (workers/uwsgi.py)."""
    assert find_head_end(head) == len(head)
    return relay(parse_reply_head(head).to_http())


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
@pytest.mark.parametrize("shape", ["plain", "connection-names-a-header", "101", "cgi",
                                   "cgi-connection-names-a-header", "reason-phrase"])
def test_a_64k_adversarial_line_parses_in_linear_time(shape: str, value: bytes) -> None:
    if shape == "plain":
        head = b"HTTP/1.1 200 OK\r\nX-A: " + value + b"\r\nContent-Length: 0\r\n\r\n"
        relayed = timed(relay, head)
    elif shape == "connection-names-a-header":
        head = (b"HTTP/1.1 200 OK\r\nConnection: x-b\r\nX-B: 1\r\nX-A: " + value
                + b"\r\nContent-Length: 0\r\n\r\n")
        relayed = timed(relay, head)
        assert b"X-B" not in relayed
    elif shape == "101":
        head = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: upgrade\r\nX-A: " + value + b"\r\n\r\n")
        relayed = timed(relay, head)
        assert b"Upgrade: websocket\r\n" in relayed
    elif shape == "reason-phrase":
        head = b"HTTP/1.1 200 " + value + b"\r\nContent-Length: 0\r\n\r\n"
        timed(relay, head)
        return
    else:
        connection = b"Connection: x-b\r\n" if shape.endswith("header") else b""
        head = b"Status: 200 OK\r\n" + connection + b"X-A: " + value + b"\r\n\r\n"
        relayed = timed(relay_cgi, head)
    # The value arrives whole, less the whitespace around it (RFC 9110 §5.5).
    # (the plain path copies a line as received, the others strip the value)
    assert b"X-A: " + value.strip(b" \t") in relayed
    assert timed(lambda: parse_response_head(head if not shape.startswith("cgi") else
                                             parse_reply_head(head).to_http()).headers)


@pytest.mark.parametrize("line_end", [b"\n", b""], ids=["bare-lf", "no-line-end"])
@pytest.mark.parametrize("value", [SPACES, b"a" + SPACES, b"a" + TABS + b"b"],
                         ids=["spaces", "a-spaces", "a-tabs-b"])
def test_a_line_of_spaces_with_no_cr_is_refused_or_read_in_linear_time(
        value: bytes, line_end: bytes) -> None:
    # Not a plain head: the fast path gives way to llhttp, which decides.
    head = b"HTTP/1.1 200 OK\r\nConnection: x-b\r\nX-A: " + value + line_end + b"\r\n"
    start = time.perf_counter()
    try:
        relay(head)
    except response_head.UpstreamError:
        pass
    assert time.perf_counter() - start < BOUND
    cgi = b"Status: 200 OK\nX-A: " + value + line_end + b"\n"
    start = time.perf_counter()
    try:
        relay_cgi(cgi) if find_head_end(cgi) == len(cgi) else parse_reply_head(cgi)
    except response_head.UpstreamError:
        pass
    assert time.perf_counter() - start < BOUND


EXPRESSIONS = {
    "plain-head": (response_head._PLAIN_HEAD, b"HTTP/1.1 200 OK\r\nX-A: a"),
    "plain-head-reason": (response_head._PLAIN_HEAD, b"HTTP/1.1 200 a"),
    "framing-line": (response_head._FRAMING_LINE, b"\nconnection:"),
    "framing-line-value": (response_head._FRAMING_LINE, b"\ncontent-length: 1"),
    "header-line": (response_head._HEADER_LINE, b"\nx-a: a"),
    "hop-by-hop-line": (headers._NOT_RELAYED_LINE, b"\r\nx-accel-buffering: a"),
    "proxy-line": (headers._NOT_RELAYED_LINE, b"\r\nproxy-x: a"),
}


@pytest.mark.parametrize("tail", [SPACES, TABS, SPACES + b"x", b"a" * 60_000],
                         ids=["spaces", "tabs", "spaces-x", "letters"])
@pytest.mark.parametrize("name", EXPRESSIONS)
def test_each_head_expression_is_linear_on_a_line_with_no_cr(name: str, tail: bytes) -> None:
    expression, start_of_line = EXPRESSIONS[name]
    subject = start_of_line + tail
    search = expression.fullmatch if expression is response_head._PLAIN_HEAD \
        else expression.findall
    timed(search, subject)
    timed(search, subject.lower())


def test_the_relay_expression_keeps_its_matches() -> None:
    # The linear forms match what the old ones did on well-formed lines.
    lines = b"\r\nX-A:  one \t\r\nX-Accel-Buffering: no\r\nContent-Length: 3\r\n"
    assert response_head._HEADER_LINE.findall(lines) == [
        (b"X-A", b"  one \t"), (b"X-Accel-Buffering", b" no"), (b"Content-Length", b" 3")]
    assert response_head._FRAMING_LINE.findall(lines.lower()) == [(b"content-length", b"3")]
    response = parse_response_head(b"HTTP/1.1 200 OK" + lines + b"\r\n")
    assert response.headers == [(b"X-A", b"one"), (b"X-Accel-Buffering", b"no"),
                                (b"Content-Length", b"3")]


# -- on the wire --------------------------------------------------------------------

ADVERSARIAL = (b"HTTP/1.1 200 OK\r\nConnection: x-b\r\nX-B: 1\r\nX-A: a" + SPACES
               + b"b\r\nContent-Length: 3\r\n\r\nbad")
ADVERSARIAL_CGI = b"Status: 200 OK\r\nConnection: x-b\r\nX-A: a" + SPACES + b"b\r\n\r\nbad"
QUICK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nquick"


def config(slow: str, slow_directive: str, quick: str) -> str:
    return (
        'workers = 1\naccess_log = "off"\n'
        "[[server]]\n"
        'listen = ["127.0.0.1:{port}"]\n'
        "  [[server.location]]\n"
        '  path = "/adversarial/"\n'
        f'  {slow_directive} = "{slow}"\n'
        "  [[server.location]]\n"
        '  path = "/"\n'
        f'  proxy_pass = "{quick}"\n')


@pytest.mark.parametrize("upstream", ["proxy_pass", "uwsgi_pass"])
def test_other_clients_are_answered_while_adversarial_replies_are_parsed(
        start_proxy, upstream: str) -> None:
    quick = ScriptedHttp({b"/quick": QUICK})
    count = 3

    def adversarial(_request) -> bytes:  # noqa: ANN001
        return ADVERSARIAL_CGI

    if upstream == "proxy_pass":
        slow = ScriptedHttp({b"/adversarial/": ADVERSARIAL})
        slow_address = slow.address
    else:
        slow = ScriptedUwsgi(None, reply_for=adversarial)
        slow_address = slow.address
    try:
        proxy = start_proxy(config(slow_address, upstream, quick.address))
        clients = [socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
                   for _ in range(count)]
        for client in clients:
            client.sendall(b"GET /adversarial/ HTTP/1.1\r\nHost: a\r\n\r\n")
        wait_for(lambda: len(slow.requests) >= count, message="the adversarial requests")
        # The upstream is sending its adversarial replies now: the worker must
        # still answer another client at once.
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as other:
            other.sendall(b"GET /quick HTTP/1.1\r\nHost: q\r\n\r\n")
            answer = read_reply(other)
        elapsed = time.monotonic() - start
        assert (answer.status, answer.body) == (200, b"quick")
        assert elapsed < 1.0, f"the other client waited {elapsed:.2f} s"
        for client in clients:
            with client:
                reply = read_reply(client)
                assert (reply.status, reply.body) == (200, b"bad")
                assert reply.header("x-a") == "a" + " " * 60_000 + "b"
                assert reply.header("x-b") is None
    finally:
        slow.stop() if isinstance(slow, ScriptedUwsgi) else slow.close()
        quick.close()


def test_no_head_expression_has_a_lazy_run_before_a_character_class() -> None:
    # The shape that was quadratic: a lazy run followed by a run it overlaps.
    for expression in [response_head._PLAIN_HEAD, response_head._FRAMING_LINE,
                       response_head._HEADER_LINE, headers._NOT_RELAYED_LINE]:
        assert not re.search(rb"\*\?|\+\?", expression.pattern), expression.pattern
