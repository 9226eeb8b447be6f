"""The tunnel's pumps in-process, on socket pairs: full destinations and EOF.

These run `workers.tunnel.run_tunnel` in a gevent hub inside the test process
(no monkey-patching; the test's own ends are gevent sockets), to force what a
real network makes rare: a destination that is already full when its source
becomes readable, and an EOF that arrives while earlier bytes still wait.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios

import gevent
import pytest
from gevent import socket as gsocket

from workers.stream import Stream
from workers.tunnel import run_tunnel


def _gevent_end(sock: socket.socket) -> gsocket.socket:
    end = gsocket.socket(fileno=sock.detach())
    end.settimeout(10)  # a stuck pump fails the test quickly
    return end


def _fill(sock: socket.socket) -> int:
    """Send until the kernel takes no more (the peer is not reading)."""
    sock.setblocking(False)
    filled = 0
    chunk = b"f" * 65536
    while True:
        try:
            filled += sock.send(chunk)
        except BlockingIOError:
            return filled


def _unread(sock) -> int:  # noqa: ANN001
    """Bytes waiting in a socket's receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def _until(condition, limit: int = 5000) -> None:  # noqa: ANN001
    """Yield to the hub until `condition()` holds (bounded)."""
    for _ in range(limit):
        if condition():
            return
        gevent.sleep(0.001)
    raise AssertionError("condition not reached")


def _read_exactly(sock: gsocket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        more = sock.recv(min(1 << 20, size - len(data)))
        assert more, f"EOF after {len(data)} of {size} bytes"
        data += more
    return bytes(data)


@pytest.fixture
def hub_errors():
    """Errors the hub would only print (an exception in a watcher callback)."""
    hub = gevent.get_hub()
    seen = []
    original = hub.handle_error

    def record(context, kind, value, tb):  # noqa: ANN001
        seen.append(kind)
        original(context, kind, value, tb)

    hub.handle_error = record
    yield seen
    hub.handle_error = original


def test_a_destination_already_full_parks_the_rest_without_waiting_in_the_hub(hub_errors):
    client_app, client_proxy = socket.socketpair()
    upstream_proxy, upstream_app = socket.socketpair()
    filler = _fill(client_proxy)  # the client reads nothing yet: its side is full
    client_app, upstream_app = _gevent_end(client_app), _gevent_end(upstream_app)
    client, upstream = Stream(client_proxy), Stream(upstream_proxy)
    tunnel = gevent.spawn(run_tunnel, client, upstream, b"", b"", 30.0)
    payload = os.urandom(3 * 1024 * 1024)
    sender = gevent.spawn(upstream_app.sendall, payload)
    # The pump reads from the upstream, cannot send a byte, parks the rest.
    _until(lambda: _unread(upstream_proxy) == 0 and not sender.dead or sender.dead)
    assert _read_exactly(client_app, filler) == b"f" * filler
    assert _read_exactly(client_app, len(payload)) == payload
    sender.join(10)
    client_app.sendall(b"and back")  # the other direction still works
    assert _read_exactly(upstream_app, 8) == b"and back"
    upstream_app.close()
    tunnel.join(10)
    client.close()
    client_app.close()
    assert tunnel.dead and not hub_errors
    assert tunnel.value == len(payload)  # bytes relayed to the client, for the access log


def test_an_eof_behind_parked_bytes_ends_the_tunnel_only_after_they_are_sent(hub_errors):
    # nginx: the tunnel ends once a side is at EOF *and* what it sent is flushed.
    client_app, client_proxy = socket.socketpair()
    upstream_proxy, upstream_app = socket.socketpair()
    filler = _fill(client_proxy)
    client_app = _gevent_end(client_app)
    client, upstream = Stream(client_proxy), Stream(upstream_proxy)
    tunnel = gevent.spawn(run_tunnel, client, upstream, b"", b"", 30.0)
    payload = os.urandom(64 * 1024)
    upstream_app.sendall(payload)  # fits in the socket buffer: returns at once
    upstream_app.close()  # EOF right behind the bytes
    _until(lambda: _unread(upstream_proxy) == 0)  # the pump took the bytes...
    for _ in range(20):  # loop iterations in which a wrong pump would read the EOF
        gevent.sleep(0)
    assert not tunnel.dead  # ...and parks them: the EOF behind them is not read yet
    assert _read_exactly(client_app, filler + len(payload))[filler:] == payload
    tunnel.join(10)
    assert tunnel.dead and tunnel.value == len(payload)
    client.close()
    assert client_app.recv(1) == b""  # then the client side is closed too
    client_app.close()
    assert not hub_errors


def test_the_idle_timer_ends_a_silent_tunnel(hub_errors):
    client_app, client_proxy = socket.socketpair()
    upstream_proxy, upstream_app = socket.socketpair()
    client, upstream = Stream(client_proxy), Stream(upstream_proxy)
    tunnel = gevent.spawn(run_tunnel, client, upstream, b"", b"", 0.2)
    tunnel.join(10)
    assert tunnel.dead
    client.close()
    client_app.close()
    upstream_app.close()
    assert not hub_errors
