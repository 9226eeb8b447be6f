"""Hostile requests on the wire: 400, connection closed, upstream never reached.

DESIGN.md: ambiguous framing (Content-Length with Transfer-Encoding, duplicate
Content-Length, obfuscated Transfer-Encoding, bare LF, obs-fold, control
characters, HTTP/0.9) is answered 400 and the connection closed, so the
upstream never sees a request whose length two parsers could read
differently; so is an HTTP/1.1 request with no Host or with two. Each case is
sent as exact bytes on a raw socket, followed by a smuggled request that must
never arrive anywhere. The upstream's own counters prove it was not reached.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.sites import Site, running_site
from tests.support.wire import ServerClosed, Wire, request

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n"
POST = b"POST /echo/hostile HTTP/1.1\r\nHost: example.test\r\n"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("hostile"), """
        workers = 1
        access_log = "off"
        [[server]]
        listen = ["127.0.0.1:{port}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://{upstream}"
    """) as running:
        yield running


def answered_400_and_closed(site: Site, data: bytes, timeout: float = 5.0,
                            smuggle: bool = True) -> None:
    """Send `data` then a smuggled request: exactly one 400 comes back, the connection
    closes, and the upstream accepted no connection and saw no request."""
    before = site.upstream_stats()
    with Wire(site.port, timeout=timeout) as wire:
        try:
            wire.send(data + SMUGGLED if smuggle else data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy may close before reading everything
        response = wire.response()
        assert response.status == 400, response.raw_head
        assert response.header("Connection") == "close"
        assert len(response.body) < 1024 and b"400" in response.body
        assert wire.drain(timeout) == b"", "more than one response"
    after = site.upstream_stats()
    assert after["requests"] == before["requests"], after["paths"][-3:]
    assert after["connections"] == before["connections"] + 1  # just this stats query
    assert "/smuggled" not in after["paths"]


def test_a_well_formed_request_does_reach_the_upstream(site: Site) -> None:
    # The control for every case below: the counters do see a request that passes.
    before = site.upstream_stats()
    with Wire(site.port) as wire:
        wire.send(POST + b"Content-Length: 5\r\n\r\nhello")
        assert wire.response().json()["body_length"] == 5
    assert site.upstream_stats()["requests"] == before["requests"] + 1


# -- ambiguous framing ---------------------------------------------------------------

def test_content_length_with_transfer_encoding_is_400(site: Site) -> None:
    answered_400_and_closed(site, POST + b"Content-Length: 5\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")


def test_transfer_encoding_with_content_length_after_it_is_400(site: Site) -> None:
    answered_400_and_closed(site, POST + b"Transfer-Encoding: chunked\r\n"
                            b"Content-Length: 5\r\n\r\n0\r\n\r\n")


@pytest.mark.parametrize("lengths", [
    b"Content-Length: 5\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nContent-Length: 44\r\n",
    b"Content-Length: 5, 5\r\n",
    b"Content-Length: 5\r\ncontent-length: 5\r\n",
], ids=["same-twice", "different", "list", "case"])
def test_duplicate_content_length_is_400(site: Site, lengths: bytes) -> None:
    answered_400_and_closed(site, POST + lengths + b"\r\nhello")


@pytest.mark.parametrize("line", [
    b"Transfer-Encoding: xchunked\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
    b"Transfer-Encoding: identity, chunked\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
    b"Transfer-Encoding: \x0bchunked\r\n",
    b"Transfer-Encoding : chunked\r\n",
    b"X-Padding: a\r\n Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding\r\n : chunked\r\n",
    b"Transfer-Encoding: identity\r\n",
], ids=["xchunked", "chunked-identity", "identity-chunked", "two-headers", "vtab-chunked",
        "space-before-colon", "folded-line", "folded-value", "identity"])
def test_obfuscated_transfer_encoding_is_400(site: Site, line: bytes) -> None:
    answered_400_and_closed(site, POST + line + b"\r\n5\r\nhello\r\n0\r\n\r\n")


def test_transfer_encoding_in_an_http10_request_is_400(site: Site) -> None:
    answered_400_and_closed(site, b"POST /echo/h10 HTTP/1.0\r\nHost: example.test\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


# -- line endings, folding, control characters -----------------------------------------

@pytest.mark.parametrize("data", [
    b"GET /echo/lf HTTP/1.1\nHost: example.test\n\n",
    b"GET /echo/lf HTTP/1.1\r\nHost: example.test\nX-A: b\r\n\r\n",
    b"GET /echo/lf HTTP/1.1\r\nHost: example.test\r\nX-A: b\r\n\n",
    b"GET /echo/cr HTTP/1.1\r\nHost: example.test\rX-A: b\r\n\r\n",
], ids=["everywhere", "after-a-header", "ending-the-head", "bare-cr"])
def test_bare_lf_line_endings_are_400(site: Site, data: bytes) -> None:
    answered_400_and_closed(site, data)


@pytest.mark.parametrize("fold", [b" ", b"\t"], ids=["space", "tab"])
def test_obs_fold_is_400(site: Site, fold: bytes) -> None:
    answered_400_and_closed(site, b"GET /echo/fold HTTP/1.1\r\nHost: example.test\r\n"
                            b"X-Long: one\r\n" + fold + b"two\r\n\r\n")


@pytest.mark.parametrize("char", [b"\x00", b"\x01", b"\x1b", b"\x7f"],
                         ids=["nul", "soh", "escape", "del"])
def test_a_control_character_in_a_header_value_is_400(site: Site, char: bytes) -> None:
    answered_400_and_closed(site, b"GET /echo/ctl HTTP/1.1\r\nHost: example.test\r\n"
                            b"X-Value: a" + char + b"b\r\n\r\n")


def test_a_control_character_in_the_target_is_400(site: Site) -> None:
    answered_400_and_closed(site, b"GET /echo/\x01 HTTP/1.1\r\nHost: example.test\r\n\r\n")


# -- versions and Host ---------------------------------------------------------------------

def test_http09_request_is_400(site: Site) -> None:
    # Nothing after it: the client now waits for the answer.
    answered_400_and_closed(site, b"GET /\r\n", timeout=3.0, smuggle=False)


def test_http09_request_with_a_blank_line_is_400(site: Site) -> None:
    answered_400_and_closed(site, b"GET /\r\n\r\n")


def test_http11_without_host_is_400(site: Site) -> None:
    answered_400_and_closed(site, b"GET /echo/nohost HTTP/1.1\r\nAccept: */*\r\n\r\n")


@pytest.mark.parametrize("hosts", [
    b"Host: a.test\r\nHost: b.test\r\n", b"Host: a.test\r\nHost: a.test\r\n"],
    ids=["different", "same"])
def test_two_host_headers_are_400(site: Site, hosts: bytes) -> None:
    answered_400_and_closed(site, b"GET /echo/hosts HTTP/1.1\r\n" + hosts + b"\r\n")


# -- after a good request on the same connection -----------------------------------------

def test_a_hostile_request_after_a_good_one_closes_the_kept_alive_connection(
        site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(request("GET", "/echo/first"))
        assert wire.response().status == 200
        before = site.upstream_stats()
        wire.send(POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd" + SMUGGLED)
        response = wire.response()
        assert response.status == 400
        assert wire.closed()
    after = site.upstream_stats()
    assert after["requests"] == before["requests"]
    assert "/smuggled" not in after["paths"]


def test_a_malformed_chunk_is_400_and_closes_the_connection(site: Site) -> None:
    # The head was fine and has gone upstream (bodies stream); the bad chunk size
    # ends both connections, and the request after it is never read.
    with Wire(site.port) as wire:
        wire.send(POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
                  + SMUGGLED)
        try:
            response = wire.response()
        except ServerClosed:
            response = None
        if response is not None:
            assert response.status == 400
        assert wire.closed()
    assert "/smuggled" not in site.upstream_stats()["paths"]


def test_the_worker_keeps_serving_after_hostile_input(site: Site) -> None:
    for _ in range(3):
        answered_400_and_closed(site, POST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab")
    with Wire(site.port) as wire:
        wire.send(request("GET", "/echo/after"))
        assert wire.response().json()["path"] == "/echo/after"
    assert site.proxy.alive()


def test_each_400_writes_a_log_line_naming_the_client(site: Site) -> None:
    from tests.support.processes import wait_for

    answered_400_and_closed(site, b"GET /echo/nohost-logged HTTP/1.1\r\n\r\n")
    wait_for(lambda: "client 127.0.0.1: a request needs exactly one Host header"
             in site.proxy.log(), message="the 400 in the error log")


def test_the_upstream_counters_are_unchanged_by_the_whole_module(site: Site) -> None:
    paths = site.upstream_stats()["paths"]
    assert "/smuggled" not in paths
    assert not any(path.startswith(("/echo/lf", "/echo/fold", "/echo/ctl", "/echo/hosts",
                                    "/echo/nohost", "/echo/h10")) for path in paths), paths
