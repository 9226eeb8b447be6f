"""The callback lane's uwsgi call (workers/lane_uwsgi.py), against the real master.

A plain keep-alive request to a one-server uwsgi_pass location is sent and,
when the reply is whole and small, answered in libev callbacks. These tests
drive each way out of that: the exact bytes of lane-served replies (with a
length from uWSGI, and from its close), replies the greenlet finishes (CGI
style, a head in two pieces, a big body), a read timeout, a reset, a refused connect,
a connect still under way when the packet is sent (a listener whose queue is
full drops the SYN), pipelining, and the access log.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

from tests.support.configs import one_location
from tests.support.processes import wait_for
from tests.support.raw_http import read_reply
from tests.support.scripted_uwsgi import ScriptedUwsgi
from tests.support.uwsgi_server import uwsgi_servers
from workers.uwsgi_packet import build_vars


def config(uwsgi_pass: str, location: str = "", top: str = 'access_log = "off"') -> str:
    return one_location(uwsgi_pass, top=f"workers = 1\n{top}", directive="uwsgi_pass",
                        location=location)


@pytest.fixture
def uwsgi(tmp_path: Path):
    with uwsgi_servers(tmp_path) as start:
        yield start


def keep_alive_get(path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: lane.test\r\n\r\n".encode()


def answers_on_one_connection(port: int, count: int = 2) -> list:
    """`count` GETs sent one after another on one keep-alive connection: the replies."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        answers = []
        for _ in range(count):
            sock.sendall(keep_alive_get())
            answers.append(read_reply(sock))
    return answers


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = sock.recv(size - len(data))
        if not more:
            break
        data += more
    return data


def test_keep_alive_replies_are_exact_with_a_length_from_uwsgis_close(uwsgi, start_proxy):
    # hello.py sends no Content-Length and uWSGI closes: when the close has come
    # with the reply, the client gets the length; else the reply streams, chunked
    # (a reply is never held back to learn its length).
    proxy = start_proxy(config(uwsgi("hello.py").uwsgi_pass))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        for _ in range(20):
            sock.sendall(keep_alive_get())
            answer = read_reply(sock)
            assert (answer.status, answer.body) == (200, b"hello world")
            assert answer.chunked or answer.header("content-length") == "11"


def test_keep_alive_replies_with_uwsgis_own_length(start_proxy):
    reply = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-App: a\r\n\r\nok"
    relayed = b"HTTP/1.1 201 Created\r\nX-App: a\r\nContent-Length: 2\r\n\r\nok"
    with ScriptedUwsgi(reply) as peer:
        proxy = start_proxy(config(peer.address))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            for number in range(5):
                sock.sendall(keep_alive_get(f"/n/{number}"))
                assert read_exactly(sock, len(relayed)) == relayed
        assert [r.environ[b"PATH_INFO"] for r in peer.requests] == [
            f"/n/{number}".encode() for number in range(5)]
        assert all(r.environ[b"HTTP_HOST"] == b"lane.test" for r in peer.requests)


def test_reply_heads_seen_before_keep_their_own_bytes(start_proxy):
    # workers/known_replies.py keeps a head's parse by its bytes: heads that differ
    # in one value, or only in the length a close gave them, must never be mixed up.
    def reply_for(request) -> bytes:
        path = request.environ[b"PATH_INFO"]
        if path.startswith(b"/close/"):  # no length: the body runs to the close
            return b"HTTP/1.1 200 OK\r\nX-App: a\r\n\r\n" + b"z" * int(path[7:])
        return b"HTTP/1.1 200 OK\r\nX-Path: " + path + b"\r\nContent-Length: 2\r\n\r\nok"

    with ScriptedUwsgi(None, reply_for=reply_for) as peer:
        proxy = start_proxy(config(peer.address))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            for path in ["/a", "/b", "/a", "/b", "/a"]:
                sock.sendall(keep_alive_get(path))
                expected = (b"HTTP/1.1 200 OK\r\nX-Path: " + path.encode()
                            + b"\r\nContent-Length: 2\r\n\r\nok")
                assert read_exactly(sock, len(expected)) == expected
            sock.sendall(b"HEAD /a HTTP/1.1\r\nHost: lane.test\r\n\r\n")
            answer = read_reply(sock, head_request=True)
            assert (answer.status, answer.header("x-path"), answer.body) == (200, "/a", b"")
            for size in [3, 5, 3, 7]:
                sock.sendall(keep_alive_get(f"/close/{size}"))
                answer = read_reply(sock)  # a length from the close, or chunked
                assert (answer.header("x-app"), answer.body) == ("a", b"z" * size)
                assert answer.chunked or answer.header("content-length") == str(size)


def test_a_length_taken_from_a_close_is_never_kept(start_proxy):
    # The same head twice, each body ended by the close: the second body's first
    # piece is as long as the whole first body. Kept, that length would cut it short.
    head = b"HTTP/1.1 200 OK\r\nX-App: a\r\n\r\n"

    def reply_for(request) -> bytes:
        return head + b"z" * int(request.environ[b"PATH_INFO"][1:])

    with ScriptedUwsgi(None, reply_for=reply_for, split_at=len(head) + 3) as peer:
        proxy = start_proxy(config(peer.address))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            for size in [3, 6]:
                sock.sendall(keep_alive_get(f"/{size}"))
                answer = read_reply(sock)
                assert answer.body == b"z" * size
                assert answer.chunked or answer.header("content-length") == str(size)


def test_many_clients_at_once_each_get_their_own_reply(start_proxy):
    # Calls begun in one loop iteration send their packets together at its end
    # (lane_uwsgi._send_packets): no packet may go out on another call's socket.
    def reply_for(request) -> bytes:
        path = request.environ[b"PATH_INFO"]
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path)

    with ScriptedUwsgi(None, reply_for=reply_for) as peer:
        proxy = start_proxy(config(peer.address))
        clients = [socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
                   for _ in range(24)]
        try:
            for round_number in range(3):
                for number, client in enumerate(clients):
                    client.sendall(keep_alive_get(f"/{round_number}/{number}"))
                for number, client in enumerate(clients):
                    answer = read_reply(client)
                    assert answer.body == f"/{round_number}/{number}".encode()
        finally:
            for client in clients:
                client.close()
        assert len(peer.requests) == 3 * 24


def test_keep_alive_requests_get_the_vars_of_their_own_headers(start_proxy):
    # workers/uwsgi.py keeps a connection's header vars while its header lines
    # repeat: each packet must still be exactly the one build_vars describes.
    heads = [
        ("GET", "/a?x=1", "1.1", [("Host", "one.test"), ("X-Tag", "1")]),
        ("GET", "/b", "1.1", [("Host", "one.test"), ("X-Tag", "1")]),
        ("DELETE", "/c%20d?y", "1.1", [("Host", "two.test:81"), ("X-Tag", "2")]),
        ("GET", "/e", "1.1", [("Host", "two.test:81"), ("X-Tag", "2"), ("Cookie", "a=1"),
                              ("Cookie", "b=2")]),
        ("GET", "/f", "1.0", [("Host", "two.test:81"), ("X-Tag", "2"), ("Cookie", "a=1"),
                              ("Cookie", "b=2")]),
    ]
    with ScriptedUwsgi(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") as peer:
        proxy = start_proxy(config(peer.address))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            client_port = sock.getsockname()[1]
            for method, target, version, headers in heads:
                lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
                sock.sendall(f"{method} {target} HTTP/{version}\r\n{lines}\r\n".encode())
                assert read_reply(sock).status == 200
    assert len(peer.requests) == len(heads)
    for received, (method, target, version, headers) in zip(peer.requests, heads, strict=True):
        path, _, query = target.partition("?")
        host = dict(headers)["Host"].partition(":")[0]
        assert received.variables == build_vars(
            method=method.encode(), target=target.encode(), path=path.encode(),
            query=query.encode(), version=version,
            headers=[(name.encode(), value.encode()) for name, value in headers],
            remote_addr=b"127.0.0.1", remote_port=b"%d" % client_port,
            server_port=b"%d" % proxy.port, server_name=host.encode(), content_length=None)


@pytest.mark.parametrize(("reply", "split_at", "status", "body"), [
    (b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope", 0, 404, b"nope"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 10, 200, b"hello"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 40, 200, b"hello"),
    (b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * 300_000, 0, 200, b"y" * 300_000),
], ids=["cgi-style", "head-in-two-pieces", "body-in-two-pieces", "big-body-until-close"])
def test_replies_the_greenlet_finishes_keep_the_connection_usable(
        start_proxy, reply: bytes, split_at: int, status: int, body: bytes):
    with ScriptedUwsgi(reply, split_at=split_at) as peer:
        proxy = start_proxy(config(peer.address))
        for answer in answers_on_one_connection(proxy.port):
            assert (answer.status, answer.body) == (status, body)
            assert answer.header("connection") is None
        assert len(peer.requests) == 2


@pytest.mark.parametrize(("method", "reply"), [
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n"),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 11\r\n\r\n"),
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
], ids=["head", "304", "204"])
def test_a_reply_with_no_body_is_answered_before_the_server_closes(
        start_proxy, method: str, reply: bytes):
    # The server holds the connection open: the answer must not wait for its close
    # (read_timeout is long, the client's patience short).
    with ScriptedUwsgi(reply, hold_open=True) as peer:
        proxy = start_proxy(config(peer.address, 'read_timeout = "60s"'))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(f"{method} / HTTP/1.1\r\nHost: lane.test\r\n\r\n".encode())
            answer = read_reply(sock, head_request=True)
            assert answer.status == int(reply[9:12])


def test_a_read_timeout_in_the_lane_is_504_and_the_connection_stays_usable(start_proxy):
    with ScriptedUwsgi(None) as silent:
        proxy = start_proxy(config(silent.address, 'read_timeout = "500ms"'))
        for answer in answers_on_one_connection(proxy.port):
            assert answer.status == 504
            assert answer.header("connection") is None
        wait_for(lambda: "uwsgi server timed out while the reply was read" in proxy.log(),
                 message="the error log line")


def test_a_reset_after_the_packet_is_502_with_the_reset_logged(start_proxy):
    # The reset is reported to one read only, the lane's: the log must still
    # name it (nginx: "recv() failed (104: Connection reset by peer)").
    with ScriptedUwsgi(None, reset=True) as dying:
        proxy = start_proxy(config(dying.address))
        for answer in answers_on_one_connection(proxy.port):
            assert answer.status == 502
            assert b"502 Bad Gateway" in answer.body
        assert len(dying.requests) == 2
    wait_for(lambda: "reading the reply from uwsgi failed: [Errno 104] Connection reset"
             in proxy.log(), message="the error log line")


def test_a_refused_connect_is_502_with_the_error_logged(start_proxy):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, not listening: connects are refused
        proxy = start_proxy(config(f"127.0.0.1:{port}"))
        assert [answer.status for answer in answers_on_one_connection(proxy.port)] == [502, 502]
    wait_for(lambda: f"connect to 127.0.0.1:{port} failed" in proxy.log(),
             message="the error log line")


def _full_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener whose accept queue is full: the kernel drops new SYNs, so a
    connect stays under way until the queue has room (and the SYN is resent)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = [socket.create_connection(listener.getsockname(), timeout=5)]
    late = socket.socket()
    late.setblocking(False)
    late.connect_ex(listener.getsockname())  # left hanging: the queue is full
    fillers.append(late)
    return listener, fillers


def _connects_under_way(port: int) -> int:
    """Sockets in SYN_SENT to 127.0.0.1:port (/proc/net/tcp: state 02)."""
    target = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        return sum(1 for line in table
                   if line.split()[2:4] == [target, "02"])


def test_a_connect_still_under_way_is_finished_by_the_greenlet(start_proxy):
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate"
    listener, fillers = _full_listener()
    port = listener.getsockname()[1]
    proxy = start_proxy(config(f"127.0.0.1:{port}", 'connect_timeout = "20s"'))
    answers: list = []
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as sock:
        sock.sendall(keep_alive_get())
        reader = threading.Thread(target=lambda: answers.append(read_reply(sock)))
        reader.start()
        wait_for(lambda: _connects_under_way(port) >= 2, message="the proxy's connect to hang")
        with ScriptedUwsgi(reply, listener=listener) as peer:  # room: the resent SYN gets in
            reader.join(15)
            assert [(a.status, a.body) for a in answers] == [(200, b"late")]
            assert [r.environ[b"REQUEST_METHOD"] for r in peer.requests] == [b"GET"]
            sock.sendall(keep_alive_get())  # and the connection goes on
            assert read_reply(sock).body == b"late"
    for filler in fillers:
        filler.close()


def test_a_connect_that_never_finishes_is_504(start_proxy):
    listener, fillers = _full_listener()
    port = listener.getsockname()[1]
    try:
        proxy = start_proxy(config(f"127.0.0.1:{port}", 'connect_timeout = "1s"'))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as sock:
            sock.sendall(keep_alive_get())
            assert read_reply(sock).status == 504
        wait_for(lambda: f"connect to 127.0.0.1:{port} timed out" in proxy.log(),
                 message="the error log line")
    finally:
        for sock in (*fillers, listener):
            sock.close()


def test_pipelined_requests_are_answered_in_order(uwsgi, start_proxy):
    proxy = start_proxy(config(uwsgi("environ.py").uwsgi_pass))
    last = b"GET /three HTTP/1.1\r\nHost: lane.test\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(keep_alive_get("/one") + keep_alive_get("/two") + last)
        replies = read_exactly(sock, 1 << 22)  # to the close after the third
    assert replies.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert re.findall(rb'"PATH_INFO": "([^"]*)"', replies) == [b"/one", b"/two", b"/three"]


def test_lane_served_requests_are_in_the_access_log(uwsgi, start_proxy, tmp_path: Path):
    log = tmp_path / "access.log"
    proxy = start_proxy(config(uwsgi("hello.py").uwsgi_pass, top=f'access_log = "{log}"'))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        for number in range(3):
            sock.sendall(keep_alive_get(f"/logged/{number}"))
            assert read_reply(sock).body == b"hello world"
    wait_for(lambda: log.exists() and log.read_text().count('" 200 11 ') == 3,
             message="three access log lines")
    assert [f"GET /logged/{n} HTTP/1.1" in log.read_text() for n in range(3)] == [True] * 3
