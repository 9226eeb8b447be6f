"""Location matching and proxy_pass URI replacement (workers/routing.py).

nginx's prefix locations: the longest matching prefix wins, whatever the order
in the file. A proxy_pass with a URI part replaces the matched prefix
(`location /a/ { proxy_pass http://h/b/; }` sends /a/x as /b/x); without one,
the client's URI is sent unchanged.
"""

from __future__ import annotations

import pytest

from prefork_proxy.config import Location
from workers.document_uri import document_uri
from workers.http1 import Request
from workers.routing import Router, upstream_target


def parsed(target: bytes) -> Request:
    """A request for `target` as workers/http1.py leaves it: path, query, $uri."""
    request = Request()
    request.target = target
    request.path, _, request.query = target.partition(b"?")
    request.uri = document_uri(request.path)
    return request


def router(*paths: str) -> Router:
    return Router(tuple(Location(path=path) for path in paths))


def matched(r: Router, path: bytes) -> str | None:
    location = r.match(path)
    return None if location is None else location.path


@pytest.mark.parametrize("path, expected", [
    (b"/", "/"),
    (b"/index.html", "/"),
    (b"/api", "/"),  # "/api/" does not match "/api"
    (b"/api/", "/api/"),
    (b"/api/users", "/api/"),
    (b"/api/v2", "/api/"),
    (b"/api/v2/", "/api/v2/"),
    (b"/api/v2/items?x=1", "/api/v2/"),
    (b"/apix", "/"),
    (b"/static", "/static"),
    (b"/staticfiles/a.css", "/static"),  # a prefix is a prefix, not a path segment
])
def test_the_longest_matching_prefix_wins(path: bytes, expected: str) -> None:
    r = router("/", "/api/v2/", "/static", "/api/")
    assert matched(r, path) == expected


def test_the_order_in_the_file_does_not_matter() -> None:
    for order in (("/", "/a/", "/a/b/"), ("/a/b/", "/a/", "/"), ("/a/", "/", "/a/b/")):
        assert matched(router(*order), b"/a/b/c") == "/a/b/"


def test_no_match_without_a_root_location() -> None:
    r = router("/api/")
    assert matched(r, b"/other") is None
    assert matched(r, b"/ap") is None


def test_matching_is_case_sensitive() -> None:
    assert matched(router("/", "/API/"), b"/api/x") == "/"


def test_without_a_uri_part_the_target_is_sent_unchanged() -> None:
    location = Location(path="/api/", uri_prefix=None)
    assert upstream_target(parsed(b"/api/users?id=1"), location) == b"/api/users?id=1"
    assert upstream_target(parsed(b"/api/../api/%41?x"), location) == b"/api/../api/%41?x"


@pytest.mark.parametrize("path, prefix, target, expected", [
    ("/a/", b"/b/", b"/a/x", b"/b/x"),
    ("/a/", b"/b/", b"/a/", b"/b/"),
    ("/a/", b"/b/", b"/a/x/y?q=1&r=/a/", b"/b/x/y?q=1&r=/a/"),
    ("/a/", b"/", b"/a/x", b"/x"),
    ("/", b"/app/", b"/x?y", b"/app/x?y"),
    ("/a", b"/b", b"/abc", b"/bbc"),  # nginx replaces the matched characters, no more
    ("/a/", b"/b", b"/a/x", b"/bx"),
    # The normalised path ($uri) replaces the prefix, escaped again as nginx does.
    ("/a/", b"/b/", b"/a/./x//y/../z", b"/b/x/z"),
    ("/a/", b"/b/", b"/x/../a/%7e%20%3f", b"/b/~%20%3F"),
    ("/a/", b"/b/", b"/a/x?", b"/b/x?"),
])
def test_a_uri_part_replaces_the_matched_prefix(path: str, prefix: bytes, target: bytes,
                                                expected: bytes) -> None:
    assert upstream_target(parsed(target), Location(path=path, uri_prefix=prefix)) == expected
