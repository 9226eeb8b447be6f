"""uwsgi_pass keeps the request rules of proxy_pass, against the real uWSGI server.

Trailer fields never become vars; `Proxy` never becomes
HTTP_PROXY (httpoxy, CVE-2016-5385) and underscore names never become vars;
an absolute-form target's host is the host (RFC 9112 §3.2.2); routing takes
the normalised path, and PATH_INFO agrees with the route taken.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.processes import Upstream
from tests.support.sites import running_proxy
from tests.support.uwsgi_server import running_uwsgi
from tests.support.wire import Wire, request


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    directory = tmp_path_factory.mktemp("uwsgi-rules")
    http = Upstream(directory / "http.log")
    try:
        with running_uwsgi("environ.py", directory) as server, running_proxy(directory, f"""
workers = 1
access_log = "off"
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  path = "/"
  proxy_pass = "http://{http.address}"
  [[server.location]]
  path = "/app/"
  uwsgi_pass = "{server.uwsgi_pass}"
""") as proxy:
            yield proxy.port
    finally:
        http.stop()


def _environ(port: int, data: bytes, method: bytes = b"GET") -> dict:
    with Wire(port) as wire:
        wire.send(data)
        response = wire.response(method)
    assert response.status == 200, response.raw_head + response.body[:300]
    return json.loads(response.body)


def test_trailer_fields_never_become_vars(port: int) -> None:
    seen = _environ(port, b"POST /app/t HTTP/1.1\r\nHost: example.test\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                          b"Host: evil.internal\r\nX-Injected: 1\r\nContent-Length: 9\r\n\r\n",
                    b"POST")
    assert seen["body_length"] == 5
    assert seen["environ"]["HTTP_HOST"] == "example.test"
    assert "HTTP_X_INJECTED" not in seen["environ"]


def test_proxy_and_underscore_names_never_become_vars(port: int) -> None:
    environ = _environ(port, request("GET", "/app/p", headers=[
        ("Proxy", "http://evil:1"), ("X_Forwarded_For", "6.6.6.6")]))["environ"]
    assert "HTTP_PROXY" not in environ
    assert "6.6.6.6" not in json.dumps(environ)


def test_the_absolute_form_host_is_the_host(port: int) -> None:
    environ = _environ(port, b"GET http://b.example/app/x HTTP/1.1\r\nHost: a.example\r\n\r\n")[
        "environ"]
    assert environ["HTTP_HOST"] == "b.example"
    assert environ["SERVER_NAME"] == "b.example"
    assert environ["PATH_INFO"] == "/app/x"


@pytest.mark.parametrize("target", ["/x/../app/y", "//app/y", "/x/%2e%2e/app/y", "/app/./y"])
def test_path_info_agrees_with_the_route(port: int, target: str) -> None:
    environ = _environ(port, request("GET", target))["environ"]
    assert environ["PATH_INFO"] == "/app/y"
    assert environ["REQUEST_URI"] == target


def test_a_route_around_the_uwsgi_location_is_not_taken(port: int) -> None:
    """/app/../x leaves the uwsgi location: it goes to / (the HTTP upstream)."""
    with Wire(port) as wire:
        wire.send(request("GET", "/app/../echo/x"))
        response = wire.response()
    assert response.json()["path"] == "/app/../echo/x"
