"""One client connection: what the driver serves it with, and how it ends.

Accepted in a callback (workers/acceptor.py), a connection has no greenlet:
its requests are served in the driver's callbacks (workers/driver.py). It
gets a greenlet only for a WebSocket tunnel after a 101, whose first writes
may wait (workers/tunnel.py). Between requests the connection is idle and a
drain may close it; once a request's first byte has arrived it is served to
the end, with `Connection: close` if the worker is draining (DESIGN.md
reload rule 4).
"""

from __future__ import annotations

import contextlib
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

from prefork_proxy.metrics_board import LOC_BASE
from workers import driver
from workers.http1 import RequestReader
from workers.stats import stats
from workers.stream import Stream
from workers.tunnel import run_tunnel

if TYPE_CHECKING:
    from prefork_proxy.config import Location
    from workers.balancing import PeerState
    from workers.http1 import Request
    from workers.upstreams import UpstreamConnection
    from workers.worker import Site


class ClientConnection:
    __slots__ = ("sock", "client_addr", "client_ip", "client_port", "server_port", "site",
                 "reader", "status", "body_bytes", "response_started", "body_timeout",
                 "send_timeout", "requests", "driver", "closed",
                 # for the access log and the metrics (workers/metrics.py)
                 "started", "location_row", "upstream_peer", "upstream_status",
                 "upstream_time", "request_id", "forwarded_request_id", "keeps_request_id")

    def __init__(self, sock: Stream, address: object, site: Site,
                 server_port: bytes = b"") -> None:
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
        self.reader = RequestReader()
        self.body_timeout = site.body_timeout
        self.send_timeout = site.send_timeout
        self.requests = 0  # requests taken on this connection (nginx keepalive_requests)
        self.status = self.body_bytes = 0
        self.response_started = False
        self.driver: driver.Driver | None = None
        self.closed = False
        self.started = _monotonic()  # the current request's first byte (nginx $request_time)
        self.location_row = LOC_BASE
        self.upstream_peer: PeerState | None = None  # the peer that answered
        self.upstream_status = 0
        self.upstream_time = -1.0  # seconds, from the try's start to the reply's end
        # workers/request_id.py: the request's id (None with request_id = false), the
        # id sent upstream in place of the client's (None: the client's header passes),
        # and whether this client's own id is kept ([status] trusted, asked once here).
        self.request_id: str | None = None
        self.forwarded_request_id: bytes | None = None
        self.keeps_request_id = site.trusted_ids.trusts(self.client_addr)

    def keep_alive_allowed(self, request: Request) -> bool:
        site = self.site
        return (request.keep_alive and not site.worker.draining
                and self.requests < site.keepalive_requests)

    def start(self, header_deadline: float | None = None) -> None:
        """Serve the connection, in the driver's callbacks (no greenlet of its own).
        `header_deadline`: when the first head is due, if not from now (an `http2`
        listener has peeked at the first bytes: workers/http2/preface.py)."""
        stats.connections += 1
        self.driver = driver.Driver(self)
        # nginx client_header_timeout: the first request's head is due this long
        # after the accept (a silent connection is closed then, slowloris too).
        if header_deadline is None:
            header_deadline = _monotonic() + self.site.header_timeout
        self.driver.start(header_deadline)

    def ended(self, outcome: tuple) -> None:
        """The driver is done with the connection: close it, or run its tunnel."""
        if outcome[0] == driver.TUNNEL:
            # The driver is done: an idle tunnel holds only this connection, its two
            # streams and the tunnel's watchers (bench: RSS per idle tunnel).
            self.driver = None
            self.site.worker.tunnels.spawn(self._tunnel, *outcome[1:])
            return
        self._closed()

    def abort(self) -> None:
        """Close now, whatever is under way (the worker stops)."""
        if self.driver is not None:
            self.driver.abort()
        self._closed()

    def _closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.driver = None
        stats.connections -= 1
        with contextlib.suppress(OSError):
            self.sock.close()
        self.site.worker.closed(self)

    def _tunnel(self, request: Request, head: bytes, client_rest: bytes, upstream_rest: bytes,
                connection: UpstreamConnection, location: Location) -> None:
        """After a 101, in a greenlet of its own: the head goes to the client, then
        bytes are pumped both ways until either side closes (workers/tunnel.py)."""
        self.status = 101
        self.response_started = True
        try:
            sock = self.sock
            sock.timeout = self.send_timeout
            sock.sendall(head)
            stats.bytes_out += len(head)
            # The access log counts what the tunnel relayed to the client, as nginx does.
            self.body_bytes = run_tunnel(sock, connection.sock, client_rest, upstream_rest,
                                         location.read_timeout)
        except OSError:
            pass
        finally:
            connection.close()
            self.site.log_request(self, request)
            self._closed()
