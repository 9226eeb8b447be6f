"""WebSocket (Upgrade) tunnels: after a 101, bytes pumped both ways by the event loop.

Each direction is a read watcher on its source socket, as nginx's upgraded
mode is two event handlers rather than two threads: when the source is
readable, its callback borrows a large pooled buffer, reads once, sends what
it read, and gives the buffer back. An idle tunnel thus holds no buffer and no
greenlet of its own (only the connection's greenlet, parked until the tunnel
ends), and a busy one moves data in big blocks. If the destination cannot
take everything, the direction keeps the rest (and the buffer), stops reading
its source and waits for the destination to be writable: TCP back-pressure
reaches the sender, and memory stays bounded by one buffer per direction.

nginx rules kept here (ngx_http_upstream_process_upgraded):
* bytes the upstream sent after its 101 head, and bytes the client sent after
  its request head, are delivered first;
* no half-close: once either side reaches EOF (its own data already sent),
  both sides are closed; the tunnel also ends on any socket error;
* the tunnel closes after `read_timeout` with no traffic in either direction.
  WebSocket pings and pongs are traffic, which is how an origin keeps an
  otherwise quiet connection open (nginx's documentation recommends them).
"""

from __future__ import annotations

import contextlib
import socket
import time

from gevent import get_hub
from gevent.hub import Waiter

from workers.buffers import pool
from workers.stats import stats
from workers.stream import Stream

SMALL_REST = 64 * 1024  # an unsent rest up to this size is copied out of the pooled buffer


class _Direction:
    """Bytes from `source` to `destination`, moved by watcher callbacks in the hub."""

    __slots__ = ("tunnel", "source", "destination", "to_client", "reader", "writer",
                 "destination_stream", "held", "pending", "moved")

    def __init__(self, tunnel: Tunnel, source: Stream, destination: Stream,
                 to_client: bool) -> None:
        self.tunnel = tunnel
        # The plain non-blocking sockets under the streams: a call never parks the hub.
        self.source: socket.socket = source.sock
        self.destination: socket.socket = destination.sock
        self.to_client = to_client  # counts as bytes_out (upstream -> client)
        # The streams' own persistent watchers, free while the tunnel owns the streams.
        self.reader = source.read_event
        self.writer = None  # the destination's write watcher, once a send falls short
        self.destination_stream = destination
        self.held = None  # the pooled buffer `pending` points into, if it does
        self.pending = None  # what the destination has not taken yet
        self.moved = 0  # bytes read from the source (all sent, unless the tunnel broke)

    def start(self) -> None:
        self.reader.start(self.readable)

    def readable(self) -> None:
        buffer = pool.get()
        try:
            count = self.source.recv_into(buffer)
        except BlockingIOError:  # a spurious wake-up
            pool.put(buffer)
            return
        except OSError:
            pool.put(buffer)
            self.tunnel.end()
            return
        if not count:  # EOF: everything this side sent is already delivered
            pool.put(buffer)
            self.tunnel.end()
            return
        tunnel = self.tunnel
        tunnel.last_activity = time.monotonic()
        self.moved += count
        if self.to_client:
            stats.bytes_out += count
        else:
            stats.bytes_in += count
        try:
            sent = self.destination.send(buffer[:count])
        except BlockingIOError:
            sent = 0
        except OSError:
            pool.put(buffer)
            tunnel.end()
            return
        if sent == count:
            pool.put(buffer)
            return
        # The destination is full: keep the rest, stop reading until it drains. A
        # small rest is copied so the big buffer goes back to the pool at once.
        if count - sent <= SMALL_REST:
            self.pending = memoryview(bytes(buffer[sent:count]))
            pool.put(buffer)
        else:
            self.held, self.pending = buffer, buffer[sent:count]
        self.reader.stop()
        if self.writer is None:
            self.writer = self.destination_stream.write_event
        self.writer.start(self.writable)

    def writable(self) -> None:
        try:
            sent = self.destination.send(self.pending)
        except BlockingIOError:
            return
        except OSError:
            self.tunnel.end()
            return
        self.tunnel.last_activity = time.monotonic()
        if sent < len(self.pending):
            self.pending = self.pending[sent:]
            return
        self.writer.stop()
        self.release()
        self.reader.start(self.readable)

    def release(self) -> None:
        self.pending = None
        if self.held is not None:
            pool.put(self.held)
            self.held = None

    def close(self) -> None:
        """Stop the watchers (the streams close them) and return any buffer."""
        self.reader.stop()
        if self.writer is not None:
            self.writer.stop()
        self.release()


class Tunnel:
    """Both directions, the idle timer, and the parked connection greenlet."""

    __slots__ = ("loop", "idle_timeout", "last_activity", "timer", "waiter", "ended",
                 "directions")

    def __init__(self, client: Stream, upstream: Stream, idle_timeout: float) -> None:
        hub = get_hub()
        self.loop = hub.loop
        self.waiter = Waiter(hub)
        self.idle_timeout = idle_timeout
        self.last_activity = time.monotonic()
        self.timer = None
        self.ended = False
        self.directions = (_Direction(self, client, upstream, False),
                           _Direction(self, upstream, client, True))

    def run(self) -> None:
        """Pump until either side closes, an error, or the idle timeout."""
        try:
            for direction in self.directions:
                direction.start()
            self._arm_timer(self.idle_timeout)
            self.waiter.get()
        finally:
            self.ended = True
            for direction in self.directions:
                direction.close()
            if self.timer is not None:
                self.timer.close()

    def _arm_timer(self, delay: float) -> None:
        if self.timer is not None:
            self.timer.close()
        self.timer = self.loop.timer(delay)
        self.timer.start(self._check_idle)

    def _check_idle(self) -> None:
        # nginx: proxy_read_timeout counts idle time, not total time. The timer is
        # re-armed for what is left, so traffic costs nothing but a timestamp.
        idle = time.monotonic() - self.last_activity
        if idle >= self.idle_timeout:
            self.end()
        else:
            self._arm_timer(self.idle_timeout - idle)

    def end(self) -> None:
        """Called from a watcher callback: stop everything and wake the greenlet."""
        if self.ended:
            return
        self.ended = True
        for direction in self.directions:
            direction.reader.stop()
            if direction.writer is not None:
                direction.writer.stop()
        if self.timer is not None:
            self.timer.stop()
        self.waiter.switch(None)  # last: the greenlet runs the cleanup in `run`


def run_tunnel(client_sock: Stream, upstream_sock: Stream, client_rest: bytes,
               upstream_rest: bytes, idle_timeout: float) -> int:
    """Join the client and upstream streams until the tunnel ends; close the upstream.

    Returns the bytes relayed to the client, for the access log (nginx logs
    them as $body_bytes_sent of an upgraded connection). The caller (the
    client connection) closes the client stream afterwards.
    """
    stats.tunnels += 1
    tunnel = None
    try:
        client_sock.settimeout(idle_timeout)
        upstream_sock.settimeout(idle_timeout)
        if upstream_rest:
            client_sock.sendall(upstream_rest)
        if client_rest:  # nginx: client bytes read past the request head go first
            upstream_sock.sendall(client_rest)
        # From here on the watchers wait; the sockets themselves never block.
        tunnel = Tunnel(client_sock, upstream_sock, idle_timeout)
        tunnel.run()
    except OSError:
        pass
    finally:
        stats.tunnels -= 1
        with contextlib.suppress(OSError):
            upstream_sock.close()
    return len(upstream_rest) + (tunnel.directions[1].moved if tunnel else 0)
