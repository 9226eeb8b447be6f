"""The callback lane: a plain keep-alive exchange run in the hub, with no greenlet switch.

A request on the greenlet path parks its greenlet twice: for the request, then
for the upstream's answer. Four greenlet switches cost more CPU than all of
the HTTP handling of a small request (measured: a worker doing nothing but
relay bytes this way reached half of nginx's rate, the same worker on
callbacks nearer three quarters). So while a connection waits for its next
request, its greenlet parks once in `Lane.run`, and the lane serves the
common exchange in libev callbacks, as the WebSocket tunnels do:

1. The client turns readable: one read. A plain bodiless request
   (http1.py's fast path) for a proxy_pass location with one peer, and a pooled
   connection to it, is sent upstream at once; anything else wakes the
   greenlet with the bytes read, and the usual path takes over.
2. The upstream turns readable: one read. A whole small response with a
   Content-Length goes to the client in one send (made at the end of the loop
   iteration, with the iteration's other answers: iteration_batch.py), the
   connection goes back to the pool, the request is logged, and the lane
   waits for the next request. Anything else (a partial or chunked response,
   an error, a 101, a drain) wakes the greenlet to finish the exchange with
   proxy_http.resume.

The rules are the greenlet path's own: the same parsers and header builders
(a reply head seen before gives back its kept parse: known_replies.py),
the free retry of a pooled connection that fails before its answer, the
keep-alive and read timeouts (stream.py's deadlines), the access log.
"""

from __future__ import annotations

import contextlib
from time import monotonic as _monotonic

from gevent import get_hub
from gevent.hub import Waiter

from workers import headers as header_rules
from workers.errors import UpstreamError
from workers.http1 import HEAD_RECV_SIZE
from workers.iteration_batch import IterationBatch
from workers.known_replies import known_replies
from workers.lane_uwsgi import UWSGI, UwsgiLane  # noqa: F401 - an outcome kind of this lane
from workers.response_head import ResponseHead, has_no_body, parse_response_head
from workers.routing import upstream_target
from workers.stats import stats
from workers.upstreams import pool_for

# What the lane hands the greenlet (the first item of the outcome tuple).
CLOSED = "closed"  # the client closed, or stayed idle past the keep-alive timeout
DATA = "data"  # bytes that the greenlet path must read: (DATA, bytes)
RESUME = "resume"  # (RESUME, request, location, connection, bytes read from it)
RETRY = "retry"  # the pooled connection failed first: (RETRY, request, location)
SEND_REST = "send_rest"  # the client's socket was full: (SEND_REST, request, rest)
TIMED_OUT = "timed_out"  # no reply within the read timeout: (TIMED_OUT, request, location)
# and UWSGI, a uwsgi call to finish (lane_uwsgi.py)

_SMALL_BODY = 65536


class Lane(UwsgiLane):
    """The callback lane of one client connection (see the module docstring)."""

    __slots__ = ("conn", "hub", "waiter", "request", "location", "connection",
                 "keepalive_timeout", "packet_size", "received", "pool", "uwsgi_watcher",
                 "answer")

    def __init__(self, conn) -> None:  # noqa: ANN001 - a ClientConnection
        self.conn = conn
        self.hub = get_hub()
        self.waiter: Waiter | None = None
        self.request = self.location = self.connection = None
        self.keepalive_timeout = 0.0
        self.packet_size = 0  # of the uwsgi call under way; 0 for proxy_pass
        self.received = b""  # of the uwsgi reply so far (lane_uwsgi.py)
        self.pool = None  # the pool `connection` goes back to (proxy_pass)
        self.uwsgi_watcher = None  # the read watcher of uwsgi calls (lane_uwsgi.py)
        self.answer: tuple | None = None  # an answer queued in _unsent_answers

    def run(self, keepalive_timeout: float, wait: float | None = None) -> tuple:
        """Park the greenlet while the lane serves; returns what it must do next.
        `wait` bounds the wait for the first request instead of the keep-alive
        timeout (on a fresh connection: what is left of client_header_timeout)."""
        conn = self.conn
        worker = conn.site.worker
        self.waiter = waiter = Waiter(self.hub)
        self.keepalive_timeout = keepalive_timeout
        self._wait_for_request(keepalive_timeout if wait is None else wait)
        try:
            return waiter.get()
        finally:
            self.waiter = None
            worker.idle.discard(conn)
            self._disarm()

    # -- waiting for the client -----------------------------------------------------
    def _arm(self, timeout: float | None) -> None:
        """Set the lane's one deadline, kept on the client stream: the keep-alive
        timeout while it waits for a request, the upstream's read timeout while
        it waits for an answer (`throw` tells the two apart by `connection`)."""
        client = self.conn.sock
        if timeout is None:
            client.clear_deadline()
        elif client.waiter is self:  # armed already: move it
            client.deadline = _monotonic() + timeout
        else:
            client.set_deadline(timeout, self)

    def _wait_for_request(self, timeout: float) -> None:
        conn = self.conn
        client = conn.sock
        conn.reader.started = False  # idle: a drain may close it (worker.py)
        conn.site.worker.idle.add(conn)
        if client.on_readable is None:  # (it stays ours from one request to the next)
            client.on_readable = self._client_readable
        if not client.read_event.active:
            client.read_event.start(client._readable)
        self._arm(timeout)

    def _client_readable(self) -> None:
        conn = self.conn
        client = conn.sock
        if self.connection is not None or self.answer is not None:
            # More bytes while the upstream answers, or before the answer is sent
            # (pipelining): they wait, unwatched.
            client.read_event.stop()
            return
        try:
            data = client.sock.recv(HEAD_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        # The keep-alive deadline stays armed on the client stream: sending the
        # request moves it to the read timeout, and any hand-over disarms it.
        site = conn.site
        worker = site.worker
        worker.idle.discard(conn)
        if not data:
            client.on_readable = None
            return self._wake((CLOSED,))
        stats.bytes_in += len(data)
        reader = conn.reader
        reader.started = True
        request = reader._plain_head(data)
        if request is None or reader.leftover or worker.draining:
            reader.leftover = b""
            return self._restart(data)
        location = site.router.match(request.uri)
        if location is None:
            return self._restart(data)
        if location.protocol == "uwsgi":
            return self._call_uwsgi(request, location, data)
        pool = pool_for(location.upstream) if location.protocol == "http" else None
        if pool is None or not pool.balancer.single \
                or not request.connection_tokens <= header_rules.PLAIN_TOKENS:
            return self._restart(data)
        connection = pool.take_idle(0)
        if connection is None:  # no pooled connection: connecting waits, in the greenlet
            return self._restart(data)
        self._begin()
        head = header_rules.upstream_request_head_from_lines(
            request.method, upstream_target(request, location), request.lines,
            client_ip=conn.client_ip, scheme=b"http", host=request.host, framing=b"")
        upstream = connection.sock
        try:
            sent = upstream.sock.send(head)
        except OSError:
            sent = -1
        if sent != len(head):  # a stale or full connection: the greenlet path retries
            connection.close()
            return self._wake((RETRY, request, location))
        self.request, self.location, self.connection = request, location, connection
        self.pool = pool
        upstream.on_readable = self._upstream_readable
        if not upstream.read_event.active:  # pooled connections are watched while idle
            upstream.read_event.start(upstream._readable)
        self._arm(location.read_timeout)

    # -- waiting for the upstream ---------------------------------------------------
    def _upstream_readable(self) -> None:
        connection, request, location = self.connection, self.request, self.location
        upstream = connection.sock
        try:
            data = upstream.sock.recv(HEAD_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        upstream.on_readable = None
        self.connection = self.request = self.location = None
        if not data:  # closed before answering: the free retry of a pooled connection
            connection.close()
            return self._wake((RETRY, request, location))
        end = data.find(b"\r\n\r\n")
        response = client_head = None
        if end >= 0:
            head = data[:end + 4]
            known = known_replies.heads.get(head)
            if known is not None:
                response, client_head = known
            else:
                with contextlib.suppress(UpstreamError):  # the greenlet path reports it
                    response = parse_response_head(head)
        rest = data[end + 4:]
        if not self._whole_and_small(request, response, rest):
            return self._wake((RESUME, request, location, connection, data))
        if response.keep_alive:
            self.pool.release(connection)
        else:
            connection.close()
        if client_head is None:
            client_head = self._client_head(head, response, rest, True)
        self._answer(request, response.status, client_head, rest)

    # -- answering ---------------------------------------------------------------------
    def _begin(self) -> None:
        """A request is taken on: count it, as ClientConnection.handle does."""
        conn = self.conn
        conn.reader.served = True
        conn.requests += 1  # keep_alive_allowed() closes after keepalive_requests
        stats.requests += 1
        conn.status = conn.body_bytes = 0
        conn.response_started = False

    def _whole_and_small(self, request, response: ResponseHead | None, rest: bytes) -> bool:  # noqa: ANN001
        """Whether the response is one the lane sends itself: relay_response's
        own fast case (a whole small Content-Length body, keep-alive both ways)."""
        return not (response is None or response.content_length != len(rest)
                    or len(rest) >= _SMALL_BODY or has_no_body(request.method, response.status)
                    or request.version != "1.1" or not self.conn.keep_alive_allowed(request))

    def _client_head(self, head: bytes, response: ResponseHead, rest: bytes, keep: bool) -> bytes:
        """The client's copy of a whole small response's head, with the body's
        length; kept with the parse when the length is the upstream's own (`keep`)."""
        client_head = response.client_head(b"Content-Length: %d\r\n" % len(rest), b"")
        if keep:
            known_replies.add(head, response, client_head)
        return client_head

    def _answer(self, request, status: int, client_head: bytes, rest: bytes) -> None:  # noqa: ANN001
        """Queue a whole small response: it is sent with the others of this loop
        iteration (iteration_batch.py), then the lane waits for the next request."""
        self.answer = (request, status, client_head + rest, len(rest))
        _unsent_answers.add(self)

    def _send_answer(self) -> None:
        """Send the queued answer, log the request, wait for the next one."""
        answer = self.answer
        if answer is None:  # disarmed in the meantime
            return
        self.answer = None
        request, status, payload, body_bytes = answer
        conn = self.conn
        conn.status = status
        conn.response_started = True
        try:
            sent = conn.sock.sock.send(payload)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = -1
        if sent < 0:  # the client is gone
            return self._wake((CLOSED,))
        stats.bytes_out += sent
        conn.body_bytes = body_bytes
        if sent < len(payload):
            return self._wake((SEND_REST, request, payload[sent:]))
        conn.site.log_request(conn, request)
        self._wait_for_request(self.keepalive_timeout)

    # -- timeouts (stream.py's sweeper calls this in the hub) ------------------------
    def throw(self, exc: BaseException) -> None:
        connection, request, location = self.connection, self.request, self.location
        if connection is None:  # the keep-alive timeout: close, as nginx does
            self._disarm()
            return self._wake((CLOSED,))
        if self.packet_size:  # a uwsgi call: the greenlet answers 504 and logs it
            return self._uwsgi_timed_out()
        # The read timeout: 504, and the request is not sent again (a timeout is not
        # the failure of an idle connection that the free retry is for).
        self._disarm()
        connection.close()
        return self._wake((TIMED_OUT, request, location))

    # -- handing over ------------------------------------------------------------------
    def _restart(self, data: bytes) -> None:
        """The usual path reads the request in `data` from the start."""
        self._wake((DATA, data))

    def _wake(self, outcome: tuple) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.switch(outcome)

    def _disarm(self) -> None:
        self.answer = None
        client = self.conn.sock
        client.on_readable = None
        client.clear_deadline()
        connection = self.connection
        if connection is None:
            return
        if self.packet_size:  # a uwsgi call's raw socket (lane_uwsgi.py)
            self._let_go()
            connection.close()
            return
        self.connection = self.request = self.location = None
        connection.sock.on_readable = None
        connection.sock.clear_deadline()
        connection.close()


# Lanes whose answer is queued, sent together at the end of the loop iteration.
_unsent_answers = IterationBatch(Lane._send_answer)
