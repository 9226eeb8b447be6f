"""A uWSGI app that records how many requests it serves at once (its threads).

`/max` answers the most seen at once so far; any other path sleeps `?s` seconds
(0.2 by default) while counted, then answers ``done``.
"""

import threading
import time

_lock = threading.Lock()
_now = 0
_most = 0


def application(environ, start_response):
    global _now, _most
    if environ["PATH_INFO"] == "/max":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(_most).encode()]
    query = environ.get("QUERY_STRING", "")
    seconds = float(query[2:]) if query.startswith("s=") else 0.2
    with _lock:
        _now += 1
        _most = max(_most, _now)
    try:
        time.sleep(seconds)
    finally:
        with _lock:
            _now -= 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]
