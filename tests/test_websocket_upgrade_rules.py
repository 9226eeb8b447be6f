"""Which requests become tunnels, and which stay plain HTTP.

Only `Upgrade: websocket` (with `Connection: upgrade`) is forwarded, and only a
101 answer to it becomes a tunnel. This is nginx *without* its three extra
lines for every other protocol: nginx never forwards Upgrade unless told to,
and the usual `proxy_set_header Upgrade $http_upgrade` forwards any value. We
choose the narrow rule on purpose: an `h2c` (or any other) upgrade relayed to
an upstream that accepts it would give the client a raw connection to the
upstream, past the proxy's routing and header rules (h2c smuggling). So a
non-WebSocket upgrade reaches the upstream without Upgrade/Connection and is
answered as ordinary HTTP; an upstream that switches protocols anyway gets a
502. `websocket = false` applies the same rule to WebSocket on a location.
"""

from __future__ import annotations

import json
import socket

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support.ws_raw import SAMPLE_KEY, accept_key, upgrade_request
from tests.support.ws_upstream import ScriptedUpstream, proxy_config, start_ws_echo

H2C_REQUEST = (b"GET /echo HTTP/1.1\r\nHost: test\r\nUpgrade: h2c\r\n"
               b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
WEBSOCKET_REQUEST = upgrade_request("/echo")
PLAIN_REQUEST = b"GET /echo HTTP/1.1\r\nHost: test\r\n\r\n"


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response with a Content-Length body: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"connection closed mid-head: {data!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        more = sock.recv(65536)
        assert more, "connection closed mid-body"
        body += more
    assert len(body) == length, "bytes after the body: the connection is not plain HTTP"
    return head, body


def upstream_headers(body: bytes) -> dict[str, str]:
    return {name.lower(): value for name, value in json.loads(body)["headers"]}


def test_an_h2c_upgrade_is_not_forwarded_and_stays_http(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.address))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(H2C_REQUEST)
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200")
        seen = upstream_headers(body)
        # Upgrade, Connection and the header Connection names are hop-by-hop.
        assert "upgrade" not in seen
        assert "connection" not in seen
        assert "http2-settings" not in seen
        sock.sendall(PLAIN_REQUEST)  # the same connection serves the next request
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200")


def test_an_upstream_that_switches_to_h2c_anyway_gets_a_502(start_proxy):
    upstream = ScriptedUpstream(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                                b"Connection: Upgrade\r\n\r\n")
    try:
        proxy = start_proxy(proxy_config(upstream.address))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(H2C_REQUEST)
            head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 502")
        assert b"upgrade" not in upstream.heads[0].lower()
    finally:
        upstream.close()


def test_a_websocket_request_answered_without_101_is_ordinary_http(start_proxy, upstream):
    # The upstream (plain HTTP) ignores the upgrade and answers 200: that answer
    # is relayed, and what the client sends next is read as HTTP again.
    proxy = start_proxy(proxy_config(upstream.address))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(WEBSOCKET_REQUEST)
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert upstream_headers(body)["upgrade"] == "websocket"
        sock.sendall(PLAIN_REQUEST)
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200")


def test_upgrade_without_connection_upgrade_is_not_an_upgrade(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.address))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n\r\n")
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200")
    assert "upgrade" not in upstream_headers(body)


def test_websocket_false_sends_the_upgrade_upstream_as_plain_http(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.address, "websocket = false"))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(WEBSOCKET_REQUEST)
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200")
    seen = upstream_headers(body)
    assert "upgrade" not in seen and "connection" not in seen


def test_websocket_false_refuses_a_real_websocket_client(start_proxy, started, tmp_path):
    echo = start_ws_echo(started, tmp_path)
    proxy = start_proxy(proxy_config(echo.address, "websocket = false"))
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{proxy.port}/", open_timeout=10)
    # The upstream saw no Upgrade and said so: 426 Upgrade Required.
    assert refused.value.response.status_code == 426


def test_websocket_true_is_the_default(start_proxy):
    upstream = ScriptedUpstream(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                                + accept_key(SAMPLE_KEY) + b"\r\n\r\n")
    try:
        proxy = start_proxy(proxy_config(upstream.address))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(WEBSOCKET_REQUEST)
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 101")
        assert b"upgrade: websocket" in upstream.heads[0].lower()
    finally:
        upstream.close()
