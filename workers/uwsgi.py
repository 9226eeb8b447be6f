"""uwsgi_pass's request side: the uwsgi packet of a request, for the exchange core's uwsgi codec.

One connection per request, as nginx does: uwsgi has no keep-alive. The
request becomes a packet (`workers.uwsgi_packet`), then the body follows; a
chunked body is read whole first (uWSGI reads exactly CONTENT_LENGTH bytes).
The reply, an HTTP or CGI-style head, is read by exchange.UwsgiCodec; the
driver (workers/driver.py) does the I/O. Once the packet is sent, nothing is
retried.
"""

from __future__ import annotations

from workers.uwsgi_packet import (
    UwsgiParams,
    encode_request_packet,
    packet_with,
    shared_vars,
)

# The longest header lines whose vars a connection keeps (see _kept_shared_vars).
_MAX_KEPT_LINES = 4096

# One compiled uwsgi_param table per location, keyed by identity (as upstream pools).
_params: dict[int, UwsgiParams] = {}


def params_for(location) -> UwsgiParams:  # noqa: ANN001
    params = _params.get(id(location))
    if params is None:
        params = _params[id(location)] = UwsgiParams(location.uwsgi_param)
    return params


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


