"""A tiny HTTP/1.x client over a plain socket, for requests a library would tidy up.

Tests need to send exact bytes (repeated headers, HTTP/1.0 without Host, an
absolute-form target, a chunked body) and to see the exact framing of the
answer. `exchange()` sends one request, reads the answer to its end (by
Content-Length, chunked framing or close) and returns it parsed.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class _Stream:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def fill(self) -> bool:
        data = self.sock.recv(1 << 20)
        self.buffer += data
        return bool(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self.fill():
                raise ConnectionError("connection closed mid-line")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self.fill():
                raise ConnectionError("connection closed mid-body")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def rest(self) -> bytes:
        while self.fill():
            pass
        data, self.buffer = self.buffer, b""
        return data


def read_reply(sock: socket.socket, head_request: bool = False) -> Reply:
    """Read one response from `sock` (skipping a 100 Continue)."""
    stream = _Stream(sock)
    while True:
        version, status, reason = (stream.line().decode("latin-1").split(" ", 2) + [""])[:3]
        headers = []
        while line := stream.line():
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        if status != "100":
            break
    reply = Reply(int(status), reason, headers, b"", False)
    if head_request or reply.status in (204, 304):
        return reply
    if (reply.header("transfer-encoding") or "").lower() == "chunked":
        reply.chunked = True
        pieces = []
        while size := int(stream.line().split(b";")[0], 16):
            pieces.append(stream.exactly(size))
            stream.exactly(2)
        while stream.line():  # trailers, then the blank line
            pass
        reply.body = b"".join(pieces)
    elif (length := reply.header("content-length")) is not None:
        reply.body = stream.exactly(int(length))
    else:
        reply.body = stream.rest()
    return reply


def exchange(port: int, request: bytes, host: str = "127.0.0.1", timeout: float = 30.0) -> Reply:
    """Send `request` (exact bytes) on a new connection and read the answer."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_reply(sock, head_request=request.startswith(b"HEAD "))


def chunked(body: bytes, piece: int = 100_000) -> bytes:
    """`body` in chunked transfer coding, `piece` bytes per chunk."""
    out = [b"%x\r\n%b\r\n" % (len(body[i:i + piece]), body[i:i + piece])
           for i in range(0, len(body), piece)]
    return b"".join(out) + b"0\r\n\r\n"
