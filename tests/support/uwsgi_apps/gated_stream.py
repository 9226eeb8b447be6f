"""Streams two server-sent events, the second only once the test allows it.

The first event is yielded at once. The app then waits until the file named
by the ``flag`` query parameter exists (the test creates it once it has seen
the first event) and yields the second, or, after ``wait`` seconds (20 by
default) without the flag, ends the body there. So a test can tell, with no
timing guess, whether the proxy relayed the first event before the second
existed, and can make the app stall past the proxy's read_timeout. The reply
carries ``X-Accel-Buffering: no``, which the proxy must not relay.
"""

import os
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    flag = query["flag"][0]
    wait = float(query.get("wait", ["20"])[0])
    start_response("200 OK", [("Content-Type", "text/event-stream"),
                              ("X-Accel-Buffering", "no")])

    def body():
        yield b"data: one\n\n"
        deadline = time.monotonic() + wait
        while not os.path.exists(flag):
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)
        yield b"data: two\n\n"

    return body()
