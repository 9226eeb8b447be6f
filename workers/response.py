"""Reading an upstream's HTTP response and relaying it to the client, re-framed.

Shared by proxy_pass and uwsgi_pass. The head is found first (up to the blank
line) and only the head is fed to httptools, so the body's framing is ours to
decide: a HEAD, 204 or 304 response has no body whatever its headers say;
Content-Length bodies are copied through big pooled buffers; chunked and
close-delimited bodies are re-chunked for HTTP/1.1 clients. nginx treats a
response with both Content-Length and Transfer-Encoding, two lengths, or a
coding other than chunked as an invalid header: 502.
"""

from __future__ import annotations

from collections.abc import Callable

import httptools

from workers import headers as header_rules
from workers.buffers import pool
from workers.errors import UpstreamError

MAX_RESPONSE_HEAD = 64 * 1024
_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)


class _DataAfterEnd(Exception):
    """Bytes after the end of the response (stops llhttp from parsing them)."""


class UpstreamResponse:
    __slots__ = ("status", "reason", "headers", "content_length", "chunked", "keep_alive",
                 "parser", "pieces", "complete", "version", "connection_tokens", "extra")

    def __init__(self) -> None:
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.chunked = False
        self.pieces: list[bytes] = []
        self.complete = False
        self.extra = False  # bytes followed the end of the response
        self.parser = httptools.HttpResponseParser(self)

    # -- httptools callbacks ---------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:  # nginx: "upstream sent data after final chunk": not relayed
            raise _DataAfterEnd()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.status = parser.get_status_code()
        self.version = parser.get_http_version()
        # HTTP/1.0 responses and `Connection: close` end the connection's reuse.
        self.keep_alive = parser.should_keep_alive() and self.version == "1.1"
        lengths = 0
        tokens: set[bytes] = set()
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length":
                lengths += 1
                if not value.strip().isdigit():
                    raise UpstreamError(502, "upstream sent an invalid Content-Length")
                self.content_length = int(value)
            elif lower == b"connection":
                tokens.update(token.strip() for token in value.lower().split(b","))
            elif lower == b"transfer-encoding":
                if value.strip().lower() != b"chunked" or self.chunked:
                    raise UpstreamError(502, "upstream sent an unsupported Transfer-Encoding")
                self.chunked = True
        if lengths > 1 or (lengths and self.chunked):
            raise UpstreamError(502, "upstream sent ambiguous framing")
        self.connection_tokens = frozenset(tokens)

    def on_body(self, body: bytes) -> None:
        self.pieces.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # a 101: llhttp stops after the head; the rest belongs to the tunnel
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _DataAfterEnd):
                self.extra = True  # dropped, and the connection is not reused
                return
            if isinstance(exc.__context__, UpstreamError):
                raise exc.__context__ from None
            raise UpstreamError(502, f"upstream sent an invalid response: {exc}") from None
        except httptools.HttpParserError as exc:
            raise UpstreamError(502, f"upstream sent an invalid response: {exc}") from None

    @property
    def status_line(self) -> bytes:
        return b"HTTP/1.1 %d %s\r\n" % (self.status, self.reason)


def read_response_head(
    sock, head_rewriter: Callable[[bytes], bytes] | None = None  # noqa: ANN001
) -> tuple[UpstreamResponse, bytes]:
    """Read up to the end of the head; returns the parsed head and the bytes after it.

    Interim 1xx responses other than 101 are skipped. `head_rewriter` lets uwsgi
    turn a CGI-style head into an HTTP one.
    """
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        while end < 0:
            if len(data) > MAX_RESPONSE_HEAD:
                raise UpstreamError(502, "upstream sent too big a header")
            # The first read is of a reply to what was just sent: wait, then read.
            more = sock.recv(65536) if data else sock.recv_when_ready(65536)
            if not more:
                raise UpstreamError(502, "upstream closed the connection before a response")
            data += more
            end = data.find(b"\r\n\r\n", max(0, len(data) - len(more) - 3))
        head, data = data[:end + 4], data[end + 4:]
        if head_rewriter is not None:
            head = head_rewriter(head)
        response = UpstreamResponse()
        response.feed(head)
        if not 100 <= response.status < 200 or response.status == 101:
            return response, data


def relay_response(conn, request, upstream_sock, response: UpstreamResponse,  # noqa: ANN001
                   rest: bytes, keep_alive: bool) -> tuple[bool, bool]:
    """Send the response to the client. Returns (client keep-alive, upstream reusable).

    Once the head has gone out, an upstream failure can only be reported by
    closing the client connection (the caller sees conn.response_started).
    """
    status = response.status
    client_11 = request.version == "1.1"
    if request.method == b"HEAD" or status in (204, 304):
        body = _NO_BODY
    elif response.chunked:
        body = _CHUNKED
    elif response.content_length is not None:
        body = _LENGTH
    else:
        body = _UNTIL_CLOSE
        # uWSGI and HTTP/1.0 servers close right after a short reply: if the close
        # is already here, the body is whole and goes out in one send, with a length.
        rest, whole = _read_available(upstream_sock, rest)
        if whole:
            body, response.content_length = _LENGTH, len(rest)

    if body == _LENGTH or (body == _NO_BODY and response.content_length is not None
                           and status != 204):
        framing = b"Content-Length: %d\r\n" % response.content_length
    elif body == _NO_BODY:
        framing = b""
    elif client_11:
        framing = b"Transfer-Encoding: chunked\r\n"
    else:  # an HTTP/1.0 client: the body runs until we close
        framing, keep_alive = b"", False
    if not keep_alive:
        connection = b"Connection: close\r\n"
    else:
        connection = b"" if client_11 else b"Connection: keep-alive\r\n"
    head = header_rules.client_response_head(
        response.status_line, response.headers, framing=framing, connection=connection,
        tokens=response.connection_tokens)
    conn.status = status

    if body == _NO_BODY:
        conn.send(head)
        return keep_alive, response.keep_alive and not rest
    if body == _LENGTH:
        length = response.content_length
        conn.send(head + rest[:length] if len(rest) < 65536 else head)
        if len(rest) >= 65536:
            conn.send(rest[:length])
        conn.body_bytes += min(len(rest), length)
        _copy_exactly(upstream_sock, conn, length - len(rest))
        return keep_alive, response.keep_alive and len(rest) <= length
    if body == _CHUNKED:
        response.feed(rest)
        conn.send(head + _rechunk(response, conn, client_11))
        while not response.complete:
            data = upstream_sock.recv(65536)
            if not data:
                raise UpstreamError(502, "upstream closed the connection mid-body")
            response.feed(data)
            if response.pieces:
                conn.send(_rechunk(response, conn, client_11))
        if client_11:
            conn.send(header_rules.LAST_CHUNK)
        return keep_alive, response.keep_alive and not response.extra
    # _UNTIL_CLOSE: an HTTP/1.0-style body that ends when the upstream closes.
    conn.send(head + _frame(rest, client_11) if rest else head)
    conn.body_bytes += len(rest)
    while True:
        data = upstream_sock.recv(65536)
        if not data:
            break
        conn.body_bytes += len(data)
        conn.send(_frame(data, client_11))
    if client_11:
        conn.send(header_rules.LAST_CHUNK)
    return keep_alive, False


def _read_available(sock, rest: bytes) -> tuple[bytes, bool]:  # noqa: ANN001
    """`rest` plus whatever can be read without waiting (up to 64 KiB), and whether
    the upstream has closed (so that is the whole body)."""
    pieces, size = [rest], len(rest)
    while size < 65536:
        data = sock.recv_nowait(65536)
        if data is None:
            break
        if not data:
            return b"".join(pieces), True
        pieces.append(data)
        size += len(data)
    return b"".join(pieces), False


def _frame(data: bytes, chunked: bool) -> bytes:
    return b"".join(header_rules.chunk(data)) if chunked else data


def _rechunk(response: UpstreamResponse, conn, chunked: bool) -> bytes:  # noqa: ANN001
    pieces, response.pieces = response.pieces, []
    size = sum(len(piece) for piece in pieces)
    conn.body_bytes += size
    if not size:
        return b""
    if not chunked:
        return b"".join(pieces)
    return b"".join([b"%x\r\n" % size, *pieces, b"\r\n"])


def _copy_exactly(upstream_sock, conn, remaining: int) -> None:  # noqa: ANN001
    """Copy `remaining` body bytes through a pooled buffer: recv_into, then send."""
    if remaining <= 0:
        return
    buffer = pool.get()
    try:
        while remaining > 0:
            count = upstream_sock.recv_into(buffer, min(remaining, len(buffer)))
            if not count:
                raise UpstreamError(502, "upstream closed the connection mid-body")
            conn.send(buffer[:count])
            conn.body_bytes += count
            remaining -= count
    finally:
        pool.put(buffer)
