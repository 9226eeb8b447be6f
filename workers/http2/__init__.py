"""HTTP/2 to clients (RFC 9113), with the `h2` package, served by the one driver.

A connection is an `Http2Session` (session.py): h2 reads the frames, and each
request stream is served by its own `driver.Driver` over a `StreamEndpoint`
(endpoint.py), a stand-in for the client `Stream` that the driver reads an
HTTP/1.1 request head from (request.py synthesizes it) and writes an HTTP/1.1
reply to (reply.py turns it back into HEADERS and DATA). So every rule of the
HTTP/1.1 path (routing, headers, buffering, retries, uwsgi, limits, the access
log) applies once. `start_http2` is the entry point after an ALPN "h2"
handshake; `sniff_preface` (preface.py) finds h2c prior knowledge on a plain
listener with `http2`.
"""

from workers.http2.preface import sniff_preface
from workers.http2.session import start_http2

__all__ = ["sniff_preface", "start_http2"]
