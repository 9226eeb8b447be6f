"""One HTTP/2 stream as the driver's client: a stand-in for a client `Stream`.

The driver (workers/driver.py) uses of its client Stream: `sock.recv(size)`,
`sock.recv(1, MSG_PEEK)`, `sock.send(data)` (and buffering.HeldOutput's
`sock.sock.send`), `read_event` (`active`, `start(callback)`, `stop()`) with
`_readable` and `on_readable`, `write_event`/`_write_event` (`start(callback)`,
`stop()`), `set_deadline`/`clear_deadline` (stream.py's sweeper, inherited), and
`close`; worker._close_if_idle peeks and may `shutdown`. This class gives it the
same, over the stream's state in the session (session.py):

* recv takes the request bytes (the synthesized head, then the body as DATA
  arrived) and hands the stream's flow-control window back as they are taken,
  so a driver that stops reading stops the client (RFC 9113 §5.2); it raises
  BlockingIOError when nothing waits, and returns b"" (EOF) once the client
  reset the stream, which the driver logs as 499.
* send parses the reply back (reply.py) into HEADERS and DATA queued on the
  stream, taking no more than STREAM_SEND_BUFFER waiting for the peer's window:
  past it, BlockingIOError, and the driver holds the rest as for a slow client.
* the watchers fire through the loop (`run_callback`) while their condition
  holds, as libev's level-triggered io watchers do.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gevent import get_hub

from workers import driver
from workers.client import ClientConnection
from workers.http1 import RequestReader
from workers.http2.reply import ReplyReader
from workers.stream import Stream

if TYPE_CHECKING:
    from workers.http1 import Request
    from workers.http2.session import Http2Session

# DATA bytes a stream holds waiting for the client's window before its driver is
# told to wait (the driver then holds the reply, memory then file, as for HTTP/1.1).
STREAM_SEND_BUFFER = 65536


class _Watcher:
    """A libev-io-watcher look-alike: fired by the session, run in the loop."""

    __slots__ = ("loop", "ready", "active", "callback", "args", "scheduled")

    def __init__(self, ready: Callable[[], bool]) -> None:
        self.loop = get_hub().loop
        self.ready = ready
        self.active = False
        self.callback: Callable[..., None] | None = None
        self.args: tuple = ()
        self.scheduled = False

    def start(self, callback: Callable[..., None], *args: Any) -> None:
        self.callback, self.args = callback, args
        self.active = True
        self.fire()

    def stop(self) -> None:
        self.active = False

    def close(self) -> None:
        self.active = False
        self.callback = None
        self.args = ()

    def fire(self) -> None:
        if self.active and not self.scheduled and self.ready():
            self.scheduled = True
            self.loop.run_callback(self._run)

    def _run(self) -> None:
        self.scheduled = False
        if self.active and self.ready():
            self.callback(*self.args)
            self.fire()  # level-triggered: again while the condition holds


class StreamEndpoint(Stream):
    """The driver's client for one stream (module docstring)."""

    __slots__ = ("session", "stream_id", "inbound", "unacked", "reset", "outbound",
                 "reply", "ended_sent", "closed", "connection", "chunked", "remote_ended")

    def __init__(self, session: Http2Session, stream_id: int, head: bytes,
                 head_request: bool) -> None:
        # Not Stream.__init__: there is no socket. The slots the driver reads:
        self.sock = self  # recv/send/shutdown are this object's own
        self.hub = get_hub()
        self.read_event = _Watcher(self._can_read)
        self._write_event = _Watcher(self._can_write)
        self.timeout = None
        self.deadline = 0.0
        self.waiter = None
        self.idle_handler = None
        self.on_readable = None
        self.session = session
        self.stream_id = stream_id
        self.inbound = bytearray(head)  # the request bytes the driver has not taken
        self.unacked = 0  # DATA bytes received, their window not handed back yet
        self.reset = False  # the client reset the stream (or the connection is gone)
        self.outbound: list[bytes] = []  # DATA waiting for the client's window
        self.reply = ReplyReader(head_request)
        self.ended_sent = False  # END_STREAM is out (or the stream was reset)
        self.closed = False  # the driver is done with the stream
        self.connection: StreamConnection | None = None
        self.chunked = False  # the body reaches the driver chunk-framed (request.py)
        self.remote_ended = False  # the client's END_STREAM has come

    # -- what the driver sees as a socket ----------------------------------------------
    @property
    def write_event(self) -> _Watcher:
        return self._write_event

    def _can_read(self) -> bool:
        return bool(self.inbound) or self.reset

    def _can_write(self) -> bool:
        return self.reset or self.session.room(self) > 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        inbound = self.inbound
        if not inbound:
            if self.reset:
                return b""
            raise BlockingIOError
        data = bytes(inbound[:size])
        if flags & socket.MSG_PEEK:
            return data
        del inbound[:size]
        # The window goes back as the driver takes the body (never more than came).
        credit = self.unacked if not inbound else min(self.unacked, len(data))
        if credit:
            self.unacked -= credit
            self.session.acknowledge(self.stream_id, credit)
        return data

    def send(self, data: bytes | memoryview) -> int:
        if self.reset or self.closed:
            raise BrokenPipeError("the client reset the stream")
        room = self.session.room(self)
        if room <= 0:
            raise BlockingIOError
        taken = bytes(data[:room])
        self.session.reply_bytes(self, self.reply.feed(taken))
        return len(taken)

    def shutdown(self, how: int) -> None:
        pass  # (worker._close_if_idle: a stream is never idle)

    def fileno(self) -> int:
        return -1

    def alive(self) -> bool:
        return not self.reset

    def close(self) -> None:
        """The driver let go of the stream (ClientConnection._closed)."""
        if self.closed:
            return
        self.closed = True
        self.clear_deadline()
        self.read_event.close()
        self._write_event.close()
        self.on_readable = None
        self.session.stream_closed(self)

    # -- what the session tells it -----------------------------------------------------
    def received(self, data: bytes) -> None:
        self.inbound += data
        self.read_event.fire()

    def client_reset(self) -> None:
        self.reset = True
        self.outbound = []
        self.read_event.fire()
        self._write_event.fire()


class StreamRequestReader(RequestReader):
    """The HTTP/1.1 reader, with what it reads marked HTTP/2: the access log shows
    HTTP/2.0 (as nginx's $server_protocol), uwsgi gets SERVER_PROTOCOL HTTP/2.0,
    and the stream serves this one request (no keep-alive: a stream is one exchange)."""

    def head_from(self, data: bytes) -> Request | None:
        request = super().head_from(data)
        if request is not None:
            request.version = "2.0"
            request.keep_alive = False
        return request


class StreamConnection(ClientConnection):
    """A stream's ClientConnection: the connection's client address and site, the
    stream's endpoint for its socket. Not counted as a connection (worker_connections
    counts the TCP connection, the session's)."""

    __slots__ = ("endpoint",)

    def __init__(self, endpoint: StreamEndpoint, parent: ClientConnection) -> None:
        super().__init__(endpoint, None, parent.site, parent.server_port)
        self.endpoint = endpoint
        self.tls = parent.tls  # X-Forwarded-Proto https, uwsgi HTTPS=on
        # The connection's own address (its socket's or its PROXY header's), and its
        # realip rule: each stream is a request of that connection (workers/real_ip.py).
        self.peer_addr, self.peer_ip, self.peer_port = (
            parent.peer_addr, parent.peer_ip, parent.peer_port)
        self.client_addr = parent.client_addr
        self.client_ip = parent.client_ip
        self.client_port = parent.client_port
        self.real_ip = parent.real_ip
        self.keeps_request_id = parent.keeps_request_id

    def new_reader(self) -> RequestReader:
        # One llhttp parser per stream, not a plain one made and dropped first.
        return StreamRequestReader()

    def serve(self, header_deadline: float) -> None:
        self.driver = driver.Driver(self)
        self.driver.start(header_deadline)

    def ended(self, outcome: tuple) -> None:
        if outcome[0] == driver.TUNNEL:  # (never: h2 refuses Upgrade; RFC 9113 §8.2.2)
            outcome[5].close()
        self.driver = None
        self.endpoint.close()

    def abort(self) -> None:
        if self.driver is not None:
            self.driver.abort()
            self.driver = None
        self.endpoint.close()
