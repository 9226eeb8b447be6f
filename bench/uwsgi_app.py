"""The uWSGI application: the seed's hello world, served by the real uWSGI server."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    body = b"hello world"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
