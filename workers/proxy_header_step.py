"""The first step on a `proxy_protocol` listener: read the PROXY header, in callbacks.

Like the driver (workers/driver.py), the step has no greenlet: the client's read
watcher calls `_readable`. Each time it peeks at what has arrived; the bytes
that are only a prefix of the header are consumed (all of them belong to it),
and once the header is whole exactly its remaining length is consumed, so the
bytes after it (the HTTP request, or a TLS handshake) stay in the kernel for
the next step. Then the connection takes the header's addresses
(ClientConnection.proxied) and the step calls its continuation: the driver, or
another step chained before it.

The header is due within client_header_timeout of the accept, the same deadline
as the first request's head. A broken header, a close before it is whole or the
deadline closes the connection with no reply (nginx: "broken header" at error).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

from workers.proxy_protocol import ProxyProtocolError, parse
from workers.stats import stats

if TYPE_CHECKING:
    from workers.client import ClientConnection

log = logging.getLogger("worker")
# What one peek looks at: a v1 header (107 bytes) or a v2 header with its usual
# TLVs fits; a longer v2 header is taken over several wake-ups.
PEEK_SIZE = 4096


class ProxyHeaderStep:
    """Reads one PROXY header for `conn`, then calls `then()` (module docstring)."""

    __slots__ = ("conn", "then", "taken")

    def __init__(self, conn: ClientConnection, then: Callable[[], None]) -> None:
        self.conn = conn
        self.then = then
        self.taken = b""  # the header's bytes consumed so far (a prefix of it)

    def start(self, deadline: float) -> None:
        client = self.conn.sock
        client.on_readable = self._readable
        if not client.read_event.active:
            client.read_event.start(client._readable)
        client.set_deadline(max(deadline - _monotonic(), 0.001), self)

    def stop(self) -> None:
        """Stop the step's watcher and deadline (done, failed, or the worker stops)."""
        client = self.conn.sock
        client.on_readable = None
        client.clear_deadline()
        if client.read_event.active:
            client.read_event.stop()

    def throw(self, exc: BaseException) -> None:
        """The deadline passed (stream.py's sweeper calls this, in the hub)."""
        log.info("client %s timed out sending the PROXY protocol header", self.conn.peer_addr)
        self._fail()

    def _readable(self) -> None:
        raw = self.conn.sock.sock
        try:
            data = raw.recv(PEEK_SIZE, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            log.info("client %s closed the connection in the PROXY protocol header",
                     self.conn.peer_addr)
            return self._fail()
        seen = self.taken + data
        try:
            header = parse(seen)
        except ProxyProtocolError as exc:
            log.error("broken header: %r while reading PROXY protocol (%s), client: %s",
                      seen[:64], exc, self.conn.peer_addr)
            return self._fail()
        try:
            if header is None:
                raw.recv(len(data))  # all a prefix of the header: take it, wait for more
                stats.bytes_in += len(data)
                self.taken = seen
                return
            rest = header.length - len(self.taken)
            raw.recv(rest)  # exactly the header: what follows stays for the next step
            stats.bytes_in += rest
        except OSError:
            return self._fail()
        self.stop()
        self.conn.proxied(header)
        self.then()

    def _fail(self) -> None:
        self.stop()
        self.conn.preface_failed()
