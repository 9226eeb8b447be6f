"""The uWSGI application: the seed's hello world, served by the real uWSGI server.

Paths ending in /unique answer with a reply head like no other (an X-Request-Id
and a Set-Cookie that no other reply has, as a session-keeping app does); paths
ending in /10m or /64m answer with 10 or 64 MiB, 1 MiB at a time (the
slow-client figures).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable

HELLO = b"hello world"
ONE_MIB = b"x" * (1 << 20)
LARGE = {"/10m": 10, "/64m": 64}   # path suffix -> MiB
_replies = itertools.count()


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    mib = LARGE.get(path[path.rfind("/"):])
    if mib:
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(mib * len(ONE_MIB)))])
        return (ONE_MIB for _ in range(mib))
    body = HELLO
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    request_id = environ.get("HTTP_X_REQUEST")
    if request_id:  # bench/varied.lua: a reply head like no other
        headers.append(("X-Request", request_id))
    if path.endswith("/unique"):
        unique = f"{os.getpid()}-{next(_replies)}"
        headers.append(("X-Request-Id", unique))
        headers.append(("Set-Cookie", f"session={unique}; Path=/; HttpOnly; SameSite=Lax"))
    start_response("200 OK", headers)
    return [body]
