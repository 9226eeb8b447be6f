"""uwsgi_pass: call a uWSGI application server over the uwsgi protocol.

One connection per request, as nginx does: uwsgi has no keep-alive. The
request becomes a packet (`workers.uwsgi_packet`), then the body follows:
a Content-Length body streams straight through; a chunked body is read whole
first (memory, then a temporary file) because uWSGI reads exactly
CONTENT_LENGTH bytes. The reply is an HTTP head, or a CGI-style one that is
rewritten into an HTTP head, and is relayed by the code proxy_pass uses
(`workers.response`), re-framed for the client.

Errors, as nginx: uWSGI down or a malformed reply answers 502, a timeout 504;
each gets a line in the error log. Like proxy_pass, a server that cannot be
connected to is skipped for the next one of an upstream; once the packet is
sent, nothing is retried.
"""

from __future__ import annotations

import logging
import time

from workers.errors import UpstreamError
from workers.http1 import HEAD_RECV_SIZE
from workers.response import MAX_RESPONSE_HEAD, relay_response
from workers.response_head import ResponseHead, parse_response_head
from workers.spooled_body import SpooledBody, read_whole_body
from workers.stats import stats
from workers.stream import Stream
from workers.upstreams import connect, pool_for
from workers.uwsgi_packet import (
    UwsgiParams,
    VarsTooBig,
    encode_request_packet,
    find_head_end,
    packet_with,
    parse_reply_head,
    shared_vars,
)

log = logging.getLogger("worker")

# uWSGI's default --buffer-size: a bigger packet is dropped with no reply.
UWSGI_DEFAULT_BUFFER_SIZE = 4096
_SMALL_PIECE = 16384
# The longest header lines whose vars a connection keeps (see _kept_shared_vars).
_MAX_KEPT_LINES = 4096

# One compiled uwsgi_param table per location, keyed by identity (as upstream pools).
_params: dict[int, UwsgiParams] = {}


def forward(conn, request, location) -> bool:  # noqa: ANN001
    """Call the location's uWSGI server for `request` and relay its reply.

    Returns whether the client connection may stay open (the same contract as
    `proxy_http.forward`).
    """
    params = params_for(location)
    body: SpooledBody | None = None
    if request.chunked:
        body = read_whole_body(conn, location.client_max_body_size,
                               location.client_body_buffer_size)
        content_length: int | None = body.size
    else:
        content_length = request.content_length
    try:
        try:
            packet = request_packet(conn, request, content_length, params, location)
        except VarsTooBig as exc:
            log.error("%s, client %s, request \"%s\"", exc.reason, conn.client_addr,
                      _request_line(request))
            raise
        return _call(conn, request, location, packet, body)
    finally:
        if body is not None:
            body.close()


def params_for(location) -> UwsgiParams:  # noqa: ANN001
    params = _params.get(id(location))
    if params is None:
        params = _params[id(location)] = UwsgiParams(location.uwsgi_param)
    return params


def _call(conn, request, location, packet: bytes, body: SpooledBody | None) -> bool:  # noqa: ANN001
    balancer = pool_for(location.upstream).balancer
    peer_index, sock = _connect(conn, request, location, balancer)
    return _exchange(conn, request, location, balancer, peer_index, sock,
                     lambda: _send_request(conn, request, sock, packet, body), len(packet), b"")


def resume(conn, request, location, sock: Stream, pending: bytes,  # noqa: ANN001
           data: bytes | UpstreamError, packet_size: int) -> bool:
    """Finish a call the callback lane (workers/lane_uwsgi.py) began on the
    location's one server: `pending` is what is left to send of the packet (all
    of it while the connect is still under way), `data` what has come back so
    far, or how the lane's read failed (`reply_timed_out`, `reply_read_failed`).
    Returns as `forward` does."""
    balancer = pool_for(location.upstream).balancer
    send = (lambda: _send_pending(sock, location, pending)) if pending else None
    return _exchange(conn, request, location, balancer, 0, sock, send, packet_size, data)


def _exchange(conn, request, location, balancer, peer_index: int, sock: Stream,  # noqa: ANN001, PLR0913
              send, packet_size: int, data: bytes | UpstreamError) -> bool:  # noqa: ANN001
    """Send the request with `send()` (if any), read the reply after `data`, relay it."""
    peer = balancer.peers[peer_index]
    peer.conns += 1
    try:
        try:
            if send is not None:
                sock.settimeout(location.send_timeout)
                send()
            if isinstance(data, UpstreamError):  # the lane's read failed
                raise data
            sock.settimeout(location.read_timeout)
            response, rest = _read_reply_head(sock, packet_size, data)
        except UpstreamError as exc:
            _log_failure(exc, conn, request, peer.peer.address)
            balancer.failed(peer_index, time.monotonic())
            raise
        balancer.succeeded(peer_index)
        try:
            # uwsgi has no keep-alive: the connection closes once the reply is in, and
            # the uWSGI process is free while a slow client takes the held rest.
            keep_alive, _ = relay_response(conn, request, sock, response, rest,
                                           conn.keep_alive_allowed(request),
                                           lambda _: sock.close(), location.reply_buffering)
        except UpstreamError as exc:  # mid-body: the client connection will be closed
            _log_failure(exc, conn, request, peer.peer.address)
            raise
        return keep_alive
    finally:
        peer.conns -= 1
        sock.close()


def _send_pending(sock: Stream, location, pending: bytes) -> None:  # noqa: ANN001
    """Wait out a connect the lane began, then send the rest of the packet."""
    sock.settimeout(location.connect_timeout)
    address = location.upstream.peers[0].address
    try:
        sock.wait_connected()
    except TimeoutError:
        raise UpstreamError(504, f"connect to {address} timed out") from None
    except OSError as exc:
        raise UpstreamError(502, f"connect to {address} failed: {exc.strerror or exc}") from None
    sock.settimeout(location.send_timeout)
    _sendall(sock, pending)


def _connect(conn, request, location, balancer):  # noqa: ANN001, ANN202
    """Connect to a server of the upstream, skipping those that refuse (nginx's
    `next_upstream error timeout`: nothing has been sent yet)."""
    tried: set[int] = set()
    error: UpstreamError | None = None
    while True:
        peer_index = balancer.choose(tried, conn.client_ip, time.monotonic())
        if peer_index is None:
            raise error or UpstreamError(
                502, f"no live uwsgi servers in {location.upstream.name}")
        address = balancer.peers[peer_index].peer.address
        try:
            # A bodiless request is one write (the packet): Nagle cannot delay it,
            # and nginx 1.22 sets no TCP_NODELAY on uwsgi connections either (strace).
            return peer_index, connect(address, location.connect_timeout,
                                       nodelay=request.has_body)
        except UpstreamError as exc:
            _log_failure(exc, conn, request, address)
            balancer.failed(peer_index, time.monotonic())
            tried.add(peer_index)
            error = exc


def request_packet(conn, request, content_length: int | None, params: UwsgiParams,  # noqa: ANN001
                   location) -> bytes:  # noqa: ANN001
    """The request's uwsgi packet (the vars block and its header), for `location`.

    A unix listener has no ports: nginx sends "" for both."""
    shared = _kept_shared_vars(conn, request) if params.empty else None
    if shared is not None:
        packet = packet_with(shared, request.method, request.target, request.path,
                             request.query, content_length, location.uwsgi_modifier1,
                             location.uwsgi_modifier2)
        if packet is not None:
            return packet
    return encode_request_packet(
        method=request.method,
        target=request.target,
        path=request.path,
        query=request.query,
        version=request.version,
        headers=request.headers,
        remote_addr=conn.client_ip,
        remote_port=conn.client_port,
        server_port=conn.server_port,
        server_name=_server_name(request, conn),
        content_length=content_length,
        params=params,
        modifier1=location.uwsgi_modifier1,
        modifier2=location.uwsgi_modifier2,
    )


def _kept_shared_vars(conn, request):  # noqa: ANN001, ANN202
    """The request's `uwsgi_packet.SharedVars`, kept on the connection while its
    header lines repeat (a keep-alive client mostly sends the same ones again);
    None for a head llhttp read (no lines as received) or a value of 4 KiB or more.
    Not kept for header lines over _MAX_KEPT_LINES bytes."""
    lines = request.lines
    if lines is None:
        return None
    kept = conn.uwsgi_vars
    if kept is not None and kept[0] == lines and kept[1] == request.version:
        return kept[2]
    shared = shared_vars(request.version, request.headers, conn.client_ip, conn.client_port,
                         conn.server_port, _server_name(request, conn))
    # Kept only for a head of a few KiB: the kept lines and vars stay with the
    # connection while it idles, and a worker holds thousands of connections.
    conn.uwsgi_vars = (None if shared is None or len(lines) > _MAX_KEPT_LINES
                       else (lines, request.version, shared))
    return shared


def _server_name(request, conn) -> bytes:  # noqa: ANN001
    """The Host without its port, lower-cased (nginx's `$host`), else the local address.

    nginx sends `$server_name` (the server block's first `server_name`, "" if
    none); prefork-proxy has no server_name, so the name the client asked for
    stands in, and the local address when the request names none (HTTP/1.0).
    """
    host = request.host
    if not host:
        return _local_ip(conn)
    if host[:1] == b"[":  # an IPv6 literal: [::1]:8080
        return host[: host.find(b"]") + 1].lower()
    return host.partition(b":")[0].lower()


def _local_ip(conn) -> bytes:  # noqa: ANN001
    try:
        local = conn.sock.sock.getsockname()
    except OSError:
        return b""
    return local[0].encode("ascii") if isinstance(local, tuple) else b""


def _send_request(conn, request, sock, packet: bytes, body: SpooledBody | None) -> None:  # noqa: ANN001
    """The packet, then the body: spooled, or streamed from the client as it arrives."""

    def sendall(data: bytes | memoryview) -> None:  # what body.send calls
        _sendall(sock, data)

    if body is not None:
        body.send(sendall, packet)
        return
    if not request.has_body:
        sendall(packet)
        return
    pending = packet
    reader, timeout = conn.reader, conn.body_timeout
    while (piece := reader.read_body(timeout)) is not None:
        if pending:  # one send for the packet and a small first piece
            if len(piece) < _SMALL_PIECE:
                piece, pending = pending + piece, b""
            else:
                sendall(pending)
                pending = b""
        sendall(piece)
    if pending:
        sendall(pending)


def _sendall(sock: Stream, data: bytes | memoryview) -> None:
    try:
        sock.sendall(data)
    except TimeoutError:
        raise UpstreamError(504, "uwsgi server timed out while the request was sent") from None
    except OSError as exc:
        raise UpstreamError(502, f"sending the request to uwsgi failed: {exc}") from None


def _read_reply_head(sock, packet_size: int, data: bytes = b"") -> tuple[ResponseHead, bytes]:  # noqa: ANN001
    """Read the reply head (HTTP or CGI-style) that starts with `data`; return it
    parsed, and the bytes after it."""
    try:
        while (end := find_head_end(data)) < 0:
            if len(data) > MAX_RESPONSE_HEAD:
                raise UpstreamError(502, "uwsgi server sent too big a reply head")
            # The first read is of a reply to what was just sent: wait, then read.
            more = sock.recv(65536) if data else sock.recv_when_ready(HEAD_RECV_SIZE)
            if not more:
                what = "an incomplete reply head" if data else "no reply"
                raise UpstreamError(502, f"uwsgi server closed the connection with {what}"
                                         + _size_hint(data, packet_size))
            data += more
    except TimeoutError:
        raise reply_timed_out() from None
    except OSError as exc:
        raise reply_read_failed(exc, data, packet_size) from None
    head, rest = data[:end], data[end:]
    if not (head.startswith(b"HTTP/") and head.endswith(b"\r\n\r\n")):
        # CGI-style (or bare-LF) head: rewrite it as the HTTP head it means.
        head = parse_reply_head(head).to_http()
    return parse_response_head(head), rest


def reply_timed_out() -> UpstreamError:
    return UpstreamError(504, "uwsgi server timed out while the reply was read")


def reply_read_failed(exc: OSError, data: bytes, packet_size: int) -> UpstreamError:
    """A read of the reply failed (a reset): nginx's "recv() failed" line."""
    return UpstreamError(502, f"reading the reply from uwsgi failed: {exc}"
                              + _size_hint(data, packet_size))


def _size_hint(data: bytes, packet_size: int) -> str:
    """uWSGI drops a packet over its --buffer-size (4096 by default) with no reply."""
    if data or packet_size <= UWSGI_DEFAULT_BUFFER_SIZE + 4:
        return ""
    return (f" (the request's vars are {packet_size - 4} bytes: is uWSGI's --buffer-size "
            f"at least that?)")


def _request_line(request) -> str:  # noqa: ANN001
    return f"{request.method.decode()} {request.target.decode('latin-1')}"


def _log_failure(exc: UpstreamError, conn, request, address) -> None:  # noqa: ANN001
    stats.upstream_errors += 1
    log.error("%s, uwsgi server %s, client %s, request \"%s\"", exc.reason, address,
              conn.client_addr, _request_line(request))
