"""Raw WebSocket peers that cost almost nothing per byte, to measure a tunnel.

The `websockets` package parses and builds every frame in Python, which caps
what two such peers can push through any proxy (a few hundred MB/s here), so
a measurement made with them compares the peers, not the proxies. These peers
do a real RFC 6455 handshake, then move pre-built frames:

* the upstream (`python -m tests.support.ws_raw PORT`) answers the handshake
  with a correct `Sec-WebSocket-Accept`, then echoes every byte it receives;
* `upgrade_request()` is a client's handshake request; `handshake()` sends
  one through a proxy and checks the 101;
* `binary_frame()` builds one masked client frame (RFC 6455 §5.2).

The echoed bytes are the client's masked frames, which the client only
counts; what matters is that both directions of the tunnel carry them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
SAMPLE_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # the key of RFC 6455 §1.3's example


def accept_key(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept value for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def binary_frame(payload_size: int) -> bytes:
    """One final, masked binary frame with a random payload (RFC 6455 §5.2).

    A random payload masked with any key is still random, so the bytes after
    the mask key are used as they are: a valid frame with no masking work.
    """
    if payload_size < 126:
        head = struct.pack("!BB", 0x82, 0x80 | payload_size)
    elif payload_size < 1 << 16:
        head = struct.pack("!BBH", 0x82, 0x80 | 126, payload_size)
    else:
        head = struct.pack("!BBQ", 0x82, 0x80 | 127, payload_size)
    return head + os.urandom(4 + payload_size)


def upgrade_request(path: str = "/", key: bytes = SAMPLE_KEY, host: str = "test") -> bytes:
    """A client's WebSocket handshake request (RFC 6455 §4.1)."""
    return (b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (path.encode(), host.encode(), key))


def handshake(port: int, path: str = "/", host: str = "127.0.0.1",
              timeout: float = 30.0) -> socket.socket:
    """A blocking client socket whose WebSocket handshake (through a proxy) is done."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(upgrade_request(path, key, f"{host}:{port}"))
    head = b""
    while b"\r\n\r\n" not in head:
        more = sock.recv(4096)
        if not more:
            raise ConnectionError("closed during the WebSocket handshake")
        head += more
    head, _, rest = head.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101") or accept_key(key) not in head or rest:
        raise ConnectionError(f"bad WebSocket handshake answer: {head[:200]!r}")
    return sock


class _EchoProtocol(asyncio.Protocol):
    """Answers one handshake, then echoes every byte back."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.open:
            self.transport.write(data)
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        key = b""
        for line in self.head[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                             % accept_key(key))
        self.open = True
        rest, self.head = self.head[end + 4:], b""
        if rest:
            self.transport.write(rest)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_EchoProtocol, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
