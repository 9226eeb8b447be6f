"""h2c with prior knowledge on a plain `listen ... http2`: HTTP/2 or HTTP/1.1, by the first bytes.

RFC 9113 §3.3: a client that knows the server speaks HTTP/2 starts with the
connection preface. The first bytes are peeked (MSG_PEEK), in a callback,
under client_header_timeout from the accept: the preface makes the connection
HTTP/2 (session.start_http2, h2 reads the preface itself); anything else is
HTTP/1.1, and the driver reads the same bytes as it would have. A client
that has sent only the start of the preface so far ("PRI * HT") is peeked
again a moment later: consuming the bytes would take them from HTTP/1.1, and
a level-triggered watcher would wake at once for bytes left unread.
"""

from __future__ import annotations

import socket
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

from gevent import get_hub

from workers.stream import CallbackAlarm

if TYPE_CHECKING:
    from workers.client import ClientConnection

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REPEEK_DELAY = 0.01  # seconds between two peeks at a preface sent in pieces



class _Sniffer:
    """Waits for a connection's first bytes, then hands it to HTTP/2 or HTTP/1.1."""

    __slots__ = ("conn", "deadline", "timer", "decided")

    def __init__(self, conn: ClientConnection, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.timer = None
        self.decided = False

    def start(self) -> None:
        stream = self.conn.sock
        stream.on_readable = self._readable
        if not stream.read_event.active:
            stream.read_event.start(stream._readable)
        stream.set_deadline(max(self.deadline - _monotonic(), 0.001),
                            CallbackAlarm(self._timed_out))

    def _readable(self) -> None:
        if self.decided or self.conn.closed:
            return
        try:
            first = self.conn.sock.sock.recv(len(PREFACE), socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            first = b""
        if first == PREFACE:
            return self._hand_over(http2=True)
        if first and PREFACE.startswith(first):
            stream = self.conn.sock
            stream.read_event.stop()
            self.timer = timer = get_hub().loop.timer(REPEEK_DELAY)
            timer.start(self._repeek)
            return
        self._hand_over(http2=False)  # HTTP/1.1 (an EOF too: the driver closes it)

    def _repeek(self) -> None:
        self.timer.close()
        self.timer = None
        if not self.decided and not self.conn.closed:
            stream = self.conn.sock
            stream.read_event.start(stream._readable)

    def _timed_out(self, exc: BaseException) -> None:
        if not self.decided and not self.conn.closed:
            # HTTP/1.1's own header deadline has passed too: it closes at once.
            self._hand_over(http2=False)

    def _hand_over(self, http2: bool) -> None:
        self.decided = True
        if self.timer is not None:
            self.timer.close()
            self.timer = None
        conn = self.conn
        stream = conn.sock
        stream.on_readable = None
        stream.clear_deadline()
        if http2:
            conn.serve_http2(self.deadline)
        else:
            conn.serve(self.deadline)


def sniff_preface(conn: ClientConnection, deadline: float) -> None:
    """Serve `conn` (accepted on a plain `http2` listener) as HTTP/2 or HTTP/1.1;
    `deadline`: client_header_timeout from the accept (ClientConnection.start)."""
    _Sniffer(conn, deadline).start()
