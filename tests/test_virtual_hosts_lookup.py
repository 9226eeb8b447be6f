"""workers/virtual_hosts.py alone: which Site a request's host picks (no sockets).

One server on an address: no lookup at all. Several: the host of the request
(absolute-form target or Host, as http1.py leaves it in Request.host) is
normalised and looked up; no host goes to the default; an invalid one is 400.
"""

from __future__ import annotations

import pytest

from prefork_proxy.config import Listen, Location, Server
from prefork_proxy.values import Address
from workers.http1 import RequestReader
from workers.virtual_hosts import INVALID_HOST, address_names, site_for

pytestmark = pytest.mark.timeout(10)


def server(*names: str, default: bool = False) -> Server:
    listen = Listen(Address("127.0.0.1", 8080), default_server=default)
    return Server((listen,), (Location(path="/"),), names=names)


A, B, DEFAULT = server("a.test"), server("*.b.test", "www.c.*"), server(default=True)
SITES = {id(A): "A", id(B): "B", id(DEFAULT): "default"}


def request_for(head: bytes):  # noqa: ANN201 - a workers.http1.Request
    return RequestReader().head_from(head)


def test_an_address_with_one_server_needs_no_lookup() -> None:
    assert address_names(A, (A,), SITES) is None


@pytest.mark.parametrize("head, site", [
    (b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", "A"),
    (b"GET / HTTP/1.1\r\nHost: A.Test:8080\r\n\r\n", "A"),
    (b"GET / HTTP/1.1\r\nHost: x.y.b.test\r\n\r\n", "B"),
    (b"GET / HTTP/1.1\r\nHost: www.c.example\r\n\r\n", "B"),
    (b"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n", "default"),  # *. needs a label before
    (b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", "default"),
    (b"GET http://a.test/ HTTP/1.1\r\nHost: www.b.test\r\n\r\n", "A"),  # RFC 9112 §3.2.2
    (b"GET / HTTP/1.0\r\n\r\n", "default"),
])
def test_the_host_picks_the_site(head: bytes, site: str) -> None:
    names = address_names(DEFAULT, (A, B, DEFAULT), SITES)
    assert site_for(names, request_for(head)) == site


@pytest.mark.parametrize("host", [b"a.test:8080:1", b"a.test:http", b"[::1", b"[::1]x"])
def test_a_host_that_is_not_one_is_refused(host: bytes) -> None:
    names = address_names(DEFAULT, (A, B, DEFAULT), SITES)
    assert site_for(names, request_for(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")) \
        is INVALID_HOST
