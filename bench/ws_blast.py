"""A fast WebSocket upstream and client for one-tunnel bulk throughput (RFC 6455 framing).

The `websockets` echo server and client top out near nginx's own tunnel speed
here (Python framing, two copies per message), so they cannot show a proxy
that is faster than nginx. This module does the least a valid WebSocket peer
can: a real handshake, then pre-built 1 MiB binary frames written with
`sendall` (the client's frames pre-masked once, as RFC 6455 §5.3 allows any
key) and read with `recv_into` into one buffer. Both ends then move bytes at
memory speed, so the proxy in the middle is what a run measures.

* Server (`python -m bench.ws_blast serve PORT`): a path ending in `/down`
  streams frames to the client until it goes away; `/up` reads frames, and
  answers a text frame with the binary payload byte count when a text frame
  arrives. (A text frame, not a close: a proxy may answer a close itself.)
* Client: `down(url, seconds)` and `up(url, seconds)` return payload MB/s.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FRAME_PAYLOAD = 1 << 20
READ_SIZE = 1 << 20


def frame(payload: bytes, opcode: int = 0x2, mask: bytes | None = None) -> bytes:
    """One final frame; masked (client to server) when `mask` is given."""
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, mask_bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, length)
    if not mask:
        return head + payload
    key = (mask * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")
    return head + mask + masked.to_bytes(length, "big")


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _recv_exactly(sock: socket.socket, size: int, buffer: memoryview, pending: bytearray) -> bytes:
    """`size` bytes of header material, from `pending` first, then the socket."""
    while len(pending) < size:
        count = sock.recv_into(buffer, size - len(pending))
        if not count:
            raise ConnectionError("peer closed")
        pending += buffer[:count]
    data = bytes(pending[:size])
    del pending[:size]
    return data


# --- server -----------------------------------------------------------------

def _serve_one(sock: socket.socket) -> None:
    with sock:
        head, rest = _read_head(sock)
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID)
                                  .digest())
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        try:
            if path.endswith("/down"):
                blob = frame(os.urandom(FRAME_PAYLOAD)) * 4
                while True:
                    sock.sendall(blob)
            else:
                _count_until_close(sock, bytearray(rest))
        except (ConnectionError, OSError):
            return


def _count_until_close(sock: socket.socket, pending: bytearray) -> None:
    buffer = memoryview(bytearray(READ_SIZE))
    total = 0
    while True:
        first, second = _recv_exactly(sock, 2, buffer, pending)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", _recv_exactly(sock, 2, buffer, pending))[0]
        elif length == 127:
            length = struct.unpack("!Q", _recv_exactly(sock, 8, buffer, pending))[0]
        if second & 0x80:
            _recv_exactly(sock, 4, buffer, pending)
        opcode = first & 0x0F
        if opcode == 0x8:
            return
        if opcode == 0x1:
            _recv_exactly(sock, length, buffer, pending)
            sock.sendall(frame(str(total).encode(), opcode=0x1))
            continue
        remaining = length
        take = min(remaining, len(pending))
        del pending[:take]
        remaining -= take
        while remaining:
            count = sock.recv_into(buffer, min(remaining, READ_SIZE))
            if not count:
                raise ConnectionError("peer closed")
            remaining -= count
        total += length


def serve(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(sock,), daemon=True).start()


# --- client -----------------------------------------------------------------

def _connect(url: str) -> tuple[socket.socket, bytes]:
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=10)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode()
                 + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 + b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")
    head, rest = _read_head(sock)
    if b" 101 " not in head.split(b"\r\n")[0]:
        raise ConnectionError(f"handshake refused: {head.splitlines()[0]!r}")
    return sock, rest


def down(url: str, seconds: float) -> float:
    """Payload MB/s streamed upstream -> client through one tunnel."""
    sock, rest = _connect(url.rstrip("/") + "/down")
    buffer = memoryview(bytearray(READ_SIZE))
    received = len(rest)
    with sock:
        start = time.perf_counter()
        deadline = start + seconds
        while (now := time.perf_counter()) < deadline:
            count = sock.recv_into(buffer)
            if not count:
                raise ConnectionError("tunnel closed")
            received += count
    return received / (now - start) / 1e6


def up(url: str, seconds: float) -> float:
    """Payload MB/s streamed client -> upstream, as the upstream counted it."""
    sock, _ = _connect(url.rstrip("/") + "/up")
    blob = frame(os.urandom(FRAME_PAYLOAD), mask=os.urandom(4))
    with sock:
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            sock.sendall(blob)
        sock.sendall(frame(b"count?", 0x1, mask=os.urandom(4)))
        reply = b""
        while len(reply) < 2 or len(reply) < 2 + (reply[1] & 0x7F):
            chunk = sock.recv(64)
            if not chunk:
                raise ConnectionError(f"tunnel closed before the count: {reply!r}")
            reply += chunk
        elapsed = time.perf_counter() - start
    total = int(reply[2:2 + (reply[1] & 0x7F)].decode())
    return total / elapsed / 1e6


if __name__ == "__main__":
    serve(int(sys.argv[2]))
