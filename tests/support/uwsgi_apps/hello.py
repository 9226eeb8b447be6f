"""The seed's uWSGI app: answers every request with ``hello world``."""


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello world"]
