"""A chunked reply body, de-chunked by llhttp a piece at a time (exchange.Reply's reader).

The body's end is found exactly, and bytes past it are noted (`extra`), never
relayed: nginx's "upstream sent data after final chunk". The trailer section
is dropped, as nginx drops it.
"""

from __future__ import annotations

import httptools

from workers.errors import UpstreamError


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


