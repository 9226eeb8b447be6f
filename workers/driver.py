"""The one driver: libev callbacks move bytes between a client, the exchange core and an upstream.

Every proxy_pass and uwsgi_pass request of a connection runs here, in the
hub, with no greenlet: four greenlet switches per request cost more CPU than
the whole HTTP handling of a small one (measured). A connection is accepted
in a callback too (workers/acceptor.py). A greenlet is spawned only where a
call must block: to resolve an upstream host name, and for a WebSocket
tunnel after a 101 (ClientConnection._tunnel, workers/tunnel.py).

The rules are the exchange core's (workers/exchange.py): this module reads,
writes, watches and times out, and asks the core what the bytes mean. One
request at a time, in order:

1. the head is read (http1.RequestReader, sans-IO), routed and checked;
2. a chunked body is read whole first when it is buffered (spooled_body.py),
   else the body streams as it comes;
3. a peer is chosen (exchange.Tries), a pooled connection taken or a new one
   opened, and the request sent; a failure before the reply is retried as the
   core decides;
4. the reply is read as fast as the upstream sends it and re-framed
   (exchange.Reply); what the client cannot take yet is held (buffering.py),
   and the upstream is released the moment the reply is whole: a slow client
   holds neither an upstream connection nor a uWSGI process;
5. the request is logged, and the connection waits for the next one.

Timeouts are stream deadlines (stream.py's sweeper): on the client, the
header, keep-alive, body and send timeouts; on the upstream, the connect,
send and read timeouts, each between two successive operations, as nginx's.

An https:// upstream (workers/upstream_tls.py) is the same path: after the TCP
connect the socket is wrapped and the TLS handshake stepped in callbacks
(`_start_tls`, `_handshake`) under the connect timeout, then the request and
the reply go over the SSLSocket, where upstream_tls.WOULD_BLOCK stands for
BlockingIOError.
"""

from __future__ import annotations

import _socket
import errno
import logging
import os
import socket
import ssl
from collections.abc import Iterator
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

import gevent
from gevent import get_hub
from gevent import socket as gsocket

from workers import exchange, request_id, upstream_tls, uwsgi, virtual_hosts
from workers.buffering import HeldOutput, wants_buffering
from workers.errors import HttpError, UpstreamError, error_page
from workers.headers import switching_protocols_head
from workers.http1 import HEAD_RECV_SIZE, NEED_MORE, RECV_SIZE
from workers.metrics import recorder
from workers.spooled_body import SpooledBody
from workers.stats import stats
from workers.stream import CallbackAlarm, Stream, family_and_target
from workers.upstream_tls import WOULD_BLOCK
from workers.upstreams import UpstreamConnection, log_excess, pool_for
from workers.uwsgi_packet import VarsTooBig

if TYPE_CHECKING:
    from prefork_proxy.config import Location, Upstream
    from prefork_proxy.values import Address
    from workers.balancing import PeerState
    from workers.client import ClientConnection
    from workers.http1 import Request
    from workers.upstreams import UpstreamPool
    from workers.worker import Site

log = logging.getLogger("worker")

# How the driver hands a connection back (ClientConnection.ended).
CLOSED = "closed"  # close the connection
TUNNEL = "tunnel"  # (TUNNEL, request, 101 head, client bytes, upstream bytes, connection,
#                    location): ClientConnection._tunnel
# While the worker drains, an idle connection waits this long for its next request
# (answered with Connection: close) before it is closed (workers/worker.py, drain).
DRAIN_IDLE_TIMEOUT = 1.0
# Request bytes waiting for the upstream past this: the client's body is not read
# until they drain (TCP back-pressure reaches the client).
UPSTREAM_BACKLOG = 65536
# A reply not buffered: the upstream is not read while the client has this much to take.
UNBUFFERED_BACKLOG = 65536
# One callback reads the upstream up to this much before it hands the bytes over.
READ_BATCH = 65536
_NONBLOCKING_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
# The phases of a connection.
IDLE, HEAD, BODY, UPSTREAM, FLUSH, DONE = range(6)
# The statuses after which the client's request may not have been read to its end.
_CLOSING_STATUSES = frozenset({400, 408, 413, 414, 431, 505})



class Driver:
    """The exchanges of one client connection, run in callbacks (module docstring)."""

    __slots__ = (
        "conn", "client", "reader", "site", "default_site", "names", "worker", "hub", "phase",
        "client_alarm", "upstream_alarm", "head_deadline",
        # the request
        "request", "location", "codec", "pool", "tries", "head", "packet_size",
        "body_mode", "body_reading", "body_started", "body_done", "body_size", "spool",
        "spool_pieces",
        # the attempt
        "connection", "upstream", "connecting", "upstream_out", "attempt", "request_sent",
        "peer_state", "reading_reply", "attempt_started", "queued",
        # the reply
        "reply", "out", "out_limit", "out_memory", "out_file", "paused", "keep_alive",
    )

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.client: Stream = conn.sock
        self.reader = conn.reader
        # The request's Site, and the address's default one: a head is read under the
        # default server's limits (nginx), then the host may pick another (_begin).
        self.site = self.default_site = conn.site
        self.names = conn.names  # None: one server on the address, no lookup
        self.worker = conn.site.worker
        self.hub = get_hub()
        self.phase = IDLE
        self.client_alarm = CallbackAlarm(self._client_timed_out)
        self.upstream_alarm = CallbackAlarm(self._upstream_timed_out)
        self.head_deadline: float | None = None
        self.attempt = 0  # counts attempts: a late resolver answer is for an old one
        self._clear_request()

    def _clear_request(self) -> None:
        self.request: Request | None = None
        self.location: Location | None = None
        self.codec = exchange.HTTP_CODEC
        self.pool: UpstreamPool | None = None
        self.tries: exchange.Tries | None = None
        self.head = b""
        self.packet_size = 0
        self.body_mode = exchange.BODY_NONE
        self.body_reading = False  # the client's body is read as it comes
        self.body_started = False  # a body byte was read (it cannot be sent again)
        self.body_done = True  # the whole request is queued for the upstream
        self.body_size = 0
        self.spool: SpooledBody | None = None
        self.spool_pieces: Iterator[bytes] | None = None
        self.connection: UpstreamConnection | None = None
        self.upstream: Stream | None = None
        self.connecting = False
        self.request_sent = False  # a byte of this attempt's request went out
        self.upstream_out: list[bytes] = []
        self.peer_state = None
        self.queued = False  # waiting in the upstream's queue (workers/peer_queue.py)
        self.reading_reply = False
        self.attempt_started = 0.0
        self.reply: exchange.Reply | None = None
        self.out: HeldOutput | None = None
        self.out_limit = UNBUFFERED_BACKLOG
        # The held output's limits: until a reply's head says otherwise, unbuffered.
        self.out_memory, self.out_file = UNBUFFERED_BACKLOG, 0
        self.paused = False  # the upstream is not read: the client has enough to take
        self.keep_alive = False

    # -- the connection's life ----------------------------------------------------
    def start(self, first_deadline: float) -> None:
        """Serve the connection from now on, in callbacks. The first request's head
        is due by `first_deadline` (client_header_timeout from the accept)."""
        self.head_deadline = first_deadline
        self.client.on_readable = self._client_readable
        self._wait_for_request(first_deadline - _monotonic())

    def _wake(self, outcome: tuple) -> None:
        """Let go of the connection: stop its watchers now, and hand it back to
        ClientConnection.ended at the end of this loop iteration (so that nothing is
        closed under the callback running now)."""
        if self.phase == DONE:
            return
        self.phase = DONE
        self.queued = False  # a place in an upstream's queue is given up
        self.worker.idle.discard(self.conn)
        self._disarm()
        self.hub.loop.run_callback(self.conn.ended, outcome)

    def _close(self) -> None:
        self._drop_upstream()
        self._wake((CLOSED,))

    def abort(self) -> None:
        """The worker stops: let go of everything at once."""
        self.phase = DONE
        self.worker.idle.discard(self.conn)
        self._disarm()

    def _disarm(self) -> None:
        """Stop every watcher and deadline of this connection (it is closing, or a
        tunnel takes it over)."""
        client = self.client
        client.on_readable = None
        client.clear_deadline()
        if client.read_event.active:
            client.read_event.stop()
        if client._write_event is not None:
            client._write_event.stop()
        self._drop_upstream()
        if self.out is not None:
            self.out.close()
            self.out = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    # -- waiting for a request ---------------------------------------------------
    def _wait_for_request(self, timeout: float) -> None:
        self.phase = IDLE
        reader = self.reader
        reader.started = False  # idle: a drain may close it (worker.py)
        client = self.client
        if not client.read_event.active:
            client.read_event.start(client._readable)
        if not reader.idle:  # pipelined bytes, or an error to answer: at once
            self.hub.loop.run_callback(self._take_head, b"")
            return
        self.worker.idle.add(self.conn)
        if self.worker.draining:
            timeout = min(timeout, DRAIN_IDLE_TIMEOUT)
        self._arm_client(max(timeout, 0.001))

    def _arm_client(self, timeout: float) -> None:
        self.client.set_deadline(timeout, self.client_alarm)  # (re-arming moves it)

    def _arm_upstream(self, timeout: float) -> None:
        self.upstream.set_deadline(timeout, self.upstream_alarm)

    def _client_readable(self) -> None:
        phase = self.phase
        if phase <= HEAD:
            size = HEAD_RECV_SIZE
        elif self.body_reading:
            size = RECV_SIZE
        else:
            # While a request is served, pipelined bytes wait, unwatched. A close
            # ends the exchange: nginx's `proxy_ignore_client_abort off` frees the
            # upstream (a long poll, a uWSGI process) and logs 499.
            client = self.client
            client.read_event.stop()
            try:
                waiting = client.sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                return
            except OSError:
                waiting = b""
            if not waiting:
                if not self.conn.response_started:
                    self.conn.status = 499  # nginx: "client closed request"
                self._client_gone()
            return
        try:
            data = self.client.sock.recv(size)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            stats.bytes_in += len(data)
        if phase > HEAD:
            self._body_bytes(data)
            return
        if not data:
            if phase == HEAD:  # nginx answers a head cut short with 400
                return self._client_error(
                    HttpError(400, "client closed the connection mid-request"))
            return self._close()
        self._take_head(data)

    def _take_head(self, data: bytes) -> None:
        if self.phase == DONE:
            return
        reader = self.reader
        if reader.leftover:
            data, reader.leftover = reader.leftover + data, b""
        if self.phase == IDLE:
            self.worker.idle.discard(self.conn)
            self.conn.started = now = _monotonic()  # nginx $request_time: the first byte
            if reader.served:  # a later request: its head is due this long from now
                self.head_deadline = now + self.site.header_timeout
            self.phase = HEAD
        try:
            request = reader.head_from(data)
        except HttpError as exc:
            return self._client_error(exc)
        if request is None:
            if reader.idle and not reader.started:  # nothing came after all: still idle
                return self._wait_for_request(self.site.keepalive_timeout)
            self._arm_client(max(self.head_deadline - _monotonic(), 0.001))
            return
        self.head_deadline = None
        self._begin(request)

    # -- a request ---------------------------------------------------------------
    def _begin(self, request: Request) -> None:
        conn = self.conn
        conn.requests += 1  # keep_alive_allowed() closes after keepalive_requests
        stats.requests += 1
        conn.status = conn.body_bytes = 0
        conn.response_started = False
        self.client.clear_deadline()
        self.request = request
        if self.names is not None and not self._choose_site(request):
            return self._client_error(HttpError(400, "invalid host"))
        location = self.site.router.match(request.uri)
        conn.location_row = recorder.location_row(location)
        conn.upstream_peer = None
        conn.upstream_status = 0
        conn.upstream_time = -1.0
        if conn.real_ip is not None:  # workers/real_ip.py: a trusted proxy names the client
            conn.real_ip.apply(conn, request)
        if self.site.request_ids:
            request_id.assign(conn, request)
        try:
            exchange.check_request(request, location)
        except HttpError as exc:
            return self._client_error(exc)
        self.location = location
        self.phase = BODY
        self.keep_alive = conn.keep_alive_allowed(request)
        self.pool = pool = pool_for(location.upstream)
        self.tries = tries = exchange.Tries(pool.balancer, conn.client_ip, request.method,
                                            location.next_upstream)
        tries.first(_monotonic())
        if location.protocol == "uwsgi":
            self.codec = exchange.UWSGI_CODEC
        if request.has_body:
            if request.expect_continue:  # nginx answers 100 itself, then reads the body
                self._send_client(exchange.CONTINUE, started=False)
                if self.phase == DONE:
                    return
            if exchange.buffers_request_body(request, location):
                self.spool = SpooledBody(location.client_body_buffer_size)
                self.body_done = False
                self._read_body()
                return
        self._start_attempt()

    def _choose_site(self, request: Request) -> bool:
        """The server of the address that the request's host names (nginx's
        server_name); False when the host is not a valid one (400)."""
        site = virtual_hosts.site_for(self.names, request)
        if site is virtual_hosts.INVALID_HOST:
            return False
        if site is not self.site:
            self._serve_with(site)
        return True

    def _serve_with(self, site: Site) -> None:
        """The limits, routes and log of `site` apply from now on (client.py reads
        the body and send timeouts, the keep-alive requests from the connection)."""
        conn = self.conn
        self.site = conn.site = site
        conn.body_timeout = site.body_timeout
        conn.send_timeout = site.send_timeout

    def _read_body(self) -> None:
        """Read the client's body: into the spool, or on to the upstream."""
        self.body_reading = True
        client = self.client
        if not client.read_event.active:
            client.read_event.start(client._readable)
        self._pump_body()

    def _body_bytes(self, data: bytes) -> None:
        try:
            self.reader.feed_body(data)
        except HttpError as exc:
            return self._client_error(exc)
        self._pump_body()

    def _pump_body(self) -> None:
        """Take every body piece the reader holds: into the spool, or queued for the
        upstream. The client is not read while the upstream has a backlog (TCP
        back-pressure reaches the client); the queue then holds at most the
        backlog and one read."""
        reader = self.reader
        limit = self.location.client_max_body_size
        spool = self.spool
        out = self.upstream_out
        try:
            while (piece := reader.body_event()) is not NEED_MORE:
                self.body_started = True
                if piece is None:  # the body's end
                    self.body_reading = False
                    self.body_done = True
                    self.client.clear_deadline()
                    if spool is not None:
                        self.body_size = spool.size
                        self._start_attempt()
                        return
                    out.append(exchange.body_tail(self.body_mode))
                    break
                self.body_size += len(piece)
                if limit and self.body_size > limit:
                    raise HttpError(413, f"request body over client_max_body_size ({limit} bytes)")
                if spool is not None:
                    spool.write(piece)
                else:
                    out.append(exchange.frame_body(piece, self.body_mode))
        except HttpError as exc:
            return self._client_error(exc)
        if self.body_reading:
            if spool is None and sum(map(len, out)) > UPSTREAM_BACKLOG:
                self.client.read_event.stop()  # resumed once the upstream took it
            else:
                self._arm_client(self.conn.body_timeout)
        if spool is None and self.upstream is not None and not self.connecting:
            self._flush_upstream()

    # -- an attempt: a peer, a connection, the request sent -------------------------
    def _start_attempt(self) -> None:
        self.phase = UPSTREAM
        tries = self.tries
        peer = self._take_peer()
        if peer is None:
            if tries.balancer.waits_for_room(tries.tried):
                return self._wait_for_room()
            what = ("uwsgi servers" if self.codec is exchange.UWSGI_CODEC else "upstreams")
            return self._give_up(tries.no_peer_error(f"{what} in {self.location.upstream.name}"))
        peer_index = tries.peer_index
        if not self.head:
            try:
                self._make_head()
            except HttpError as exc:
                return self._client_error(exc)
        self.attempt += 1
        self.attempt_started = _monotonic()  # nginx $upstream_response_time: this try
        self.request_sent = False
        self.upstream_out = [self.head]
        self.peer_state = peer
        if tries.free_retry and self.codec is exchange.HTTP_CODEC:
            connection = self.pool.take_idle(peer_index, self.location.tls)
            if connection is not None:
                self._use(connection)
                return self._connected()
        self._open(peer_index, peer.peer.address)

    def _take_peer(self) -> PeerState | None:
        """The chosen peer, its connection counted; another when max_conns was
        reached since it was chosen (by another worker)."""
        tries = self.tries
        balancer = tries.balancer
        while (index := tries.peer_index) is not None:
            peer = balancer.peers[index]
            if peer.acquire():
                return peer
            tries.peer_index = balancer.choose(tries.tried, tries.client_ip, _monotonic())
        return None

    def _wait_for_room(self) -> None:
        """Every usable peer is at max_conns: wait in the upstream's queue, or 503."""
        queue = self.pool.queue
        if queue is not None and queue.wait(self):
            self.queued = True
            return
        self._give_up(_full_error(self.location.upstream, "its queue is full"
                                  if queue is not None else "no queue"))

    def queue_ready(self) -> None:
        """The queue found room on a peer (workers/peer_queue.py)."""
        self.queued = False
        if self.phase == UPSTREAM:
            self._start_attempt()

    def queue_timed_out(self) -> None:
        self.queued = False
        if self.phase == UPSTREAM:
            self._give_up(_full_error(self.location.upstream, "queue_timeout passed"))

    def _make_head(self) -> None:
        request, location = self.request, self.location
        spool_size = self.spool.size if self.spool is not None else None
        if self.codec is exchange.HTTP_CODEC:
            self.head, self.body_mode = exchange.http_request_head(
                request, location, self.conn.client_ip, spool_size,
                self.conn.forwarded_request_id, b"https" if self.conn.tls else b"http")
            return
        content_length = spool_size if spool_size is not None else request.content_length
        try:
            self.head = uwsgi.request_packet(self.conn, request, content_length,
                                             uwsgi.params_for(location), location)
        except VarsTooBig as exc:
            log.error("%s, client %s, request \"%s\"", exc.reason, self.conn.client_addr,
                      _request_line(request))
            raise
        self.packet_size = len(self.head)
        self.body_mode = exchange.BODY_AS_IS if request.has_body else exchange.BODY_NONE

    def _open(self, peer_index: int, address: Address) -> None:
        known = family_and_target(address)
        if known is None:  # a host name: resolving blocks, so a greenlet does it
            gevent.spawn(self._resolve, self.attempt, address)
            return
        self._connect(*known, address)

    def _resolve(self, attempt: int, address: Address) -> None:
        try:
            family, _, _, _, target = gsocket.getaddrinfo(
                address.host, address.port, 0, socket.SOCK_STREAM)[0]
        except OSError as exc:
            if attempt == self.attempt and self.phase == UPSTREAM:
                self._attempt_failed(UpstreamError(
                    502, f"connect to {address} failed: {exc.strerror or exc}",
                    retryable=True, cause="connect_error"))
            return
        if attempt == self.attempt and self.phase == UPSTREAM:
            self._connect(family, target, address)

    def _connect(self, family: int, target: object, address: Address) -> None:
        sock = _socket.socket(family, _NONBLOCKING_STREAM)
        # A bodiless uwsgi request is one write (the packet): Nagle cannot delay it,
        # and nginx sets no TCP_NODELAY on uwsgi connections either (strace).
        if family != socket.AF_UNIX and (self.codec is exchange.HTTP_CODEC
                                         or self.request.has_body):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        error = sock.connect_ex(target)
        if error and error not in (errno.EINPROGRESS, errno.EAGAIN):
            sock.close()
            return self._attempt_failed(_connect_error(address, error))
        tls = self.location.tls
        self._use(UpstreamConnection(Stream(sock), self.tries.peer_index, tls))
        if not error:
            return self._connected() if tls is None else self._start_tls(address)
        # On loopback the handshake has usually finished (or failed) by now.
        self.connecting = True
        upstream = self.upstream
        upstream.write_event.start(self._connect_done, address)
        self._arm_upstream(self.location.connect_timeout)

    def _connect_done(self, address: Address) -> None:
        upstream = self.upstream
        upstream.write_event.stop()
        self.connecting = False
        error = upstream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            return self._attempt_failed(_connect_error(address, error))
        if self.location.tls is not None:
            return self._start_tls(address)
        self._connected()

    def _start_tls(self, address: Address) -> None:
        """The TCP connection is up: wrap it and begin the TLS handshake. nginx counts
        the handshake in proxy_connect_timeout: one deadline from the connect's start
        (armed now if the connect was immediate)."""
        upstream = self.upstream
        connection = self.connection
        upstream.sock = upstream_tls.wrap(upstream.sock, connection.tls, connection.peer_index)
        self.connecting = True
        if upstream.waiter is None:
            self._arm_upstream(self.location.connect_timeout)
        upstream.on_readable = self._handshake
        self._handshake(address)

    def _handshake(self, address: Address | None = None) -> None:
        """One step of the TLS handshake, from _start_tls or a watcher."""
        upstream = self.upstream
        connection = self.connection
        if address is None:
            address = self.tries.balancer.peers[connection.peer_index].peer.address
        try:
            step = upstream_tls.handshake_step(upstream.sock, connection.tls, address)
        except UpstreamError as exc:
            return self._attempt_failed(exc)
        if step == upstream_tls.WANT_READ:
            if upstream._write_event is not None:
                upstream._write_event.stop()
            if not upstream.read_event.active:
                upstream.read_event.start(upstream._readable)
            return
        if upstream.read_event.active:
            upstream.read_event.stop()
        if step == upstream_tls.WANT_WRITE:
            upstream.write_event.start(self._handshake)
            return
        if upstream._write_event is not None:
            upstream._write_event.stop()
        self.connecting = False
        upstream.on_readable = self._upstream_readable
        upstream.clear_deadline()
        upstream_tls.remember_session(upstream.sock, connection.tls, connection.peer_index)
        self._connected()

    def _use(self, connection: UpstreamConnection) -> None:
        self.connection = connection
        self.upstream = upstream = connection.sock
        upstream.on_readable = self._upstream_readable
        upstream.idle_handler = None

    def _connected(self) -> None:
        """Send the request: the head, then the body (spooled, or as it comes)."""
        self.reply = exchange.Reply(self.request, self.keep_alive, self.codec, self.packet_size)
        if self.spool is not None:
            self.spool_pieces = self.spool.pieces_to_send()
        elif self.request.has_body:  # streamed: read from the client as it comes
            self.body_done = False
            if not self.body_reading:
                self._read_body()  # queues what the client has sent, then flushes
                return
        self._flush_upstream()

    def _flush_upstream(self) -> None:
        upstream = self.upstream
        out = self.upstream_out
        while True:
            # A held body goes out a piece at a time; its first piece with the head.
            if len(out) < 2 and self.spool_pieces is not None:
                piece = next(self.spool_pieces, None)
                if piece is None:
                    self.spool_pieces = None
                else:
                    out.append(piece)
            if not out:
                break
            data = out[0] if len(out) == 1 else b"".join(out)
            try:
                sent = upstream.sock.send(data)
            except WOULD_BLOCK:  # (over TLS, the retry sends the same bytes, as OpenSSL asks)
                sent = 0
            except OSError as exc:
                return self._attempt_failed(UpstreamError(
                    502, f"sending the request failed: {exc.strerror or exc}", cause="reset"))
            if sent:
                self.request_sent = True
            if sent < len(data):
                out[:] = [data[sent:]]
                upstream.write_event.start(self._flush_upstream)
                self._arm_upstream(self.location.send_timeout)
                return
            out.clear()
        if upstream._write_event is not None:
            upstream._write_event.stop()
        if not self.body_done:
            # Wait for more of the client's body (its read was paused for the backlog).
            upstream.clear_deadline()
            client = self.client
            if self.body_reading and not client.read_event.active:
                client.read_event.start(client._readable)
                self._arm_client(self.conn.body_timeout)
            return
        # The whole request is out: wait for the reply.
        self.reading_reply = True
        if not upstream.read_event.active:  # pooled connections are watched while idle
            upstream.read_event.start(upstream._readable)
        self._arm_upstream(self.location.read_timeout)

    # -- the reply -------------------------------------------------------------------
    def _upstream_readable(self) -> None:
        if not self.reading_reply:
            # The upstream speaks before the request is out (an early reply, or a
            # close): it is read once the request is sent.
            self.upstream.read_event.stop()
            return
        sock = self.upstream.sock
        pieces = []
        size = 0
        closed = False
        reply = self.reply
        want = HEAD_RECV_SIZE if not reply.head_done else READ_BATCH
        # proxy_pass reads once per wake-up. A uWSGI reply usually ends with a close
        # right after it: reading on to EAGAIN or EOF finds that close now, so a
        # short body goes out whole, with a length (exchange.Reply). Over TLS a
        # read returns one record (16 KiB at most): reading on to would-block
        # takes a batch, and leaves no plaintext in the TLS layer, which would not
        # make the descriptor readable again (a batch's last read asks 64 KiB,
        # more than a record, so it empties the record it reads).
        read_on = self.codec is exchange.UWSGI_CODEC or self.connection.tls is not None
        asked = want
        full = False  # the last read filled what it asked for: more may be waiting
        try:
            data = sock.recv(asked)
            while data:
                pieces.append(data)
                size += len(data)
                full = len(data) == asked
                if size >= READ_BATCH or not (read_on or full):
                    break
                asked = READ_BATCH
                data = sock.recv(asked)
            else:
                closed = True
        except WOULD_BLOCK:
            full = False  # read to EAGAIN: the socket was empty
            if not pieces:
                return
        except OSError as exc:
            if not pieces:
                return self._reply_failed(exc)
            closed = True
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        head_done = reply.head_done
        if not head_done:  # (a drain since the request came makes it close)
            reply.keep_alive = self.conn.keep_alive_allowed(self.request)
        try:
            out = reply.feed(data, closed)
        except UpstreamError as exc:
            return self._reply_broken(exc) if head_done else self._attempt_failed(exc)
        if not head_done:
            if not reply.head_done:
                self._arm_upstream(self.location.read_timeout)
                return
            if not self._head_arrived():
                return
        if out:
            self._send_client(out)
            if self.phase == DONE:
                return
        if reply.complete:
            return self._reply_complete(full and not closed)
        self._arm_upstream(self.location.read_timeout)
        out_held = self.out
        if out_held is not None and out_held.held > self.out_limit:
            return self._pause_upstream()
        if full and self.connection.tls is not None:
            self._read_tls_pending()

    def _read_tls_pending(self) -> None:
        """Plaintext left in the TLS layer makes no descriptor readable: read it in
        this loop iteration's callbacks, not at the next poll (that may never come)."""
        upstream = self.upstream
        if upstream.sock.pending():
            self.hub.loop.run_callback(self._tls_pending_readable, upstream)

    def _tls_pending_readable(self, upstream: Stream) -> None:
        if upstream is self.upstream and self.reading_reply and not self.paused:
            self._upstream_readable()

    def _head_arrived(self) -> bool:
        """The reply's head is in: count the peer's success, and hand a 101 to the
        tunnel. False when the driver has let go of the exchange."""
        reply = self.reply
        tries = self.tries
        statuses = tries.statuses  # next_upstream's http_5xx/429: empty by default
        if statuses and reply.response.status in statuses and self._next_after_status():
            return False
        tries.succeeded()
        conn = self.conn
        conn.status = conn.upstream_status = reply.status
        conn.upstream_peer = peer = self.peer_state
        recorder.upstream_response(peer.metric)
        if reply.switching:
            if exchange.upgrade_asked(self.request, self.location) is None:
                self._give_up(UpstreamError(
                    502, "upstream switched protocols without an Upgrade request"))
                return False
            self._tunnel()
            return False
        on, memory, file_limit = self.location.reply_buffering
        if not wants_buffering(reply.response.lines, on):
            memory, file_limit = UNBUFFERED_BACKLOG, 0
        self.out_limit = memory + file_limit
        self.out_memory, self.out_file = memory, file_limit
        out = self.out
        if out is not None:  # (made for a 100 Continue the client did not take at once)
            out.memory_limit, out.file_limit = memory, file_limit
        return True

    def _next_after_status(self) -> bool:
        """A reply status that next_upstream lists (http_503...): True when the reply
        is discarded (its connection closed, nothing sent to the client) and the
        request goes to the next peer; False when this reply is the answer."""
        tries = self.tries
        failed_peer = tries.peer_index
        status = self.reply.status
        if not tries.try_next_after_status(status, self.body_started and self.spool is None,
                                           _monotonic()):
            return False
        recorder.upstream_response(self.peer_state.metric)
        state = tries.balancer.peers[failed_peer]
        log.warning("upstream %s answered %d, next upstream tried, client %s, request "
                    "\"%s\", request_id %s", state.peer.address, status,
                    self.conn.client_addr, _request_line(self.request),
                    self.conn.request_id or "-")
        self._drop_upstream()  # (closed: the rest of that reply is never read)
        self.reading_reply = False
        self.reply = None
        self._start_attempt()
        return True

    def _reply_complete(self, ended_a_full_read: bool) -> None:
        """The whole reply is in: the upstream goes back to the pool (or closes)
        before the client has taken the rest.

        A reply that ends exactly where a full read ended is not pooled: its
        upstream may have sent more in the same write, which the kernel can
        deliver a moment later when it split the write at that very byte (a page
        boundary), too late for the peeks of upstreams.py (bench/mixing.py's
        /chunked-64k?end=73728: a head read of 8 KiB, then 64 KiB). An honest
        reply ends there once in a read size's worth of lengths: closing costs
        nothing measurable."""
        reply = self.reply
        upstream = self.upstream
        if reply.excess:
            log_excess(upstream, reply.excess,
                       "a body of at least " if reply.body == exchange.NO_BODY else "")
        elif reply.excess is None:
            log_excess(upstream, None)
        self._release_upstream(reply.reusable and self.codec is exchange.HTTP_CODEC
                               and not ended_a_full_read)
        self.conn.body_bytes = reply.body_bytes
        self._finish_once_sent()

    def _release_upstream(self, reusable: bool) -> None:
        connection = self.connection
        if connection is None:
            return
        if connection.tls is not None:  # a TLS 1.3 ticket came with the reply
            upstream_tls.remember_session(connection.sock.sock, connection.tls,
                                          connection.peer_index)
        self._let_go_upstream()
        if reusable:
            self.pool.release(connection)
        else:
            connection.close()

    def _let_go_upstream(self) -> None:
        conn = self.conn
        if conn.upstream_peer is not None and conn.upstream_time < 0:
            # nginx $upstream_response_time: from the try's start until the upstream
            # is let go (the reply read whole, cut off, or handed to a tunnel).
            conn.upstream_time = elapsed = _monotonic() - self.attempt_started
            peer = conn.upstream_peer
            recorder.upstream_time(peer.metric, elapsed)
            peer.board.observe(peer.slot, elapsed)  # the shared latency EWMA
        upstream = self.upstream
        upstream.on_readable = None
        upstream.clear_deadline()
        if upstream._write_event is not None:
            upstream._write_event.stop()
        self.reading_reply = False
        self.connection = self.upstream = None
        if self.peer_state is not None:
            self._release_peer()

    def _release_peer(self) -> None:
        self.peer_state.release()
        self.peer_state = None
        queue = self.pool.queue
        if queue is not None:
            queue.released()

    def _drop_upstream(self) -> None:
        connection = self.connection
        if connection is not None:
            self._let_go_upstream()
            connection.close()
        elif self.peer_state is not None:
            self._release_peer()

    def _pause_upstream(self) -> None:
        self.paused = True
        self.upstream.read_event.stop()
        self.upstream.clear_deadline()

    def _resume_upstream(self) -> None:
        self.paused = False
        upstream = self.upstream
        if upstream is not None:
            upstream.read_event.start(upstream._readable)
            self._arm_upstream(self.location.read_timeout)
            if self.connection.tls is not None:
                self._read_tls_pending()

    def _tunnel(self) -> None:
        reply = self.reply
        response = reply.response
        head = switching_protocols_head(response.status_line, response.headers)
        connection = self.connection
        self._let_go_upstream()
        upstream = connection.sock
        if upstream.read_event.active:
            upstream.read_event.stop()
        self._wake((TUNNEL, self.request, head, self.reader.take_upgrade_rest(), reply.rest,
                    connection, self.location))

    # -- towards the client ------------------------------------------------------------
    def _send_client(self, data: bytes, started: bool = True) -> None:
        """Send now what the client takes; hold the rest (buffering.HeldOutput, made
        on the first send that falls short). `started` is False for a 100 Continue."""
        conn = self.conn
        if started:
            conn.response_started = True
        out = self.out
        if out is None or not out.held:
            try:
                sent = self.client.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                return self._client_gone()
            stats.bytes_out += sent
            if sent == len(data):
                return
            data = data[sent:]
            if out is None:
                self.out = out = HeldOutput(conn, self.out_memory, self.out_file)
        out.hold(bytes(data))
        client = self.client
        client.write_event.start(self._client_writable)
        self._arm_client(conn.send_timeout)

    def _client_writable(self) -> None:
        out = self.out
        try:
            out.push()
        except OSError:
            return self._client_gone()
        if out.held:
            self._arm_client(self.conn.send_timeout)  # nginx: between two writes
            if self.paused and out.held <= self.out_limit:
                self._resume_upstream()
            return
        self.client.write_event.stop()
        self.client.clear_deadline()
        if self.phase == FLUSH:
            return self._finish()
        if self.paused:
            self._resume_upstream()

    def _client_gone(self) -> None:
        """The client's socket failed: nothing more can be sent; log and close."""
        self.site.log_request(self.conn, self.request)
        self._close()

    # -- ending a request ------------------------------------------------------------
    def _finish(self) -> None:
        request = self.request
        site = self.site
        site.log_request(self.conn, request)
        keep = self.keep_alive if self.reply is None else self.reply.keep_alive
        if self.out is not None:
            self.out.close()
        if self.spool is not None:
            self.spool.close()
        upgrade_rest = request is not None and request.upgrade is not None
        self.conn.response_started = False
        self._clear_request()
        if upgrade_rest:  # the upstream did not switch: what followed the head is HTTP
            try:
                self.reader.resume_after_refused_upgrade()
            except HttpError as exc:  # answered after this request, as a deferred error is
                self.reader.deferred_error = exc
        if not keep:
            return self._close()
        if site is not self.default_site:  # the next head is read under the default's
            self._serve_with(self.default_site)
        # nginx: keepalive_timeout is the server's that answered.
        self._wait_for_request(site.keepalive_timeout)

    def _finish_once_sent(self) -> None:
        """Finish now, or once the client has taken what is held (the FLUSH phase)."""
        out = self.out
        if out is not None and out.held:
            self.phase = FLUSH
            return
        self._finish()

    def _client_error(self, exc: HttpError) -> None:
        """The client's fault (a bad request, a stall, a body over the limit), or an
        answer due before any upstream: answer it if nothing was sent, then close
        unless the request was read to its end."""
        if exc.status < 500:
            log.info("client %s: %s", self.conn.client_addr, exc.reason)
        self._drop_upstream()
        self._answer(exc)

    def _answer(self, exc: HttpError) -> None:
        conn = self.conn
        request = self.request
        if conn.response_started:  # mid-response: closing is the only signal left
            self.site.log_request(conn, request)
            return self._close()
        keep = (request is not None and exc.status not in _CLOSING_STATUSES
                and not self.reader.events and not request.has_body
                and conn.keep_alive_allowed(request))
        conn.status = exc.status
        page = error_page(exc.status, close=not keep, request_id=conn.request_id,
                          retry_after=getattr(exc, "retry_after", None))
        conn.body_bytes = len(page) - page.index(b"\r\n\r\n") - 4  # nginx: the body only
        self.keep_alive = keep
        self.reply = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        self.body_reading = False
        self._send_client(page)
        if self.phase == DONE:
            return
        self._finish_once_sent()

    # -- failures ----------------------------------------------------------------------
    def _attempt_failed(self, error: UpstreamError, timed_out: bool = False) -> None:
        """An attempt failed before the reply's head: try again as the core says."""
        connection = self.connection
        reused = connection is not None and connection.reused
        sent = self.request_sent
        self._drop_upstream()
        self.connecting = self.reading_reply = False
        self.reply = None
        tries = self.tries
        failed_peer = tries.peer_index
        if self.codec is exchange.UWSGI_CODEC and sent:
            # uwsgi: once the packet is on its way, nothing is sent again.
            tries.balancer.failed(failed_peer, _monotonic())
            return self._give_up(error)
        try:
            decision = tries.failed(error, reused, self.body_started and self.spool is None,
                                    timed_out, _monotonic())
        except UpstreamError:
            return self._give_up(error, failed_peer)
        if decision == exchange.NEXT_PEER:
            self._log_failure(error, failed_peer)
        self._start_attempt()

    def _give_up(self, error: UpstreamError, peer_index: int | None = None) -> None:
        """Answer the upstream's failure (502/504), logged once."""
        self._drop_upstream()
        self._log_failure(error, self.tries.peer_index if peer_index is None else peer_index)
        self._answer(error)

    def _log_failure(self, error: UpstreamError, peer_index: int | None) -> None:
        """One error-log line per failure, in words: the cause, the peer, the client,
        the request and its id; and the failure counted by peer and cause."""
        if error.logged:
            return
        error.logged = True
        stats.upstream_errors += 1
        conn = self.conn
        what = "uwsgi server" if self.codec is exchange.UWSGI_CODEC else "upstream"
        if peer_index is None:
            peer = f"{what}s of {self.location.upstream.name}"
            recorder.upstream_failure(self.pool.no_peer_row, error.cause)
        else:
            state = self.tries.balancer.peers[peer_index]
            peer = f"{what} {state.peer.address}"
            recorder.upstream_failure(state.metric, error.cause)
        log.error("%s, %s, client %s, request \"%s\", request_id %s", error.reason, peer,
                  conn.client_addr, _request_line(self.request), conn.request_id or "-")

    def _reply_failed(self, exc: OSError) -> None:
        """A read of the upstream failed (a reset)."""
        reason = exc.strerror or str(exc)
        if self.reply.head_done:
            return self._reply_broken(UpstreamError(
                502, f"reading the reply failed after {self.reply.body_bytes} body bytes: "
                     f"{reason}", cause="mid_reply"))
        if self.codec is exchange.UWSGI_CODEC:
            error = exchange.uwsgi_failure(f"reading the reply from uwsgi failed: {reason}",
                                           self.reply.buffer, self.packet_size)
        elif self.reply.buffer:
            error = UpstreamError(502, f"reading the reply head failed: {reason}", cause="reset")
        else:
            error = UpstreamError(502, f"reading the reply failed before any byte of it: "
                                       f"{reason}", cause="reset")
        self._attempt_failed(error)

    def _reply_broken(self, error: UpstreamError) -> None:
        """The upstream failed mid-reply: what reached the client stands; the client
        connection closes once what is held has gone."""
        self._log_failure(error, self.tries.peer_index)
        self._drop_upstream()
        self.conn.body_bytes = self.reply.body_bytes
        self.keep_alive = False
        self.reply.keep_alive = False
        self._finish_once_sent()

    # -- timeouts (called in the hub by stream.py's sweeper) ---------------------------
    def _client_timed_out(self, exc: BaseException) -> None:
        phase = self.phase
        if phase <= HEAD:  # keep-alive or client_header_timeout: close, as nginx does
            return self._close()
        if self.body_reading and not (self.out is not None and self.out.held):
            # nginx client_body_timeout: the client stalled, not the upstream.
            return self._client_error(HttpError(408, "client timed out sending the request body"))
        self._client_gone()  # send_timeout

    def _upstream_timed_out(self, exc: BaseException) -> None:
        if self.upstream is None:
            return
        uwsgi_call = self.codec is exchange.UWSGI_CODEC
        location = self.location
        if self.connecting:
            address = self.tries.balancer.peers[self.tries.peer_index].peer.address
            handshaking = isinstance(self.upstream.sock, ssl.SSLSocket)
            what = "TLS handshake with" if handshaking else "connect to"
            return self._attempt_failed(UpstreamError(
                504, f"{what} {address} timed out ({location.connect_timeout:g}s)",
                retryable=True, cause="connect_timeout"))
        reply = self.reply
        if reply is not None and reply.head_done:
            return self._reply_broken(UpstreamError(
                504, f"read timed out ({location.read_timeout:g}s) mid-reply, after "
                     f"{reply.body_bytes} body bytes", cause="mid_reply"))
        if not self.reading_reply:
            what = "uwsgi server" if uwsgi_call else "upstream"
            return self._attempt_failed(UpstreamError(
                504, f"{what} timed out ({location.send_timeout:g}s) while the request was "
                     "sent", cause="send_timeout"), timed_out=True)
        got = len(reply.buffer) if reply is not None else 0
        self._attempt_failed(UpstreamError(
            504, f"read timed out ({location.read_timeout:g}s) waiting for the reply head, "
                 f"after {got} bytes", cause="read_timeout"), timed_out=True)


def _full_error(upstream: Upstream, why: str) -> UpstreamError:
    """Every usable peer is at max_conns: HAProxy answers 503 (with Retry-After)."""
    error = UpstreamError(503, f"every server of {upstream.name} is at max_conns and {why}",
                          cause="no_live_upstreams")
    error.retry_after = 1
    return error


def _connect_error(address: Address, error: int) -> UpstreamError:
    return UpstreamError(502, f"connect to {address} failed: {os.strerror(error)}",
                         retryable=True,
                         cause="refused" if error == errno.ECONNREFUSED else "connect_error")


def _request_line(request: Request | None) -> str:
    if request is None:
        return "-"
    return f"{request.method.decode()} {request.target.decode('latin-1')}"
