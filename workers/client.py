"""One client connection: read requests in order, route, forward, keep alive.

One greenlet per connection (gevent's StreamServer contract). Between requests
the connection is idle and may be closed by a drain; once a request's first
byte has arrived it is served to the end, with `Connection: close` if the
worker is draining (DESIGN.md reload rule 4).
"""

from __future__ import annotations

import contextlib
import logging
import os
from time import monotonic as _monotonic

import gevent

from workers import lane, proxy_http, uwsgi
from workers.errors import HttpError, error_page
from workers.http1 import ClientClosed, RequestReader
from workers.lane import Lane
from workers.stats import stats

log = logging.getLogger("worker")

# The client timeouts and keepalive_requests are the server's (config.ClientLimits,
# carried by the Site of workers/worker.py).
# While the worker drains, an idle connection waits this long for its next request
# (answered with Connection: close) before it is closed (workers/worker.py, drain).
DRAIN_IDLE_TIMEOUT = 1.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# PREFORK_PROXY_LANE=0 sends every request down the greenlet path, so that the
# integration tests can check both paths until there is one engine.
LANE_ENABLED = os.environ.get("PREFORK_PROXY_LANE", "1") != "0"


class Drained(Exception):
    """Thrown into an idle connection's greenlet when its worker drains."""


class ClientConnection:
    __slots__ = ("sock", "client_addr", "client_ip", "client_port", "server_port", "site",
                 "reader", "status", "body_bytes", "response_started", "greenlet",
                 "body_timeout", "send_timeout", "requests", "lane", "uwsgi_vars")

    def __init__(self, sock, address, site, server_port: bytes = b"") -> None:  # noqa: ANN001
        self.sock = sock
        self.site = site  # the listener's Site: router, worker state, access log
        self.server_port = server_port  # the listener's port; b"" on a unix socket
        if isinstance(address, tuple):
            self.client_addr = address[0]
            self.client_port = b"%d" % address[1]
        else:
            self.client_addr = "unix:"
            self.client_port = b""
        self.client_ip = self.client_addr.encode()
        self.reader = RequestReader(sock)
        self.greenlet = gevent.getcurrent()
        self.body_timeout = site.body_timeout
        self.send_timeout = site.send_timeout
        self.requests = 0  # requests taken on this connection (nginx keepalive_requests)
        self.status = self.body_bytes = 0
        self.response_started = False
        self.lane: Lane | None = None
        # (header lines, version, their uwsgi_packet.SharedVars): workers/uwsgi.py
        self.uwsgi_vars: tuple | None = None

    def send(self, data: bytes | memoryview) -> None:
        self.response_started = True
        sock = self.sock
        # nginx send_timeout: the time between two successful writes (stream.py's
        # deadline runs per wait); past it, TimeoutError closes the connection.
        sock.timeout = self.send_timeout
        sock.sendall(data)
        stats.bytes_out += len(data)

    def keep_alive_allowed(self, request) -> bool:  # noqa: ANN001
        site = self.site
        return (request.keep_alive and not site.worker.draining
                and self.requests < site.keepalive_requests)

    def serve(self) -> None:
        stats.connections += 1
        site = self.site
        worker = site.worker
        # nginx client_header_timeout: the first request's head is due this long
        # after the accept (a silent connection is closed then, slowloris too);
        # a later one's, this long after its first byte.
        first_deadline: float | None = _monotonic() + site.header_timeout
        try:
            # A draining worker answers with Connection: close and stops there, even
            # if more pipelined requests were read: the client retries those. A
            # connection it accepted, or promised keep-alive, before the drain is
            # still read: closing it unread would reset the request the client sends.
            reader = self.reader
            while True:
                if (LANE_ENABLED and not worker.draining and reader.between_messages
                        and not reader.events and not reader.leftover and not reader.upgraded
                        and reader.deferred_error is None):
                    # Between requests: the lane serves plain exchanges in callbacks.
                    keep = self._run_lane(first_deadline)
                    if keep is False:
                        return
                    if reader.served:
                        first_deadline = None
                    continue  # None: the lane handed over bytes for the usual path
                worker.idle.add(self)
                idle_timeout = DRAIN_IDLE_TIMEOUT if worker.draining else site.keepalive_timeout
                try:
                    request = reader.read_head(idle_timeout, site.header_timeout, first_deadline)
                finally:
                    worker.idle.discard(self)
                if request is None:
                    return
                first_deadline = None
                self.requests += 1
                if not self.handle(request):
                    return
        except (Drained, ClientClosed, TimeoutError, OSError):
            pass
        except HttpError as exc:  # a malformed request: answer and close
            # What was sent before belongs to the previous request on this connection.
            self.response_started = False
            self._fail(exc, None)
            self.site.log_request(self, None)
        finally:
            stats.connections -= 1
            with contextlib.suppress(OSError):
                self.sock.close()

    def _run_lane(self, first_deadline: float | None) -> bool | None:
        """Serve from the callback lane until it hands over; returns whether the
        connection stays open, or None when the usual path must read what came.
        Before the first request the wait ends at `first_deadline`."""
        if self.lane is None:
            self.lane = Lane(self)
        wait = None if first_deadline is None else max(first_deadline - _monotonic(), 0.001)
        outcome = self.lane.run(self.site.keepalive_timeout, wait)
        kind = outcome[0]
        if kind == lane.CLOSED:
            return False
        if kind == lane.DATA:
            self.reader.leftover = outcome[1]
            return None
        request = outcome[1]
        if kind == lane.SEND_REST:
            keep = self.finish(request, lambda: self._send_rest(request, outcome[2]))
        elif kind == lane.RESUME:
            keep = self.finish(request, lambda: proxy_http.resume(self, request, *outcome[2:]))
        elif kind == lane.UWSGI:
            keep = self.finish(request, lambda: uwsgi.resume(self, request, *outcome[2:]))
        elif kind == lane.TIMED_OUT:
            keep = self.finish(request, lambda: proxy_http.timed_out(self, request, outcome[2]))
        else:  # lane.RETRY
            keep = self.finish(request, lambda: proxy_http.forward(self, request, outcome[2]))
        return keep

    def _send_rest(self, request, rest: bytes) -> bool:  # noqa: ANN001
        self.send(rest)
        return self.keep_alive_allowed(request)

    def finish(self, request, run) -> bool:  # noqa: ANN001
        """Run the rest of a request the lane began; answer an HttpError; log it."""
        try:
            keep = run()
        except HttpError as exc:
            keep = self._fail(exc, request)
        except OSError:  # as in handle()
            self.site.log_request(self, request)
            raise
        self.site.log_request(self, request)
        return keep

    def handle(self, request) -> bool:  # noqa: ANN001
        """Serve one request; returns whether the connection stays open."""
        stats.requests += 1
        self.status = 0
        self.body_bytes = 0
        self.response_started = False
        keep = False
        try:
            location = self.site.router.match(request.uri)
            if location is None:
                raise HttpError(404, "no location matches")
            limit = location.client_max_body_size
            if limit and request.content_length is not None and request.content_length > limit:
                raise HttpError(413, f"request body of {request.content_length} bytes is "
                                     f"over client_max_body_size ({limit})")
            if request.expect_continue and request.has_body:
                self.sock.sendall(CONTINUE)  # nginx answers 100 itself, then reads the body
            if location.protocol == "uwsgi":
                keep = uwsgi.forward(self, request, location)
            else:
                keep = proxy_http.forward(self, request, location)
        except HttpError as exc:
            keep = self._fail(exc, request)
        except OSError:  # TimeoutError included: the client timed out or went away
            self.site.log_request(self, request)  # nginx logs it, with what was sent
            raise
        self.site.log_request(self, request)
        return keep

    def _fail(self, exc: HttpError, request) -> bool:  # noqa: ANN001
        """Answer an error if nothing was sent yet; returns whether to keep the connection."""
        if exc.status < 500:
            log.info("client %s: %s", self.client_addr, exc.reason)
        if self.response_started:
            return False  # mid-response: closing is the only signal left
        # Keep the connection only if the request was read to its end.
        keep = (request is not None and exc.status not in (400, 413, 414, 431, 505)
                and not self.reader.events and not request.has_body
                and self.keep_alive_allowed(request))
        self.status = exc.status
        page = error_page(exc.status, close=not keep)
        with contextlib.suppress(OSError):
            self.send(page)
        self.body_bytes = len(page) - page.index(b"\r\n\r\n") - 4  # nginx: the body only
        return keep
