"""Frames its own body in chunked transfer coding and says so in its head.

uWSGI passes such a body on as the app wrote it, so the proxy reads a uwsgi
reply with ``Transfer-Encoding: chunked``: it must de-chunk it (and frame it
again for the client), never pass the chunk framing on as body bytes.
"""

PIECES = (b"hello", b" chunked", b" world")


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Transfer-Encoding", "chunked")])
    for piece in PIECES:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"
