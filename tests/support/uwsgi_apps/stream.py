"""Streams a 20 MB response in 64 KiB chunks, with no Content-Length.

uWSGI then ends the body by closing the connection, so the proxy has to
re-frame it (chunked for HTTP/1.1 clients). The size can be changed with
the ``size`` query parameter (bytes), for tests that want less.
"""

from urllib.parse import parse_qs

CHUNK = bytes(range(256)) * 256  # 64 KiB, a recognisable pattern
DEFAULT_SIZE = 20 * 1024 * 1024


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    size = int(query.get("size", [DEFAULT_SIZE])[0])
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def body():
        remaining = size
        while remaining > 0:
            piece = CHUNK[: min(len(CHUNK), remaining)]
            remaining -= len(piece)
            yield piece

    return body()
