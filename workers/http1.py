"""Client-side HTTP/1.1 reading: httptools (llhttp) callbacks fill a Request.

Sans-IO: the driver (workers/driver.py) feeds each read to the parser, which
queues what the callbacks produce (a head, body pieces, the end), so pipelined
requests are answered in order and a body is never held whole: the socket is
only read when the queue is empty. llhttp is strict by default; the checks it leaves to us
(Host count, framing conflicts, versions) are in `_check_head`.

Most requests are a plain GET or HEAD with no body: `_plain_head` reads those
with two regular expressions, in C, instead of a Python callback per header
(the same trick as response_head.py). It takes only heads that llhttp would
accept and that need none of `_check_head`'s rules beyond one Host; anything
else (a body, an Upgrade, odd bytes, a malformed line) goes to llhttp, which
gives its verdict as before.
"""

from __future__ import annotations

import re
from collections import deque

import httptools

from workers import abnf
from workers.document_uri import document_uri
from workers.errors import HttpError
from workers.headers import add_connection_tokens

RECV_SIZE = 65536  # body reads
# A head is read into one page-sized buffer first, as nginx reads a request line
# into client_header_buffer_size and an upstream head into proxy_buffer_size:
# recv() allocates what it is asked for, and 64 KiB per small request cost more
# in malloc and cache misses than the read itself. Bigger heads take more reads.
HEAD_RECV_SIZE = 8192
# nginx's large_client_header_buffers 4 8k: no line over 8 KiB, no head over 32 KiB.
MAX_HEAD_SIZE = 32 * 1024
MAX_LINE_SIZE = 8 * 1024
MAX_URI_SIZE = 8 * 1024
_HEAD, _BODY, _END = 0, 1, 2
NEED_MORE = object()  # body_event: nothing queued, read more
# llhttp drops the whitespace before a value and keeps what trails it: so do these.
# (No CR after the value's run: `[ \t]*([^\r]*)\r` would backtrack quadratically
# over a run of spaces with no CR after it; the run stops at the CR anyway.)
_HEADER_LINE = re.compile(rb"\n([^:\r\n]+):" + abnf.OWS + rb"([^\r]*)")
_NO_TOKENS: frozenset[bytes] = frozenset()
# nginx's ngx_http_validate_host refuses these in a host: controls, space, DEL, a path
# separator, and an empty label ("..").
_BAD_HOST = re.compile(rb"[\x00-\x20\x7f/\\]|\.\.")
# llhttp skips spaces and tabs before a value (RFC 9110 §5.6.3 OWS); nginx skips
# spaces only, and reads `Transfer-Encoding:<TAB>chunked` as an unknown coding: a
# tab there is a known smuggling obfuscation, refused as nginx refuses it.
_TAB_BEFORE_VALUE = re.compile(rb"\n(?:transfer-encoding|content-length|host): *\t",
                               re.IGNORECASE)

# A bodiless request in origin form, with a head llhttp accepts (RFC 9112 §3,
# §5: token names; values of HTAB / SP / VCHAR / obs-text; CRLF line ends).
# Groups: method, target, minor version, the header lines (each after a CRLF).
_PLAIN_REQUEST_HEAD = re.compile(
    rb"(GET|HEAD|DELETE|OPTIONS) (" + abnf.ORIGIN_FORM + b") "
    + abnf.HTTP_1_PREFIX + b"(" + abnf.HTTP_1_MINOR + b")"
    + b"((?:" + abnf.CRLF + abnf.FIELD_LINE + b")*" + abnf.CRLF + b")" + abnf.CRLF)
# The header lines the plain path must look at; any of the last five sends the
# request to llhttp and `_check_head`.
# (llhttp reads Proxy-Connection as Connection; that case is left to it.)
_NOTABLE_LINE = re.compile(
    rb"\n(host|connection|content-length|transfer-encoding|upgrade|expect|x-forwarded-for"
    rb"|proxy-connection):" + abnf.OWS + rb"([^\r]*)",
    re.IGNORECASE)


class Request:
    """One parsed request head."""

    __slots__ = ("method", "target", "path", "uri", "query", "version", "_headers", "lines", "host",
                 "content_length", "chunked", "keep_alive", "upgrade", "expect_continue",
                 "connection_tokens", "has_body")

    def __init__(self) -> None:
        self._headers: list[tuple[bytes, bytes]] | None = []
        # The header lines as received (each after a CRLF, the last one followed by
        # one), when `_plain_head` read the head: headers.py copies them as they are.
        self.lines: bytes | None = None
        self.target = b""
        self.host = b""
        self.content_length: int | None = None
        self.chunked = False
        self.upgrade: bytes | None = None
        self.expect_continue = False
        self.connection_tokens: frozenset[bytes] = _NO_TOKENS
        self.has_body = False  # chunked, or a Content-Length above 0


    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        if self._headers is None:
            self._headers = _HEADER_LINE.findall(self.lines)
        return self._headers

    def header(self, lower_name: bytes) -> bytes | None:
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None


class RequestReader:
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.events: deque = deque()
        self.request: Request | None = None
        self.head_size = 0
        self.upgrade_rest: bytes | None = None  # bytes after an Upgrade request's head
        self.started = False  # bytes of the next request have arrived
        self.served = False  # a request head was read on this connection
        self.leftover = b""  # bytes after a head `_plain_head` took (pipelining)
        self.between_messages = True  # llhttp holds no part of a message
        self.upgraded = False  # llhttp saw an Upgrade: it alone reads from then on
        self.in_trailer = False  # the head is complete: header callbacks are trailer fields
        self.line_run = 0  # raw bytes of the head since its last LF (_count_line_run)
        self.tab_tail = b""  # an unfinished head's last line (_refuse_tab_before_value)
        # A begun request's bytes until its first LF: an HTTP/0.9 line is refused
        # whichever read brings the LF (_refuse_http09).
        self.first_line: bytes | None = None
        self.in_head = False  # llhttp is inside a request head
        self.heads_begun = 0  # heads llhttp began during the current feed
        self.priming = False  # a primer head is being fed (see _decline_upgrade)
        # A parse error met after complete requests in the same read: raised once
        # those are served (nginx answers a valid request, then the 400).
        self.deferred_error: HttpError | None = None

    # -- httptools callbacks ---------------------------------------------------
    def on_message_begin(self) -> None:
        if self.priming:
            return
        self.in_head = True
        self.heads_begun += 1
        self.request = Request()
        self.head_size = 0
        self.between_messages = False
        if self.in_trailer:
            self.in_trailer = False
            self.parser.set_dangerous_leniencies(lenient_chunked_length=False,
                                                 lenient_transfer_encoding=False)

    def on_url(self, url: bytes) -> None:
        if self.priming:
            return
        self.request.target += url
        if len(self.request.target) > MAX_URI_SIZE:
            raise HttpError(414, "request target over 8 KiB")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.priming:
            return
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD_SIZE:
            raise HttpError(431, "request header block over 32 KiB")
        if len(name) + len(value) > MAX_LINE_SIZE - 4:
            raise HttpError(431, "request header line over 8 KiB")
        if self.in_trailer:
            # A chunked body's trailer section: dropped, as nginx drops it. Its fields
            # never join the head, nor become uwsgi vars (DESIGN.md, data paths).
            return
        self.request.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.priming:
            self.priming = False
            return
        request = self.request
        request.method = self.parser.get_method()
        request.version = self.parser.get_http_version()
        request.keep_alive = self.parser.should_keep_alive()
        _check_head(request)
        if request.chunked:
            self._expect_trailer()
        self.events.append((_HEAD, request))

    def _expect_trailer(self) -> None:
        """From here, header callbacks are a chunked body's trailer fields (dropped).

        llhttp refuses a Content-Length or Transfer-Encoding in a trailer, as if in
        a head; nginx ignores them with the rest of the trailer and answers 200.
        The two leniencies below only allow that: they are set once the head has
        been checked (`_check_head` refuses both framings together, and any coding
        but chunked) and cleared when the next message begins.
        """
        self.in_trailer = True
        self.parser.set_dangerous_leniencies(lenient_chunked_length=True,
                                             lenient_transfer_encoding=True)

    def on_body(self, body: bytes) -> None:
        self.events.append((_BODY, body))

    def on_message_complete(self) -> None:
        self.events.append((_END, None))
        self.between_messages = True

    # -- reading -----------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        # Where llhttp stood when this read began, for _refuse_tab_before_value.
        started_between, started_in_head = self.between_messages, self.in_head
        queued = len(self.events)
        self.heads_begun = 0
        declined = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            rest = data[upgrade.args[0]:]
            if self.request is not None and self.request.has_body:
                declined = rest  # read outside this handler, so that an error met there
                # keeps its own status (not this exception as its context)
            else:
                self.upgrade_rest = rest
                self.upgraded = True
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._refuse(cause if isinstance(cause, HttpError)
                         else HttpError(400, f"bad request: {exc}"))
        except httptools.HttpParserError as exc:
            self._refuse(HttpError(400, f"bad request: {exc}"))
        if declined is not None:
            self._decline_upgrade(declined)
        if b"\t" in data or self.tab_tail:
            self._refuse_tab_before_value(data, started_between, started_in_head, queued)
        if self.in_head:  # keep the unfinished line (bounded by _count_line_run)
            last = data.rfind(b"\n")
            self.tab_tail = (self.tab_tail + data if last < 0
                             else data[max(last - 1, 0):])[-MAX_LINE_SIZE - 64:]
        elif self.tab_tail:
            self.tab_tail = b""

    def _refuse(self, error: HttpError, drop_unfinished: bool = False) -> None:
        """Raise a parse error now, or after the whole requests read before it (with
        `drop_unfinished`, what was queued after the last of them is dropped)."""
        events = self.events
        if any(kind == _END for kind, _ in events):
            if drop_unfinished:
                while events[-1][0] != _END:
                    events.pop()
            self.deferred_error = error
            return
        raise error from None

    def _decline_upgrade(self, rest: bytes) -> None:
        """An Upgrade request with a body is served as an ordinary request.

        llhttp ends an Upgrade request at its head and leaves its body unread
        (the bytes after the head would be the new protocol's). But a request
        asking for an upgrade is an ordinary request until a 101 comes back, and
        Content-Length or chunked frames its body (RFC 9110 §7.8, RFC 9112 §6).
        We decline the upgrade (a server may ignore Upgrade, RFC 9110 §7.8): the
        request goes upstream without Upgrade, so no 101 can come back, and its
        body is read as any body. A WebSocket handshake is a GET with no body,
        so it is not concerned.
        """
        request = self.request
        request.upgrade = None
        self.events.pop()  # the end llhttp gave the message at its head
        self.between_messages = False
        # llhttp's parser stays in upgrade mode: a new one, primed with a head of
        # the same framing, reads the body (and the requests after it) instead.
        self.parser = httptools.HttpRequestParser(self)
        framing = (b"Transfer-Encoding: chunked\r\n" if request.chunked
                   else b"Content-Length: %d\r\n" % request.content_length)
        self.priming = True
        self.parser.feed_data(b"POST / HTTP/1.1\r\nHost: primer\r\n" + framing + b"\r\n")
        if request.chunked:
            self._expect_trailer()
        if rest:
            self._feed(rest)

    # -- sans-IO reading, for workers/driver.py ------------------------------------
    def head_from(self, data: bytes) -> Request | None:
        """`data` (just read, or b"") fed; the next complete request head, or None
        while it is not whole (the caller keeps client_header_timeout). Raises
        HttpError for a bad head, or a parse error deferred after earlier requests."""
        if data:
            self.started = True
            if self.between_messages and not self.upgraded and not self.events:
                request = self._plain_head(data)
                if request is not None:
                    self.served = True
                    return request
            request = self.request
            self._feed(data)
            self._count_line_run(data)
            if self.events:
                self.first_line = None
            else:
                if self.request is not request:  # a message began at data[0]; not whole
                    self.first_line = data
                elif self.first_line is not None:
                    self.first_line += data
                if self.first_line is not None:
                    _refuse_http09(self.first_line)
                    line = self.first_line.lstrip(b"\r\n")
                    if b"\n" in line or len(line) > MAX_LINE_SIZE:
                        self.first_line = None  # the line is past (or llhttp bounds it)
        events = self.events
        if not events:
            if self.deferred_error is not None:
                raise self.deferred_error
            return None
        kind, request = events.popleft()
        if kind != _HEAD:
            raise HttpError(400, "request body was not consumed")  # a caller bug
        self.served = True
        if not request.has_body and events and events[0][0] == _END:
            events.popleft()  # llhttp ends a bodiless message in the same feed as its head
        return request

    def body_event(self) -> bytes | None | object:
        """The next piece of the current body, None at its end, or NEED_MORE."""
        events = self.events
        if not events:
            if self.deferred_error is not None:
                raise self.deferred_error
            return NEED_MORE
        kind, data = events.popleft()
        if kind == _HEAD:  # cannot happen: END always precedes the next HEAD
            raise HttpError(400, "request framing error")
        return data if kind == _BODY else None

    def feed_body(self, data: bytes) -> None:
        """Body bytes just read (b"": the client closed mid-body, a 400)."""
        if not data:
            raise HttpError(400, "client closed the connection mid-body")
        self._feed(data)

    @property
    def idle(self) -> bool:
        """Between requests, with nothing of the next one read."""
        return (self.between_messages and not self.events and not self.leftover
                and self.deferred_error is None)

    def _refuse_tab_before_value(self, data: bytes, started_between: bool,
                                 started_in_head: bool, queued: int) -> None:
        """400 for a tab before a Transfer-Encoding, Content-Length or Host value.

        llhttp drops it, so the raw bytes just fed are looked at, as far as they
        hold heads: a read that held one head only (from its start, or continuing
        the previous read's) is looked at up to that head's end, so a body in the
        same read is not; a read in which a head began after a body is looked at
        whole; a read of body bytes alone, not at all. What llhttp queued of the
        refused request and after it is dropped; the requests before it are
        answered first (`_refuse`): a pipelined request that came in the same read
        as the refused one is not, and the client may send it again."""
        heads = self.heads_begun + started_in_head  # (a head begun in an earlier read)
        if heads == 0:
            return
        window = self.tab_tail + data if self.tab_tail else data
        if heads == 1 and (started_between or started_in_head):
            end = window.find(b"\r\n\r\n")
            if end >= 0:
                window = window[:end]
        if b"\t" in window and _TAB_BEFORE_VALUE.search(window) is not None:
            # Which head held it is not known: what this read queued is dropped.
            events = self.events
            while len(events) > queued:
                events.pop()
            self._refuse(HttpError(400, "a tab before a Transfer-Encoding, Content-Length "
                                        "or Host value"), drop_unfinished=True)

    def _count_line_run(self, data: bytes) -> None:
        """nginx refuses a header line over 8 KiB (large_client_header_buffers 4 8k).
        llhttp drops the whitespace before a value, so a line of 60,000 spaces looks
        short to on_header: the raw bytes since the last LF are counted across the
        head's reads instead (a read is a page, so only a run across reads can be
        that long)."""
        first = data.find(b"\n")
        if first < 0:
            self.line_run += len(data)
        elif self.line_run + first > MAX_LINE_SIZE:
            self.line_run += first
        else:
            self.line_run = 0 if self.events else len(data) - data.rfind(b"\n") - 1
        if self.line_run > MAX_LINE_SIZE:
            raise HttpError(431, "request header line over 8 KiB")

    def _plain_head(self, data: bytes) -> Request | None:
        """A plain bodiless request at the start of `data`, read without llhttp;
        None if llhttp must read it (the bytes are then fed to it as usual)."""
        match = _PLAIN_REQUEST_HEAD.match(data)
        if match is None:
            return None
        method, target, minor, lines = match.groups()
        if b"\t" in lines and _TAB_BEFORE_VALUE.search(lines) is not None:
            return None  # llhttp's path refuses it (_refuse_tab_before_value)
        host = None
        tokens = _NO_TOKENS
        for name, value in _NOTABLE_LINE.findall(lines):
            # The names are _NOTABLE_LINE's, in any case: their lengths tell them apart.
            size = len(name)
            if size == 4 and host is None:  # Host
                host = value
            elif size == 10:  # Connection
                tokens = add_connection_tokens(tokens, value)
            else:  # a second Host, framing, Upgrade, Expect, X-Forwarded-For...
                return None
        # (A head read in one page has no line over MAX_LINE_SIZE.)
        if (not host or len(target) > MAX_URI_SIZE or match.end() > MAX_LINE_SIZE
                or not _valid_host(host)):
            return None
        path, _, query = target.partition(b"?")
        if b"%" in path or b"//" in path or b"/." in path or b"#" in path:
            return None  # $uri differs from the path: llhttp's path normalises it
        request = Request()
        request.method, request.target, request.lines, request._headers = \
            method, target, lines, None
        request.host, request.connection_tokens = host, tokens
        # llhttp's should_keep_alive: 1.1 unless `close`; 1.0 only with `keep-alive`.
        if minor == b"1":
            request.version = "1.1"
            request.keep_alive = b"close" not in tokens
        else:
            request.version = "1.0"
            request.keep_alive = b"keep-alive" in tokens
        request.path = request.uri = path
        request.query = query
        self.leftover = data[match.end():]
        return request

    def take_upgrade_rest(self) -> bytes:
        """Bytes the client sent after an Upgrade request's head (for the tunnel)."""
        rest, self.upgrade_rest = self.upgrade_rest or b"", None
        return rest

    def resume_after_refused_upgrade(self) -> None:
        """The upstream did not switch protocols: parse what followed as HTTP."""
        rest = self.take_upgrade_rest()
        if rest:
            self._feed(rest)


def _refuse_http09(data: bytes) -> None:
    """After an HTTP/0.9 request line (`GET /\\r\\n`) llhttp waits for header lines while
    the client waits for an answer: a complete first line with no version is a 400 now."""
    data = data.lstrip(b"\r\n")  # RFC 9112 §2.2: empty lines before a request are ignored
    line_end = data.find(b"\n")
    if line_end >= 0 and b" HTTP/" not in data[:line_end]:
        raise HttpError(400, "HTTP/0.9 request")


def _check_head(request: Request) -> None:
    """What llhttp leaves to the application, answered as nginx and RFC 9112 do."""
    if request.version not in ("1.1", "1.0"):
        # DESIGN.md: HTTP/0.9 is a bad request (no head to answer); 2.0+ is 505.
        raise HttpError(400 if request.version == "0.9" else 505,
                        f"HTTP/{request.version} is not supported")
    if request.method == b"CONNECT":
        raise HttpError(405, "CONNECT is not supported by a reverse proxy")
    hosts = 0
    content_lengths = 0
    connection_upgrade = False
    upgrade = None
    for name, value in request.headers:
        if len(name) not in (4, 6, 7, 10, 14, 17):  # fast path: none of the names below
            continue
        lower = name.lower()
        if lower == b"host":
            hosts += 1
            request.host = value.rstrip(b" \t")  # OWS is not part of a value (RFC 9110 §5.5)
        elif lower == b"content-length":
            content_lengths += 1
            # llhttp keeps trailing whitespace (OWS, RFC 9110 §5.5), as nginx strips it.
            if not value.rstrip(b" \t").isdigit():
                raise HttpError(400, "invalid Content-Length")
            request.content_length = int(value)
        elif lower == b"transfer-encoding":
            # RFC 9112 §6.1: we accept exactly "chunked"; anything else could be read
            # differently by another parser (llhttp also rejects most of these).
            # llhttp's own reading: spaces may trail the coding, a tab may not (and
            # the leniencies of _expect_trailer would let it read such a body until
            # the close): the same rule here, so that both read one framing.
            if value.rstrip(b" ").lower() != b"chunked" or request.chunked:
                raise HttpError(400, "unsupported Transfer-Encoding")
            request.chunked = True
        elif lower == b"connection":
            tokens = request.connection_tokens | {
                token.strip() for token in value.lower().split(b",")}
            request.connection_tokens = tokens
            connection_upgrade = b"upgrade" in tokens
        elif lower == b"upgrade":
            upgrade = value
        elif lower == b"expect":
            if value.strip().lower() != b"100-continue":
                raise HttpError(417, "unsupported Expect")
            request.expect_continue = request.version == "1.1"
    # RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one in 1.0, and a valid one
    # (an empty Host too is refused, as nginx refuses it: no location serves it).
    if hosts > 1 or (hosts == 0 and request.version == "1.1"):
        raise HttpError(400, "a request needs exactly one Host header")
    if hosts and not _valid_host(request.host):
        raise HttpError(400, "invalid Host header")
    # RFC 9112 §6.3: Content-Length with Transfer-Encoding, or two lengths, is smuggling.
    if content_lengths > 1 or (content_lengths and request.chunked):
        raise HttpError(400, "ambiguous request framing")
    # RFC 9112 §6.1 and nginx: Transfer-Encoding in an HTTP/1.0 request is faulty framing.
    if request.chunked and request.version != "1.1":
        raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
    request.has_body = request.chunked or bool(request.content_length)
    if upgrade is not None and connection_upgrade:
        request.upgrade = upgrade
    target = request.target
    if not target.startswith(b"/"):
        if target[:8].lower().startswith((b"http://", b"https://")):
            target = _take_absolute_form(request, target)
        elif not (target == b"*" and request.method == b"OPTIONS"):
            raise HttpError(400, "invalid request target")
        request.target = target
    request.path, _, request.query = target.partition(b"?")
    # nginx's $uri: locations match on it (routing.py); a path that climbs above the
    # root or holds %00 is a 400 here, as nginx answers.
    path = request.path
    request.uri = document_uri(path.partition(b"#")[0] if b"#" in path else path)


def _take_absolute_form(request: Request, target: bytes) -> bytes:
    """The origin-form of an absolute-form target; its host replaces Host.

    RFC 9112 §3.2.2: a server that gets an absolute-form target ignores Host and
    uses the target's host, wherever the host is used: routing, SERVER_NAME,
    HTTP_HOST, X-Forwarded-Host and the Host sent upstream all see it.
    """
    start = target.find(b"//") + 2
    end = len(target)
    for mark in (b"/", b"?"):
        found = target.find(mark, start)
        if 0 <= found < end:
            end = found
    host = target[start:end]
    if not _valid_host(host) or b"@" in host:  # no userinfo (RFC 9110 §4.2.4)
        raise HttpError(400, "invalid host in the request target")
    request.host = host
    headers = request.headers
    for index, (name, _) in enumerate(headers):
        if len(name) == 4 and name.lower() == b"host":
            headers[index] = (name, host)
            break
    else:
        headers.append((b"Host", host))
    rest = target[end:]
    return rest if rest.startswith(b"/") else b"/" + rest


def _valid_host(host: bytes) -> bool:
    """nginx's ngx_http_validate_host: not empty, no control, space, DEL or path
    separator, no empty label."""
    return bool(host) and _BAD_HOST.search(host) is None
