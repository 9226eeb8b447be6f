"""uwsgi_pass's request side: the uwsgi packet of a request, for the exchange core's uwsgi codec.

One connection per request, as nginx does: uwsgi has no keep-alive. The
request becomes a packet (`workers.uwsgi_packet`), then the body follows; a
chunked body is read whole first (uWSGI reads exactly CONTENT_LENGTH bytes).
The reply, an HTTP or CGI-style head, is read by exchange.UwsgiCodec; the
driver (workers/driver.py) does the I/O. Once the packet is sent, nothing is
retried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.uwsgi_packet import UwsgiParams, build_vars, encode_packet, encode_request_packet

if TYPE_CHECKING:
    from prefork_proxy.config import Location
    from workers.client import ClientConnection
    from workers.http1 import Request

# One compiled uwsgi_param table per location, keyed by identity (as upstream pools).
_params: dict[int, UwsgiParams] = {}


def params_for(location: Location) -> UwsgiParams:
    params = _params.get(id(location))
    if params is None:
        params = _params[id(location)] = UwsgiParams(location.uwsgi_param)
    return params


def request_packet(conn: ClientConnection, request: Request, content_length: int | None,
                   params: UwsgiParams, location: Location) -> bytes:
    """The request's uwsgi packet (the vars block and its header), for `location`.

    Encoded whole for every request: nothing is kept from a head seen before (the
    var names' encodings are cached, bounded in bytes: uwsgi_packet.py). Our
    request id, if any, is HTTP_X_REQUEST_ID (workers/request_id.py).
    A unix listener has no ports: nginx sends "" for both."""
    if conn.tls:  # uwsgi_params: REQUEST_SCHEME $scheme, HTTPS $https (on over TLS)
        return encode_packet(build_vars(
            method=request.method, target=request.target, path=request.path,
            query=request.query, version=request.version, headers=request.headers,
            remote_addr=conn.client_ip, remote_port=conn.client_port,
            server_port=conn.server_port, server_name=_server_name(request, conn),
            content_length=content_length, scheme=b"https", https=True, params=params,
            request_id=conn.forwarded_request_id),
            location.uwsgi_modifier1, location.uwsgi_modifier2)
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
        request_id=conn.forwarded_request_id,
    )


def _server_name(request: Request, conn: ClientConnection) -> bytes:
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


def _local_ip(conn: ClientConnection) -> bytes:
    try:
        local = conn.sock.sock.getsockname()
    except OSError:
        return b""
    return local[0].encode("ascii") if isinstance(local, tuple) else b""


