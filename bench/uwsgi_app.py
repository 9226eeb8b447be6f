"""The uWSGI application: the seed's hello world, served by the real uWSGI server."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    body = b"hello world"
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    request_id = environ.get("HTTP_X_REQUEST")
    if request_id:  # bench/varied.lua: a reply head like no other
        headers.append(("X-Request", request_id))
    start_response("200 OK", headers)
    return [body]
