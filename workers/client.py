"""One client connection: its greenlet, parked while the driver serves its requests.

gevent's StreamServer gives each accepted connection a greenlet (and counts it
against worker_connections). That greenlet parks once in `Driver.run` for the
connection's whole life (workers/driver.py serves the requests in callbacks),
and wakes only to close the connection, or to run a WebSocket tunnel after a
101. Between requests the connection is idle and a drain may close it; once a
request's first byte has arrived it is served to the end, with
`Connection: close` if the worker is draining (DESIGN.md reload rule 4).
"""

from __future__ import annotations

import contextlib
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

from workers import driver
from workers.http1 import RequestReader
from workers.stats import stats
from workers.stream import Stream
from workers.tunnel import run_tunnel

if TYPE_CHECKING:
    from workers.worker import Site


class ClientConnection:
    __slots__ = ("sock", "client_addr", "client_ip", "client_port", "server_port", "site",
                 "reader", "status", "body_bytes", "response_started", "body_timeout",
                 "send_timeout", "requests", "uwsgi_vars")

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
        # (header lines, version, their uwsgi_packet.SharedVars): workers/uwsgi.py
        self.uwsgi_vars: tuple | None = None

    def keep_alive_allowed(self, request) -> bool:  # noqa: ANN001 - an http1.Request
        site = self.site
        return (request.keep_alive and not site.worker.draining
                and self.requests < site.keepalive_requests)

    def serve(self) -> None:
        stats.connections += 1
        try:
            # nginx client_header_timeout: the first request's head is due this long
            # after the accept (a silent connection is closed then, slowloris too).
            outcome = driver.Driver(self).run(_monotonic() + self.site.header_timeout)
            if outcome[0] == driver.TUNNEL:
                self._tunnel(*outcome[1:])
        except OSError:
            pass
        finally:
            stats.connections -= 1
            with contextlib.suppress(OSError):
                self.sock.close()

    def _tunnel(self, request, head: bytes, client_rest: bytes, upstream_rest: bytes,  # noqa: ANN001
                connection, location) -> None:  # noqa: ANN001
        """After a 101: the head goes to the client, then bytes are pumped both ways
        until either side closes (workers/tunnel.py)."""
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
        finally:
            connection.close()
            self.site.log_request(self, request)
