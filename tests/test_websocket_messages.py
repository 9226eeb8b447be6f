"""WebSocket through proxy_pass with no extra config: what crosses the tunnel.

Real peers on both ends: the `websockets` package as the client and as the
echo upstream, with the real master and worker in between.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import threading

import pytest
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
from websockets.sync.client import connect

from tests.support.ws_raw import SAMPLE_KEY, accept_key, upgrade_request
from tests.support.ws_upstream import ScriptedUpstream, proxy_config, start_ws_echo

OPTIONS = {"compression": None, "max_size": None, "open_timeout": 10, "close_timeout": 10}


@pytest.fixture
def echo_proxy(start_proxy, started, tmp_path):
    echo = start_ws_echo(started, tmp_path)
    return start_proxy(proxy_config(echo.address))


def url(proxy, path: str = "/") -> str:
    return f"ws://127.0.0.1:{proxy.port}{path}"


def test_handshake_relays_the_101_and_the_upgrade_headers_both_ways(echo_proxy):
    with connect(url(echo_proxy, "/headers"), **OPTIONS) as websocket:
        seen = {name.lower(): value for name, value in json.loads(websocket.recv())}
        response = websocket.response
    # The client's Upgrade/Connection reached the upstream (and its key, checked by
    # the client against the Sec-WebSocket-Accept that came back through the 101).
    assert seen["upgrade"] == "websocket"
    assert seen["connection"].lower() == "upgrade"
    assert "sec-websocket-key" in seen
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert response.status_code == 101
    assert response.headers["Upgrade"].lower() == "websocket"
    assert "sec-websocket-accept" in {name.lower() for name in response.headers}


def test_text_messages_echo(echo_proxy):
    with connect(url(echo_proxy), **OPTIONS) as websocket:
        for text in ("hello", "", "ünïcödé ✓", "x" * 70_000):
            websocket.send(text)
            assert websocket.recv(timeout=10) == text


def test_a_16_mb_binary_message_arrives_whole(echo_proxy):
    payload = os.urandom(16 * 1024 * 1024)
    with connect(url(echo_proxy), **OPTIONS) as websocket:
        websocket.send(payload)
        assert websocket.recv(timeout=60) == payload


def test_ten_thousand_messages_arrive_in_order(echo_proxy):
    count = 10_000
    with connect(url(echo_proxy), **OPTIONS) as websocket:
        # Sent back to back while echoes flow back: both pumps busy at once.
        for number in range(count):
            websocket.send(str(number))
        received = [websocket.recv(timeout=30) for _ in range(count)]
    assert received == [str(number) for number in range(count)]


def test_ping_gets_its_pong_through_the_tunnel(echo_proxy):
    with connect(url(echo_proxy), **OPTIONS) as websocket:
        for data in (b"", b"are you there?"):
            assert websocket.ping(data).wait(10)


def test_a_client_close_1000_passes_through_and_closes_cleanly(echo_proxy):
    with connect(url(echo_proxy), **OPTIONS) as websocket:
        websocket.send("before closing")
        assert websocket.recv(timeout=10) == "before closing"
        websocket.close(1000, "done")
    # The upstream answered the client's close frame with its own 1000.
    assert websocket.protocol.close_rcvd.code == 1000
    assert websocket.protocol.close_rcvd.reason == "done"


def test_an_upstream_close_4001_reaches_the_client(echo_proxy):
    with connect(url(echo_proxy), **OPTIONS) as websocket:
        websocket.send("close 4001 go away")
        with pytest.raises(ConnectionClosedError) as closed:
            websocket.recv(timeout=10)
    assert closed.value.rcvd.code == 4001
    assert closed.value.rcvd.reason == "go away"
    assert closed.value.rcvd_then_sent  # the client answered, through the tunnel


def test_upstream_1000_close_is_a_clean_end(echo_proxy):
    with connect(url(echo_proxy), **OPTIONS) as websocket:
        websocket.send("close 1000 bye")
        with pytest.raises(ConnectionClosedOK):
            websocket.recv(timeout=10)


def _masked_text_frame(text: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(byte ^ mask[index % 4] for index, byte in enumerate(text))
    return struct.pack("!BB", 0x81, 0x80 | len(text)) + mask + body


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        more = sock.recv(65536)
        assert more, f"closed before {marker!r}: {data!r}"
        data += more
    return data


def test_bytes_sent_with_the_handshake_are_delivered_first(echo_proxy):
    # nginx: client bytes read past the request head go to the upstream first.
    with socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=10) as sock:
        sock.sendall(upgrade_request() + _masked_text_frame(b"early"))
        data = _read_until(sock, b"early")
    head, _, frames = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert accept_key(SAMPLE_KEY) in head
    assert frames == b"\x81\x05early"  # the echo, unmasked from the server


def test_bytes_the_upstream_sent_with_its_101_reach_the_client_first(start_proxy):
    # One write from the upstream: the 101 head and a first frame together.
    upstream = ScriptedUpstream(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(SAMPLE_KEY) + b"\r\n\r\n\x81\x05hello")
    try:
        proxy = start_proxy(proxy_config(upstream.address))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(upgrade_request())
            data = _read_until(sock, b"hello")
            assert data.partition(b"\r\n\r\n")[2] == b"\x81\x05hello"
            sock.sendall(b"after")  # then the tunnel is open both ways
            assert _read_until(sock, b"after").endswith(b"after")
    finally:
        upstream.close()


def test_slow_readers_on_both_sides_get_every_byte_in_order(start_proxy):
    # Tiny receive buffers at both ends: the proxy's sends fall short all the time,
    # so both directions park their rest and wait for the peer to drain.
    upstream = ScriptedUpstream(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(SAMPLE_KEY) + b"\r\n\r\n",
        receive_buffer=4096)
    payload = os.urandom(8 * 1024 * 1024)
    try:
        proxy = start_proxy(proxy_config(upstream.address))
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(30)
            sock.connect(("127.0.0.1", proxy.port))
            sock.sendall(upgrade_request())
            head = _read_until(sock, b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101") and head.endswith(b"\r\n\r\n")
            sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
            sender.start()
            received = bytearray()
            while len(received) < len(payload):
                more = sock.recv(65536)
                assert more, f"closed after {len(received)} bytes"
                received += more
            sender.join(30)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        assert "Traceback" not in proxy.log()  # no pump may ever wait inside the hub
    finally:
        upstream.close()
