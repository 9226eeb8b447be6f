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
import ssl
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

from prefork_proxy.metrics_board import LOC_BASE
from workers import driver
from workers.http1 import RequestReader
from workers.proxy_header_step import ProxyHeaderStep
from workers.stats import stats
from workers.stream import Stream
from workers.tls_handshake import Handshake
from workers.tunnel import run_tunnel

if TYPE_CHECKING:
    from prefork_proxy.config import Location
    from prefork_proxy.host_names import ServerNames
    from workers.balancing import PeerState
    from workers.http1 import Request
    from workers.proxy_protocol import ProxyHeader
    from workers.upstreams import UpstreamConnection
    from workers.worker import Site


class ClientConnection:
    __slots__ = ("sock", "client_addr", "client_ip", "client_port", "server_port", "site", "names",
                 "reader", "status", "body_bytes", "response_started", "body_timeout",
                 "send_timeout", "requests", "driver", "closed", "tls", "http2",
                 # for the access log and the metrics (workers/metrics.py)
                 "started", "location_row", "upstream_peer", "upstream_status",
                 "upstream_time", "request_id", "forwarded_request_id", "keeps_request_id",
                 # workers/real_ip.py: the connection's own address (the socket's, or
                 # its PROXY header's), the request's client_* above being the realip
                 # result; the rule its requests apply (None: none); the PROXY step
                 "peer_addr", "peer_ip", "peer_port", "real_ip", "proxy_protocol",
                 "preface")

    def __init__(self, sock: Stream, address: object, site: Site,
                 server_port: bytes = b"", names: ServerNames[Site] | None = None,
                 proxy_protocol: bool = False, tls: ssl.SSLContext | None = None,
                 http2: bool = False) -> None:
        self.sock = sock
        self.http2 = http2  # a plain `listen ... http2`: h2c prior knowledge may come
        # A `listen ... ssl` context (workers/tls_handshake.py runs the handshake);
        # over TLS: X-Forwarded-Proto https, uwsgi HTTPS=on.
        self.tls = tls
        # The Site of the request being served (router, limits, access log): the
        # address's default one until a request's host picks another (driver.py).
        self.site = site
        self.names = names  # the address's servers by host; None with one server
        self.server_port = server_port  # the listener's port; b"" on a unix socket
        self.proxy_protocol = proxy_protocol  # a PROXY header comes first
        self.preface: ProxyHeaderStep | None = None
        if isinstance(address, tuple):
            self._set_peer(address[0], b"%d" % address[1])
        else:
            self._set_peer("unix:", b"")
        self.reader = self.new_reader()
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


    def _set_peer(self, address: str, port: bytes) -> None:
        """The connection's own address: the request's client address until a
        realip header says otherwise (workers/real_ip.py)."""
        self.peer_addr = self.client_addr = address
        self.peer_ip = self.client_ip = address.encode()
        self.peer_port = self.client_port = port
        site = self.site
        self.keeps_request_id = site.trusted_ids.trusts(address)
        self.real_ip = None if site.real_ip is None else site.real_ip.for_connection(address)

    def reset_address(self) -> None:
        """Back to the connection's own address, for the next request (realip)."""
        self.client_addr, self.client_ip, self.client_port = (
            self.peer_addr, self.peer_ip, self.peer_port)

    def proxied(self, header: ProxyHeader) -> None:
        """The PROXY header's source becomes the connection's address (LOCAL and
        UNKNOWN keep the socket's). With `real_ip_header = "proxy_protocol"` and a
        real_ip_from list, only a listed sender is believed (nginx)."""
        source = header.source
        if source is None:
            return
        rule = self.site.real_ip
        if rule is not None and rule.from_proxy_protocol and not rule.trusts(self.peer_addr):
            return
        self._set_peer(source[0], b"%d" % source[1])

    def new_reader(self) -> RequestReader:
        """The connection's HTTP/1.1 reader (an HTTP/2 stream's marks its requests)."""
        return RequestReader()

    def keep_alive_allowed(self, request: Request) -> bool:
        site = self.site
        return (request.keep_alive and not site.worker.draining
                and self.requests < site.keepalive_requests)

    def start(self) -> None:
        """Serve the connection, in callbacks (no greenlet of its own): on a
        proxy_protocol listener its PROXY header first, then on an ssl one the TLS
        handshake, then the driver."""
        # nginx client_header_timeout: the first request's head (and a PROXY header
        # and a handshake before it) is due this long after the accept (a silent
        # connection is closed then, slowloris too).
        deadline = _monotonic() + self.site.header_timeout
        if self.proxy_protocol:
            self.preface = ProxyHeaderStep(self, lambda: self._after_preface(deadline))
            self.preface.start(deadline)
            return
        self._after_preface(deadline)

    def _after_preface(self, deadline: float) -> None:
        self.preface = None
        if self.tls is not None:  # the handshake calls serve() or serve_http2()
            Handshake(self, self.tls, deadline).start()
        elif self.http2:  # h2c prior knowledge, or HTTP/1.1 (http2/preface.py)
            from workers.http2 import sniff_preface  # h2 weighs a few MiB: only if used

            sniff_preface(self, deadline)
        else:
            self.serve(deadline)

    def serve(self, deadline: float) -> None:
        """The driver takes over: the first head is due by `deadline`."""
        self.driver = driver.Driver(self)
        self.driver.start(deadline)

    def serve_http2(self, deadline: float) -> None:
        """HTTP/2 takes over (ALPN "h2", or h2c's preface): workers/http2/session.py."""
        from workers.http2 import start_http2

        start_http2(self, header_deadline=deadline)

    def preface_failed(self) -> None:
        """The PROXY header was broken, cut short or late: close, with no reply."""
        self.preface = None
        self._closed()

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
        if self.preface is not None:
            self.preface.stop()
            self.preface = None
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
