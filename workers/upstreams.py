"""Upstream pools: a balancer plus this worker's idle keep-alive connections.

nginx 1.29.7 keeps 32 idle connections per upstream and worker, closing the
least recently used first; a connection is retired after `keepalive_requests`
requests or `keepalive_timeout` idle. A pooled connection that has become
readable while idle (the upstream closed it, or sent junk) is discarded before
use, so a request with a body is never sent down a dead connection.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections import deque

from gevent import socket as gsocket

from prefork_proxy.config import Upstream
from prefork_proxy.values import Address
from workers.balancing import Balancer
from workers.errors import UpstreamError


class UpstreamConnection:
    __slots__ = ("sock", "peer_index", "uses", "idle_since")

    def __init__(self, sock: gsocket.socket, peer_index: int) -> None:
        self.sock, self.peer_index, self.uses, self.idle_since = sock, peer_index, 0, 0.0

    @property
    def reused(self) -> bool:
        return self.uses > 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class UpstreamPool:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.balancer = Balancer(upstream)
        self.idle: deque[UpstreamConnection] = deque()

    def acquire(self, peer_index: int, connect_timeout: float, *, pooled: bool = True
                ) -> UpstreamConnection:
        """A live connection to a peer: a pooled one if any, else a new one."""
        if pooled:
            connection = self._take_idle(peer_index)
            if connection is not None:
                return connection
        address = self.upstream.peers[peer_index].address
        return UpstreamConnection(connect(address, connect_timeout), peer_index)

    def release(self, connection: UpstreamConnection) -> None:
        """Keep a cleanly finished connection for reuse (most recent at the right)."""
        connection.uses += 1
        if (self.upstream.keepalive == 0
                or connection.uses >= self.upstream.keepalive_requests):
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self.idle.append(connection)
        if len(self.idle) > self.upstream.keepalive:
            self.idle.popleft().close()  # the least recently used

    def _take_idle(self, peer_index: int) -> UpstreamConnection | None:
        idle = self.idle
        if not idle:
            return None
        limit = time.monotonic() - self.upstream.keepalive_timeout
        for position in range(len(idle) - 1, -1, -1):
            connection = idle[position]
            if connection.peer_index != peer_index:
                continue
            del idle[position]
            if connection.idle_since < limit or _readable(connection.sock):
                connection.close()
                continue
            return connection
        return None

    def close_all(self) -> None:
        while self.idle:
            self.idle.pop().close()


def _readable(sock: gsocket.socket) -> bool:
    """An idle keep-alive connection must have nothing to read; if it has, the
    upstream closed it or broke framing. Zero-timeout select: never blocks."""
    try:
        return bool(select.select([sock.fileno()], (), (), 0)[0])
    except (OSError, ValueError):
        return True


def connect(address: Address, timeout: float) -> gsocket.socket:
    """Open a connection to a peer; UpstreamError(502/504) on failure."""
    try:
        family = socket.AF_UNIX if address.is_unix else _numeric_family(address.host)
        if family is None:  # a host name: resolved by gevent's resolver
            sock = gsocket.create_connection((address.host, address.port), timeout=timeout)
        else:
            # A unix path or an IP literal needs no getaddrinfo (which gevent runs
            # in a thread pool: a quarter of the CPU of a connection per request).
            sock = gsocket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address.path if family == socket.AF_UNIX
                             else (address.host, address.port))
            except BaseException:
                sock.close()
                raise
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except TimeoutError:
        raise UpstreamError(504, f"connect to {address} timed out", retryable=True) from None
    except OSError as exc:
        raise UpstreamError(502, f"connect to {address} failed: {exc.strerror or exc}",
                            retryable=True) from None
    return sock


_families: dict[str, int | None] = {}


def _numeric_family(host: str) -> int | None:
    """AF_INET or AF_INET6 for an IP literal, None for a name (cached per host)."""
    if host not in _families:
        _families[host] = None
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                socket.inet_pton(family, host)
            except OSError:
                continue
            _families[host] = family
            break
    return _families[host]


# Keyed by identity: hashing the frozen dataclass would walk every peer per request.
_pools: dict[int, UpstreamPool] = {}


def pool_for(upstream: Upstream) -> UpstreamPool:
    pool = _pools.get(id(upstream))
    if pool is None:
        pool = _pools[id(upstream)] = UpstreamPool(upstream)
    return pool


def close_idle_connections() -> None:
    for pool in _pools.values():
        pool.close_all()
