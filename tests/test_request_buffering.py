"""Request bodies as nginx's `proxy_request_buffering on` sends them.

A chunked request body for proxy_pass is read whole (in memory up to
`client_body_buffer_size`, then in a temporary file up to
`client_max_body_size`) and sent upstream with a Content-Length: WSGI stacks
behind gunicorn read by CONTENT_LENGTH, and a chunked body would reach them
empty. Held whole, the body can also be sent again when a kept connection
fails before its answer. `request_buffering = false` streams it as received.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from tests.support.scripted_http import ScriptedHttp
from tests.support.sites import Site, running_proxy, running_site
from tests.support.wire import Wire, chunked, request


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("buffering"), """
        workers = 1
        access_log = "off"
        [[server]]
        listen = ["127.0.0.1:{port}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://{upstream}"
          client_body_buffer_size = "16k"
          client_max_body_size = "1m"
          [[server.location]]
          path = "/streamed/"
          proxy_pass = "http://{upstream}"
          request_buffering = false
    """) as running:
        yield running


def _post_chunked(site: Site, path: str, pieces: list[bytes]) -> dict:
    with Wire(site.port) as wire:
        wire.send(b"POST %s HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                  % path.encode() + chunked(*pieces))
        response = wire.response(b"POST")
    assert response.status == 200, response.raw_head
    return response.json()


@pytest.mark.parametrize("size", [5, 40_000, 300_000])  # in memory; spilled to a file
def test_a_chunked_body_goes_upstream_with_its_length(site: Site, size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    pieces = [body[index:index + 7000] for index in range(0, len(body), 7000)]
    seen = _post_chunked(site, "/echo/buffered", pieces)
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers.get("content-length") == str(size)
    assert "transfer-encoding" not in headers
    assert (seen["body_length"], seen["body_sha256"]) == (size, hashlib.sha256(body).hexdigest())


def test_a_body_over_client_max_body_size_is_413(site: Site) -> None:
    before = site.upstream_stats()["requests"]
    with Wire(site.port) as wire:
        wire.send(b"POST /echo/big HTTP/1.1\r\nHost: example.test\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*[b"z" * 65536] * 17))
        assert wire.response(b"POST").status == 413
    assert site.upstream_stats()["requests"] == before  # refused before any upstream


def test_request_buffering_false_streams_the_body_chunked(site: Site) -> None:
    seen = _post_chunked(site, "/streamed/echo", [b"hello", b" world"])
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers.get("transfer-encoding") == "chunked"
    assert seen["body_length"] == 11


@pytest.fixture
def vanishing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    upstream = ScriptedHttp({b"/vanish": [None]})
    directory = tmp_path_factory.mktemp("vanish")
    try:
        with running_proxy(directory, f"""
workers = 1
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  path = "/"
  proxy_pass = "http://{upstream.address}"
""") as proxy:
            yield proxy, upstream
    finally:
        upstream.close()


def test_a_buffered_body_is_sent_whole_again_by_the_free_retry(vanishing: tuple) -> None:
    proxy, upstream = vanishing
    with Wire(proxy.port) as wire:
        wire.send(request("GET", "/warm"))
        assert wire.response().status == 200
        wire.send(b"PUT /vanish HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked"
                  b"\r\n\r\n" + chunked(b"all", b" of it"))
        assert wire.response(b"PUT").status == 502
    sent = [head for head in upstream.requests if head.startswith(b"PUT /vanish")]
    assert len(sent) == 2, upstream.paths()  # the free retry, with the whole body
    assert all(b"Content-Length: 9\r\n" in head for head in sent)
