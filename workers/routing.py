"""Location matching: the longest path prefix wins (nginx's prefix locations).

Locations match the request's normalised path (`Request.uri`, nginx's `$uri`:
decoded, dot-segments resolved, slashes merged: workers/document_uri.py), so
`/legacy/../admin/x` and `//admin/x` reach the `/admin/` location.

Also the URI rewrite of proxy_pass with a URI part: that part replaces the
matched location prefix, as in nginx (`location /a/ { proxy_pass http://h/b/; }`
sends /a/x as /b/x).
"""

from __future__ import annotations

import re

from prefork_proxy.config import Location
from workers.http1 import Request


class Router:
    def __init__(self, locations: tuple[Location, ...]) -> None:
        ordered = sorted(locations, key=lambda location: len(location.path), reverse=True)
        self.routes = [(location.path.encode("latin-1"), location) for location in ordered]

    def match(self, path: bytes) -> Location | None:
        for prefix, location in self.routes:
            if path.startswith(prefix):
                return location
        return None


def upstream_target(request: Request, location: Location) -> bytes:
    """The request target to send upstream.

    nginx: without a URI part, the client's target goes as it came. With one, that
    part replaces the matched prefix of the normalised path ($uri), which is
    escaped again (ngx_escape_uri, NGX_ESCAPE_URI), and the query follows.
    """
    if location.uri_prefix is None:
        return request.target
    rest = request.uri[len(location.path):]
    if _UNSAFE_IN_PATH.search(rest) is not None:
        rest = _UNSAFE_IN_PATH.sub(_escape, rest)
    target = location.uri_prefix + rest
    if b"?" in request.target:
        target += b"?" + request.query
    return target


# What ngx_escape_uri(NGX_ESCAPE_URI) escapes: controls, space, '#', '%', '?', non-ASCII.
_UNSAFE_IN_PATH = re.compile(rb"[^\x21-\x7e]|[#%?]")


def _escape(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match.group()[0]
