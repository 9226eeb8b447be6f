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
from typing import TYPE_CHECKING, Any

from gevent import get_hub

from workers.client import ClientConnection
from workers.stream import Stream

if TYPE_CHECKING:
    from workers.worker import Site, Worker

log = logging.getLogger("worker")
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
RETRY_DELAY = 0.1  # after an accept() that failed for another reason
# How long a worker leaves a new connection to a less-loaded sibling before it takes
# it itself (the sibling may be busy, or hung).
ACCEPT_YIELD = 0.001


class Listener:
    """One listening socket of a worker, accepting in a callback."""

    __slots__ = ("sock", "site", "worker", "tcp", "family", "server_port", "watcher", "closed",
                 "yielded", "sniff_preface")

    def __init__(self, sock: socket.socket, site: Site, worker: Worker,
                 http2: bool = False) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.site = site
        self.worker = worker
        self.family = sock.family
        self.tcp = sock.family != socket.AF_UNIX
        self.server_port = b"%d" % sock.getsockname()[1] if self.tcp else b""
        self.watcher = get_hub().loop.io(sock.fileno(), 1)
        self.closed = False
        self.yielded = False  # the last wake-up left the connection to a sibling
        # `listen ... http2` without ssl: h2c prior knowledge or HTTP/1.1, by the first
        # bytes (imported only then: h2 weighs a few MiB).
        self.sniff_preface = None
        if http2:
            from workers.http2 import sniff_preface

            self.sniff_preface = sniff_preface

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
        # The C socket type: none of socket.socket's Python layer is used.
        sock = _socket.socket(self.family, socket.SOCK_STREAM, 0, fd)
        client = Stream(sock)
        if self.tcp:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = ClientConnection(client, address, self.site, self.server_port)
        worker.opened(conn)
        if self.sniff_preface is not None:
            self.sniff_preface(conn)
        else:
            conn.start()
