"""uwsgi replies stream: bytes reach the client as the application yields them.

Against the real uWSGI server: a streamed reply's first event reaches the client before the
application has made the second; a reply that stalls past read_timeout after
its first event is cut off (the 200 head and the event stay, no 504 follows);
`X-Accel-Buffering` from a uwsgi or an HTTP upstream is consumed, as nginx's
uwsgi and proxy modules hide it; a uwsgi reply in chunked transfer coding is
de-chunked, never passed on raw under a Content-Length.
"""

from __future__ import annotations

import socket
import urllib.parse
from pathlib import Path

import pytest

from tests.support.configs import one_location
from tests.support.raw_http import read_reply
from tests.support.scripted_http import ScriptedHttp
from tests.support.scripted_uwsgi import ScriptedUwsgi
from tests.support.uwsgi_server import uwsgi_servers

LAST_CHUNK = b"0\r\n\r\n"


@pytest.fixture
def uwsgi(tmp_path: Path):
    with uwsgi_servers(tmp_path) as start:
        yield start


def uwsgi_config(uwsgi_pass: str, location: str = "") -> str:
    return one_location(uwsgi_pass, top='workers = 1\naccess_log = "off"',
                        directive="uwsgi_pass", location=location)


def get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: stream.test\r\n\r\n".encode()


def read_until(sock: socket.socket, received: bytes, wanted: bytes) -> bytes:
    """Read from `sock` until `wanted` is among the bytes; the bytes so far."""
    while wanted not in received:
        more = sock.recv(65536)
        if not more:
            raise AssertionError(f"closed before {wanted!r}; got {received!r}")
        received += more
    return received


def read_to_close(sock: socket.socket, received: bytes) -> bytes:
    while more := sock.recv(65536):
        received += more
    return received


def gated_target(flag: Path, wait: float = 20.0) -> str:
    return f"/events?flag={urllib.parse.quote(str(flag))}&wait={wait}"


def test_a_streamed_event_reaches_the_client_before_the_next_is_made(
        uwsgi, start_proxy, tmp_path: Path):
    server = uwsgi("gated_stream.py")
    proxy = start_proxy(uwsgi_config(server.uwsgi_pass))
    flag = tmp_path / "second-event-allowed"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as sock:
        sock.sendall(get(gated_target(flag)))
        # The app yields "two" only once the flag exists: seeing "one" first proves
        # the proxy sent it on without waiting for more of the body.
        received = read_until(sock, b"", b"data: one\n\n")
        assert b"data: two" not in received
        head = received[:received.index(b"\r\n\r\n") + 4]
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding: chunked\r\n" in head.lower()
        assert b"x-accel-buffering" not in head.lower()
        flag.touch()
        received = read_until(sock, received, LAST_CHUNK)
        # The connection stays usable: a second exchange on it.
        sock.sendall(get(gated_target(flag)))
        second = read_reply(sock)
    body = received[len(head):]
    assert body == b"b\r\ndata: one\n\n\r\nb\r\ndata: two\n\n\r\n0\r\n\r\n"
    assert (second.status, second.body) == (200, b"data: one\n\ndata: two\n\n")


def test_a_stall_past_read_timeout_mid_reply_cuts_the_reply_off(
        uwsgi, start_proxy, tmp_path: Path):
    server = uwsgi("gated_stream.py")
    proxy = start_proxy(uwsgi_config(server.uwsgi_pass, 'read_timeout = "1s"'))
    never = tmp_path / "never-created"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as sock:
        sock.sendall(get(gated_target(never)))
        received = read_until(sock, b"", b"data: one\n\n")
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
        # The app stalls (20 s) past read_timeout (1 s): once the reply has started,
        # a failure can only cut it off: the connection closes, with no last chunk.
        received = read_to_close(sock, received)
    assert received.count(b"HTTP/1.") == 1, received
    assert b"504" not in received
    assert not received.endswith(LAST_CHUNK)
    assert received.endswith(b"b\r\ndata: one\n\n\r\n")


def test_x_accel_buffering_from_uwsgi_is_not_relayed(start_proxy):
    reply = (b"HTTP/1.1 200 OK\r\nX-Accel-Buffering: no\r\nContent-Type: text/plain\r\n"
             b"Content-Length: 2\r\n\r\nok")
    with ScriptedUwsgi(reply) as peer:
        proxy = start_proxy(uwsgi_config(peer.address))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            for _ in range(3):  # each time: no reply head is kept from one request to the next
                sock.sendall(get("/"))
                answer = read_reply(sock)
                assert (answer.status, answer.body) == (200, b"ok")
                assert answer.header("x-accel-buffering") is None
                assert answer.header("content-type") == "text/plain"


@pytest.mark.parametrize("connection", [b"", b"Connection: x-other\r\n"],
                         ids=["plain-head", "connection-names-a-header"])
def test_x_accel_buffering_from_an_http_upstream_is_not_relayed(
        start_proxy, connection: bytes):
    reply = (b"HTTP/1.1 200 OK\r\n" + connection + b"X-Accel-Buffering: no\r\n"
             b"X-Other: 1\r\nX-App: a\r\nContent-Length: 2\r\n\r\nok")
    chunked = (b"HTTP/1.1 200 OK\r\n" + connection + b"x-accel-buffering: yes\r\n"
               b"X-App: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    peer = ScriptedHttp({b"/length": reply, b"/chunked": chunked})
    try:
        proxy = start_proxy(one_location(peer.address, top='workers = 1\naccess_log = "off"'))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            for path in ["/length", "/chunked", "/length"]:
                sock.sendall(get(path))
                answer = read_reply(sock)
                assert (answer.status, answer.body, answer.header("x-app")) == (200, b"ok", "a")
                assert answer.header("x-accel-buffering") is None
    finally:
        peer.close()


CHUNKED_PAYLOAD = b"hello chunked world"
CHUNKED_BODY = b"5\r\nhello\r\n8\r\n chunked\r\n6;ext=1\r\n world\r\n0\r\n\r\n"


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"Status: 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
], ids=["http-style", "cgi-style"])
@pytest.mark.parametrize("split_at", [0, 3], ids=["one-write", "two-writes"])
def test_a_chunked_uwsgi_reply_is_dechunked(start_proxy, head: bytes,
                                            split_at: int):
    reply = head + CHUNKED_BODY
    with ScriptedUwsgi(reply, split_at=split_at and len(head) + split_at) as peer:
        proxy = start_proxy(uwsgi_config(peer.address))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            for _ in range(2):
                sock.sendall(get("/"))
                answer = read_reply(sock)
                assert (answer.status, answer.body) == (200, CHUNKED_PAYLOAD)
                assert answer.header("content-type") == "text/plain"


def test_a_chunked_reply_from_a_real_uwsgi_app_is_dechunked(uwsgi, start_proxy):
    server = uwsgi("chunked_by_app.py")
    proxy = start_proxy(uwsgi_config(server.uwsgi_pass))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(get("/"))
            answer = read_reply(sock)
            assert (answer.status, answer.body) == (200, b"hello chunked world")
