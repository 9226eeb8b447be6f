"""WebSocket (Upgrade) tunnels: after a 101, a byte pump in both directions.

One pump runs in the connection's own greenlet, the other in one more greenlet
(STYLE.md: at most one extra per tunnel). A pump holds no buffer while it
waits: it blocks in a 1-byte MSG_PEEK recv, then borrows a large pooled buffer,
reads what is there, sends it, and gives the buffer back. Idle tunnels thus
cost only their sockets and greenlets, and busy ones move data in big blocks.

nginx rules kept here: bytes the client sent after the request head are
delivered first; there is no half-close, so when either side ends (and what it
sent is flushed) both close; the tunnel closes after `read_timeout` with no
traffic in either direction (pings count, since they are traffic).
"""

from __future__ import annotations

import contextlib
import socket
import time

import gevent

from workers.buffers import pool
from workers.stats import stats


class _Tunnel:
    __slots__ = ("idle_timeout", "last_activity", "ended")

    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.last_activity = time.monotonic()
        self.ended = False

    def pump(self, source, destination, count_out: bool) -> None:  # noqa: ANN001
        """Copy source -> destination until EOF, error, idle timeout or the other end."""
        peek = socket.MSG_PEEK
        try:
            while not self.ended:
                try:
                    if not source.recv(1, peek):  # wait for readability, holding nothing
                        return
                except TimeoutError:
                    if time.monotonic() - self.last_activity >= self.idle_timeout:
                        return
                    continue
                buffer = pool.get()
                try:
                    count = source.recv_into(buffer)
                    if not count:
                        return
                    destination.sendall(buffer[:count])
                finally:
                    pool.put(buffer)
                self.last_activity = time.monotonic()
                if count_out:
                    stats.bytes_out += count
                else:
                    stats.bytes_in += count
        except OSError:
            return
        finally:
            # No half-close (nginx): end the other direction too. SHUT_RD wakes its
            # pump if it waits for data; if it is sending, it stops after the send.
            self.ended = True
            with contextlib.suppress(OSError):
                destination.shutdown(socket.SHUT_RD)


def run_tunnel(client_sock, upstream_sock, client_rest: bytes, upstream_rest: bytes,  # noqa: ANN001
               idle_timeout: float) -> None:
    """Join the client and upstream sockets until the tunnel ends."""
    tunnel = _Tunnel(idle_timeout)
    client_sock.settimeout(idle_timeout)
    upstream_sock.settimeout(idle_timeout)
    stats.tunnels += 1
    try:
        if upstream_rest:
            client_sock.sendall(upstream_rest)
        if client_rest:  # nginx: client bytes read past the request head go first
            upstream_sock.sendall(client_rest)
        downstream = gevent.spawn(tunnel.pump, upstream_sock, client_sock, True)
        tunnel.pump(client_sock, upstream_sock, False)
        downstream.join()
    except OSError:
        pass
    finally:
        stats.tunnels -= 1
        with contextlib.suppress(OSError):
            upstream_sock.close()
