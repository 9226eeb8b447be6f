"""Reply buffering, as nginx's `proxy_buffering on` (workers/buffering.py).

A reply is read as fast as the upstream sends it; what a slow client cannot
take yet is held (memory, then a temporary file), so a slow client holds
neither an upstream connection nor a uWSGI process. Nothing the client can
take now is delayed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.processes import Proxy, Upstream, wait_for
from tests.support.scripted_http import ScriptedHttp
from tests.support.sites import running_proxy
from tests.support.uwsgi_server import running_uwsgi
from tests.support.wire import Wire, request
from workers.buffering import wants_buffering

SIZE = 20 << 20


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    directory = tmp_path_factory.mktemp("reply-buffering")
    upstream = Upstream(directory / "upstream.log")
    config = f"""
workers = 1
access_log = "off"
[upstream.app]
servers = ["{upstream.address}"]
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  path = "/"
  proxy_pass = "http://app"
  [[server.location]]
  path = "/unbuffered/"
  proxy_pass = "http://app/"
  buffering = false
  [[server.location]]
  path = "/app/"
  uwsgi_pass = "{{uwsgi}}"
"""
    try:
        with running_uwsgi("big.py", directory / "uwsgi", processes=1) as server, \
                running_proxy(directory, config.replace("{uwsgi}", server.uwsgi_pass)) as running:
            yield running
    finally:
        upstream.stop()


def _slow_client(port: int, path: str) -> socket.socket:
    """A client that asks for a big reply and does not read it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request("GET", path))
    return sock


BIG = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % SIZE


@pytest.fixture(scope="module")
def serial_upstream() -> Iterator[ScriptedHttp]:
    """An HTTP upstream that serves one connection at a time, to its close (one for
    each engine path)."""
    huge = 80 << 20  # more than loopback's socket buffers hold between the two ends
    server = ScriptedHttp({
        b"/big": [BIG, b"x" * SIZE, None],
        # (Closed after each answer: a kept connection would hold the serial server.)
        b"/small": [b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n"
                    b"honest /small", None],
        b"/huge": [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                   % huge, b"x" * huge, None],
    }, serial=True)
    yield server
    server.close()


@pytest.fixture(scope="module")
def serial_proxy(serial_upstream: ScriptedHttp,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    directory = tmp_path_factory.mktemp("serial")
    with running_proxy(directory, f"""
workers = 1
access_log = "off"
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  path = "/"
  proxy_pass = "http://{serial_upstream.address}"
  [[server.location]]
  path = "/unbuffered/"
  proxy_pass = "http://{serial_upstream.address}/"
  buffering = false
""") as running:
        yield running


def _second_client_waits(port: int) -> float:
    started = time.monotonic()
    with Wire(port, timeout=20) as wire:
        wire.send(request("GET", "/small"))
        assert wire.response().body == b"honest /small"
    return time.monotonic() - started


def test_a_slow_client_does_not_hold_the_upstream(serial_proxy: Proxy,
                                                  serial_upstream: ScriptedHttp) -> None:
    """The upstream serves one connection at a time: a second client is answered
    only once the big reply has left it, which buffering makes at once."""
    with _slow_client(serial_proxy.port, "/big") as slow:
        wait_for(lambda: b"/big" in serial_upstream.paths(), message="the big request")
        took = _second_client_waits(serial_proxy.port)
        assert took < 1.0, f"the second client waited {took:.1f} s"
        slow.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            head += slow.recv(1)
        received = 0
        while received < SIZE:
            data = slow.recv(1 << 20)
            assert data and data.count(b"x") == len(data), "the held reply was cut short"
            received += len(data)
    assert b"Content-Length: %d" % SIZE in head


def test_without_buffering_the_upstream_is_held(serial_proxy: Proxy,
                                               serial_upstream: ScriptedHttp) -> None:
    with _slow_client(serial_proxy.port, "/unbuffered/huge"), \
            Wire(serial_proxy.port, timeout=1.5) as wire:
        wait_for(lambda: b"/huge" in serial_upstream.paths(), message="the huge request")
        wire.send(request("GET", "/small"))
        with pytest.raises(TimeoutError):
            wire.response()


def test_a_slow_client_does_not_hold_a_one_process_uwsgi(proxy: Proxy) -> None:
    with _slow_client(proxy.port, "/app/big"):
        started = time.monotonic()
        with Wire(proxy.port) as wire:
            wire.send(request("GET", "/app/small?size=5"))
            response = wire.response()
        took = time.monotonic() - started
    assert (response.status, response.body) == (200, b"bbbbb")
    assert took < 1.0, f"the second client waited {took:.1f} s for the only uWSGI process"


@pytest.mark.parametrize(("lines", "default", "expected"), [
    (b"\r\nX-Accel-Buffering: no\r\n", True, False),
    (b"\r\nx-accel-buffering:yes\r\n", False, True),
    (b"\r\nX-Accel-Buffering: maybe\r\n", True, True),
    (b"\r\nX-Accel-Expires: 0\r\n", False, False),
    (b"\r\nContent-Type: text/plain\r\n", True, True),
])
def test_x_accel_buffering_overrides_the_location(lines: bytes, default: bool,
                                                  expected: bool) -> None:
    assert wants_buffering(lines, default) is expected
