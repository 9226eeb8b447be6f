"""Hypothesis strategies and drivers for the parser properties (tests/test_fuzz_*.py).

Requests: `request_streams()` draws one to three request messages (every
framing: none, Content-Length, chunked with extensions and trailers, the
conflicting and malformed kinds), sometimes with an empty line between them,
trailing garbage or a cut-off end. Each message carries the tags of what
was drawn for it (`bare_lf`, `cl_and_te`, ...), so a test can tell a
known difference between the proxy and the reference from a new one.
`proxy_requests(pieces)` feeds the pieces, as the reads of a client, to
workers/http1.py's sans-IO RequestReader the way workers/driver.py drives it
(tests/support/sans_io.py); `h11_requests(data)` reads the same bytes with
h11's strict server.

Replies: `reply_exchanges()` draws a request method and an upstream reply
(status, version, framing, Connection, body, bytes after the framed end,
whether the upstream closes). `proxy_reply(...)` feeds the upstream's reads
to workers/exchange.py's Reply as the driver does, and reads back what it
sends the client; `h11_reply(...)` reads the same bytes with h11's client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h11
from hypothesis import strategies as st

from tests.support.sans_io import CLOSED_MID_HEAD, PiecesReader, take_reply
from workers.errors import HttpError, UpstreamError

# -- building blocks -------------------------------------------------------------------

TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PATH_CHARS = b"abcxyzABC0123456789-_~!$&'()*+,;=:@/"
QUERY_CHARS = PATH_CHARS + b".%?"
# Paths nginx decodes and normalises ($document_uri), then those it answers 400
# (ngx_http_parse_complex_uri: a bad escape, %00, a ".." above the root).
GOOD_PATHS = [b"/a/./b", b"/a/../b", b"/%41b", b"/a%2Fb", b"//x", b"/a/%2e%2e/b", b"/a/."]
BAD_PATHS = [b"/%", b"/%zz", b"/%4", b"/a%00b", b"/..", b"/../x", b"/a/../../x", b"/%2e%2e/x"]
VALUE_CHARS = bytes(range(0x21, 0x7f)) + b"\xe9\xff"
# Control characters h11 accepts in a field value and RFC 9110 §5.5 does not.
LOOSE_CTL = bytes([*range(0x01, 0x09), *range(0x0e, 0x20), 0x7f])


def _rare(draw, percent: int) -> bool:  # noqa: ANN001 - hypothesis's draw
    """True `percent` times in 100; shrinks towards False (the common case)."""
    return draw(st.integers(0, 99)) >= 100 - percent


def _token(draw, size: int = 8) -> bytes:  # noqa: ANN001
    return draw(st.binary(min_size=1, max_size=size).map(
        lambda raw: bytes(TOKEN_CHARS[b % len(TOKEN_CHARS)] for b in raw)))


def _chars(draw, alphabet: bytes, min_size: int, max_size: int) -> bytes:  # noqa: ANN001
    return draw(st.binary(min_size=min_size, max_size=max_size).map(
        lambda raw: bytes(alphabet[b % len(alphabet)] for b in raw)))


def _case(draw, name: bytes) -> bytes:  # noqa: ANN001
    return draw(st.sampled_from([name, name.lower(), name.upper(), name.title()]))


@dataclass
class Message:
    """One drawn request (or garbage): its bytes and the tags of what it holds."""

    data: bytes
    tags: set[str] = field(default_factory=set)


@dataclass
class Stream:
    """Messages sent one after another on a connection, maybe cut at `cut`."""

    messages: list[Message]
    cut: int | None = None

    @property
    def data(self) -> bytes:
        data = b"".join(message.data for message in self.messages)
        return data if self.cut is None else data[:self.cut]

    def tags_of(self, index: int) -> set[str]:
        """The tags of the index-th message (the last one's past the end)."""
        if not self.messages:
            return set()
        return self.messages[min(index, len(self.messages) - 1)].tags


# -- requests --------------------------------------------------------------------------

COMMON_METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]


@st.composite
def _chunked_body(draw, tags: set[str]) -> tuple[bytes, bytes]:  # noqa: ANN001
    """(the chunked body on the wire, its decoded bytes)."""
    parts = []
    decoded = b""
    for _ in range(draw(st.integers(0, 3))):
        data = draw(st.binary(min_size=1, max_size=24))
        size = b"%x" % len(data)
        if _rare(draw, 10):
            size = size.upper()
        if _rare(draw, 10):
            zeros = draw(st.integers(1, 24))
            size = b"0" * zeros + size
            if len(size) > 20:
                tags.add("chunk_size_over_20_digits")
        if _rare(draw, 5):
            size = draw(st.sampled_from([b"g", b"", b"-1", b"0x1", b"+1", b"1_0"]))
        ext = b""
        if _rare(draw, 20):
            ext = draw(st.sampled_from([b";a", b";a=b", b';a="b c"', b";a=b;c=d", b";a="]))
            if _rare(draw, 30):
                ext = draw(st.sampled_from([b";", b"; a=b", b";a b", b";a=b c", b";\x01"]))
                tags.add("chunk_ext_loose")
        if _rare(draw, 4):
            size += draw(st.sampled_from([b" ", b"\t"]))
            tags.add("chunk_size_ows")
        end = b"\r\n"
        if _rare(draw, 4):
            end = draw(st.sampled_from([b"XX", b"\n", b"", b"\r"]))
            tags.add("chunk_data_end_unchecked")
        parts.append(size + ext + b"\r\n" + data + end)
        decoded += data
    last = b"0"
    if _rare(draw, 10):
        last += b";x=1"
    trailer = b""
    if _rare(draw, 25):
        fields = []
        for _ in range(draw(st.integers(1, 3))):
            name, value = draw(st.sampled_from([
                (b"X-Trailer", b"1"), (b"Host", b"evil.internal"), (b"X-Injected", b"1"),
                (b"Content-Length", b"5"), (b"Transfer-Encoding", b"gzip"),
                (b"Content-Length", b"x"), (b"Expires", b"0")]))
            if name == b"Transfer-Encoding" or value == b"x":
                tags.add("trailer_framing_field")  # h11 checks them as head fields
            if name in (b"Transfer-Encoding", b"Content-Length"):
                tags.add("trailer_cl_or_te")
            fields.append(b"%s: %s\r\n" % (name, value))
        trailer = b"".join(fields)
        tags.add("trailer")
        if trailer.count(b"Content-Length:") > 1:
            tags.add("trailer_duplicate_cl")
    parts.append(last + b"\r\n" + trailer + b"\r\n")
    return b"".join(parts), decoded


@st.composite
def request_message(draw) -> Message:  # noqa: ANN001
    """One request, well formed or not; its tags name what may differ from h11."""
    tags: set[str] = set()
    # Request line (RFC 9112 §3).
    if _rare(draw, 10):
        method = draw(st.sampled_from([b"CONNECT", b"FOO", b"get", b"PURGE"]))
        tags.add({b"CONNECT": "connect", b"PURGE": "purge"}.get(method, "unknown_method"))
    else:
        method = draw(st.sampled_from(COMMON_METHODS))
    path = b"/" + _chars(draw, PATH_CHARS, 0, 16)
    if _rare(draw, 10):
        path = draw(st.sampled_from(GOOD_PATHS))
    elif _rare(draw, 6):
        path = draw(st.sampled_from(BAD_PATHS))
        tags.add("bad_path")
    if _rare(draw, 30):
        path += b"?" + _chars(draw, QUERY_CHARS, 0, 12)
    target = path
    if _rare(draw, 12):
        kind = draw(st.sampled_from(["absolute", "asterisk", "word", "obs", "fragment"]))
        if kind == "absolute":
            target = draw(st.sampled_from([b"http://b.example", b"https://b.example:8443"])) + path
            tags.add("absolute_target")
        elif kind == "asterisk":
            target = b"*"
            if method != b"OPTIONS":
                tags.add("asterisk_not_options")
        elif kind == "word":
            target = b"abc" + path
            tags.add("non_origin_target")
        elif kind == "obs":
            target = path + b"\xe9"
        else:
            target = path + b"#frag"
    version = b"HTTP/1.1" if draw(st.integers(0, 3)) else b"HTTP/1.0"
    if _rare(draw, 6):
        version = draw(st.sampled_from([b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/3.0",
                                        b"http/1.1", b"HTTP/1.10", b""]))
        if version in (b"HTTP/2.0", b"HTTP/3.0"):
            tags.add("version_2")
        elif version in (b"HTTP/1.2", b"HTTP/0.9"):
            tags.add("version_other")
        elif not version:
            tags.add("http09_request_line")
    http10 = version == b"HTTP/1.0"
    sep1 = sep2 = b" "
    if _rare(draw, 4):
        sep1 = b"  "
        tags.add("extra_spaces")
    if _rare(draw, 4):
        sep2 = b"  "
        tags.add("extra_spaces")
    line = method + sep1 + target + ((sep2 + version) if version else b"")

    # Header fields (RFC 9110 §5, RFC 9112 §5).
    headers: list[tuple[bytes, bytes]] = []
    hosts = 1
    if _rare(draw, 6):
        hosts = draw(st.sampled_from([0, 2]))
    headers += [(b"Host", b"example.test")] * hosts
    for _ in range(draw(st.integers(0, 4))):
        choice = draw(st.integers(0, 11))
        if choice == 0:
            headers.append((b"Accept", b"*/*"))
        elif choice == 1:
            headers.append((b"X-Forwarded-For", b"192.0.2.7"))
        elif choice == 2:
            connection = draw(st.sampled_from([
                b"close", b"keep-alive", b"upgrade", b"close, upgrade", b"host",
                b"content-length", b"Keep-Alive, X-A"]))
            headers.append((b"Connection", connection))
            if http10 and b"keep-alive" in connection.lower() and b"close" not in connection:
                tags.add("http10_keep_alive")
        elif choice == 3:
            headers.append((b"Upgrade", draw(st.sampled_from([b"websocket", b"h2c"]))))
        elif choice == 4:
            value = draw(st.sampled_from([b"100-continue", b"100-Continue", b"foo"]))
            headers.append((b"Expect", value))
            if value == b"foo":
                tags.add("expect_other")
        elif choice == 5:
            headers.append((b"Proxy-Connection", draw(st.sampled_from([b"close", b"keep-alive"]))))
            tags.add("proxy_connection")
        elif choice == 6:
            headers.append((b"Cookie", b"a=b; c=d"))
        elif choice == 7:
            headers.append((b"Proxy", b"http://evil.example"))
        elif choice == 8:
            headers.append((b"Trailer", b"X-Trailer"))
        else:
            value = _chars(draw, VALUE_CHARS + b" \t", 0, 12).strip(b" \t")
            if _rare(draw, 10):
                ctl = draw(st.sampled_from([*LOOSE_CTL, 0x00, 0x0b, 0x0c, 0x0d]))
                value = value + bytes([ctl]) + b"v"
                if ctl in LOOSE_CTL:
                    tags.add("ctl_in_value")
            headers.append((b"X-" + _token(draw), value))
    if draw(st.booleans()) and len(headers) > 1:
        headers = draw(st.permutations(headers))
    # An Upgrade request is an ordinary request until a 101 (RFC 9110 §7.8).
    upgrade = _rare(draw, 8)
    if upgrade:
        headers += [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]

    # Framing (RFC 9112 §6).
    body = b""
    framing = draw(st.sampled_from(["none", "none", "length", "length", "chunked", "chunked"]))
    if framing == "length":
        content = draw(st.binary(max_size=40))
        length = b"%d" % len(content)
        if _rare(draw, 15):
            length = draw(st.sampled_from([
                b"0" + length, length + b" ", b" " + length, b"+" + length, b"",
                b"-1", length + b", " + length, b"1" * 20, length + b"x", b"0x1"]))
            if b"," in length:
                tags.add("cl_list")
        headers.append((b"Content-Length", length))
        if _rare(draw, 6):
            headers.append((b"Content-Length", draw(st.sampled_from([length, b"99"]))))
            tags.add("duplicate_cl")
        body = content
    elif framing == "chunked":
        coding = b"chunked"
        if _rare(draw, 12):
            coding = draw(st.sampled_from([
                b"Chunked", b"CHUNKED", b" chunked", b"chunked ", b"gzip, chunked",
                b"chunked, gzip", b"identity", b"xchunked", b"chunked;q=1"]))
        headers.append((b"Transfer-Encoding", coding))
        if _rare(draw, 5):
            headers.append((b"Transfer-Encoding", b"chunked"))
        if _rare(draw, 8):
            headers.append((b"Content-Length", b"%d" % draw(st.integers(0, 9))))
            tags.add("cl_and_te")
        if http10:
            tags.add("te_http10")
        body, _ = draw(_chunked_body(tags))
    if upgrade and framing != "none":
        tags.add("upgrade_with_body")

    lines = [line]
    for name, value in headers:
        name = _case(draw, name)
        colon = b":" if not _rare(draw, 2) else b" :"
        ows = draw(st.sampled_from([b" ", b" ", b"", b"\t", b"  "]))
        trail = b"" if not _rare(draw, 10) else draw(st.sampled_from([b" ", b"\t"]))
        lines.append(name + colon + ows + value + trail)
        if b"\t" in ows and name.lower() in (b"transfer-encoding", b"content-length", b"host"):
            tags.add("tab_before_framing_value")
        if trail and name.lower() == b"host":
            tags.add("host_trailing_ows")
        if name.lower() == b"transfer-encoding" and (value + trail).endswith(b"\t"):
            tags.add("te_trailing_htab")
        if _rare(draw, 3):
            lines.append(b"  folded")
            tags.add("obs_fold")
    ends = [b"\r\n"] * (len(lines) + 1)
    if _rare(draw, 5):
        ends[draw(st.integers(0, len(ends) - 1))] = b"\n"
        tags.add("bare_lf")
    head = b"".join(text + end for text, end in zip([*lines, b""], ends, strict=True))
    return Message(head + body, tags)


@st.composite
def request_streams(draw) -> Stream:  # noqa: ANN001
    """One to three requests, as a client may pipeline them."""
    messages = []
    for index in range(draw(st.integers(1, 3))):
        message = draw(request_message())
        if index and _rare(draw, 8):
            # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a
            # request line (h11 refuses it).
            message.data = draw(st.sampled_from([b"\r\n", b"\n"])) + message.data
            message.tags.add("empty_line_before")
        if messages and "upgrade_with_body" in messages[-1].tags:
            message.tags.add("after_declined_upgrade")
        messages.append(message)
    if _rare(draw, 8):
        garbage = draw(st.sampled_from([
            b"XYZ\r\n\r\n", b"GET\r\n\r\n", b"\x00\x01\x02\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n", b"GET /\r\n\r\n"]))
        messages.append(Message(garbage, {"garbage"} | (
            {"http09_request_line"} if garbage == b"GET /\r\n\r\n" else set())))
    stream = Stream(messages)
    if _rare(draw, 12):
        stream.cut = draw(st.integers(0, max(0, len(stream.data) - 1)))
    return stream


# -- reading requests ------------------------------------------------------------------

@dataclass(frozen=True)
class ReadRequest:
    """A request as read, in a form both readings share: names lower-cased, values
    without the whitespace around them (RFC 9110 §5.5: it is not part of the value)."""

    method: bytes
    target: bytes
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    keep_alive: bool


@dataclass
class Reading:
    """The requests read from a connection and how the reading ended: "eof" (the
    client closed between requests), "close" (a request without keep-alive was the
    last), or "error" with its status."""

    requests: list[ReadRequest]
    end: str
    status: int | None = None
    reason: str = ""
    ends_at: list[int] = field(default_factory=list)  # h11: each request's end offset

    @property
    def ending(self) -> str:
        """How the reading ended, a client that closed in the middle of a request
        head being one with a client that closed between requests ("eof"): the
        proxy answers it 400 (workers/driver.py: a close once any byte of a head
        has come), but the connection closes either way, and nginx closes
        without an answer there."""
        if self.end == "error" and self.reason == CLOSED_MID_HEAD:
            return "eof"
        return self.end

    def summary(self) -> tuple:
        ending = self.ending
        return (self.requests, ending, self.status if ending == "error" else None)


def _fields(pairs) -> tuple[tuple[bytes, bytes], ...]:  # noqa: ANN001
    fields = []
    for name, value in pairs:
        name = bytes(name).lower()
        value = bytes(value).strip(b" \t")
        if name == b"transfer-encoding":
            value = value.lower()  # RFC 9112 §7: codings are case-insensitive (h11 lowers)
        fields.append((name, value))
    return tuple(fields)


def proxy_requests(pieces: list[bytes]) -> Reading:
    """Read requests as workers/driver.py does: the head, then the body to its end
    when the request has one, then resume after an upgrade the upstream declined (a
    non-101 answer); stop after a request without keep-alive. An HttpError ends
    the reading as the client's 4xx/505 answer; anything else propagates."""
    reads = PiecesReader(*pieces)
    reader = reads.reader
    requests: list[ReadRequest] = []
    try:
        while True:
            request = reads.head()
            if request is None:
                return Reading(requests, "eof")
            body = reads.whole_body(request)
            requests.append(ReadRequest(
                request.method, request.target, request.version.encode(),
                _fields(request.headers), body, request.keep_alive))
            if request.upgrade is not None:
                # The driver's _finish, after a non-101 answer: an error here closes
                # the connection (the answer has gone out).
                try:
                    reader.resume_after_refused_upgrade()
                except HttpError as error:
                    if request.keep_alive:
                        return Reading(requests, "error", error.status, error.reason)
            if not request.keep_alive:
                return Reading(requests, "close")
    except HttpError as error:
        return Reading(requests, "error", error.status, error.reason)


def h11_requests(data: bytes) -> Reading:
    """The same bytes read by h11's strict server, which answers each request with
    a 404 (so that no CONNECT or Upgrade is taken) and goes on while it may."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    connection.receive_data(data)
    connection.receive_data(b"")
    requests: list[ReadRequest] = []
    ends: list[int] = []
    head = None
    body: list[bytes] = []
    try:
        while True:
            event = connection.next_event()
            if isinstance(event, h11.Request):
                head, body = event, []
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                ends.append(len(data) - len(connection.trailing_data[0]))
                connection.send(h11.Response(status_code=404,
                                             headers=[(b"Content-Length", b"0")]))
                connection.send(h11.EndOfMessage())
                keep_alive = connection.our_state is not h11.MUST_CLOSE
                requests.append(ReadRequest(
                    head.method, head.target, head.http_version, _fields(head.headers),
                    b"".join(body), keep_alive))
                if not keep_alive:
                    return Reading(requests, "close", ends_at=ends)
                connection.start_next_cycle()
                head = None
            elif isinstance(event, h11.ConnectionClosed):
                return Reading(requests, "eof", ends_at=ends)
            else:  # NEED_DATA or PAUSED cannot follow the end of the data
                raise AssertionError(f"h11 gave {event!r} after the end of the data")
    except h11.RemoteProtocolError as error:
        reason = str(error)
        if reason == "peer unexpectedly closed connection" and head is None:
            reason = CLOSED_MID_HEAD  # in a head, not in a body
        return Reading(requests, "error", error.error_status_hint, reason, ends)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets."""
    points = sorted({cut for cut in cuts if 0 < cut < len(data)})
    return [data[start:end] for start, end in zip([0, *points], [*points, len(data)],
                                                  strict=True)]


# -- replies ---------------------------------------------------------------------------

@dataclass
class Exchange:
    """A request method and the upstream's bytes in reply; `closes`: the upstream
    closes after sending them (else it keeps the connection open)."""

    method: bytes
    reply: bytes
    closes: bool
    tags: set[str] = field(default_factory=set)


@st.composite
def reply_exchanges(draw) -> Exchange:  # noqa: ANN001
    tags: set[str] = set()
    method = draw(st.sampled_from([b"GET", b"GET", b"HEAD"]))
    status = draw(st.sampled_from([200, 200, 201, 204, 206, 301, 304, 404, 500]))
    version = b"HTTP/1.1" if draw(st.integers(0, 3)) else b"HTTP/1.0"
    if _rare(draw, 4):
        version = draw(st.sampled_from([b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9"]))
        tags.add("version_other")
    reason = draw(st.sampled_from([b" OK", b" Whatever It Is", b" ", b""]))
    interim = b""
    if _rare(draw, 10):
        interim = draw(st.sampled_from([
            b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"]))
    headers: list[tuple[bytes, bytes]] = [(b"Content-Type", b"text/plain")]
    connection = draw(st.sampled_from([None, None, b"close", b"keep-alive", b"Keep-Alive, X-A"]))
    if connection is not None:
        headers.append((b"Connection", connection))
    content = draw(st.binary(max_size=60))
    framing = draw(st.sampled_from(["length", "length", "chunked", "chunked", "none", "both"]))
    body = content
    if framing in ("length", "both"):
        length = b"%d" % len(content)
        if _rare(draw, 10):
            length = draw(st.sampled_from([length + b" ", b"0" + length, b"+1", b"", b"1" * 20]))
            if length == b"1" * 20:
                tags.add("cl_over_18_digits")
        headers.append((b"Content-Length", length))
        if _rare(draw, 5):
            headers.append((b"Content-Length", length))
            tags.add("duplicate_cl")
    if framing == "both":
        tags.add("cl_and_te")
    if framing in ("chunked", "both"):
        coding = b"chunked"
        if _rare(draw, 10):
            coding = draw(st.sampled_from([b"Chunked", b"gzip, chunked", b"identity"]))
        headers.append((b"Transfer-Encoding", coding))
        body, _ = draw(_chunked_body(tags))
    if len(headers) > 1 and draw(st.booleans()):
        headers = draw(st.permutations(headers))
    head = version + b" %d" % status + reason + b"\r\n" + b"".join(
        b"%s: %s\r\n" % pair for pair in headers) + b"\r\n"
    extra = b""
    if _rare(draw, 25):
        extra = draw(st.sampled_from([b"X", b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON",
                                      b"\r\n", b"garbage"]))
        if extra == b"\r\n":
            tags.add("extra_crlf")
    closes = framing == "none" or draw(st.booleans())
    return Exchange(method, interim + head + body + extra, closes, tags)


@dataclass
class ReplyReading:
    """How a reply was taken: "error" (refused, or cut off mid-body), "waits" (the
    reader would wait for bytes that never come), or "done" with the status, the
    body and whether the upstream connection may be reused."""

    outcome: str
    status: int | None = None
    body: bytes = b""
    reusable: bool = False
    detail: str = ""

    def summary(self) -> tuple:
        return (self.outcome, self.status, self.body, self.reusable)


def proxy_reply(method: bytes, pieces: list[bytes], closes: bool) -> ReplyReading:
    """The proxy's taking of a reply: the upstream's reads fed to exchange.Reply
    for an HTTP/1.1 client with keep-alive, as workers/driver.py feeds them; the
    body is what the client receives (read back with h11), and the connection is
    pooled only if the Reply says it may be and the pool's peek on release
    (workers/upstreams.py) finds nothing waiting."""
    try:
        taken = take_reply(pieces, method, closes=closes)
    except UpstreamError as error:
        return ReplyReading("error", detail=error.reason)
    if taken.reply.switching:
        # The driver: a 101 to a request that asked for no upgrade is a 502.
        return ReplyReading("error", detail="101 without an Upgrade request")
    if taken.waits:
        return ReplyReading("waits")
    status, body = _client_view(method, taken.sent)
    return ReplyReading("done", status, body, taken.pooled)


def _client_view(method: bytes, data: bytes) -> tuple[int, bytes]:
    """What an HTTP/1.1 client reads from the proxy's answer (h11 as the client)."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target=b"/", headers=[(b"Host", b"a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    status = None
    body = []
    while True:
        event = client.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert not client.trailing_data[0], f"bytes after the answer: {data!r}"
            return status, b"".join(body)
        elif event is h11.NEED_DATA:
            raise AssertionError(f"the proxy's answer is not complete: {data!r}")


def h11_reply(method: bytes, data: bytes, closes: bool) -> ReplyReading:
    """The same reply read by h11's client after sending `method /`."""
    client = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
    client.send(h11.Request(method=method, target=b"/", headers=[(b"Host", b"a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    status = None
    body = []
    try:
        while True:
            event = client.next_event()
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    return ReplyReading("error", detail="101 without an Upgrade request")
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                left, closed = client.trailing_data
                reusable = (client.their_state is h11.DONE and client.our_state is h11.DONE
                            and not left and not closed and not closes)
                return ReplyReading("done", status, b"".join(body), reusable)
            elif event is h11.NEED_DATA:
                if not closes:
                    return ReplyReading("waits")
                client.receive_data(b"")
            elif isinstance(event, h11.ConnectionClosed):
                return ReplyReading("error", detail="closed before a reply")
    except h11.RemoteProtocolError as error:
        return ReplyReading("error", detail=str(error))
