"""The driver's HTTP/1.1 reply for one stream, read back into a HEADERS list and DATA.

The driver (workers/driver.py) writes a reply it has already framed for an
HTTP/1.1 client: a head, then a body with a Content-Length, chunked, or none
(HEAD, 204, 304, an interim 1xx). This reader undoes that framing: the status
line becomes `:status`, the connection-specific fields go (RFC 9113 §8.2.2:
Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade), names
are lowercased (§8.2.1), and the body comes out de-chunked with its exact end,
so that a reply cut short is told from a whole one (the stream is then reset,
never ended as if whole).
"""

from __future__ import annotations

from workers.chunked_body import ChunkedBody

_DROPPED = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                      b"upgrade"})
_HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE, _DONE = range(5)
# The driver's heads are bounded (exchange.MAX_RESPONSE_HEAD); this is a backstop.
MAX_HEAD = 128 * 1024


class ReplyHead:
    """A reply head as HTTP/2 sends it: `final` is False for an interim 1xx; `ends`
    when no body follows (the HEADERS frame carries END_STREAM)."""

    __slots__ = ("status", "fields", "final", "ends")

    def __init__(self, status: int, fields: list[tuple[bytes, bytes]], final: bool,
                 ends: bool) -> None:
        self.status = status
        self.fields = fields
        self.final = final
        self.ends = ends


class ReplyError(Exception):
    """The driver wrote something that is not an HTTP/1.1 reply (a bug, not the peer's)."""


class ReplyReader:
    """Fed the driver's reply bytes in pieces; `feed` returns heads and body bytes in order."""

    __slots__ = ("head_request", "state", "buffer", "remaining", "chunks", "complete")

    def __init__(self, head_request: bool) -> None:
        self.head_request = head_request  # RFC 9110 §9.3.2: a HEAD reply has no body
        self.state = _HEAD
        self.buffer = b""
        self.remaining = 0
        self.chunks: ChunkedBody | None = None
        self.complete = False  # the reply has ended where its framing says

    @property
    def until_close(self) -> bool:
        """The body runs until the driver closes (an HTTP/1.0-style reply)."""
        return self.state == _UNTIL_CLOSE

    def feed(self, data: bytes) -> list[ReplyHead | bytes]:
        out: list[ReplyHead | bytes] = []
        while data:
            state = self.state
            if state == _HEAD:
                data = self._head(data, out)
            elif state == _LENGTH:
                piece = data[:self.remaining]
                data = data[len(piece):]
                self.remaining -= len(piece)
                out.append(piece)
                if not self.remaining:
                    self._end()
            elif state == _CHUNKED:
                chunks = self.chunks
                chunks.feed(data)
                data = b""
                if chunks.pieces:
                    out.extend(chunks.pieces)
                    chunks.pieces = []
                if chunks.complete:
                    self._end()
            elif state == _UNTIL_CLOSE:
                out.append(data)
                data = b""
            else:  # past the end: nothing more is the client's
                break
        return out

    def _end(self) -> None:
        self.state = _DONE
        self.complete = True

    def _head(self, data: bytes, out: list[ReplyHead | bytes]) -> bytes:
        buffer = self.buffer + data if self.buffer else data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise ReplyError("reply head too long")
            self.buffer = buffer
            return b""
        self.buffer = b""
        head, rest = buffer[:end], buffer[end + 4:]
        status_line, *lines = head.split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ReplyError(f"not a status line: {status_line[:80]!r}")
        status = int(parts[1])
        fields: list[tuple[bytes, bytes]] = []
        chunked = False
        length = None
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon:
                raise ReplyError(f"not a header line: {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            if name == b"transfer-encoding":
                chunked = value.lower().endswith(b"chunked")
            if name in _DROPPED:
                continue
            if name == b"content-length":
                length = int(value)
            fields.append((name, value))
        interim = status < 200
        if interim or self.head_request or status in (204, 304):
            bodiless = True
        elif chunked:
            bodiless = False
            self.state = _CHUNKED
            self.chunks = ChunkedBody()
        elif length is not None:
            bodiless = length == 0
            self.state = _LENGTH
            self.remaining = length
        else:
            bodiless = False
            self.state = _UNTIL_CLOSE
        out.append(ReplyHead(status, fields, not interim, bodiless and not interim))
        if interim:
            self.state = _HEAD  # the final head follows
        elif bodiless:
            self._end()
        return rest
