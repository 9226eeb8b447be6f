"""Reading an upstream's HTTP response and relaying it to the client, re-framed.

Shared by proxy_pass and uwsgi_pass. The head is found first (up to the blank
line) and parsed on its own (response_head.py), so the body's framing is ours
to decide: a HEAD, 204 or 304 response has no body whatever its headers say;
Content-Length bodies are copied through big pooled buffers; chunked and
close-delimited bodies are re-chunked for HTTP/1.1 clients.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import httptools

from workers import headers as header_rules
from workers.buffering import HeldOutput, wants_buffering
from workers.buffers import pool
from workers.errors import UpstreamError
from workers.http1 import HEAD_RECV_SIZE
from workers.response_head import ResponseHead, parse_response_head
from workers.upstreams import log_excess

MAX_RESPONSE_HEAD = 64 * 1024
_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)


class _DataAfterEnd(Exception):
    """Bytes after the end of the body (stops llhttp from parsing them)."""


class ChunkedBody:
    """De-chunks a chunked response body with llhttp, a piece at a time.

    The parser is primed with a minimal chunked head, so it reads the body
    exactly as it would have after the real head.
    """

    __slots__ = ("parser", "pieces", "complete", "extra", "tail")

    _PRIMER = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.complete = False
        self.extra = False  # bytes followed the last chunk
        self.tail = b""  # the last bytes fed, to see where the body ended
        self.parser = httptools.HttpResponseParser(self)
        self.parser.feed_data(self._PRIMER)
        # The trailer section is dropped (nginx does not relay it); llhttp would
        # refuse a Content-Length or Transfer-Encoding in it, as in a head. These two
        # leniencies only allow that: the head was the primer's.
        self.parser.set_dangerous_leniencies(lenient_chunked_length=True,
                                             lenient_transfer_encoding=True)

    # -- httptools callbacks ---------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:  # nginx: "upstream sent data after final chunk": not relayed
            raise _DataAfterEnd()

    def on_body(self, body: bytes) -> None:
        self.pieces.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    def feed(self, data: bytes) -> None:
        if self.complete:
            self.extra = self.extra or bool(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _DataAfterEnd):
                self.extra = True  # dropped, and the connection is not reused
                return
            raise UpstreamError(502, f"upstream sent an invalid response: {exc}") from None
        except httptools.HttpParserError as exc:
            if self.complete:  # llhttp's view of what follows the body: ours is "excess"
                self.extra = True
                return
            raise UpstreamError(502, f"upstream sent an invalid response: {exc}") from None
        if self.complete and not self.extra:
            # llhttp skips empty lines after a message without a word, so bytes past
            # the end show only here: a chunked body ends with CRLF CRLF, after the
            # last chunk's size line or a trailer field, never after an empty line.
            tail = (self.tail + data)[-6:]
            if not tail.endswith(b"\r\n\r\n") or tail.endswith(b"\r\n\r\n\r\n"):
                self.extra = True
        else:
            self.tail = (self.tail + data)[-6:] if len(data) < 6 else data[-6:]


def read_response_head(sock, data: bytes | None = None) -> tuple[ResponseHead, bytes]:  # noqa: ANN001
    """Read up to the end of the head; returns the parsed head and the bytes after it.

    `data` is what was read already, if anything. Interim 1xx responses other
    than 101 are skipped.
    """
    if data is None:
        # The first read is of a reply to what was just sent: wait, then read (a page,
        # as nginx's proxy_buffer_size: a bigger body is copied by relay_response).
        data = sock.recv_when_ready(HEAD_RECV_SIZE)
    if not data:
        raise UpstreamError(502, "upstream closed the connection before a response")
    while True:
        end = data.find(b"\r\n\r\n")
        while end < 0:
            if len(data) > MAX_RESPONSE_HEAD:
                raise UpstreamError(502, "upstream sent too big a header")
            more = sock.recv(65536)
            if not more:
                raise UpstreamError(502, "upstream closed the connection before a response")
            searched = len(data) - 3
            data += more
            end = data.find(b"\r\n\r\n", searched if searched > 0 else 0)
        response = parse_response_head(data[:end + 4])
        data = data[end + 4:]
        status = response.status
        if status >= 200 or status == 101:
            return response, data


def relay_response(conn, request, upstream_sock, response: ResponseHead,  # noqa: ANN001, PLR0913
                   rest: bytes, keep_alive: bool,
                   release: Callable[[bool], None] | None = None,
                   buffering: tuple[bool, int, int] | None = None) -> tuple[bool, bool]:
    """Send the response to the client. Returns (client keep-alive, upstream reusable).

    With `release`, it is called (with whether the upstream connection may be
    reused) as soon as the whole reply has been read from the upstream, before
    what the client has not taken yet goes out: with `buffering` (the location's
    on/off, memory and file limits, workers/buffering.py) that is held, so a slow
    client does not hold the upstream. Once the head has gone out, an upstream
    failure can only be reported by closing the client connection (the caller
    sees conn.response_started).
    """
    status = response.status
    length = response.content_length
    if (keep_alive and length is not None and length == len(rest) and length < 65536
            and request.version == "1.1" and request.method != b"HEAD"
            and status != 204 and status != 304):
        # The usual small response, whole in hand: one send, keep-alive both ways.
        conn.status = status
        if release is not None:
            release(response.keep_alive)  # all of it is in: the upstream is free first
        conn.send(response.client_head(b"Content-Length: %d\r\n" % length, b"") + rest)
        conn.body_bytes += length
        return True, response.keep_alive
    out = None
    if release is not None and buffering is not None and \
            wants_buffering(response.lines, buffering[0]):
        out = HeldOutput(conn, buffering[1], buffering[2])
    try:
        keep_alive, reusable = _relay_body(conn, request, upstream_sock, response, rest,
                                           keep_alive, out or conn)
    except BaseException:
        if out is not None:
            out.close()
        raise
    if release is not None:
        release(reusable)
    if out is not None:
        out.finish()  # at the client's pace, the upstream let go
    return keep_alive, reusable


def _relay_body(conn, request, upstream_sock, response: ResponseHead, rest: bytes,  # noqa: ANN001, PLR0913
                keep_alive: bool, out) -> tuple[bool, bool]:  # noqa: ANN001 - conn or a HeldOutput
    """relay_response's general case: the client's head and body go through `out`."""
    recv = _reader(out, upstream_sock)
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
    head = response.client_head(framing, connection)
    conn.status = status

    if body == _NO_BODY:
        out.send(head)
        if rest:
            log_excess(upstream_sock, len(rest), "a body of at least ")
        return keep_alive, response.keep_alive and not rest
    if body == _LENGTH:
        length = response.content_length
        have = len(rest)
        if have < 65536:
            out.send(head + rest if have == length else head + rest[:length])
        else:
            out.send(head)
            out.send(rest[:length])
        conn.body_bytes += min(have, length)
        if have < length:
            _copy_exactly(upstream_sock, conn, out, length - have)
        if have > length:
            log_excess(upstream_sock, have - length)
        return keep_alive, response.keep_alive and have <= length
    if body == _CHUNKED:
        chunks = ChunkedBody()
        chunks.feed(rest)
        out.send(head + _rechunk(chunks, conn, client_11))
        while not chunks.complete:
            data = _mid_reply(recv, 65536)
            if not data:
                raise UpstreamError(502, "upstream closed the connection mid-body")
            chunks.feed(data)
            if chunks.pieces:
                out.send(_rechunk(chunks, conn, client_11))
        if client_11:
            out.send(header_rules.LAST_CHUNK)
        if chunks.extra:
            log_excess(upstream_sock, None)
        return keep_alive, response.keep_alive and not chunks.extra
    # _UNTIL_CLOSE: an HTTP/1.0-style body that ends when the upstream closes.
    out.send(head + _frame(rest, client_11) if rest else head)
    conn.body_bytes += len(rest)
    while True:
        data = _mid_reply(recv, 65536)
        if not data:
            break
        conn.body_bytes += len(data)
        out.send(_frame(data, client_11))
    if client_11:
        out.send(header_rules.LAST_CHUNK)
    return keep_alive, False


def _mid_reply(recv, *args):  # noqa: ANN001, ANN002, ANN202 - a bound recv and its arguments
    """An upstream read once the reply has started: a timeout or a failure is the
    upstream's, logged and counted as such (proxy_http._relay), and cuts the reply
    off; it must not pass for the client's own timeout."""
    try:
        return recv(*args)
    except TimeoutError:
        raise UpstreamError(504, "upstream timed out mid-reply") from None
    except OSError as exc:
        raise UpstreamError(502, f"upstream connection failed mid-reply: {exc}") from None


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


def _rechunk(response: ResponseHead, conn, chunked: bool) -> bytes:  # noqa: ANN001
    pieces, response.pieces = response.pieces, []
    size = sum(len(piece) for piece in pieces)
    conn.body_bytes += size
    if not size:
        return b""
    if not chunked:
        return b"".join(pieces)
    return b"".join([b"%x\r\n" % size, *pieces, b"\r\n"])


def _reader(out, upstream_sock):  # noqa: ANN001, ANN202
    """The upstream's recv: through a HeldOutput, which moves held bytes meanwhile."""
    return partial(out.recv, upstream_sock) if isinstance(out, HeldOutput) else upstream_sock.recv


def _copy_exactly(upstream_sock, conn, out, remaining: int) -> None:  # noqa: ANN001
    """Copy `remaining` body bytes: through a pooled buffer (recv_into, then send),
    or through a HeldOutput, which keeps what the client cannot take yet."""
    if remaining <= 0:
        return
    if isinstance(out, HeldOutput):
        while remaining > 0:
            data = _mid_reply(out.recv, upstream_sock, min(remaining, 65536))
            if not data:
                raise UpstreamError(502, "upstream closed the connection mid-body")
            out.send(data)
            conn.body_bytes += len(data)
            remaining -= len(data)
        return
    buffer = pool.get()
    try:
        while remaining > 0:
            count = _mid_reply(upstream_sock.recv_into, buffer, min(remaining, len(buffer)))
            if not count:
                raise UpstreamError(502, "upstream closed the connection mid-body")
            conn.send(buffer[:count])
            conn.body_bytes += count
            remaining -= count
    finally:
        pool.put(buffer)
