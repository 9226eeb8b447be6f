"""The sans-IO exchange core: one request's rules, fed bytes and events, answering decisions.

In the style of h11: nothing here touches a socket, a clock or the event loop.
The driver (workers/driver.py) reads and writes; this module decides:

* what goes upstream: the request head (proxy_pass, with nginx's header rules:
  workers/headers.py) or the uwsgi packet (uwsgi_pass: workers/uwsgi_packet.py),
  then the body with its framing (`frame_body`, `body_tail`);
* which peer to try, and after a failure whether to try again: the free retry
  of a pooled connection, the next peer, or the answer (`Tries`);
* what the reply means (`Reply.feed`): its head parsed once, its framing
  decided (a HEAD, 204 or 304 reply has no body whatever its headers say),
  the body re-framed for the client, the end found exactly, the upstream
  connection's reuse (DESIGN.md's pooling rule: only after an exact end), the
  client's keep-alive, a 101 handed to the tunnel;
* the accounting and the access-log fields, in `finish`.

The upstream codec is the one difference between proxy_pass and uwsgi_pass:
an HTTP head goes out and an HTTP head comes back, or a uwsgi packet goes out
and an HTTP or CGI-style head comes back (`HTTP_CODEC`, `UWSGI_CODEC`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefork_proxy.next_upstream import DEFAULT as DEFAULT_NEXT_UPSTREAM
from workers import headers as header_rules
from workers.chunked_body import ChunkedBody
from workers.errors import HttpError, UpstreamError
from workers.response_head import ResponseHead, parse_response_head
from workers.routing import upstream_target
from workers.uwsgi_packet import find_head_end, parse_reply_head

if TYPE_CHECKING:
    from prefork_proxy.config import Location
    from prefork_proxy.next_upstream import NextUpstream
    from workers.balancing import Balancer
    from workers.http1 import Request

# nginx: POST, LOCK and PATCH are not sent twice once sent (1.9.13+).
NOT_RETRIED_ONCE_SENT = frozenset({b"POST", b"LOCK", b"PATCH"})
# What `Tries.failed` decides.
FREE_RETRY, NEXT_PEER = 1, 2
# A reply's body framing, as read from the upstream.
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = range(4)
# Request body framing towards the upstream.
BODY_NONE, BODY_AS_IS, BODY_CHUNKED = range(3)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The largest reply head taken (nginx's proxy_buffer_size is smaller: 4k or 8k;
# ours lets the hardening rules' big-header tests through, and bounds memory).
MAX_RESPONSE_HEAD = 64 * 1024


def check_request(request: Request, location: Location | None) -> None:
    """The answers due before anything goes upstream (404, 413)."""
    if location is None:
        raise HttpError(404, "no location matches")
    limit = location.client_max_body_size
    if limit and request.content_length is not None and request.content_length > limit:
        raise HttpError(413, f"request body of {request.content_length} bytes is "
                             f"over client_max_body_size ({limit})")


def buffers_request_body(request: Request, location: Location) -> bool:
    """A chunked body is read whole first and sent with a Content-Length (nginx's
    `proxy_request_buffering on`); uwsgi always does, since uWSGI reads exactly
    CONTENT_LENGTH bytes."""
    return request.chunked and (location.protocol == "uwsgi" or location.request_buffering)


def upgrade_asked(request: Request, location: Location) -> bytes | None:
    """The Upgrade value sent upstream: a WebSocket upgrade a location allows."""
    upgrade = request.upgrade
    if upgrade is not None and location.websocket and upgrade.lower() == b"websocket":
        return upgrade
    return None


def http_request_head(request: Request, location: Location, client_ip: bytes,
                      body_size: int | None,
                      request_id: bytes | None = None,
                      scheme: bytes = b"http") -> tuple[bytes, int]:
    """The head proxy_pass sends, and how the body follows it (BODY_*).

    `body_size` is the length of a body held whole (a buffered chunked body);
    `request_id` is the X-Request-Id that replaces the client's (workers/request_id.py);
    `scheme` is the client connection's (X-Forwarded-Proto: https over TLS)."""
    target = upstream_target(request, location)
    if request.lines is not None and request.connection_tokens <= header_rules.PLAIN_TOKENS:
        # A plain bodiless request (http1.py): its header lines are copied as they came.
        return header_rules.upstream_request_head_from_lines(
            request.method, target, request.lines, client_ip=client_ip, scheme=scheme,
            host=request.host, framing=b"", request_id=request_id), BODY_NONE
    body = BODY_AS_IS if request.has_body else BODY_NONE
    if body_size is not None:
        framing = b"Content-Length: %d\r\n" % body_size
    elif request.chunked:
        framing, body = b"Transfer-Encoding: chunked\r\n", BODY_CHUNKED
    elif request.content_length is not None and (
            request.content_length or request.method in (b"POST", b"PUT", b"PATCH")):
        framing = b"Content-Length: %d\r\n" % request.content_length
    else:
        framing = b""
    headers = request.headers
    if not request.host:
        # An HTTP/1.0 request may come without Host; every HTTP/1.1 request has one
        # (RFC 9112 §3.2): nginx's default, Host: $proxy_host (the upstream's name).
        headers = [*headers, (b"Host", location.upstream.name.encode())]
    head = header_rules.upstream_request_head(
        request.method, target, headers, client_ip=client_ip, scheme=scheme,
        host=request.host, framing=framing, upgrade=upgrade_asked(request, location),
        tokens=request.connection_tokens, request_id=request_id)
    return head, body


def frame_body(piece: bytes, body: int) -> bytes:
    """A piece of the client's (de-chunked) body as it goes upstream."""
    return header_rules.chunk(piece) if body == BODY_CHUNKED else piece


def body_tail(body: int) -> bytes:
    """What ends the body upstream: the last chunk of a streamed chunked body."""
    return header_rules.LAST_CHUNK if body == BODY_CHUNKED else b""


class Tries:
    """The peers tried for one request, and nginx's `proxy_next_upstream` (the
    location's policy, prefork_proxy/next_upstream.py; by default `error timeout`).

    Another peer is tried only for a failure the policy lists (error, timeout,
    invalid_header, or a listed reply status), while nothing has reached the
    client and nothing that cannot be repeated has gone upstream: no body byte
    streamed from the client (it is not kept), no POST, LOCK or PATCH unless
    `non_idempotent` is listed; and while next_upstream_tries (every try, the
    first included) and next_upstream_timeout (from the first try's start) allow.
    A pooled connection that fails before its reply gets one free retry on a
    fresh connection, uncounted (the upstream may have closed it while idle), if
    `error` is listed (nginx: the free retry is an `error` try); a read timeout
    is no such failure. When every try fails, the last error answers (a timeout
    504, else 502); a listed status with no try left is the answer itself.

    What counts against a peer's max_fails (nginx's proxy_next_upstream docs):
    an error, a timeout or an invalid head always, listed or not; a listed reply
    status when it sends the request on to the next peer (nginx frees the peer
    that gave the last reply as a success).
    """

    __slots__ = ("balancer", "client_ip", "method", "tried", "free_retry", "peer_index",
                 "last_error", "policy", "statuses", "count", "started")

    def __init__(self, balancer: Balancer, client_ip: bytes, method: bytes,
                 policy: NextUpstream = DEFAULT_NEXT_UPSTREAM) -> None:
        self.balancer = balancer
        self.client_ip = client_ip
        self.method = method
        self.tried: set[int] = set()
        self.free_retry = True  # a pooled connection may be used, and retried once
        self.peer_index: int | None = None
        self.last_error: UpstreamError | None = None
        self.policy = policy
        self.statuses = policy.statuses  # the reply statuses that are failures
        self.count = 1  # the tries made (free retries not counted)
        self.started = 0.0

    def first(self, now: float) -> int | None:
        balancer = self.balancer
        self.started = now
        self.peer_index = 0 if balancer.single else balancer.choose(
            self.tried, self.client_ip, now)
        return self.peer_index

    def no_peer_error(self, what: str) -> UpstreamError:
        return self.last_error or UpstreamError(502, f"no live {what}",
                                                cause="no_live_upstreams")

    def _may_go_on(self, body_started: bool, now: float) -> bool:
        """The request may be sent to another peer (nginx ngx_http_upstream_next's
        tries, non_idempotent and next_upstream_timeout checks)."""
        if body_started or (self.method in NOT_RETRIED_ONCE_SENT
                            and not self.policy.non_idempotent):
            return False
        return self._counts_left(now)

    def failed(self, error: UpstreamError, reused: bool, body_started: bool,
               timed_out: bool, now: float) -> int:
        """After an attempt failed: FREE_RETRY (the same peer, a fresh connection),
        NEXT_PEER (`peer_index` is the next, or None when there is none left);
        raises the error when it must be answered now."""
        policy = self.policy
        if (reused and self.free_retry and not body_started and not timed_out
                and policy.error and (policy.non_idempotent
                                      or self.method not in NOT_RETRIED_ONCE_SENT)):
            self.free_retry = False
            return FREE_RETRY
        self.balancer.failed(self.peer_index, now)  # (always a failure, listed or not)
        self.last_error = error
        if error.status == 504:
            listed = policy.timeout
        elif error.cause == "invalid_header" and not error.retryable:  # (a reply's head)
            listed = policy.invalid_header
        else:
            listed = policy.error
        # A retryable error reached no upstream (a connect failure): nothing was sent.
        if not listed or not (error.retryable and self._counts_left(now)
                              or self._may_go_on(body_started, now)):
            raise error
        self._next(now)
        return NEXT_PEER

    def _counts_left(self, now: float) -> bool:
        """next_upstream_tries and next_upstream_timeout allow another try."""
        policy = self.policy
        return (not policy.tries or self.count < policy.tries) and not (
            policy.time_limit and now - self.started >= policy.time_limit)

    def _next(self, now: float) -> None:
        self.tried.add(self.peer_index)
        self.free_retry = True
        self.count += 1
        self.peer_index = self.balancer.choose(self.tried, self.client_ip, now)

    def try_next_after_status(self, status: int, body_started: bool, now: float) -> bool:
        """A reply head with a listed `status` came (the caller checked `statuses`):
        True when it is to be discarded and the request sent to `peer_index`, the
        next peer; False when it is the answer (no other try is possible)."""
        if not self._may_go_on(body_started, now):
            return False
        tried = self.tried | {self.peer_index}
        following = self.balancer.choose(tried, self.client_ip, now)
        if following is None:
            return False  # nginx sends the last reply
        self.balancer.failed(self.peer_index, now)  # nginx: NGX_PEER_FAILED
        self.last_error = UpstreamError(502, f"upstream answered {status}")
        self.tried = tried
        self.free_retry = True
        self.count += 1
        self.peer_index = following
        return True

    def succeeded(self) -> None:
        self.balancer.succeeded(self.peer_index)


# -- the upstream codecs: how a reply head is found and read -------------------------
class HttpCodec:
    """proxy_pass: an HTTP/1.x reply head, up to its blank line."""

    name = "upstream"

    @staticmethod
    def head_end(data: bytes, start: int) -> int:
        end = data.find(b"\r\n\r\n", start)
        return end + 4 if end >= 0 else -1

    @staticmethod
    def parse(head: bytes) -> ResponseHead:
        return parse_response_head(head)

    @staticmethod
    def closed_before_head(data: bytes, packet_size: int) -> UpstreamError:
        return UpstreamError(502, "upstream closed the connection before a response",
                             cause="reset")

    @staticmethod
    def too_big() -> UpstreamError:
        return UpstreamError(502, "upstream sent too big a header")


# uWSGI's default --buffer-size: a bigger packet is dropped with no reply.
UWSGI_DEFAULT_BUFFER_SIZE = 4096


class UwsgiCodec:
    """uwsgi_pass: an HTTP head, or a CGI-style one (`Status: 200 OK`) rewritten as
    the HTTP head it means."""

    name = "uwsgi server"

    @staticmethod
    def head_end(data: bytes, start: int) -> int:
        return find_head_end(data)

    @staticmethod
    def parse(head: bytes) -> ResponseHead:
        if not (head.startswith(b"HTTP/") and head.endswith(b"\r\n\r\n")):
            head = parse_reply_head(head).to_http()
        return parse_response_head(head)

    @staticmethod
    def closed_before_head(data: bytes, packet_size: int) -> UpstreamError:
        what = "an incomplete reply head" if data else "no reply"
        return uwsgi_failure(f"uwsgi server closed the connection with {what}", data,
                             packet_size)

    @staticmethod
    def too_big() -> UpstreamError:
        return UpstreamError(502, "uwsgi server sent too big a reply head")


def uwsgi_failure(reason: str, data: bytes, packet_size: int) -> UpstreamError:
    """A uWSGI server that answered nothing usable: a dropped packet over its
    --buffer-size when the size hint applies, else a reset."""
    hint = uwsgi_size_hint(data, packet_size)
    return UpstreamError(502, reason + hint, cause="uwsgi_buffer_size" if hint else "reset")


def uwsgi_size_hint(data: bytes, packet_size: int) -> str:
    """uWSGI drops a packet over its --buffer-size (4096 by default) with no reply."""
    if data or packet_size <= UWSGI_DEFAULT_BUFFER_SIZE + 4:
        return ""
    return (f" (the request's vars are {packet_size - 4} bytes: is uWSGI's --buffer-size "
            f"at least that?)")


HTTP_CODEC = HttpCodec()
UWSGI_CODEC = UwsgiCodec()


class Reply:
    """One upstream reply, read as it comes and re-framed for the client.

    `feed(data, closed)` takes what was read (and whether the upstream has
    closed after it) and returns the bytes for the client. It raises
    UpstreamError for a reply that is invalid, or cut short; the caller knows
    from `head_done` whether that was before the head (a failed attempt) or
    mid-reply (only closing the client connection can say so then).
    """

    __slots__ = ("codec", "head_request", "client_11", "keep_alive", "buffer", "searched",
                 "response", "body", "remaining", "chunks", "complete", "reusable", "excess",
                 "body_bytes", "switching", "rest", "packet_size")

    def __init__(self, request: Request, keep_alive: bool, codec: HttpCodec | UwsgiCodec,
                 packet_size: int = 0) -> None:
        self.codec = codec
        self.head_request = request.method == b"HEAD"
        # HTTP/1.1 framing for 1.1 and for an HTTP/2 stream's driver (workers/http2/).
        self.client_11 = request.version != "1.0"
        self.keep_alive = keep_alive  # the client's, as the connection allows it
        self.buffer = b""
        self.searched = 0
        self.response: ResponseHead | None = None
        self.body = NO_BODY
        self.remaining = 0
        self.chunks: ChunkedBody | None = None
        self.complete = False  # the reply has been read to its end
        self.reusable = False  # the upstream connection may be pooled
        self.excess: int | None = 0  # bytes past the reply's end (None: some, uncounted)
        self.body_bytes = 0
        self.switching = False  # a 101: the tunnel takes over
        self.rest = b""  # after a 101 head: the upstream's first tunnel bytes
        self.packet_size = packet_size

    @property
    def head_done(self) -> bool:
        return self.response is not None

    @property
    def status(self) -> int:
        return self.response.status if self.response is not None else 0

    def feed(self, data: bytes, closed: bool) -> bytes:
        if self.response is None:
            return self._feed_head(data, closed)
        return self._feed_body(data, closed)

    # -- the head ------------------------------------------------------------------
    def _feed_head(self, data: bytes, closed: bool) -> bytes:
        buffer = self.buffer + data if self.buffer else data
        codec = self.codec
        while True:
            end = codec.head_end(buffer, self.searched)
            if end < 0:
                if len(buffer) > MAX_RESPONSE_HEAD:
                    raise codec.too_big()
                if closed:
                    raise codec.closed_before_head(buffer, self.packet_size)
                self.buffer = buffer
                self.searched = max(len(buffer) - 3, 0)
                return b""
            if end > MAX_RESPONSE_HEAD:  # however the reads fell
                raise codec.too_big()
            response = codec.parse(buffer[:end])
            buffer = buffer[end:]
            self.searched = 0
            status = response.status
            if status >= 200 or status == 101:
                break
            # An interim 1xx reply (other than 101) is skipped.
        self.buffer = b""
        self.response = response
        if status == 101:
            self.switching = self.complete = True
            self.rest = buffer
            return b""
        return self._begin_body(response, buffer, closed)

    def _begin_body(self, response: ResponseHead, rest: bytes, closed: bool) -> bytes:
        status = response.status
        keep_alive = self.keep_alive
        client_11 = self.client_11
        if self.head_request or status in (204, 304):
            body = NO_BODY
        elif response.chunked:
            body = CHUNKED
        elif response.content_length is not None:
            body = LENGTH
        elif closed:
            # uWSGI and HTTP/1.0 servers close right after a short reply: with the close
            # already here the body is whole, and goes out with a length.
            body, response.content_length = LENGTH, len(rest)
        else:
            body = UNTIL_CLOSE
        self.body = body
        if body == LENGTH or (body == NO_BODY and response.content_length is not None
                              and status != 204):
            framing = b"Content-Length: %d\r\n" % response.content_length
        elif body == NO_BODY:
            framing = b""
        elif client_11:
            framing = b"Transfer-Encoding: chunked\r\n"
        else:  # an HTTP/1.0 client: the body runs until we close
            framing, keep_alive = b"", False
        self.keep_alive = keep_alive
        if not keep_alive:
            connection = b"Connection: close\r\n"
        else:
            connection = b"" if client_11 else b"Connection: keep-alive\r\n"
        head = response.client_head(framing, connection)
        if body == NO_BODY:
            # It ends at its head (RFC 9112 §6.3 rule 1), framed whatever its headers
            # say: only its version and Connection decide the reuse.
            reusable = response.version == "1.1" and b"close" not in response.connection_tokens
            self._end(reusable and not rest, len(rest))
            return head
        if body == LENGTH:
            self.remaining = response.content_length
            return head + self._length_piece(rest, closed)
        if body == CHUNKED:
            self.chunks = ChunkedBody()
            return head + self._chunked_piece(rest, closed)
        return head + self._until_close_piece(rest, closed)

    # -- the body ------------------------------------------------------------------
    def _feed_body(self, data: bytes, closed: bool) -> bytes:
        if self.complete:
            if data:
                self.excess = (self.excess or 0) + len(data)
                self.reusable = False
            return b""
        body = self.body
        if body == LENGTH:
            return self._length_piece(data, closed)
        if body == CHUNKED:
            return self._chunked_piece(data, closed)
        return self._until_close_piece(data, closed)

    def _length_piece(self, data: bytes, closed: bool) -> bytes:
        remaining = self.remaining
        have = len(data)
        if have >= remaining:
            piece = data if have == remaining else data[:remaining]
            self.body_bytes += remaining
            self.remaining = 0
            self._end(self.response.keep_alive and have == remaining, have - remaining)
            return piece
        self.remaining = remaining - have
        self.body_bytes += have
        if closed:
            raise UpstreamError(502, "upstream closed the connection mid-body",
                                cause="mid_reply")
        return data

    def _chunked_piece(self, data: bytes, closed: bool) -> bytes:
        chunks = self.chunks
        if data:
            chunks.feed(data)
        pieces, chunks.pieces = chunks.pieces, []
        out = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self.body_bytes += len(out)
        if self.client_11:
            out = header_rules.chunk(out)
        if chunks.complete:
            self._end(self.response.keep_alive and not chunks.extra,
                      None if chunks.extra else 0)
            return out + header_rules.LAST_CHUNK if self.client_11 else out
        if closed:
            raise UpstreamError(502, "upstream closed the connection mid-body",
                                cause="mid_reply")
        return out

    def _until_close_piece(self, data: bytes, closed: bool) -> bytes:
        self.body_bytes += len(data)
        client_11 = self.client_11
        out = header_rules.chunk(data) if client_11 else data
        if closed:
            self._end(False, 0)
            return out + header_rules.LAST_CHUNK if client_11 else out
        return out

    def _end(self, reusable: bool, excess: int | None) -> None:
        self.complete = True
        self.reusable = reusable
        self.excess = excess

    def closed(self) -> bytes:
        """The upstream closed (EOF) with nothing more read."""
        return self.feed(b"", True)
