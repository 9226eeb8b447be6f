"""Parsing an upstream's response head: a strict fast path, llhttp for the rest.

Almost every head an upstream sends is plain: a status line, then `name: value`
lines, all CRLF-terminated, with no control characters. One regular
expression checks that whole shape in C; a second picks out the few lines
that decide the framing; a third (headers.py) drops the hop-by-hop lines when
the head is relayed. No parser object is made and no Python code runs per header (a new
llhttp parser with its callbacks cost more than the rest of a request's
handling). A head the first expression does not accept (bare LF, obs-fold,
odd bytes) goes to llhttp, which decides as before. The expression accepts
only heads llhttp accepts too, so the fast path changes speed, never verdicts.

The framing checks are nginx's: a response with both Content-Length and
Transfer-Encoding, two lengths, or a coding other than chunked is invalid (502).
"""

from __future__ import annotations

import re

import httptools

from workers import abnf
from workers.errors import UpstreamError
from workers.headers import (
    PLAIN_TOKENS,
    add_connection_tokens,
    client_response_head,
    client_response_head_from_lines,
)

# RFC 9112 §4: HTTP-version SP 3DIGIT SP reason-phrase CRLF, the reason being
# HTAB / SP / VCHAR / obs-text (llhttp also takes a missing SP and reason).
# RFC 9110 §5.1, §5.5: field-name is a token; field-value is HTAB / SP / VCHAR / obs-text.
# Groups: the minor version, the status, the reason, and the header lines from
# the CRLF that ends the status line to the one that ends the last header.
_PLAIN_HEAD = re.compile(
    abnf.HTTP_1_PREFIX + b"(" + abnf.HTTP_1_MINOR + b") (" + abnf.STATUS_CODE_FROM_100 + b")"
    + b"(?: (" + abnf.REASON_PHRASE + b"))?"
    + b"(" + abnf.CRLF + b"(?:" + abnf.FIELD_LINE + abnf.CRLF + b")*)"
    + abnf.CRLF
)
# On the lower-cased header lines of a head _PLAIN_HEAD accepted: the lines that
# decide framing and reuse (their values are read case-blind anyway). The
# leading \n lets re search for a literal instead of trying every position;
# lower-casing first and leaving trailing whitespace to _check_framing keeps
# the expression simple, which makes it about a third faster.
# No head parser may backtrack super-linearly (a 60,000-space value must cost
# microseconds): each expression ends with a greedy run that nothing follows, so
# a match never gives characters back, and what trails a value is stripped in
# Python. (`[^\r]*?[ \t]*\r`, a lazy run then the whitespace before the CR, was
# quadratic in the spaces inside a value.) Every line of these heads ends in CRLF.
_FRAMING_LINE = re.compile(rb"\n(content-length|transfer-encoding|connection):" + abnf.OWS
                           + rb"([^\r]*)")
_HEADER_LINE = re.compile(rb"\n([^:\r\n]+):([^\r]*)")
_FRAMING_NAMES = frozenset({b"content-length", b"transfer-encoding", b"connection"})


class ResponseHead:
    """One parsed response head. `lines` holds the header lines as received,
    from the CRLF that ends the status line to the CRLF that ends the last
    header; `headers` splits them into pairs on demand."""

    __slots__ = ("status", "reason", "version", "lines", "_headers", "content_length",
                 "chunked", "keep_alive", "connection_tokens")

    def __init__(self, status: int, reason: bytes, version: str, lines: bytes) -> None:
        self.status, self.reason, self.version, self.lines = status, reason, version, lines
        self._headers: list[tuple[bytes, bytes]] | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = False
        self.connection_tokens: frozenset[bytes] = frozenset()

    @property
    def status_line(self) -> bytes:
        return b"HTTP/1.1 %d %s\r\n" % (self.status, self.reason)

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        if self._headers is None:
            # RFC 9110 §5.5: the whitespace around a value is not part of it.
            self._headers = [(name, value.strip(b" \t"))
                             for name, value in _HEADER_LINE.findall(self.lines)]
        return self._headers

    def client_head(self, framing: bytes, connection: bytes) -> bytes:
        """The head relayed to the client: the end-to-end headers as received,
        then our framing and Connection lines (headers.client_response_head)."""
        if self.connection_tokens and not self.connection_tokens <= PLAIN_TOKENS:
            # Connection names other headers to drop: the general rule.
            return client_response_head(self.status_line, self.headers, framing=framing,
                                        connection=connection, tokens=self.connection_tokens)
        return client_response_head_from_lines(self.status, self.reason, self.lines,
                                               framing=framing, connection=connection)


def parse_response_head(head: bytes) -> ResponseHead:
    """Parse a head that ends with its blank line; UpstreamError(502) if invalid."""
    match = _PLAIN_HEAD.fullmatch(head)
    if match is None:
        return _parse_with_llhttp(head)
    minor, status, reason, lines = match.groups()
    response = ResponseHead(int(status), reason or b"", "1.1" if minor == b"1" else "1.0", lines)
    _check_framing(response, _FRAMING_LINE.findall(lines.lower()))
    return response


def _check_framing(response: ResponseHead, framing: list[tuple[bytes, bytes]]) -> None:
    """Content-Length, Transfer-Encoding and Connection, checked as nginx does,
    and whether the connection can be reused (llhttp's should_keep_alive)."""
    lengths = 0
    tokens: frozenset[bytes] = response.connection_tokens
    for name, value in framing:
        # The names are these three, in any case: their lengths tell them apart.
        size = len(name)
        if size == 14:  # Content-Length
            lengths += 1
            if not value.isdigit():
                value = value.rstrip(b" \t")
            # Over 18 digits would overflow llhttp's (and nginx's) 64-bit length.
            if not value.isdigit() or len(value) > 18:
                raise UpstreamError(502, "upstream sent an invalid Content-Length")
            response.content_length = int(value)
        elif size == 10:  # Connection
            tokens = add_connection_tokens(tokens, value)
        else:  # Transfer-Encoding
            if value.rstrip(b" \t").lower() != b"chunked" or response.chunked:
                raise UpstreamError(502, "upstream sent an unsupported Transfer-Encoding")
            response.chunked = True
    if lengths > 1 or (lengths and response.chunked):
        raise UpstreamError(502, "upstream sent ambiguous framing")
    response.connection_tokens = tokens
    # HTTP/1.0 responses, `Connection: close` and a body that only the close
    # can end all end the connection's reuse.
    status = response.status
    response.keep_alive = (response.version == "1.1" and b"close" not in tokens and (
        response.content_length is not None or response.chunked
        or status < 200 or status in (204, 304)))


class _LlhttpHead:
    """httptools callbacks for the heads the fast path leaves to llhttp."""

    def __init__(self) -> None:
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.response: ResponseHead | None = None
        self.parser = httptools.HttpResponseParser(self)

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value.strip(b" \t")))

    def on_headers_complete(self) -> None:
        parser = self.parser
        lines = b"".join([b"\r\n", *(b"%s: %s\r\n" % pair for pair in self.headers)])
        response = ResponseHead(parser.get_status_code(), self.reason,
                                parser.get_http_version(), lines)
        response._headers = self.headers
        _check_framing(response, [(name, value) for name, value in self.headers
                                  if name.lower() in _FRAMING_NAMES])
        self.response = response


_VALID_FIELD_LINE = re.compile(abnf.FIELD_LINE)
_VALID_STATUS_LINE = re.compile(abnf.HTTP_1_PREFIX + abnf.HTTP_1_MINOR + b" "
                                + abnf.STATUS_CODE_FROM_100 + b"(?: " + abnf.REASON_PHRASE
                                + b")?")
_SHOWN_LINE = 100  # bytes of a bad line quoted in the error log


def _offending_line(head: bytes) -> str:
    """Which line of a refused head is wrong, for the error log (the operator's
    first question): the status line, or the first header line that is not
    `name: value` by RFC 9112's grammar. Only on the failure path."""
    lines = head.split(b"\r\n")
    if not _VALID_STATUS_LINE.fullmatch(lines[0]):
        return f" in the status line {_quoted(lines[0])}"
    for line in lines[1:]:
        if line and not _VALID_FIELD_LINE.fullmatch(line):
            return f" in the header line {_quoted(line)}"
    return ""


def _quoted(line: bytes) -> str:
    text = line[:_SHOWN_LINE].decode("latin-1")
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return f'"{shown}"' + ("..." if len(line) > _SHOWN_LINE else "")


def _parse_with_llhttp(head: bytes) -> ResponseHead:
    parsing = _LlhttpHead()
    try:
        parsing.parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # a 101: llhttp stops after the head; the rest belongs to the tunnel
    except httptools.HttpParserCallbackError as exc:
        if isinstance(exc.__context__, UpstreamError):
            raise exc.__context__ from None
        raise UpstreamError(502, f"upstream sent an invalid response: {exc}") from None
    except httptools.HttpParserError as exc:
        raise UpstreamError(502, f"upstream sent an invalid response: {exc}"
                                 + _offending_line(head)) from None
    if parsing.response is None:
        raise UpstreamError(502, "upstream sent an incomplete response head")
    return parsing.response
