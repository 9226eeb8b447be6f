"""Accepting connections in a libev callback: no greenlet per connection.

One accept per wake-up: with many per wake-up, the first worker to wake drains
the whole shared queue, and a burst of new connections (a load balancer, wrk)
all lands on it. One at a time, the workers take turns, and a busy worker
comes back to accept later than an idle one (libev's watcher is level-
triggered: a waiting connection wakes it again on the next loop iteration).

A burst of new connections would all land on the worker that is already
running (every worker is woken, and it wins each accept): a worker well above
its least-loaded sibling leaves the connection to it for a moment
(`Worker.leaves_it_to_a_sibling`, from the live counts in the scoreboard).

nginx's answers to running short: at worker_connections the listeners pause
and the longest-idle keep-alive connections make room (accepting resumes as
connections close); out of descriptors, a new connection gets 503 at once
(`Worker.refuse`).
"""

from __future__ import annotations

import _socket
import errno
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any

from gevent import get_hub

from workers.client import ClientConnection
from workers.stats import stats
from workers.stream import Stream

if TYPE_CHECKING:
    from prefork_proxy.host_names import ServerNames
    from workers.worker import Site, Worker

log = logging.getLogger("worker")
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
RETRY_DELAY = 0.1  # after an accept() that failed for another reason
# How long a worker leaves a new connection to a less-loaded sibling before it takes
# it itself (the sibling may be busy, or hung).
ACCEPT_YIELD = 0.001


class Listener:
    """One listening socket of a worker, accepting in a callback."""

    __slots__ = ("sock", "site", "names", "worker", "tcp", "family", "server_port", "watcher",
                 "closed", "yielded", "proxy_protocol", "tls", "http2")

    def __init__(self, sock: socket.socket, site: Site, worker: Worker,
                 names: ServerNames[Site] | None = None, proxy_protocol: bool = False,
                 tls: ssl.SSLContext | None = None, http2: bool = False) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.site = site  # the address's default server
        self.names = names  # its servers by host, None with one server (virtual_hosts.py)
        self.worker = worker
        self.family = sock.family
        self.tcp = sock.family != socket.AF_UNIX
        self.server_port = b"%d" % sock.getsockname()[1] if self.tcp else b""
        self.watcher = get_hub().loop.io(sock.fileno(), 1)
        self.closed = False
        self.yielded = False  # the last wake-up left the connection to a sibling
        self.proxy_protocol = proxy_protocol  # `listen = ["... proxy_protocol"]`
        self.tls = tls  # a `listen ... ssl`: its context (prefork_proxy/tls.py)
        # `listen ... http2`: over TLS, ALPN "h2" chooses (tls_handshake.py); without
        # ssl, h2c prior knowledge or HTTP/1.1 by the first bytes (http2/preface.py).
        self.http2 = http2

    def start(self) -> None:
        if not self.closed:
            self.watcher.start(self._accept)

    def pause(self) -> None:
        self.watcher.stop()

    def close(self) -> None:
        self.closed = True
        self.watcher.stop()
        self.watcher.close()
        self.sock.close()

    def _retry(self, timer: Any) -> None:  # (a libev timer)
        timer.close()
        if not self.worker.accepting_paused:
            self.start()

    def _accept(self) -> None:
        worker = self.worker
        if worker.full():  # at worker_connections: pause, and make room
            worker.pause_accepting()
            return
        if self.yielded:
            self.yielded = False  # a sibling had its chance: take it
        elif worker.leaves_it_to_a_sibling():
            self.yielded = True
            self.pause()
            timer = get_hub().loop.timer(ACCEPT_YIELD)
            timer.start(self._retry, timer)
            return
        try:
            fd, address = self.sock._accept()
        except BlockingIOError:  # another worker took it
            return
        except OSError as exc:
            if exc.errno in _OUT_OF_DESCRIPTORS and worker.refuse(self):
                return
            # Level-triggered: the waiting connection would wake us again at once.
            log.error("accept() failed: %s; retrying in %.1f s", exc, RETRY_DELAY)
            self.pause()
            timer = get_hub().loop.timer(RETRY_DELAY)
            timer.start(self._retry, timer)
            return
        if self.tls is None:
            # The C socket type: none of socket.socket's Python layer is used.
            sock = _socket.socket(self.family, socket.SOCK_STREAM, 0, fd)
        else:
            # The stdlib's ssl wraps a socket.socket, not the C type (the handshake
            # runs in ClientConnection.start: workers/tls_handshake.py).
            sock = socket.socket(self.family, socket.SOCK_STREAM, 0, fd)
        client = Stream(sock)
        if self.tcp:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = ClientConnection(client, address, self.site, self.server_port, self.names,
                                self.proxy_protocol, self.tls, self.http2)
        stats.connections += 1  # from the accept: a PROXY header or handshake counts too
        worker.opened(conn)
        conn.start()
