"""Request rules that keep one request from posing as another, on the wire.

Each case sends exact bytes to the real proxy in front of the test upstream
(tests/support/http_upstream.py, whose /echo answers with the method, path,
headers and body hash it saw) and checks what the upstream received:

* an Upgrade request is an ordinary request until a 101 comes back: its body
  is framed as a body (RFC 9110 §7.8, RFC 9112 §6), and after a non-101 answer
  the connection goes on with the request that follows the body;
* a Connection list never removes Host, Content-Length or Transfer-Encoding;
* trailer fields never become head fields; Content-Length or
  Transfer-Encoding in a trailer is ignored with the rest of it (nginx);
* a valid request followed by garbage in the same read is answered, then 400;
* an absolute-form target's host wins over Host (RFC 9112 §3.2.2);
* locations match on the normalised path (nginx's $uri), and a path that
  climbs above the root, or holds %00, is 400;
* header names with underscores and the `Proxy` header are not forwarded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from tests.support.sites import Site, running_site
from tests.support.wire import Wire, chunked, request

SMUGGLED = b"GET /other/smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n"
UPGRADE = (b"Host: example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("rules"), """
        workers = 1
        access_log = "off"
        [[server]]
        listen = ["127.0.0.1:{port}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://{upstream}"
          [[server.location]]
          path = "/legacy/"
          proxy_pass = "http://{upstream}/echo/legacy/"
          [[server.location]]
          path = "/admin/"
          proxy_pass = "http://{upstream}/echo/admin/"
    """) as running:
        yield running


def _headers(response) -> dict[str, str]:  # noqa: ANN001
    return {name.lower(): value for name, value in response.json()["headers"]}


def _paths_since(site: Site, before: dict) -> list[str]:
    after = site.upstream_stats()
    return after["paths"][len(before["paths"]):] if len(before["paths"]) < 100 else after["paths"]


# -- an Upgrade request with a body ---------------------------------------------------
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_upgrade_request_s_body_is_a_body(site: Site, framing: str) -> None:
    body = SMUGGLED
    head = b"POST /echo/upgrade HTTP/1.1\r\n" + UPGRADE
    if framing == "content-length":
        sent = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    else:
        sent = head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body)
    before = site.upstream_stats()
    with Wire(site.port) as wire:
        wire.send(sent + request("GET", "/echo/after"))
        first = wire.response(b"POST")
        assert first.status == 200, first.raw_head
        seen = first.json()
        assert seen["path"] == "/echo/upgrade"
        assert seen["body_length"] == len(body)
        assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert "upgrade" not in _headers(first)
        second = wire.response()
        assert second.status == 200
        assert second.json()["path"] == "/echo/after"
    assert "/other/smuggled" not in _paths_since(site, before)


# -- Connection naming an essential header ---------------------------------------------
def test_connection_host_keeps_host(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(b"GET /echo/c HTTP/1.1\r\nHost: kept.example\r\nConnection: host\r\n\r\n")
        response = wire.response()
    assert response.status == 200
    assert _headers(response)["host"] == "kept.example"


@pytest.mark.parametrize("token", ["content-length", "transfer-encoding", "host, content-length"])
def test_connection_naming_framing_does_not_change_the_body(site: Site, token: str) -> None:
    before = site.upstream_stats()
    body = SMUGGLED
    with Wire(site.port) as wire:
        wire.send(b"POST /echo/c HTTP/1.1\r\nHost: example.test\r\nConnection: %b\r\n"
                  b"Content-Length: %d\r\n\r\n%b" % (token.encode(), len(body), body)
                  + request("GET", "/echo/after"))
        first = wire.response(b"POST")
        assert first.json()["body_length"] == len(body)
        assert first.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert wire.response().json()["path"] == "/echo/after"
    assert "/other/smuggled" not in _paths_since(site, before)


# -- trailers -------------------------------------------------------------------------
@pytest.mark.parametrize("trailer", [
    b"Host: evil.internal\r\nX-Injected: 1\r\n",
    b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
])
def test_trailer_fields_never_become_head_fields(site: Site, trailer: bytes) -> None:
    body = b"0\r\n".join([b"5\r\nhello\r\n", trailer + b"\r\n"])
    with Wire(site.port) as wire:
        wire.send(b"POST /echo/t HTTP/1.1\r\nHost: example.test\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" + body + request("GET", "/echo/after"))
        first = wire.response(b"POST")
        assert first.status == 200, first.raw_head
        headers = _headers(first)
        assert headers["host"] == "example.test"
        assert "x-injected" not in headers
        assert first.json()["body_length"] == 5
        assert wire.response().json()["path"] == "/echo/after"


# -- a valid request, then garbage ----------------------------------------------------
@pytest.mark.parametrize("valid", [
    request("GET", "/echo/v", headers=[("X-Forwarded-For", "10.1.1.1")]),
    request("POST", "/echo/v", body=b"hello"),
    request("GET", "/echo/v"),
])
def test_a_valid_request_then_garbage_is_answered_then_400(site: Site, valid: bytes) -> None:
    with Wire(site.port) as wire:
        wire.send(valid + b"\x01\x02 garbage\r\n\r\n")
        first = wire.response(valid.split(b" ", 1)[0])
        assert first.status == 200, first.raw_head
        assert first.json()["path"] == "/echo/v"
        second = wire.response()
        assert second.status == 400
        assert wire.closed()


@pytest.mark.parametrize("after", [b"XYZ\r\n\r\n", b"CONNECT / HTTP/1.1\r\nHost: h\r\n\r\n"])
def test_a_refused_upgrade_then_a_bad_request_is_answered_then_refused(
        site: Site, after: bytes) -> None:
    """The upstream answers an Upgrade request without switching: what the client sent
    after its head is read as HTTP, and a bad request there is answered (400, or 405
    for CONNECT) and the connection closed, not left hanging."""
    with Wire(site.port) as wire:
        wire.send(b"GET /echo/upgrade HTTP/1.1\r\n" + UPGRADE + b"\r\n" + after)
        first = wire.response()
        assert first.status == 200, first.raw_head
        second = wire.response()
        assert second.status == (405 if after.startswith(b"CONNECT") else 400)
        assert wire.closed()


# -- absolute-form targets ------------------------------------------------------------
def test_the_absolute_form_host_wins_over_host(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(b"GET http://b.example/echo/abs HTTP/1.1\r\nHost: a.example\r\n\r\n")
        response = wire.response()
    assert response.status == 200
    assert response.json()["path"] == "/echo/abs"
    headers = _headers(response)
    assert headers["host"] == "b.example"
    assert headers["x-forwarded-host"] == "b.example"


def test_the_absolute_form_target_is_routed_on_its_path(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(b"GET http://b.example/admin/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
        response = wire.response()
    assert response.json()["path"] == "/echo/admin/x"


# -- routing on the normalised path ---------------------------------------------------
@pytest.mark.parametrize("path", [
    "/legacy/../admin/x", "/legacy/%2e%2e/admin/x", "//admin/x", "/legacy/./../admin/x",
    "/admin//x", "/%61dmin/x",
])
def test_locations_match_the_normalised_path(site: Site, path: str) -> None:
    with Wire(site.port) as wire:
        wire.send(request("GET", path))
        response = wire.response()
    assert response.status == 200, response.raw_head
    assert response.json()["path"] == "/echo/admin/x"


def test_a_location_without_uri_part_gets_the_client_s_target(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(request("GET", "/echo/a/../b?q=%2e"))
        response = wire.response()
    assert response.json()["path"] == "/echo/a/../b?q=%2e"


@pytest.mark.parametrize("path", [
    "/../x", "/a/../../x", "/%2e%2e/x", "/x%00y", "/a/%2E%2E/%2e%2e/x",
])
def test_a_path_above_the_root_or_with_nul_is_400(site: Site, path: str) -> None:
    before = site.upstream_stats()
    with Wire(site.port) as wire:
        wire.send(request("GET", path))
        response = wire.response()
    assert response.status == 400
    assert site.upstream_stats()["requests"] == before["requests"]


# -- headers that pose as the proxy's own ---------------------------------------------
def test_underscore_header_names_and_proxy_are_not_forwarded(site: Site) -> None:
    for extra in ([("X_Forwarded_For", "6.6.6.6"), ("Proxy", "http://evil:1")],
                  [("X_Forwarded_For", "6.6.6.6"), ("Proxy", "http://evil:1"),
                   ("X-Forwarded-For", "10.0.0.1")]):
        with Wire(site.port) as wire:
            wire.send(request("GET", "/echo/u", headers=extra))
            headers = _headers(wire.response())
        assert "x_forwarded_for" not in headers
        assert "proxy" not in headers
        assert "6.6.6.6" not in headers["x-forwarded-for"]
