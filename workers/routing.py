"""Location matching: the longest path prefix wins (nginx's prefix locations).

Also the URI rewrite of proxy_pass with a URI part: that part replaces the
matched location prefix, as in nginx (`location /a/ { proxy_pass http://h/b/; }`
sends /a/x as /b/x).
"""

from __future__ import annotations

from prefork_proxy.config import Location


class Router:
    def __init__(self, locations: tuple[Location, ...]) -> None:
        ordered = sorted(locations, key=lambda location: len(location.path), reverse=True)
        self.routes = [(location.path.encode("latin-1"), location) for location in ordered]

    def match(self, path: bytes) -> Location | None:
        for prefix, location in self.routes:
            if path.startswith(prefix):
                return location
        return None


def upstream_target(target: bytes, location: Location) -> bytes:
    """The request target to send upstream for a client's (origin-form) target."""
    if location.uri_prefix is None:
        return target
    return location.uri_prefix + target[len(location.path):]
