"""Answers 10 MiB (or ?size=N bytes) in 1 MiB pieces, with no Content-Length."""

PIECE = b"b" * (1 << 20)


def application(environ, start_response):
    query = environ.get("QUERY_STRING", "")
    size = int(query[5:]) if query.startswith("size=") else 10 << 20
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    while size > 0:
        yield PIECE[:min(size, len(PIECE))]
        size -= len(PIECE)
