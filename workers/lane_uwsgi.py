"""The callback lane's uwsgi_pass call: a plain request to uWSGI with no greenlet switch.

uwsgi has no keep-alive, so every call connects. On the greenlet path that is
a connect, a look at the handshake (getsockopt, getpeername), a send, a park
for the reply, a relay and a close, with four greenlet switches around them.
Here, from the client's read callback (workers/lane.py):

1. The packet is encoded (the greenlet path's own `uwsgi.request_packet`).
2. A non-blocking connect is begun and the packet sent at once: on loopback
   the handshake has finished by the time connect() returns. A send that
   finds the connect still under way (a remote server) hands the call to
   the greenlet, which waits for it (`uwsgi.resume`).
3. The reply's first read: a whole HTTP-style head and a whole small body
   (a Content-Length, or the server's close already read) goes to the client
   in one send; the connection is closed, as nginx closes it.

Anything else goes to the greenlet: a failed connect before anything is sent
restarts the request on the usual path, which reports it; after the packet
is sent, `uwsgi.resume` finishes the call from where the lane stopped (a
CGI-style or partial head, a big or streamed body, a close with no reply, a
reset or a read timeout, which it answers 502 and 504). One server only: choosing among several
is the balancer's, on the usual path.
"""

from __future__ import annotations

import contextlib

from workers import uwsgi
from workers.errors import HttpError, UpstreamError
from workers.http1 import HEAD_RECV_SIZE
from workers.response_head import has_no_body, parse_response_head
from workers.stream import Stream, start_connect
from workers.upstreams import UpstreamConnection, pool_for

# What the lane hands the greenlet for a call to finish (lane.py's outcomes):
# (UWSGI, request, location, stream, bytes of the packet still to send, bytes
# read from the server or the UpstreamError its read ended in, the packet's size)
UWSGI = "uwsgi"

# A reply the lane reads whole before it answers; anything bigger streams, from
# the greenlet (lane.py's _SMALL_BODY is the same bound on the body).
_SMALL_REPLY = 65536


class UwsgiLane:
    """Lane's uwsgi methods; the state lives in Lane's slots."""

    __slots__ = ()

    def _call_uwsgi(self, request, location, data: bytes) -> None:  # noqa: ANN001
        balancer = pool_for(location.upstream).balancer
        if not balancer.single:
            return self._restart(data)
        try:
            packet = uwsgi.request_packet(self.conn, request, None,
                                          uwsgi.params_for(location), location)
        except HttpError:  # vars too big, a path nginx cannot decode: answered there
            return self._restart(data)
        sock = start_connect(balancer.peers[0].peer.address)
        if sock is None:  # a name to resolve, or refused at once: the usual path
            return self._restart(data)
        try:
            sent = sock.send(packet)
        except BlockingIOError:  # still connecting: the greenlet waits for it
            sent = 0
        except OSError:  # refused: the usual path connects again and reports it
            sock.close()
            return self._restart(data)
        self._begin()
        stream = Stream(sock)
        if sent < len(packet):
            return self._wake((UWSGI, request, location, stream, packet[sent:], b"",
                               len(packet)))
        self.request, self.location = request, location
        self.connection = UpstreamConnection(stream, 0)
        self.packet_size = len(packet)
        stream.on_readable = self._uwsgi_readable
        stream.read_event.start(stream._readable)
        self._arm(location.read_timeout)

    def _uwsgi_readable(self) -> None:
        stream = self.connection.sock
        try:
            more = stream.sock.recv(HEAD_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            # A reset is reported once, to this read: hand the greenlet the error
            # itself (its own read would see only a close).
            return self._hand_over(uwsgi.reply_read_failed(exc, self.received,
                                                           self.packet_size))
        data = self.received + more if self.received else more
        closed = not more
        end = data.find(b"\r\n\r\n")
        response = None
        if end < 0:
            if not closed and len(data) < _SMALL_REPLY:
                return self._read_more(data)
        elif data.startswith(b"HTTP/"):  # a CGI-style head: the greenlet rewrites it
            with contextlib.suppress(UpstreamError):  # the greenlet path reports it
                response = parse_response_head(data[:end + 4])
        rest = data[end + 4:]
        request = self.request
        if response is not None and len(rest) < _SMALL_REPLY and (
                response.content_length is None or len(rest) < response.content_length) \
                and not has_no_body(request.method, response.status):
            if not closed:
                return self._read_more(data)
            if response.content_length is None:
                # uWSGI closes after the body: with the close in hand the body is
                # whole and gets a length (relay_response's own rule).
                response.content_length = len(rest)
        location, packet_size = self.location, self.packet_size
        self._let_go(stream)
        if not self._whole_and_small(request, response, rest):
            return self._wake((UWSGI, request, location, stream, b"", data, packet_size))
        stream.close()
        self._answer(request, response, rest)

    def _read_more(self, data: bytes) -> None:
        """Part of a small reply is in: keep it, and wait in the lane for the rest
        (read_timeout runs again, as nginx's runs between two reads)."""
        self.received = data
        self._arm(self.location.read_timeout)

    def _uwsgi_timed_out(self) -> None:
        """The read timeout (stream.py's sweeper, in the hub): the greenlet answers 504."""
        self._hand_over(uwsgi.reply_timed_out())

    def _hand_over(self, error: UpstreamError) -> None:
        """The read failed: the greenlet logs `error`, counts it and answers it."""
        stream = self.connection.sock
        request, location, packet_size = self.request, self.location, self.packet_size
        self._let_go(stream)
        self._wake((UWSGI, request, location, stream, b"", error, packet_size))

    def _let_go(self, stream: Stream) -> None:
        stream.on_readable = None
        self.connection = self.request = self.location = None
        self.packet_size = 0
        self.received = b""
