"""Config text for the common test shape: one server on `{port}`, one location.

`start_proxy` replaces `{port}` with a free port. Tests with more than one
location or named upstreams write their TOML out in full, so they read as spec.
"""

from __future__ import annotations


def one_location(target: str, *, top: str = "workers = 1", location: str = "",
                 directive: str = "proxy_pass", path: str = "/") -> str:
    """A proxy whose single location `path` sends to `target` with `directive`
    (proxy_pass or uwsgi_pass). `top` holds the top-level settings, `location`
    more settings for the location, one per line."""
    location_lines = "".join(f"  {line.strip()}\n" for line in location.splitlines()
                             if line.strip())
    return (f"{top.strip()}\n"
            "[[server]]\n"
            'listen = ["127.0.0.1:{port}"]\n'
            "  [[server.location]]\n"
            f'  path = "{path}"\n'
            f'  {directive} = "{target}"\n'
            f"{location_lines}")
