"""Every 502 and 504 cause, provoked for real: its one error-log line names the
peer and the cause in words, /metrics counts it by the same cause, and the
client's error page names no internals."""

from __future__ import annotations

import socket

import pytest

from tests.support.processes import free_port, wait_for
from tests.support.raw_http import Reply, exchange
from tests.support.scripted_http import RESET, ScriptedHttp
from tests.support.status import metrics, status_config, value
from tests.support.uwsgi_server import uwsgi_servers

FAILURES = "prefork_proxy_upstream_failures_total"


class _FullBacklog:
    """A listener that never accepts, with its accept queue already full: a new
    connection's handshake never completes (its SYN is dropped)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        for _ in range(2):  # backlog 0 admits one; the second waits in the SYN queue
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(filler)

    def close(self) -> None:
        for sock in [*self.fillers, self.listener]:
            sock.close()


def _provoke(start_proxy, target: str, *, location: str = "", top: str = "",
             path: str = "/x", headers: str = "",
             directive: str = "proxy_pass") -> tuple[object, int, Reply]:
    status_port = free_port()
    proxy = start_proxy(status_config(target, status_port, workers=1, top=top,
                                      location=location, directive=directive))
    reply = exchange(proxy.port,
                     f"GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
    return proxy, status_port, reply


def _status_of(reply: Reply) -> int:
    return reply.status


def _check(proxy, status_port: int, peer: str, cause: str, words: str,
           upstream: str | None = None) -> str:
    wait_for(lambda: words in proxy.log(), message=f"the error line: {words!r}")
    line = next(line for line in proxy.log().splitlines() if words in line)
    assert "[ERROR]" in line and f"{peer}," in line and 'request "GET /x' in line, line
    labels = {"upstream": upstream or peer.split()[-1], "peer": peer.split()[-1]}
    if peer.startswith("upstreams of") or peer.startswith("uwsgi servers of"):
        labels["peer"] = "-"
    # The worker publishes its counts with its heartbeat, once a second.
    wait_for(lambda: value(metrics(status_port), FAILURES, **labels, cause=cause) == 1,
             message=f"the {cause} failure counted")
    return line


def _no_internals(reply: Reply, *words: str) -> None:
    for word in words:
        assert word.encode() not in reply.body


@pytest.mark.timeout(60)
def test_connection_refused(start_proxy):
    port = free_port()  # nothing listens
    proxy, status_port, reply = _provoke(start_proxy, f"127.0.0.1:{port}")
    assert _status_of(reply) == 502
    _check(proxy, status_port, f"upstream 127.0.0.1:{port}", "refused",
           f"connect to 127.0.0.1:{port} failed: Connection refused")
    _no_internals(reply, "refused", str(port))


@pytest.mark.timeout(60)
def test_connect_timeout(start_proxy):
    backlog = _FullBacklog()
    try:
        proxy, status_port, reply = _provoke(start_proxy, f"127.0.0.1:{backlog.port}",
                                             location='connect_timeout = "300ms"')
        assert _status_of(reply) == 504
        _check(proxy, status_port, f"upstream 127.0.0.1:{backlog.port}", "connect_timeout",
               f"connect to 127.0.0.1:{backlog.port} timed out (0.3s)")
    finally:
        backlog.close()


@pytest.mark.timeout(60)
def test_reset_before_any_reply_byte(start_proxy):
    upstream = ScriptedHttp({b"/x": [RESET]})
    try:
        proxy, status_port, reply = _provoke(start_proxy, upstream.address)
        assert _status_of(reply) == 502
        line = _check(proxy, status_port, f"upstream {upstream.address}", "reset",
                      "reading the reply failed before any byte of it")
        assert "Connection reset by peer" in line
    finally:
        upstream.close()


@pytest.mark.timeout(60)
def test_closed_before_any_reply_byte(start_proxy):
    upstream = ScriptedHttp({b"/x": [None]})
    try:
        proxy, status_port, reply = _provoke(start_proxy, upstream.address)
        assert _status_of(reply) == 502
        _check(proxy, status_port, f"upstream {upstream.address}", "reset",
               "upstream closed the connection before a response")
    finally:
        upstream.close()


@pytest.mark.timeout(60)
def test_invalid_reply_header_names_the_header(start_proxy):
    upstream = ScriptedHttp({b"/x": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                    b"Bad Header: 1\r\n\r\nok"})
    try:
        proxy, status_port, reply = _provoke(start_proxy, upstream.address)
        assert _status_of(reply) == 502
        line = _check(proxy, status_port, f"upstream {upstream.address}", "invalid_header",
                      "upstream sent an invalid")
        assert 'in the header line "Bad Header: 1"' in line
        _no_internals(reply, "Bad Header", "invalid")
    finally:
        upstream.close()


@pytest.mark.timeout(60)
def test_read_timeout_after_some_bytes(start_proxy):
    upstream = ScriptedHttp({b"/x": [b"HTTP/1.1 200 OK\r\nX-Slow: 1\r\n", 30]})
    try:
        proxy, status_port, reply = _provoke(start_proxy, upstream.address,
                                             location='read_timeout = "300ms"')
        assert _status_of(reply) == 504
        _check(proxy, status_port, f"upstream {upstream.address}", "read_timeout",
               "read timed out (0.3s) waiting for the reply head, after 28 bytes")
    finally:
        upstream.close()


@pytest.mark.timeout(60)
def test_no_live_upstreams(start_proxy):
    first, second = free_port(), free_port()
    top = f'[upstream.pool]\nservers = ["127.0.0.1:{first}", "127.0.0.1:{second}"]\n'
    proxy, status_port, reply = _provoke(start_proxy, "http://pool", top=top)
    assert _status_of(reply) == 502  # both refused: each is now down for fail_timeout
    reply = exchange(proxy.port, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
    assert _status_of(reply) == 502
    _check(proxy, status_port, "upstreams of pool", "no_live_upstreams",
           "no live upstreams in pool", upstream="pool")
    # The down state is a gauge, published by the worker's heartbeat (1 s).
    wait_for(lambda: all(value(metrics(status_port), "prefork_proxy_upstream_peer_up",
                               upstream="pool", peer=f"127.0.0.1:{port}") == 0
                         for port in (first, second)), message="both peers down")
    samples = metrics(status_port)
    for port in (first, second):
        peer = {"upstream": "pool", "peer": f"127.0.0.1:{port}"}
        assert value(samples, FAILURES, **peer, cause="refused") == 1


@pytest.fixture
def uwsgi(tmp_path):
    with uwsgi_servers(tmp_path) as start:
        yield start


@pytest.mark.timeout(60)
def test_uwsgi_packet_over_the_servers_buffer_size(uwsgi, start_proxy):
    server = uwsgi("hello.py", extra_args=("--buffer-size", "4096"))
    proxy, status_port, reply = _provoke(start_proxy, server.uwsgi_pass, directive="uwsgi_pass",
                                         headers=f"X-Big: {'v' * 5000}\r\n")
    assert reply.status == 502
    address = server.uwsgi_pass
    _check(proxy, status_port, f"uwsgi server {address}", "uwsgi_buffer_size",
           "is uWSGI's --buffer-size at least that?")
    _no_internals(reply, "buffer", "uwsgi")
