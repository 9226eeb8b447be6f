"""A TLS connection's start, in libev callbacks: the first byte, the handshake, then the driver.

The accepted socket is wrapped with the stdlib's ssl (server side, no
handshake on connect) and the handshake is driven by the connection's own
watchers: SSLWantReadError waits for readable, SSLWantWriteError for writable.
gevent's SSLSocket would park a greenlet per wait, and the engine has no
greenlet per connection (ARCHITECTURE.md). The handshake and the first
request's head share one deadline, client_header_timeout from the accept, as
nginx's ngx_http_ssl_handshake does. A failed handshake closes the connection,
logged at info, as nginx does.

Before the handshake, the first byte is peeked: a TLS connection opens with a
handshake record (content type 22, RFC 8446 §5.1). Anything else is plain
HTTP sent to the TLS port, and nginx answers it with a 400 whose page says
so, then closes.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

from workers.stream import Stream
from workers.tls_socket import TlsSocket

if TYPE_CHECKING:
    from workers.client import ClientConnection

log = logging.getLogger("worker")
_HANDSHAKE_RECORD = b"\x16"
# nginx's answer (its error page for the internal status 497), with Connection: close.
_PLAIN_BODY = (b"<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port"
               b"</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
               b"<center>The plain HTTP request was sent to HTTPS port</center>\r\n"
               b"</body>\r\n</html>\r\n")
PLAIN_HTTP_ANSWER = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (len(_PLAIN_BODY), _PLAIN_BODY))
_PLAIN_READ = 65536  # what is read of a plain request before the answer (so no reset)


class Handshake:
    """Brings one accepted connection from its first byte to the driver."""

    __slots__ = ("conn", "stream", "context", "deadline", "throw", "tls")

    def __init__(self, conn: ClientConnection, context: ssl.SSLContext,
                 deadline: float) -> None:
        self.conn = conn
        self.stream: Stream = conn.sock
        self.context = context
        self.deadline = deadline  # client_header_timeout from the accept
        self.throw = self._timed_out  # what stream.py's sweeper calls on the deadline
        self.tls: ssl.SSLSocket | None = None

    def start(self) -> None:
        self.stream.set_deadline(self.deadline - _monotonic(), self)
        self.stream.read_event.start(self._first_byte)

    def _first_byte(self) -> None:
        if self.conn.closed:
            return
        raw = self.stream.sock
        try:
            first = raw.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            first = b""
        if not first:
            return self._close()
        # nginx's ngx_http_ssl_handshake: a handshake record, or an SSLv2-style hello
        # (its high bit set; OpenSSL then refuses it as any old protocol).
        if first != _HANDSHAKE_RECORD and not first[0] & 0x80:
            return self._plain_http(raw)
        self.stream.read_event.stop()
        try:
            # (wrap_socket takes the descriptor over: `raw` is left detached)
            self.tls = self.stream.sock = self.context.wrap_socket(
                raw, server_side=True, do_handshake_on_connect=False)
        except OSError as exc:
            return self._failed(exc)
        self._step()

    def _step(self) -> None:
        """One try at the handshake; what OpenSSL wants next chooses the watcher."""
        if self.conn.closed:
            return
        stream = self.stream
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._wait(stream.read_event, stream._write_event)
            return
        except ssl.SSLWantWriteError:
            self._wait(stream.write_event, stream.read_event)
            return
        except (OSError, ValueError) as exc:
            return self._failed(exc)
        self._stop_watching()
        stream.sock = TlsSocket(self.tls)
        # ALPN (RFC 7301) offers h2 only on listens with `http2` (prefork_proxy/tls.py).
        if self.tls.selected_alpn_protocol() == "h2":
            self.conn.serve_http2(self.deadline)
        else:
            self.conn.serve(self.deadline)

    def _wait(self, watcher: object, other: object) -> None:
        if other is not None and other.active:
            other.stop()
        if not watcher.active:
            watcher.start(self._step)

    def _stop_watching(self) -> None:
        stream = self.stream
        stream.clear_deadline()
        stream.read_event.stop()
        if stream._write_event is not None:
            stream._write_event.stop()

    def _plain_http(self, raw: socket.socket) -> None:
        """nginx: "400 The plain HTTP request was sent to HTTPS port", then close."""
        log.info("client %s: a plain HTTP request was sent to an HTTPS port",
                 self.conn.client_addr)
        with contextlib.suppress(OSError):
            raw.recv(_PLAIN_READ)  # what came: unread bytes would make the close a reset
            raw.send(PLAIN_HTTP_ANSWER)
            raw.shutdown(socket.SHUT_WR)
        self._close()

    def _failed(self, exc: BaseException) -> None:
        # nginx logs a failed handshake at info: clients (scanners) do it all the time.
        log.info("client %s: TLS handshake failed: %s", self.conn.client_addr, exc)
        self._close()

    def _timed_out(self, exc: BaseException) -> None:
        if self.conn.closed or self.stream.waiter is not self:
            return
        log.info("client %s: timed out in the TLS handshake", self.conn.client_addr)
        self._close()

    def _close(self) -> None:
        """Close with no close_notify (the stream's socket is still the SSLSocket)."""
        self._stop_watching()
        self.conn.abort()
