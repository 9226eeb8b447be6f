"""proxy.py's reverse-proxy plugin for the bench: every path goes to one upstream.

proxy.py configures reverse-proxy routes in a plugin class, not a file. This
one reads the upstream from BENCH_PROXYPY_UPSTREAM ("http://127.0.0.1:PORT")
and keeps the client's path, like `location / { proxy_pass http://app; }`. A
static route would not do: proxy.py replaces the path with the route URL's own.
"""

from __future__ import annotations

import os
import re

from proxy.http import Url
from proxy.http.parser import HttpParser
from proxy.http.server import ReverseProxyBasePlugin


class ReverseToUpstream(ReverseProxyBasePlugin):
    upstream = os.environ.get("BENCH_PROXYPY_UPSTREAM", "http://127.0.0.1:8001").encode()

    def routes(self) -> list[str | tuple[str, list[bytes]]]:
        return [r"/.*$"]

    def handle_route(self, request: HttpParser, pattern: re.Pattern[str]) -> Url:
        choice = Url.from_bytes(self.upstream)
        choice.remainder = request.path
        return choice
