"""Timeouts and retries: what is sent twice, who is blamed, whose timeout counts.

nginx's rules (proxy_next_upstream, ngx_http_upstream_next):

* the free retry of a reused keep-alive connection is for a connection that
  fails before any reply byte (the upstream closed it while idle); a read
  timeout is no such failure, so the request is not sent again and the 504
  comes after one timeout;
* POST, LOCK and PATCH are never sent twice, not even by the free retry;
* every timeout belongs to the request's location, whatever kept connection
  carries it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.processes import Proxy
from tests.support.scripted_http import ScriptedHttp
from tests.support.sites import running_proxy
from tests.support.wire import Wire, request

STALL = 3.0


def _stalled_head(path: bytes) -> list:
    return [STALL, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate"]


def _stalled_body(path: bytes) -> list:
    return [b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nfirst", STALL, b"end"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedHttp]:
    server = ScriptedHttp({
        b"/stall": _stalled_head, b"/patient/stall": _stalled_head,
        b"/stall-body": _stalled_body, b"/patient/stall-body": _stalled_body,
        b"/vanish": [None], b"/patient/vanish": [None],
    })
    yield server
    server.close()


@pytest.fixture(scope="module")
def proxy(upstream: ScriptedHttp,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    directory = tmp_path_factory.mktemp("retries")
    with running_proxy(directory, f"""
workers = 1
[upstream.app]
servers = ["{upstream.address}"]
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  path = "/"
  proxy_pass = "http://app"
  read_timeout = "1s"
  [[server.location]]
  path = "/patient/"
  proxy_pass = "http://app"
  read_timeout = "10s"
""") as running:
        yield running


def _sent(upstream: ScriptedHttp, path: bytes, since: int) -> int:
    return upstream.paths()[since:].count(path)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_read_timeout_on_a_kept_connection_is_not_sent_again(
        proxy: Proxy, upstream: ScriptedHttp, method: str) -> None:
    since = len(upstream.requests)
    with Wire(proxy.port) as wire:
        wire.send(request("GET", "/warm"))  # the next request goes on a kept connection
        assert wire.response().status == 200
        started = time.monotonic()
        wire.send(request(method, "/stall"))
        response = wire.response()
        elapsed = time.monotonic() - started
    assert response.status == 504
    assert elapsed < 1.9, f"504 after {elapsed:.1f} s: the request was sent twice"
    assert _sent(upstream, b"/stall", since) == 1, upstream.paths()[since:]


@pytest.mark.parametrize("method, body", [("POST", None), ("PATCH", None), ("POST", b"x=1"),
                                          ("LOCK", None)])
def test_post_lock_and_patch_are_never_sent_twice(
        proxy: Proxy, upstream: ScriptedHttp, method: str, body: bytes | None) -> None:
    since = len(upstream.requests)
    with Wire(proxy.port) as wire:
        wire.send(request("GET", "/warm"))
        assert wire.response().status == 200
        wire.send(request(method, "/vanish", body=body))
        response = wire.response()
    assert response.status == 502
    assert _sent(upstream, b"/vanish", since) == 1, upstream.paths()[since:]


def test_an_idempotent_request_gets_the_free_retry(proxy: Proxy, upstream: ScriptedHttp) -> None:
    """The rule above keeps the free retry where nginx gives it: a GET on a kept
    connection that the upstream closes unanswered is sent again, on a new one."""
    since = len(upstream.requests)
    with Wire(proxy.port) as wire:
        wire.send(request("GET", "/warm"))
        assert wire.response().status == 200
        wire.send(request("GET", "/vanish"))
        assert wire.response().status == 502  # the fresh connection is closed too
    assert _sent(upstream, b"/vanish", since) == 2


@pytest.mark.parametrize("path", ["/stall", "/stall-body"])
def test_the_location_s_read_timeout_holds_on_a_shared_kept_connection(
        proxy: Proxy, path: str) -> None:
    with Wire(proxy.port) as wire:
        # The patient location leaves its kept connection to the impatient one.
        wire.send(request("GET", "/patient/warm"))
        assert wire.response().status == 200
        started = time.monotonic()
        wire.send(request("GET", path))
        if path == "/stall":
            assert wire.response().status == 504
        else:
            head = wire.head()
            assert head.status == 200
            assert wire.drain(5) == b"first", "the reply is cut off, not completed"
        elapsed = time.monotonic() - started
    assert elapsed < STALL - 0.5, f"the 1 s read_timeout took {elapsed:.1f} s"
