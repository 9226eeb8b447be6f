"""Upstream pools: a balancer plus this worker's idle keep-alive connections.

nginx 1.29.7 keeps 32 idle connections per upstream and worker, closing the
least recently used first; a connection is retired after `keepalive_requests`
requests or `keepalive_timeout` idle. An idle connection is watched, as nginx's
ngx_http_upstream_keepalive_close_handler does: if it turns readable (the
upstream closed it, or sent bytes nobody asked for), it is closed at once, so
those bytes are never read as the next request's response.

The watcher fires on a later loop iteration, so it is not enough alone: a
connection is also peeked at (one MSG_PEEK recv) when it is released and when
it is taken. Bytes waiting past a reply's framing close it there, and are
logged once (DESIGN.md's pooling rule: a byte of one client's exchange must
never reach another client).

Nor is a peek at once enough: the kernel may split one send of the upstream's
at a page boundary that is exactly the end of its reply, so the bytes it sent
past the reply can come a few microseconds after the reply's last byte
(bench/mixing.py saw it: 6 wrong answers in 166,000). So a released connection
is not taken again in the loop iteration that released it: the next
iteration's poll has seen such bytes by then, and its watcher or the peek on
take closes the connection.

A TLS connection (proxy_pass https://) is pooled the same way, tagged with its
location's UpstreamTls: it is taken again only for that very setting (a
connection made without verification never serves a location that verifies),
and its peek looks at the TLS layer's plaintext as well as at the descriptor
(workers/upstream_tls.py).
"""

from __future__ import annotations

import _socket
import contextlib
import logging
import socket
import time
from collections import deque
from typing import TYPE_CHECKING

from gevent import get_hub

from prefork_proxy.config import Upstream
from workers.balancing import Balancer
from workers.metrics import recorder
from workers.peer_queue import PeerQueue
from workers.stream import Stream
from workers.upstream_tls import idle_alive

if TYPE_CHECKING:
    from prefork_proxy.health_board import HealthBoard
    from prefork_proxy.proxy_ssl import UpstreamTls

log = logging.getLogger("worker")


class UpstreamConnection:
    __slots__ = ("sock", "peer_index", "uses", "idle_since", "released_in", "tls")

    def __init__(self, sock: Stream, peer_index: int, tls: UpstreamTls | None = None) -> None:
        self.sock, self.peer_index, self.uses, self.idle_since = sock, peer_index, 0, 0.0
        self.released_in = -1  # the loop iteration that last put it in the pool
        self.tls = tls  # the location's TLS settings (proxy_pass https://), or None

    @property
    def reused(self) -> bool:
        return self.uses > 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class UpstreamPool:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        board = _health_board
        self.balancer = Balancer(upstream,
                                 down=board.down_test(upstream.name) if board else None)
        # Requests waiting for a peer below max_conns (workers/peer_queue.py), or None.
        self.queue = PeerQueue(upstream) if upstream.queue else None
        self.loop = get_hub().loop
        for state in self.balancer.peers:  # its row in this worker's metrics block
            state.metric = recorder.peer_row(upstream.name, str(state.peer.address))
        # Where a failure with no peer to blame is counted ("no live upstreams").
        self.no_peer_row = recorder.peer_row(upstream.name, "-")
        self.idle: deque[UpstreamConnection] = deque()
        self._on_idle_readable = self._closed_while_idle

    def release(self, connection: UpstreamConnection) -> None:
        """Keep a cleanly finished connection for reuse (most recent at the right).

        The caller has read the reply to its exact end; a byte still waiting in
        the socket (or its close) means the upstream sent more than it framed.
        """
        connection.uses += 1
        if (self.upstream.keepalive == 0
                or connection.uses >= self.upstream.keepalive_requests):
            connection.close()
            return
        # (inline, one attribute check: the plain path pays nothing more)
        stream = connection.sock
        if not (stream.alive() if connection.tls is None else idle_alive(stream.sock)):
            _log_excess(connection)
            connection.close()
            return
        connection.idle_since = time.monotonic()
        connection.released_in = self.loop.iteration
        stream.idle_handler = self._on_idle_readable
        if not stream.read_event.active:
            stream.read_event.start(stream._readable)
        self.idle.append(connection)
        if len(self.idle) > self.upstream.keepalive:
            self.idle.popleft().close()  # the least recently used

    def take_idle(self, peer_index: int,
                  tls: UpstreamTls | None = None) -> UpstreamConnection | None:
        """The most recently used idle connection to a peer, if any, made with the
        same TLS settings (None: plain)."""
        idle = self.idle
        if not idle:
            return None
        limit = time.monotonic() - self.upstream.keepalive_timeout
        iteration = self.loop.iteration
        for position in range(len(idle) - 1, -1, -1):
            connection = idle[position]
            if (connection.peer_index != peer_index or connection.released_in == iteration
                    or connection.tls is not tls):
                continue  # (released in this iteration: see the module docstring)
            del idle[position]
            connection.sock.idle_handler = None
            if connection.idle_since < limit:
                connection.close()
                continue
            # Readable in this very loop iteration, before its watcher could run.
            stream = connection.sock
            if not (stream.alive() if connection.tls is None else idle_alive(stream.sock)):
                _log_excess(connection)
                connection.close()
                continue
            return connection
        return None

    def _closed_while_idle(self, stream: Stream) -> None:
        """Runs in the hub when an idle connection turns readable."""
        for connection in self.idle:
            if connection.sock is stream:
                self.idle.remove(connection)
                connection.close()
                return

    def close_idle_to(self, peer_indexes: set[int]) -> None:
        """Close the idle connections to these peers (they drain: workers/peer_resolver.py)."""
        for connection in [c for c in self.idle if c.peer_index in peer_indexes]:
            self.idle.remove(connection)
            connection.close()

    def close_all(self) -> None:
        while self.idle:
            self.idle.pop().close()


def _log_excess(connection: UpstreamConnection) -> None:
    """A kept connection had bytes (or its close) waiting after an exact reply.
    Over TLS the count is of the records' bytes, or of the plaintext not read."""
    sock = connection.sock.sock
    if connection.tls is not None and sock.pending():
        log_excess(connection.sock, sock.pending())
        return
    try:  # (the plain socket's recv: an SSLSocket's refuses flags)
        waiting = len(_socket.socket.recv(sock, 65536, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:
        return  # closed by the upstream: nothing to report
    if waiting:
        log_excess(connection.sock, waiting, "at least " if waiting == 65536 else "")


def log_excess(stream: Stream, count: int | None, qualifier: str = "") -> None:
    """One warning for a connection whose upstream sent more than its reply's framing
    (nginx: "upstream sent more data than specified"); the connection is closed.
    `count` is None when the number of bytes is not known."""
    try:
        host, port = stream.sock.getpeername()[:2]
        peer = f"{host}:{port}"
    except OSError:
        peer = "(closed)"
    amount = "" if count is None else f"{qualifier}{count} "
    log.warning("upstream %s sent %sbytes past the end of a reply; connection closed",
                peer, amount)


# This worker's config's active check results (prefork_proxy/health_board.py).
_health_board: HealthBoard | None = None


def use_health_board(board: HealthBoard | None) -> None:
    global _health_board
    _health_board = board


# Keyed by identity: hashing the frozen dataclass would walk every peer per request.
_pools: dict[int, UpstreamPool] = {}


def pool_for(upstream: Upstream) -> UpstreamPool:
    pool = _pools.get(id(upstream))
    if pool is None:
        pool = _pools[id(upstream)] = UpstreamPool(upstream)
    return pool


def pools() -> list[UpstreamPool]:
    return list(_pools.values())


def close_idle_connections() -> None:
    for pool in _pools.values():
        pool.close_all()
