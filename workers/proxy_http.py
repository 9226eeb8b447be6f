"""proxy_pass: forward one request to an HTTP upstream and relay the answer.

Retries follow nginx's `proxy_next_upstream error timeout`: another peer is
tried only while nothing has reached the client, and a request whose body has
started to stream is never sent twice (we stream, nginx would have buffered).
A reused keep-alive connection that fails before any reply byte (the upstream
may have closed it while idle) gets one free retry on a fresh connection; a
read timeout is no such failure. POST, LOCK and PATCH are never sent twice,
not even by the free retry (nginx 1.9.13+). When every try fails, a timeout
answers 504 and anything else 502.

A client that stalls or fails while its body is read is the client's fault:
it gets 408 (or its connection closes), and nothing is counted against the
upstream.
"""

from __future__ import annotations

import logging
from time import monotonic as _monotonic

from workers import headers as header_rules
from workers.errors import HttpError, UpstreamError
from workers.response import read_response_head, relay_response
from workers.routing import upstream_target
from workers.spooled_body import SpooledBody, read_whole_body
from workers.stats import stats
from workers.tunnel import run_tunnel
from workers.upstreams import UpstreamConnection, pool_for

log = logging.getLogger("worker")

# nginx: POST, LOCK and PATCH are not retried once sent.
_NOT_RETRIED_ONCE_SENT = frozenset({b"POST", b"LOCK", b"PATCH"})


def forward(conn, request, location) -> bool:  # noqa: ANN001
    """Proxy `request` to the location's upstream; returns whether the client
    connection may stay open for another request.

    A chunked body is read whole first and sent with a Content-Length (nginx's
    `proxy_request_buffering on`), unless the location sets `request_buffering =
    false`; held whole, it can be sent again by a retry.
    """
    if not (request.chunked and location.request_buffering):
        return _forward(conn, request, location, None)
    body = read_whole_body(conn, location.client_max_body_size,
                           location.client_body_buffer_size)
    try:
        return _forward(conn, request, location, body)
    finally:
        body.close()


def _forward(conn, request, location, body: SpooledBody | None) -> bool:  # noqa: ANN001
    pool = pool_for(location.upstream)
    balancer = pool.balancer
    target = upstream_target(request, location)
    upgrade = None
    if request.lines is not None and request.connection_tokens <= header_rules.PLAIN_TOKENS:
        # A plain bodiless request (http1.py): its header lines are copied as they came.
        head = header_rules.upstream_request_head_from_lines(
            request.method, target, request.lines, client_ip=conn.client_ip, scheme=b"http",
            host=request.host, framing=b"")
    else:
        if request.upgrade is not None and location.websocket \
                and request.upgrade.lower() == b"websocket":
            upgrade = request.upgrade
        if body is not None:
            framing = b"Content-Length: %d\r\n" % body.size
        elif request.chunked:
            framing = b"Transfer-Encoding: chunked\r\n"
        elif request.content_length is not None and (
                request.content_length or request.method in (b"POST", b"PUT", b"PATCH")):
            framing = b"Content-Length: %d\r\n" % request.content_length
        else:
            framing = b""
        head = header_rules.upstream_request_head(
            request.method, target, request.headers, client_ip=conn.client_ip, scheme=b"http",
            host=request.host, framing=framing, upgrade=upgrade,
            tokens=request.connection_tokens)
    has_body = request.has_body
    tried: set[int] = set()
    free_retry = True
    last_error = None
    peer_index = 0 if balancer.single else balancer.choose(tried, conn.client_ip, _monotonic())
    while True:
        if peer_index is None:
            raise last_error or UpstreamError(502, f"no live upstreams in {location.upstream.name}")
        connection: UpstreamConnection | None = None
        body_started = [False]  # set by _send_request once a body byte has been read
        peer = balancer.peers[peer_index]
        try:
            # A pooled connection with bytes waiting is closed, not used (upstreams.py).
            connection = pool.acquire(peer_index, location.connect_timeout, pooled=free_retry)
            sock = connection.sock
            peer.conns += 1
            try:
                if body is not None:  # in hand: it may be sent again
                    sock.timeout = location.send_timeout
                    body.send(sock.sendall, head)
                elif has_body:
                    _send_request(conn, request, sock, head, location, body_started)
                else:
                    sock.timeout = location.send_timeout
                    sock.sendall(head)
                sock.timeout = location.read_timeout
                response, rest = read_response_head(sock)
            finally:
                peer.conns -= 1
            break
        except (UpstreamError, OSError) as exc:
            error = _as_upstream_error(exc)
            if connection is not None:
                connection.close()
            if (connection is not None and connection.reused and free_retry
                    and not body_started[0] and not isinstance(exc, TimeoutError)
                    and request.method not in _NOT_RETRIED_ONCE_SENT):
                free_retry = False  # the upstream may have closed an idle connection
                continue
            stats.upstream_errors += 1
            log.error("%s, client %s, request \"%s %s\"", error.reason, conn.client_addr,
                      request.method.decode(), request.target.decode("latin-1"))
            balancer.failed(peer_index, _monotonic())
            last_error = error
            # Another peer only if nothing that cannot be repeated has been sent: no
            # body byte read from the client (it is not kept), no POST, LOCK or PATCH.
            sent_for_good = body_started[0] or request.method in _NOT_RETRIED_ONCE_SENT
            if sent_for_good and not error.retryable:
                raise error from None
            tried.add(peer_index)
            free_retry = True
            peer_index = balancer.choose(tried, conn.client_ip, _monotonic())
        except HttpError:  # from the client side (413, body cut short): drop this upstream
            if connection is not None:
                connection.close()
            raise
    balancer.succeeded(peer_index)
    return _relay(conn, request, location, pool, connection, response, rest, upgrade)


def resume(conn, request, location, connection: UpstreamConnection,  # noqa: ANN001
           data: bytes) -> bool:
    """Finish an exchange the callback lane (workers/lane.py) started: the request
    went out on a pooled connection and `data` is what has come back so far.

    A pooled connection that fails before a whole head has come gets the free
    retry `forward` gives it: the request is forwarded again from the start.
    """
    # The kept connection's timeout may be another location's: this one's counts.
    connection.sock.timeout = location.read_timeout
    try:
        response, rest = read_response_head(connection.sock, data)
    except TimeoutError:
        connection.close()
        return timed_out(conn, request, location)
    except (UpstreamError, OSError):
        connection.close()
        return forward(conn, request, location)
    return _relay(conn, request, location, pool_for(location.upstream), connection, response,
                  rest, None)


def timed_out(conn, request, location) -> bool:  # noqa: ANN001
    """The lane's exchange passed its read timeout before a reply: 504, no retry.

    The lane serves single-peer pools only, so there is no next peer to try."""
    error = UpstreamError(504, "upstream timed out")
    stats.upstream_errors += 1
    log.error("%s, client %s, request \"%s %s\"", error.reason, conn.client_addr,
              request.method.decode(), request.target.decode("latin-1"))
    pool_for(location.upstream).balancer.failed(0, _monotonic())
    raise error


def _relay(conn, request, location, pool, connection: UpstreamConnection,  # noqa: ANN001
           response, rest: bytes, upgrade: bytes | None) -> bool:  # noqa: ANN001
    """Relay the response whose head has been read; returns whether the client
    connection may stay open."""
    sock = connection.sock
    if response.status == 101:
        if upgrade is None:
            connection.close()
            raise UpstreamError(502, "upstream switched protocols without an Upgrade request")
        conn.status = 101
        conn.send(header_rules.switching_protocols_head(response.status_line, response.headers))
        # The access log counts what the tunnel relayed to the client, as nginx does.
        conn.body_bytes = run_tunnel(conn.sock, sock, conn.reader.take_upgrade_rest(), rest,
                                     location.read_timeout)
        return False
    released = []

    def release(reusable: bool) -> None:  # the whole reply is in: before the client has it
        released.append(True)
        if reusable:
            pool.release(connection)
        else:
            connection.close()

    try:
        keep_alive, _ = relay_response(conn, request, sock, response, rest,
                                       conn.keep_alive_allowed(request), release,
                                       location.reply_buffering)
    except BaseException as exc:
        if not released:
            connection.close()
        if isinstance(exc, UpstreamError):  # e.g. closed mid-body: nginx logs it too
            stats.upstream_errors += 1
            log.error("%s, client %s, request \"%s %s\"", exc.reason, conn.client_addr,
                      request.method.decode(), request.target.decode("latin-1"))
        raise
    if request.upgrade is not None:
        conn.reader.resume_after_refused_upgrade()
    return keep_alive


def _send_request(conn, request, sock, head: bytes, location,  # noqa: ANN001
                  body_started: list[bool]) -> None:
    """Send the head and stream the body; `body_started[0]` is set once a body
    byte has been read from the client (from then on, it cannot be sent again)."""
    sock.settimeout(location.send_timeout)
    limit = location.client_max_body_size
    received = 0
    pending = head
    chunked = request.chunked
    body_timeout = conn.body_timeout
    while True:
        piece = _read_client_body(conn, body_timeout)
        body_started[0] = True
        if piece is None:
            break
        received += len(piece)
        if limit and received > limit:
            raise HttpError(413, f"request body over client_max_body_size ({limit} bytes)")
        if chunked:
            piece = b"%x\r\n%b\r\n" % (len(piece), piece)
        if pending:
            sock.sendall(pending + piece if len(piece) < 16384 else pending)
            if len(piece) >= 16384:
                sock.sendall(piece)
            pending = b""
        else:
            sock.sendall(piece)
    tail = pending + header_rules.LAST_CHUNK if chunked else pending
    if tail:
        sock.sendall(tail)


def _read_client_body(conn, timeout: float) -> bytes | None:  # noqa: ANN001
    """The next piece of the client's body. A client that fails is the client's: an
    HttpError, never an error blamed on the upstream (a stall past
    client_body_timeout is already one: read_body answers it 408)."""
    try:
        return conn.reader.read_body(timeout)
    except OSError as exc:
        raise HttpError(400, f"client connection failed mid-body: {exc}") from None


def _as_upstream_error(exc: Exception) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamError(504, "upstream timed out")
    return UpstreamError(502, f"upstream connection failed: {exc}")
