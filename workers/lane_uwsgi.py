"""The callback lane's uwsgi_pass call: a plain request to uWSGI with no greenlet switch.

uwsgi has no keep-alive, so every call connects. On the greenlet path that is
a connect, a look at the handshake (getsockopt, getpeername), a send, a park
for the reply, a relay and a close, with four greenlet switches around them.
Here, from the client's read callback (workers/lane.py):

1. The packet is encoded (the greenlet path's own `uwsgi.request_packet`).
2. A non-blocking connect is begun. The packet is sent at the end of the loop
   iteration, with those of the other calls begun in it (`_unsent_packets`): on
   loopback the handshake has finished by then. A send that finds the connect
   still under way (a remote server) hands the call to the greenlet, which
   waits for it (`uwsgi.resume`).
3. The reply: the lane waits only while the head is incomplete (nothing can
   be sent yet). Once the head is in, what the server has sent so far is read
   without waiting, now and once more at the end of the loop iteration (when
   the lane's answers go out anyway), and a whole HTTP-style head with a whole
   small body (a Content-Length, or the server's close already read) goes to
   the client in one send; the connection is closed, as nginx closes it.

Anything else goes to the greenlet: a failed connect before anything is sent
restarts the request on the usual path, which reports it; after the packet
is sent, `uwsgi.resume` finishes the call from where the lane stopped (a
CGI-style head, a body not whole yet, which it relays as it comes, so that an
event stream never waits for its next event, a chunked body, a close with no
reply, a reset or a read timeout, which it answers 502 and 504). One server
only: choosing among several is the balancer's, on the usual path.
"""

from __future__ import annotations

import contextlib

from workers import uwsgi
from workers.errors import HttpError, UpstreamError
from workers.http1 import HEAD_RECV_SIZE
from workers.iteration_batch import IterationBatch
from workers.known_replies import known_replies
from workers.response_head import has_no_body, parse_response_head
from workers.stream import Stream, start_connect
from workers.upstreams import pool_for
from workers.uwsgi_packet import find_head_end

# What the lane hands the greenlet for a call to finish (lane.py's outcomes):
# (UWSGI, request, location, stream, bytes of the packet still to send, bytes
# read from the server or the UpstreamError its read ended in, the packet's size)
UWSGI = "uwsgi"

# A reply the lane reads whole before it answers; anything bigger streams, from
# the greenlet (lane.py's _SMALL_BODY is the same bound on the body).
_SMALL_REPLY = 65536
_READ = 1  # libev's EV_READ


def _send_queued_packet(item: tuple) -> None:
    lane, sock, packet, data = item
    if lane.connection is sock:  # (not disarmed in the meantime)
        lane._send_packet(sock, packet, data)


# Calls whose packet is still to be sent: (lane, socket, packet, the request's
# bytes). They go out together at the end of the loop iteration that began them,
# as nginx writes them once the connects report writable (see iteration_batch.py).
_unsent_packets = IterationBatch(_send_queued_packet)


def _look_again(item: tuple) -> None:
    lane, sock = item
    if lane.connection is sock:  # (not disarmed in the meantime)
        lane._uwsgi_readable(last_look=True)


# Calls whose reply head is in but whose body is not whole yet: read once more at
# the end of the iteration, then answered whole or handed to the greenlet.
_last_looks = IterationBatch(_look_again)


def _read_available(sock, data: bytes) -> tuple[bytes, bool]:  # noqa: ANN001
    """`data` plus what the server has sent so far, read without waiting (up to
    _SMALL_REPLY), and whether it has closed. Raises OSError (a reset)."""
    while len(data) < _SMALL_REPLY:
        try:
            more = sock.recv(HEAD_RECV_SIZE)
        except BlockingIOError:
            return data, False
        if not more:
            return data, True
        data += more
    return data, False


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
        # The packet goes out with the others of this loop iteration (_unsent_packets).
        self.request, self.location = request, location
        self.connection = sock  # a raw socket: lane.py tells the call by packet_size
        self.packet_size = len(packet)
        self._arm(location.read_timeout)
        _unsent_packets.add((self, sock, packet, data))

    def _send_packet(self, sock, packet: bytes, data: bytes) -> None:  # noqa: ANN001
        try:
            sent = sock.send(packet)
        except BlockingIOError:  # still connecting: the greenlet waits for it
            sent = 0
        except OSError:  # refused: the usual path connects again and reports it
            self._let_go()
            sock.close()
            return self._restart(data)
        self._begin()
        if sent < len(packet):
            request, location = self.request, self.location
            self._let_go()
            return self._wake((UWSGI, request, location, Stream(sock), packet[sent:], b"",
                               len(packet)))
        # One read watcher per client connection, moved to each call's socket: a
        # watcher made per call costs an allocation and a fcntl(F_GETFD) each time.
        watcher = self.uwsgi_watcher
        if watcher is None:
            watcher = self.uwsgi_watcher = self.hub.loop.io(sock.fileno(), _READ)
        else:
            watcher.fd = sock.fileno()
        watcher.start(self._uwsgi_readable)

    def _uwsgi_readable(self, last_look: bool = False) -> None:
        sock = self.connection
        try:
            more = sock.recv(HEAD_RECV_SIZE)
        except BlockingIOError:
            if last_look:  # nothing more came in the iteration: the greenlet streams
                return self._to_greenlet(self.received)
            return
        except OSError as exc:
            # A reset is reported once, to this read: hand the greenlet the error
            # itself (its own read would see only a close).
            return self._hand_over(uwsgi.reply_read_failed(exc, self.received,
                                                           self.packet_size))
        data = self.received + more if self.received else more
        closed = not more
        end = find_head_end(data)
        if end < 0:
            if not closed and len(data) < _SMALL_REPLY:
                return self._read_more(data)  # no head yet: nothing to send
            return self._to_greenlet(data)  # it reports the close or the size
        head = data[:end]
        response = client_head = None
        kept = True  # whether the head's parse may be kept (known_replies)
        known = known_replies.heads.get(head)
        if known is not None:
            response, client_head = known
        elif data.startswith(b"HTTP/") and head.endswith(b"\r\n\r\n"):
            # (a CGI-style or bare-LF head: the greenlet rewrites it)
            with contextlib.suppress(UpstreamError):  # the greenlet path reports it
                response = parse_response_head(head)
        if response is None:
            return self._to_greenlet(data)
        request = self.request
        rest = data[end:]
        length = response.content_length
        if not (response.chunked or has_no_body(request.method, response.status)):
            if not closed and (length is None or len(rest) < length):
                # The body is not whole yet. Take what the server has sent so far,
                # with no wait: uWSGI closes right after a short reply, and its close
                # is often here already. Whatever is still missing, the greenlet
                # streams: bytes in hand never wait for more (an event stream).
                try:
                    data, closed = _read_available(sock, data)
                except OSError as exc:
                    return self._hand_over(uwsgi.reply_read_failed(exc, data,
                                                                   self.packet_size))
                rest = data[end:]
                if not (closed or last_look) and len(data) < _SMALL_REPLY \
                        and (length is None or len(rest) < length):
                    # One more look at the end of this loop iteration, when the
                    # lane's answers go out anyway (iteration_batch.py): the close
                    # that follows a short reply has often come by then.
                    self.received = data
                    return _last_looks.add((self, sock))
            if closed and length is None:
                # uWSGI closes after the body: with the close in hand the body is
                # whole and gets a length (relay_response's own rule).
                response.content_length = len(rest)
                kept = False  # the length is this reply's, not the head's
        if not self._whole_and_small(request, response, rest):
            return self._to_greenlet(data)
        self._let_go()
        sock.close()
        if client_head is None:
            client_head = self._client_head(head, response, rest, kept)
        self._answer(request, response.status, client_head, rest)

    def _to_greenlet(self, data: bytes) -> None:
        """The greenlet finishes the call from the reply bytes read so far: it relays
        a reply that is not whole as it comes (uwsgi.resume, relay_response)."""
        sock = self.connection
        request, location, packet_size = self.request, self.location, self.packet_size
        self._let_go()
        self._wake((UWSGI, request, location, Stream(sock), b"", data, packet_size))

    def _read_more(self, data: bytes) -> None:
        """Part of a reply head is in: keep it, and wait in the lane for the rest
        (read_timeout runs again, as nginx's runs between two reads)."""
        self.received = data
        self._arm(self.location.read_timeout)

    def _uwsgi_timed_out(self) -> None:
        """The read timeout (stream.py's sweeper, in the hub): the greenlet answers 504."""
        self._hand_over(uwsgi.reply_timed_out())

    def _hand_over(self, error: UpstreamError) -> None:
        """The read failed: the greenlet logs `error`, counts it and answers it."""
        sock = self.connection
        request, location, packet_size = self.request, self.location, self.packet_size
        self._let_go()
        self._wake((UWSGI, request, location, Stream(sock), b"", error, packet_size))

    def _let_go(self) -> None:
        """The call leaves the lane: its socket is closed or handed on by the caller."""
        if self.uwsgi_watcher is not None:
            self.uwsgi_watcher.stop()
        self.connection = self.request = self.location = None
        self.packet_size = 0
        self.received = b""
