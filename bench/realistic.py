"""The real-traffic scenarios, in the order the report shows them.

Each one is a request as real clients and apps make it, where the bare GET of
bench/scenarios.py is the one case real traffic rarely takes: a pool of three
servers, a client behind another proxy (X-Forwarded-For), a browser's head with
a reply head like no other, a new connection per request, a uwsgi app that sets
a cookie, a chunked upload, and a slow client. They run for prefork-proxy and
nginx only, on routes both configure the same way (bench/proxies.py,
bench/nginx.py: /real/ and /pool/ send the same X-Forwarded-* and Host).
"""

from __future__ import annotations

from bench import wrk
from bench.scenarios import WrkScenario
from bench.slow_client import SecondClientScenario, SlowClientScenario

SCENARIOS: list[WrkScenario | SlowClientScenario | SecondClientScenario] = [
    WrkScenario("real_bare_get", "Bare GET, keep-alive (/real/)", "requests/s", "real", "",
                threads=2, connections=64),
    WrkScenario("real_pool3", "Three-server pool, round robin, keep-alive", "requests/s",
                "pool", "", threads=2, connections=64),
    WrkScenario("real_xff", "Client sends X-Forwarded-For", "requests/s", "real", "",
                threads=2, connections=64,
                headers=("X-Forwarded-For: 203.0.113.7, 198.51.100.23",)),
    WrkScenario("real_browser", "Browser head (15 headers, cookies), unique X-Request-Id "
                "reply (bench/browser.lua)", "requests/s", "real", "/rid", threads=2,
                connections=64, script=wrk.BROWSER_SCRIPT),
    # wrk reconnects after every reply that says Connection: close (checked against
    # nginx's stub_status: accepts = requests).
    WrkScenario("real_new_connection", "New connection per request (Connection: close)",
                "requests/s", "real", "", threads=2, connections=32,
                headers=("Connection: close",)),
    WrkScenario("real_uwsgi_unique", "uwsgi, unique X-Request-Id and Set-Cookie per reply "
                "(uWSGI, 2 processes)", "requests/s", "uwsgi", "/unique", threads=2,
                connections=32),
    WrkScenario("real_chunked_post", "Chunked 100 KiB POST (bench/chunked_post.lua)",
                "requests/s", "real", "/post", threads=2, connections=16,
                script=wrk.CHUNKED_POST_SCRIPT),
    SlowClientScenario("real_slow_client_others", "Others served (wrk -c16) while a slow "
                       "client reads 10 MiB at 1 MiB/s", "requests/s", threads=2,
                       connections=16),
    SecondClientScenario("real_slow_client_uwsgi", "uwsgi, one uWSGI process: second "
                         "client's wait while a slow client reads 10 MiB at 1 MiB/s", "s",
                         mib=10),
    # 10 MiB fits in loopback's socket buffers here (bench/slow_client.py): 64 MiB does not.
    SecondClientScenario("real_slow_client_uwsgi_64m", "uwsgi, one uWSGI process: second "
                         "client's wait while a slow client reads 64 MiB at 1 MiB/s", "s",
                         mib=64),
]
