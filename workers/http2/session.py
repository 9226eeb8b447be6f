"""One HTTP/2 connection (RFC 9113): h2 reads and writes the frames; each stream gets a driver.

Runs in callbacks, as the HTTP/1.1 driver does. A read wake-up feeds what the
socket has to h2; new request streams are started once the whole wake-up is
read, so a stream the client resets in the same bytes (rapid reset,
CVE-2023-44487) never costs a driver or an upstream connection. Each stream is
served by a `driver.Driver` over a `StreamEndpoint` (endpoint.py).

Settings (nginx's where it has one, else h2's defaults, as noted):
SETTINGS_MAX_CONCURRENT_STREAMS = `http2_max_concurrent_streams` (nginx 128);
SETTINGS_INITIAL_WINDOW_SIZE 65535 (the protocol's default, nginx's 64k body
preread); SETTINGS_MAX_FRAME_SIZE 16384 (the default, as nginx); and
SETTINGS_MAX_HEADER_LIST_SIZE 32 KiB, the HTTP/1.1 head limit
(http1.MAX_HEAD_SIZE; nginx's large_client_header_buffers is 4 × 8k). As
nginx, the connection's own receive window is opened to 2^31-1, so only the
streams' windows pace the client: a stream whose driver does not read stops
that stream, not the others. No SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441).

Bounds: at most OUTBOUND_LIMIT bytes wait for the socket; past it the socket is
not read (a client that sends PINGs or SETTINGS and reads nothing stops being
read, and its send_timeout closes it) and no stream moves DATA into it. Each
stream reset by the client before its reply was whole, and each stream
refused or malformed, spends one of a budget of 2 × max_concurrent_streams;
each stream served whole gives one back. A client that spends it all is sent
GOAWAY(ENHANCE_YOUR_CALM) and closed (nginx's answer to the same attack is a
bound on new streams per read; a budget also catches a slow trickle). h2
bounds a header block to 64 CONTINUATION frames, and the decoded list to the
header list size (both connection errors). Timeouts: client_header_timeout
until the first frames, client_keepalive_timeout with no stream open (then
GOAWAY), client_send_timeout while bytes wait for the client. A draining
worker sends GOAWAY(NO_ERROR), finishes the open streams, then closes; an idle
connection is in the worker's idle set, so a drain closes it as an idle
HTTP/1.1 connection (then with GOAWAY).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from gevent import get_hub
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from workers.http1 import MAX_HEAD_SIZE
from workers.http2.endpoint import STREAM_SEND_BUFFER, StreamConnection, StreamEndpoint
from workers.http2.reply import ReplyError, ReplyHead
from workers.http2.request import LAST_CHUNK, MalformedRequest, chunk, request_head
from workers.stream import CallbackAlarm

if TYPE_CHECKING:
    from workers.client import ClientConnection

log = logging.getLogger("worker")
READ_SIZE = 65536
READ_BATCH = 262144  # read this much at most per wake-up (others get their turn)
OUTBOUND_LIMIT = 262144  # bytes waiting for the client's socket (module docstring)
MAX_WINDOW = 2**31 - 1  # RFC 9113 §6.9.1
LINGER = 1.0  # seconds a closing connection reads and drops input (Http2Session._linger)
# A TLS socket says "would block" in its own words; both mean: wait for the watcher.
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_CLOSED = ("closed",)  # (driver.CLOSED): ClientConnection.ended closes the connection



def start_http2(conn: ClientConnection, data: bytes = b"",
                header_deadline: float | None = None) -> None:
    """Serve `conn` as HTTP/2 from now on, in callbacks: h2c prior knowledge
    (preface.py), or after a TLS handshake that chose ALPN "h2".

    `conn.sock` is a Stream whose socket may be a non-blocking SSLSocket (its
    SSLWantReadError/SSLWantWriteError are treated as would-block); `data` is what
    was already read from it (the preface's start, say). The connection was
    counted at its accept (ClientConnection.__init__)."""
    site = conn.site
    max_streams = site.http2_max_concurrent_streams
    session = Http2Session(conn, max_streams)
    conn.driver = session  # ClientConnection.abort calls session.abort()
    if header_deadline is None:
        header_deadline = _monotonic() + site.header_timeout
    session.start(data, header_deadline)


class Http2Session:
    """One client connection spoken as HTTP/2 (module docstring)."""

    __slots__ = ("conn", "tcp", "raw", "site", "worker", "loop", "h2", "max_streams",
                 "streams", "starting", "blocked", "out", "out_size", "budget",
                 "last_progress", "alarm", "header_deadline", "paused", "goaway_sent",
                 "closing", "done", "send_scheduled")

    def __init__(self, conn: ClientConnection, max_streams: int) -> None:
        self.conn = conn
        self.tcp = conn.sock
        self.raw = conn.sock.sock
        self.site = conn.site
        self.worker = conn.site.worker
        self.loop = get_hub().loop
        self.max_streams = max_streams
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None,
            # Checked by request.py, so that a malformed request is a stream error
            # (RFC 9113 §8.1.1), not the connection error h2 makes of it.
            validate_inbound_headers=False)
        self.h2 = connection = h2.connection.H2Connection(config)
        codes = h2.settings.SettingCodes
        connection.local_settings = h2.settings.Settings(client=False, initial_values={
            codes.MAX_CONCURRENT_STREAMS: max_streams,
            codes.MAX_HEADER_LIST_SIZE: MAX_HEAD_SIZE,
        })
        connection.decoder.max_header_list_size = MAX_HEAD_SIZE
        self.streams: dict[int, StreamEndpoint] = {}
        self.starting: list[StreamEndpoint] = []  # started once the wake-up is read
        self.blocked: dict[StreamEndpoint, None] = {}  # DATA waiting (an ordered set)
        self.out: list[bytes] = []  # for the socket
        self.out_size = 0
        self.budget = 2 * max_streams  # resets and refusals (module docstring)
        self.last_progress = _monotonic()
        self.alarm = CallbackAlarm(self._timed_out)
        self.header_deadline: float | None = None  # until the first frames arrive
        self.paused = False  # the socket is not read: too much waits to go out
        self.goaway_sent = False
        self.closing = False  # close once `out` is sent
        self.done = False
        self.send_scheduled = False

    # -- the connection's life ---------------------------------------------------------
    def start(self, data: bytes, header_deadline: float) -> None:
        connection = self.h2
        connection.initiate_connection()
        connection.increment_flow_control_window(MAX_WINDOW - 65535)
        self.header_deadline = header_deadline
        tcp = self.tcp
        tcp.on_readable = self._readable
        if not tcp.read_event.active:
            tcp.read_event.start(tcp._readable)
        if data:
            self._receive(data)
            if self.done:
                return
            self._start_streams()
        self._send()

    def abort(self) -> None:
        """The worker stops: let go of everything at once."""
        self._stop()
        for endpoint in list(self.streams.values()):
            connection = endpoint.connection
            if connection is not None:
                connection.abort()

    def _stop(self) -> None:
        self.done = True
        self.worker.idle.discard(self.conn)
        tcp = self.tcp
        tcp.on_readable = None
        tcp.clear_deadline()
        tcp.read_event.stop()
        if tcp._write_event is not None:
            tcp._write_event.stop()

    def _close(self) -> None:
        """Close the connection now; the streams' drivers see their client gone."""
        if self.done:
            return
        self._stop()
        for endpoint in list(self.streams.values()):
            endpoint.client_reset()
            if endpoint.connection is None or endpoint.closed:
                self._forget(endpoint)
        self.loop.run_callback(self.conn.ended, _CLOSED)

    def _finish(self) -> None:
        """Close once what waits for the socket has gone (bounded by send_timeout)."""
        self.closing = True
        self.tcp.read_event.stop()
        self._queue(self.h2.data_to_send())
        self._send()

    def _goaway(self, error_code: int) -> None:
        """A last GOAWAY, then close (the connection is done in h2's eyes too)."""
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(error_code)
        self._finish()

    def _lost(self) -> None:
        """The client closed, or the socket failed (a drain's shutdown of an idle
        connection comes here too: it is told GOAWAY, if it still reads)."""
        if self.done:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(ErrorCodes.NO_ERROR)
        data = self.h2.data_to_send()
        if data and not self.out:
            with contextlib.suppress(OSError, ValueError):
                self.raw.send(data)
        self._close()

    # -- reading ------------------------------------------------------------------------
    def _readable(self) -> None:
        raw = self.raw
        total = 0
        while True:
            try:
                data = raw.recv(READ_SIZE)
            except _WOULD_BLOCK:
                break
            except OSError:
                data = b""
            if not data:
                return self._lost()
            self._receive(data)
            if self.done or self.closing:
                return
            total += len(data)
            if self.out_size > OUTBOUND_LIMIT:
                self.paused = True  # read again once the client has taken some
                self.tcp.read_event.stop()
                break
            if total >= READ_BATCH:
                if _pending(raw):  # TLS bytes already decrypted: the fd may not wake us
                    self.loop.run_callback(self._readable)
                break
            if len(data) < READ_SIZE and not _pending(raw):
                break
        self._start_streams()
        self._send()

    def _receive(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY with the error's code (a flood of CONTINUATION, a
            # header list too long, a window overrun, too many streams...).
            log.info("client %s: HTTP/2 connection error: %s", self.conn.client_addr, exc)
            self._finish()
            return
        if events:
            self.header_deadline = None
        for event in events:
            kind = type(event)
            if kind is h2.events.RequestReceived:
                self._request(event)
            elif kind is h2.events.DataReceived:
                self._data(event)
            elif kind is h2.events.StreamEnded:
                endpoint = self.streams.get(event.stream_id)
                if endpoint is not None and not endpoint.reset:
                    endpoint.remote_ended = True
                    if endpoint.chunked:
                        endpoint.received(LAST_CHUNK)
            elif kind is h2.events.StreamReset:
                self._reset(event)
            elif kind in (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged):
                self._flush_blocked()
            elif kind is h2.events.ConnectionTerminated:
                # The client's GOAWAY: h2 sends nothing more on the connection.
                self._close()
                return
            if self.done or self.closing:
                return
        if self.worker.draining and not self.goaway_sent:
            self._drain()

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        ended = event.stream_ended is not None
        if self.goaway_sent:  # RFC 9113 §6.8: after our GOAWAY, new streams are refused
            return self._refuse(stream_id, ErrorCodes.REFUSED_STREAM)
        try:
            head = request_head(event.headers, ended)
        except MalformedRequest as exc:
            log.info("client %s: malformed HTTP/2 request: %s", self.conn.client_addr, exc)
            return self._refuse(stream_id, ErrorCodes.PROTOCOL_ERROR)
        endpoint = StreamEndpoint(self, stream_id, head.head, head.method == b"HEAD")
        endpoint.chunked = head.chunked
        endpoint.remote_ended = ended
        self.streams[stream_id] = endpoint
        self.starting.append(endpoint)

    def _refuse(self, stream_id: int, error_code: int) -> None:
        self.h2.reset_stream(stream_id, error_code)
        self._spend()

    def _data(self, event: h2.events.DataReceived) -> None:
        data = event.data
        endpoint = self.streams.get(event.stream_id)
        flow = event.flow_controlled_length
        if endpoint is None or endpoint.reset or endpoint.closed:
            self.acknowledge(event.stream_id, flow)  # nobody reads it: the window back
            return
        if flow > len(data):  # padding is nobody's to read
            self.acknowledge(event.stream_id, flow - len(data))
        if data:
            endpoint.unacked += len(data)
            endpoint.received(chunk(data) if endpoint.chunked else data)

    def _reset(self, event: h2.events.StreamReset) -> None:
        endpoint = self.streams.get(event.stream_id)
        if event.remote_reset and (endpoint is None or not endpoint.ended_sent):
            self._spend()
            if self.closing:
                return
        if endpoint is None:
            return
        endpoint.client_reset()
        self.blocked.pop(endpoint, None)
        if endpoint.connection is None or endpoint.closed:  # no driver (yet, or now)
            self._forget(endpoint)

    def _spend(self) -> None:
        """One reset or refused stream (rapid reset, CVE-2023-44487: module docstring)."""
        self.budget -= 1
        if self.budget < 0 and not self.closing:
            log.warning("client %s: more than %d HTTP/2 streams reset or refused; closing "
                        "with ENHANCE_YOUR_CALM", self.conn.client_addr, 2 * self.max_streams)
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM)

    def _start_streams(self) -> None:
        starting = self.starting
        if not starting:
            return
        self.starting = []
        self.worker.idle.discard(self.conn)
        deadline = _monotonic() + self.site.header_timeout
        for endpoint in starting:
            if endpoint.reset or self.done:
                continue
            endpoint.connection = connection = StreamConnection(endpoint, self.conn)
            connection.serve(deadline)

    def _drain(self) -> None:
        """The worker drains: GOAWAY(NO_ERROR) naming the last stream taken; the open
        streams finish (DESIGN.md, reload rule 4). Written by hand: h2's own GOAWAY
        ends the connection at once, open streams and all."""
        self.goaway_sent = True
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.h2.highest_inbound_stream_id
        frame.error_code = ErrorCodes.NO_ERROR
        self._queue(self.h2.data_to_send())
        self._queue(frame.serialize())
        if not self.streams:
            self._finish()

    # -- what the endpoints ask ---------------------------------------------------------
    def acknowledge(self, stream_id: int, size: int) -> None:
        """Hand `size` bytes of window back (the driver has taken them)."""
        if self.done or not size:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.acknowledge_received_data(size, stream_id)
        self._schedule_send()

    def room(self, endpoint: StreamEndpoint) -> int:
        """How many reply bytes the stream's driver may write now."""
        if self.out_size >= OUTBOUND_LIMIT:
            return 0
        return STREAM_SEND_BUFFER - sum(map(len, endpoint.outbound))

    def reply_bytes(self, endpoint: StreamEndpoint, items: list[ReplyHead | bytes]) -> None:
        """What the stream's driver wrote, read back (reply.py): HEADERS now, DATA as
        the windows allow."""
        stream_id = endpoint.stream_id
        connection = self.h2
        try:
            for item in items:
                if type(item) is ReplyHead:
                    fields = [(b":status", b"%d" % item.status), *item.fields]
                    connection.send_headers(stream_id, fields, end_stream=item.ends)
                    if item.ends:
                        self._ended(endpoint)
                elif item:
                    endpoint.outbound.append(item)
        except (h2.exceptions.ProtocolError, ValueError, ReplyError) as exc:
            log.error("client %s: HTTP/2 stream %d: the reply cannot be sent: %s",
                      self.conn.client_addr, stream_id, exc)
            return self._cut_off(endpoint)
        self._flush(endpoint)
        self._schedule_send()

    def stream_closed(self, endpoint: StreamEndpoint) -> None:
        """The stream's driver is done: the stream ends (or is reset, if its reply
        was cut short) once its DATA is out."""
        if self.done:
            return self._forget(endpoint)
        if endpoint.unacked:  # the driver left body bytes unread
            self.acknowledge(endpoint.stream_id, endpoint.unacked)
            endpoint.unacked = 0
        reply = endpoint.reply
        if endpoint.reset or endpoint.ended_sent:
            pass
        elif reply.complete or reply.until_close:
            reply.complete = True
            self._flush(endpoint)
            if not endpoint.ended_sent:
                # What is left goes at the client's pace, bounded by send_timeout.
                endpoint.set_deadline(self.site.send_timeout,
                                      CallbackAlarm(lambda exc: self._cut_off(endpoint)))
                self._schedule_send()
                return
        else:
            return self._cut_off(endpoint)
        self._forget(endpoint)
        self._schedule_send()

    def _cut_off(self, endpoint: StreamEndpoint) -> None:
        """The reply cannot be whole: RST_STREAM(INTERNAL_ERROR) (RFC 9113 §8.1)."""
        if not endpoint.reset:
            endpoint.reset = True
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(endpoint.stream_id, ErrorCodes.INTERNAL_ERROR)
        endpoint.outbound = []
        endpoint.ended_sent = True
        self.blocked.pop(endpoint, None)
        if endpoint.closed:
            endpoint.clear_deadline()
            self._forget(endpoint)
        else:
            endpoint.client_reset()
        self._schedule_send()

    def _forget(self, endpoint: StreamEndpoint) -> None:
        if self.streams.pop(endpoint.stream_id, None) is None:
            return
        self.blocked.pop(endpoint, None)
        endpoint.connection = None
        if self.done:
            return
        if not self.streams:
            if self.goaway_sent or self.worker.draining:
                if not self.goaway_sent:
                    self._drain()
                else:
                    self._finish()
            else:
                self.worker.idle.add(self.conn)  # a drain closes it as an idle connection
        elif self.worker.draining and not self.goaway_sent:
            self._drain()

    # -- writing ------------------------------------------------------------------------
    def _flush(self, endpoint: StreamEndpoint) -> None:
        """Move the stream's DATA into h2 as its window and the socket allow."""
        if endpoint.reset or endpoint.ended_sent:
            return
        connection = self.h2
        stream_id = endpoint.stream_id
        outbound = endpoint.outbound
        moved = False
        while outbound and self.out_size < OUTBOUND_LIMIT:
            window = min(connection.local_flow_control_window(stream_id),
                         connection.max_outbound_frame_size)
            if window <= 0:
                break
            piece = outbound[0]
            if len(piece) > window:
                outbound[0] = piece[window:]
                piece = piece[:window]
            else:
                del outbound[0]
            last = not outbound and endpoint.reply.complete
            connection.send_data(stream_id, piece, end_stream=last)
            self._queue(connection.data_to_send())
            moved = True
        if outbound:
            self.blocked[endpoint] = None
        else:
            self.blocked.pop(endpoint, None)
        if not outbound and endpoint.reply.complete and not endpoint.ended_sent:
            if not moved:  # (else the last DATA frame carried END_STREAM)
                connection.end_stream(stream_id)
            return self._ended(endpoint)
        if moved and endpoint.closed and endpoint.waiter is not None:
            endpoint.set_deadline(self.site.send_timeout, endpoint.waiter)  # (moves it)
        endpoint.write_event.fire()

    def _ended(self, endpoint: StreamEndpoint) -> None:
        """END_STREAM is out: the reply is whole, and a stream served gives a reset
        back to the budget."""
        endpoint.ended_sent = True
        self.blocked.pop(endpoint, None)
        self.budget = min(self.budget + 1, 2 * self.max_streams)
        if not endpoint.remote_ended:
            # RFC 9113 §8.1: the reply came before the whole request; the client is
            # asked to stop sending with RST_STREAM(NO_ERROR).
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(endpoint.stream_id, ErrorCodes.NO_ERROR)
            endpoint.remote_ended = True
        if endpoint.closed:
            endpoint.clear_deadline()
            self._forget(endpoint)

    def _flush_blocked(self) -> None:
        for endpoint in list(self.blocked):
            if self.out_size >= OUTBOUND_LIMIT:
                break
            self._flush(endpoint)

    def _queue(self, data: bytes) -> None:
        if data:
            self.out.append(data)
            self.out_size += len(data)

    def _schedule_send(self) -> None:
        if not self.send_scheduled and not self.done:
            self.send_scheduled = True
            self.loop.run_callback(self._scheduled_send)

    def _scheduled_send(self) -> None:
        self.send_scheduled = False
        if not self.done:
            self._send()

    def _send(self) -> None:
        """Write what h2 and the streams have for the socket, as much as it takes now."""
        self._queue(self.h2.data_to_send())
        out = self.out
        raw = self.raw
        tcp = self.tcp
        while out:
            data = out[0] if len(out) == 1 else b"".join(out)
            try:
                sent = raw.send(data)
            except _WOULD_BLOCK:
                sent = 0
            except OSError:
                return self._lost()
            if sent:
                self.last_progress = _monotonic()
            if sent < len(data):
                out[:] = [data[sent:]]
                self.out_size = len(data) - sent
                tcp.write_event.start(self._writable)
                break
            out.clear()
            self.out_size = 0
            if self.blocked and not self.closing:
                self._flush_blocked()  # (queues more)
        else:
            if tcp._write_event is not None:
                tcp._write_event.stop()
            if self.closing:
                return self._linger()
        self._arm()

    def _linger(self) -> None:
        """All is sent (a GOAWAY last): half-close, and read and drop what the client
        still sends for up to LINGER seconds, so that closing with its bytes unread
        does not send a reset that could destroy the GOAWAY before the client reads
        it (nginx's lingering_close)."""
        tcp = self.tcp
        if self.done or tcp.on_readable == self._drop_input:
            return
        try:
            self.raw.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            return self._close()
        tcp.on_readable = self._drop_input
        tcp.read_event.start(tcp._readable)
        tcp.set_deadline(LINGER, self.alarm)
        self.header_deadline = None
        self.out.clear()

    def _drop_input(self) -> None:
        for _ in range(16):
            try:
                if not self.raw.recv(READ_SIZE):
                    break
            except _WOULD_BLOCK:
                return
            except (OSError, ValueError):
                break
        else:
            return
        self._close()

    def _writable(self) -> None:
        self._send()
        if self.done:
            return
        if self.paused and self.out_size <= OUTBOUND_LIMIT and not self.closing:
            self.paused = False
            tcp = self.tcp
            tcp.read_event.start(tcp._readable)

    # -- timeouts -----------------------------------------------------------------------
    def _arm(self) -> None:
        """The connection's one deadline: the first frames' (client_header_timeout);
        the client's reading (send_timeout) while bytes wait for it; no stream open
        (keepalive_timeout); none while streams run (their drivers have theirs)."""
        if self.done:
            return
        site = self.site
        now = _monotonic()
        if self.header_deadline is not None:
            timeout = self.header_deadline - now
        elif self.out:
            timeout = self.last_progress + site.send_timeout - now
        elif not self.streams and not self.starting:
            timeout = site.keepalive_timeout
        else:
            self.tcp.clear_deadline()
            return
        self.tcp.set_deadline(max(timeout, 0.001), self.alarm)

    def _timed_out(self, exc: BaseException) -> None:
        if self.done:
            return
        if self.closing:  # the GOAWAY could not go out, or the lingering is over
            return self._close()
        if self.out or self.header_deadline is not None:
            return self._close()  # the client does not read, or never spoke HTTP/2
        if not self.streams:
            return self._goaway(ErrorCodes.NO_ERROR)  # idle: keepalive_timeout
        self._arm()


def _pending(raw: object) -> int:
    """Bytes a TLS socket has decrypted and not handed out (0 for a plain socket)."""
    pending = getattr(raw, "pending", None)
    return pending() if pending is not None else 0
