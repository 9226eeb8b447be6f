"""Exact bytes on a plain socket: send what a test wrote, read back strict responses.

`Wire` is one client connection. `send()` writes bytes as given (a hostile
request, several pipelined ones, a body in pieces); `response()` reads exactly
one response and checks its framing as a strict client would (a HEAD, 1xx,
204 or 304 answer has no body; chunked bodies are de-chunked and their chunk
sizes kept); `closed()` tells whether the server closed the connection;
`drain()` reads whatever arrives until the server closes. Nothing is tidied.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field


@dataclass
class Response:
    version: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    chunked: bool = False
    chunk_sizes: list[int] = field(default_factory=list)
    raw_head: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of a header that must appear at most once (None if absent)."""
        values = self.all(name)
        assert len(values) <= 1, f"{name} appears {len(values)} times: {values}"
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        lower = name.lower().encode()
        return [value.decode("latin-1") for key, value in self.headers if key.lower() == lower]

    def json(self) -> dict:
        return json.loads(self.body)


class ServerClosed(Exception):
    """The server closed the connection before a complete response."""


class Wire:
    def __init__(self, port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- reading ---------------------------------------------------------------------
    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ServerClosed(f"closed by the server; unread: {self.buffer[:200]!r}")
        self.buffer += data

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def head(self) -> Response:
        """Read one response head (a 100 Continue is returned like any other)."""
        raw = []
        status_line = self._line()
        raw.append(status_line)
        version, status, reason = (status_line.split(b" ", 2) + [b""])[:3]
        assert version in (b"HTTP/1.1", b"HTTP/1.0"), f"bad status line {status_line!r}"
        headers = []
        while line := self._line():
            raw.append(line)
            name, sep, value = line.partition(b":")
            assert sep and name and name == name.strip(), f"bad header line {line!r}"
            headers.append((name, value.strip(b" \t")))
        return Response(version, int(status), reason, headers,
                        raw_head=b"\r\n".join(raw) + b"\r\n\r\n")

    def response(self, method: bytes = b"GET", *, skip_continue: bool = True) -> Response:
        """Read one complete response to a `method` request."""
        response = self.head()
        while skip_continue and response.status == 100:
            response = self.head()
        if method == b"HEAD" or response.status in (204, 304) or response.status < 200:
            return response
        transfer_encoding = response.header("Transfer-Encoding")
        length = response.header("Content-Length")
        if transfer_encoding is not None:
            assert transfer_encoding.lower() == "chunked", transfer_encoding
            assert length is None, "both Content-Length and Transfer-Encoding"
            response.chunked = True
            pieces = []
            while True:
                size_line = self._line()
                size = int(size_line.split(b";")[0], 16)
                response.chunk_sizes.append(size)
                if size == 0:
                    break
                pieces.append(self._exactly(size))
                assert self._exactly(2) == b"\r\n", "chunk data not followed by CRLF"
            while self._line():  # trailers, then the blank line
                pass
            response.body = b"".join(pieces)
        elif length is not None:
            response.body = self._exactly(int(length))
        else:
            response.body = self.drain()
        return response

    def drain(self, timeout: float | None = None) -> bytes:
        """Everything until the server closes (AssertionError if it does not)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    break
                self.buffer += data
        except TimeoutError:
            raise AssertionError(
                f"the server did not close the connection; read {self.buffer[:300]!r}"
            ) from None
        except ConnectionResetError:
            pass  # closed with unread input (RST): still closed
        data, self.buffer = self.buffer, b""
        return data

    def closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection within `timeout` with nothing more
        to read; False if it stays open (or sends more bytes)."""
        if self.buffer:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(10.0)


def request(method: str, path: str, *, host: str = "example.test",
            headers: list[tuple[str, str]] | None = None, body: bytes | None = None,
            version: str = "HTTP/1.1") -> bytes:
    """A well-formed request as bytes (Content-Length added for a body)."""
    lines = [f"{method} {path} {version}", f"Host: {host}"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def get(port: int, path: str, **kwargs: object) -> Response:
    """One GET on a new connection."""
    with Wire(port) as wire:
        wire.send(request("GET", path, **kwargs))
        return wire.response()


def chunked(*pieces: bytes) -> bytes:
    """A chunked body with one chunk per piece."""
    return b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"

