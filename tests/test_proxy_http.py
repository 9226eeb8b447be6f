"""proxy_pass end to end: the real master and workers in front of a real upstream.

What the client sends and what the upstream sees are compared byte for byte
where it matters: methods, targets, forwarding headers, bodies (by length and
sha256, both framings), response framing (Content-Length, chunked, none for
HEAD/204/304, an HTTP/1.0 body re-chunked), pipelining order, 100-continue,
upstream keep-alive reuse, 502/504 with their log lines, and the access log in
nginx's combined format. The 50 MB transfers show that bodies stream: the
worker's RSS, sampled during the transfer, grows by less than 10 MB.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.configs import one_location
from tests.support.memory import RssSampler
from tests.support.peers import ClosingPeer, start_upstream_on
from tests.support.processes import Upstream, free_port, wait_for
from tests.support.sites import Site, refused_port, running_site
from tests.support.wire import ServerClosed, Wire, chunked, get, request


@pytest.fixture(scope="module")
def dead_port() -> Iterator[int]:
    """A port where connecting is refused, for as long as the module runs."""
    with refused_port() as sock:
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, dead_port: int) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("proxy_http"), """
        workers = 1
        access_log = "{dir}/access.log"
        [[server]]
        listen = ["127.0.0.1:{port}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://{upstream}"
          client_max_body_size = "0"
          [[server.location]]
          path = "/timeout/"
          proxy_pass = "http://{upstream}/"
          read_timeout = "1s"
          [[server.location]]
          path = "/dead/"
          proxy_pass = "127.0.0.1:DEAD_PORT"
          [[server.location]]
          path = "/prefix/"
          proxy_pass = "http://{upstream}/echo/rewritten/"
          [[server.location]]
          path = "/limited/"
          proxy_pass = "http://{upstream}/echo/"
    """.replace("DEAD_PORT", str(dead_port))) as running:
        yield running


def seen_headers(response) -> dict[str, list[str]]:  # noqa: ANN001
    """The request headers the upstream received, by lower-cased name."""
    headers: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- requests -----------------------------------------------------------------------

def test_a_get_reaches_the_upstream_with_its_method_and_target(site: Site) -> None:
    response = get(site.port, "/echo/a/b?x=1&y=%20")
    assert response.status == 200
    echo = response.json()
    assert (echo["method"], echo["path"], echo["body_length"]) == ("GET", "/echo/a/b?x=1&y=%20", 0)
    assert response.header("Content-Type") == "application/json"
    assert int(response.header("Content-Length")) == len(response.body)
    # Date and Server are the upstream's: nothing is replaced or added.
    assert response.header("Server").startswith("BaseHTTP")
    assert response.header("Date")


def test_the_upstream_sees_host_unchanged_and_the_forwarding_headers_set(site: Site) -> None:
    response = get(site.port, "/echo/fwd", host="Example.TEST:8080", headers=[
        ("X-Forwarded-For", "203.0.113.9"), ("X-Real-IP", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.test")])
    headers = seen_headers(response)
    assert headers["host"] == ["Example.TEST:8080"]
    assert headers["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert headers["x-real-ip"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["Example.TEST:8080"]


def test_hop_by_hop_request_headers_do_not_reach_the_upstream(site: Site) -> None:
    response = get(site.port, "/echo/hop", headers=[
        ("Connection", "keep-alive, X-Hop"), ("X-Hop", "drop me"), ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"), ("Trailer", "X-Sum"), ("Proxy-Authorization", "Basic eA=="),
        ("Proxy-Connection", "keep-alive"), ("Proxy", "http://evil.test"),
        ("X-End-To-End", "kept")])
    headers = seen_headers(response)
    for name in ("x-hop", "keep-alive", "te", "trailer", "proxy-authorization",
                 "proxy-connection", "proxy", "transfer-encoding", "content-length"):
        assert name not in headers, name
    # The upstream hop gets its own Connection handling, never the client's tokens.
    assert "x-hop" not in " ".join(headers.get("connection", [])).lower()
    assert headers["x-end-to-end"] == ["kept"]


def test_hop_by_hop_response_headers_do_not_reach_the_client(site: Site) -> None:
    response = get(site.port, "/hop-headers")
    assert response.body == b"ok"
    names = {name.lower() for name, _ in response.headers}
    assert names == {b"x-kept", b"content-length"}


def test_a_post_body_arrives_intact_with_its_content_length(site: Site) -> None:
    body = os.urandom(300_000)
    with Wire(site.port) as wire:
        wire.send(request("POST", "/echo/post", body=body,
                          headers=[("Content-Type", "application/octet-stream")]))
        response = wire.response()
    echo = response.json()
    assert echo["method"] == "POST"
    assert (echo["body_length"], echo["body_sha256"]) == (len(body), sha256(body))
    headers = seen_headers(response)
    assert headers["content-length"] == [str(len(body))]
    assert "transfer-encoding" not in headers
    assert headers["content-type"] == ["application/octet-stream"]


def test_an_empty_post_is_sent_with_content_length_0(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(request("POST", "/echo/empty", body=b""))
        headers = seen_headers(wire.response())
    assert headers["content-length"] == ["0"]


def test_a_chunked_request_body_arrives_upstream_whole_with_its_length(site: Site) -> None:
    """nginx's proxy_request_buffering on (tests/test_request_buffering.py)."""
    pieces = [b"a", os.urandom(70_000), b"", b"tail-" * 1000]
    body = b"".join(pieces)
    encoded = b"".join(b"%x;ext=1\r\n%b\r\n" % (len(p), p) for p in pieces if p) \
        + b"0\r\nX-Trailer: t\r\n\r\n"
    with Wire(site.port) as wire:
        wire.send(b"PUT /echo/chunked HTTP/1.1\r\nHost: example.test\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(encoded), 9_999):  # cut across chunk boundaries
            wire.send(encoded[start:start + 9_999])
        response = wire.response()
    echo = response.json()
    assert (echo["body_length"], echo["body_sha256"]) == (len(body), sha256(body))
    headers = seen_headers(response)
    assert headers["content-length"] == [str(len(body))]
    assert "transfer-encoding" not in headers


def test_a_chunked_response_is_relayed_intact(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(request("GET", "/chunked/123457"))
        response = wire.response()
        assert response.chunked and response.header("Content-Length") is None
        assert response.body == b"x" * 123_457
        assert response.chunk_sizes[-1] == 0
        # The body ended where the framing said: the connection serves another request.
        wire.send(request("GET", "/echo/next"))
        assert wire.response().json()["path"] == "/echo/next"


def test_a_content_length_response_keeps_its_length(site: Site) -> None:
    response = get(site.port, "/bytes/200001")
    assert response.header("Content-Length") == "200001"
    assert response.header("Transfer-Encoding") is None
    assert response.body == b"x" * 200_001


def test_a_proxy_pass_uri_part_replaces_the_location_prefix(site: Site) -> None:
    assert get(site.port, "/prefix/a/b?q=1").json()["path"] == "/echo/rewritten/a/b?q=1"


def test_an_absolute_form_target_is_sent_upstream_in_origin_form(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(b"GET http://example.test/echo/abs?z HTTP/1.1\r\nHost: example.test\r\n\r\n")
        assert wire.response().json()["path"] == "/echo/abs?z"


def test_an_http10_client_that_asks_for_keep_alive_gets_it(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(b"GET /echo/ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        response = wire.response()
        assert response.header("Connection") == "keep-alive"
        assert response.json()["path"] == "/echo/ten"
        wire.send(b"GET /echo/ten-again HTTP/1.0\r\n\r\n")
        assert wire.response().json()["path"] == "/echo/ten-again"
        assert wire.closed()


def test_a_body_over_client_max_body_size_is_413_and_never_sent_upstream(site: Site) -> None:
    before = site.upstream_stats()
    with Wire(site.port) as wire:
        # The head alone is enough to refuse: the client may not send the body at all.
        wire.send(b"POST /limited/big HTTP/1.1\r\nHost: example.test\r\n"
                  b"Content-Length: 2097152\r\n\r\n")
        response = wire.response()
        assert response.status == 413
        assert wire.closed()
    after = site.upstream_stats()
    assert after["requests"] == before["requests"]
    assert (after["connections"] - before["connections"]) == 1  # this stats query


def test_a_chunked_body_over_client_max_body_size_is_413(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(b"POST /limited/chunked HTTP/1.1\r\nHost: example.test\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(3):
                wire.send(chunked(b"z" * 500_000)[:-5])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-body: what matters is what was answered
        assert wire.response().status == 413
        assert wire.closed()


def test_a_response_cut_short_by_the_upstream_closes_the_client_connection(
        site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(request("GET", "/truncated/100000"))
        # The head went out before the upstream failed: the only signal left is to
        # close, never to leave a short body on a connection that stays open.
        with pytest.raises(ServerClosed):
            wire.response()
    wait_for(lambda: re.search(r'\[ERROR\].*upstream.*request "GET /truncated/100000"',
                               site.proxy.log()), message="the error log line")


# -- pipelining and bodiless responses --------------------------------------------------

def test_pipelined_requests_are_answered_in_order(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(request("GET", "/echo/1") + request("POST", "/echo/2", body=b"two")
                  + request("GET", "/chunked/5000") + request("HEAD", "/bytes/10")
                  + request("DELETE", "/echo/5"))
        first = wire.response().json()
        second = wire.response().json()
        third = wire.response()
        fourth = wire.response(b"HEAD")
        fifth = wire.response().json()
    assert (first["method"], first["path"]) == ("GET", "/echo/1")
    assert (second["method"], second["path"], second["body_length"]) == ("POST", "/echo/2", 3)
    assert third.body == b"x" * 5000
    assert fourth.status == 200 and fourth.header("Content-Length") == "10"
    assert (fifth["method"], fifth["path"]) == ("DELETE", "/echo/5")


def test_a_slow_first_request_still_answers_first(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(request("GET", "/slow/0.5") + request("GET", "/echo/fast"))
        assert wire.response().json()["path"] == "/slow/0.5"
        assert wire.response().json()["path"] == "/echo/fast"


def test_fifty_pipelined_requests_in_one_send_are_answered_in_order(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(b"".join(request("GET", f"/echo/p{index}") for index in range(50)))
        paths = [wire.response().json()["path"] for _ in range(50)]
    assert paths == [f"/echo/p{index}" for index in range(50)]


def test_head_204_and_304_responses_carry_no_body(site: Site) -> None:
    # Pipelined: any body byte would be read as the start of the next response.
    with Wire(site.port) as wire:
        wire.send(request("HEAD", "/bytes/1000") + request("GET", "/status/204")
                  + request("GET", "/not-modified") + request("GET", "/echo/after"))
        head = wire.response(b"HEAD")
        no_content = wire.response()
        not_modified = wire.response()
        after = wire.response()
    assert head.status == 200 and head.header("Content-Length") == "1000"
    assert no_content.status == 204
    assert no_content.header("Transfer-Encoding") is None
    assert no_content.header("Content-Length") is None
    assert not_modified.status == 304 and not_modified.header("ETag") == '"v1"'
    assert not_modified.header("Transfer-Encoding") is None
    assert after.json()["path"] == "/echo/after"


def test_an_http10_upstream_body_is_rechunked_for_an_http11_client(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(request("GET", "/http10/70000"))
        response = wire.response()
        assert response.version == b"HTTP/1.1"
        assert response.chunked and response.body == b"y" * 70_000
        assert response.header("Connection") is None  # the client connection stays open
        wire.send(request("GET", "/echo/again"))
        assert wire.response().json()["path"] == "/echo/again"


def test_an_http10_upstream_body_runs_until_close_for_an_http10_client(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(b"GET /http10/5000 HTTP/1.0\r\n\r\n")
        response = wire.response()
    assert response.header("Transfer-Encoding") is None
    assert response.header("Connection") == "close"
    assert response.body == b"y" * 5000


def test_a_chunked_upstream_body_runs_until_close_for_an_http10_client(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(b"GET /chunked/25000 HTTP/1.0\r\n\r\n")
        response = wire.response()
    assert response.header("Transfer-Encoding") is None
    assert response.header("Connection") == "close"
    assert response.body == b"x" * 25_000


def test_connection_close_from_the_client_is_honoured(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(request("GET", "/echo/bye", headers=[("Connection", "close")]))
        response = wire.response()
        assert response.header("Connection") == "close"
        assert response.json()["path"] == "/echo/bye"
        assert wire.closed()


def test_expect_100_continue_is_answered_before_the_body_is_sent(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(b"POST /echo/expect HTTP/1.1\r\nHost: example.test\r\n"
                  b"Expect: 100-continue\r\nContent-Length: 11\r\n\r\n")
        interim = wire.head()  # the body has not been sent: this must come first
        assert (interim.status, interim.reason) == (100, b"Continue")
        wire.send(b"hello world")
        response = wire.response()
    assert response.status == 200
    assert response.json()["body_length"] == 11
    assert "expect" not in seen_headers(response)


# -- the upstream side ----------------------------------------------------------------------

def test_upstream_connections_are_kept_alive_and_reused(site: Site) -> None:
    before = site.upstream_stats()
    with Wire(site.port) as wire:
        for index in range(40):
            wire.send(request("GET", f"/echo/ka{index}"))
            assert wire.response().status == 200
    for index in range(40):  # a new client connection each time: the pool is upstream-side
        assert get(site.port, f"/echo/new{index}").status == 200
    after = site.upstream_stats()
    assert after["requests"] - before["requests"] == 80
    # One worker, one request at a time: one pooled connection (plus this stats query).
    assert after["connections"] - before["connections"] <= 3


def test_bytes_an_upstream_sends_on_an_idle_pooled_connection_never_answer_a_request(
        start_proxy, upstream) -> None:  # noqa: ANN001
    # nginx's keepalive module closes a cached connection as soon as it turns readable
    # (ngx_http_upstream_keepalive_close_handler); a response nobody asked for must
    # never be taken as the answer to the next client's request.
    proxy = start_proxy(one_location(upstream.address))
    assert get(proxy.port, "/extra-response").body == b"ok"
    # Loopback delivers a write at once: once it is written, it sits in the pool.
    wait_for(lambda: "/extra-response:sent" in get(upstream.port, "/stats").json()["paths"],
             message="the stray response to be written")
    victim = get(proxy.port, "/echo/victim")
    assert victim.body != b"poisoned"
    assert victim.json()["path"] == "/echo/victim"


def test_data_after_the_last_chunk_is_not_relayed_and_not_kept(
        start_proxy, upstream) -> None:  # noqa: ANN001
    # nginx: "upstream sent data after final chunk" - dropped, and no keep-alive.
    proxy = start_proxy(one_location(upstream.address))
    with Wire(proxy.port) as wire:
        wire.send(request("GET", "/chunked-extra"))
        response = wire.response()
        assert (response.status, response.body) == (200, b"hello")
        wire.send(request("GET", "/echo/next-client"))
        assert wire.response().json()["path"] == "/echo/next-client"


def test_a_closed_upstream_port_gives_502_with_a_short_body_and_a_log_line(
        site: Site, dead_port: int) -> None:
    response = get(site.port, "/dead/x?y")
    assert response.status == 502
    assert response.header("Content-Type") == "text/html"
    assert b"502 Bad Gateway" in response.body and len(response.body) < 512
    wait_for(lambda: re.search(rf"\[ERROR\].*connect to 127\.0\.0\.1:{dead_port} failed.*"
                               r'client 127\.0\.0\.1, request "GET /dead/x\?y"',
                               site.proxy.log()), message="the 502 log line")


def test_a_malformed_upstream_response_gives_502_and_a_log_line(site: Site) -> None:
    response = get(site.port, "/bad-framing")
    assert response.status == 502 and b"502" in response.body
    wait_for(lambda: re.search(r'\[ERROR\].*upstream sent.*request "GET /bad-framing"',
                               site.proxy.log()), message="the 502 log line")


def test_an_upstream_read_timeout_gives_504_with_a_short_body_and_a_log_line(
        site: Site) -> None:
    started = time.monotonic()
    response = get(site.port, "/timeout/slow/3")
    elapsed = time.monotonic() - started
    assert response.status == 504
    assert b"504 Gateway Timeout" in response.body and len(response.body) < 512
    assert 0.9 < elapsed < 2.9, elapsed  # read_timeout = "1s", not the upstream's 3 s
    wait_for(lambda: re.search(r'\[ERROR\].*timed out.*request "GET /timeout/slow/3"',
                               site.proxy.log()), message="the 504 log line")


# -- the access log -----------------------------------------------------------------------

COMBINED = re.compile(
    r'^(?P<addr>\S+) - - \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$')


def access_line(site: Site, needle: str) -> re.Match:
    path = Path(site.proxy.config_path).parent / "access.log"

    def find() -> re.Match | None:
        if not path.exists():
            return None
        for line in path.read_text().splitlines():
            if needle in line:
                match = COMBINED.match(line)
                assert match, f"not nginx's combined format: {line!r}"
                return match
        return None

    return wait_for(find, message=f"an access log line with {needle}")


def test_the_access_log_uses_nginxs_combined_format(site: Site) -> None:
    response = get(site.port, "/echo/logged?a=1", headers=[
        ("Referer", "http://ref.test/page"), ("User-Agent", "spec-client/1.0")])
    line = access_line(site, "/echo/logged?a=1")
    assert line["addr"] == "127.0.0.1"
    assert line["request"] == "GET /echo/logged?a=1 HTTP/1.1"
    assert line["status"] == "200"
    assert int(line["bytes"]) == len(response.body)  # $body_bytes_sent: the body only
    assert (line["referer"], line["agent"]) == ("http://ref.test/page", "spec-client/1.0")
    logged = time.strptime(line["time"], "%d/%b/%Y:%H:%M:%S %z")
    assert abs(time.mktime(logged) - time.mktime(time.localtime())) < 120


def test_the_access_log_counts_only_the_body_of_an_error_page(site: Site) -> None:
    response = get(site.port, "/dead/logged")
    line = access_line(site, "/dead/logged")
    assert (line["status"], line["referer"], line["agent"]) == ("502", "-", "-")
    assert int(line["bytes"]) == len(response.body)


def test_the_access_log_records_a_bad_request_with_its_status(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(b"GET /echo/no-host HTTP/1.1\r\nUser-Agent: bad/1\r\n\r\n")
        response = wire.response()
    assert response.status == 400
    line = access_line(site, '" 400 ')
    assert int(line["bytes"]) == len(response.body)


def test_the_access_log_escapes_quotes_in_header_values(site: Site) -> None:
    get(site.port, "/echo/quoted", headers=[("User-Agent", 'say "hi"\\')])
    line = access_line(site, "/echo/quoted")
    assert line["agent"] == r"say \x22hi\x22\x5C"


# -- streaming: 50 MB each way with the worker's RSS sampled -------------------------------

MB = 1 << 20
PIECE = os.urandom(MB)


@pytest.fixture
def streaming_proxy(start_proxy, upstream):  # noqa: ANN001, ANN201
    proxy = start_proxy(f"""
        workers = 1
        access_log = "off"
        [[server]]
        listen = ["127.0.0.1:{{port}}"]
          [[server.location]]
          path = "/"
          proxy_pass = "{upstream.address}"
          client_max_body_size = "0"
    """)
    (worker,) = proxy.workers()
    # Warm up: code paths, the copy-buffer pool and the upstream pool exist before
    # the baseline, so that only what the transfer holds is measured.
    for _ in range(2):
        with Wire(proxy.port) as wire:
            wire.send(request("POST", "/echo/warm", body=PIECE * 2))
            assert wire.response().json()["body_length"] == 2 * MB
        assert len(get(proxy.port, f"/bytes/{2 * MB}").body) == 2 * MB
    return proxy, worker


def upload(port: int, megabytes: int, framing: str) -> dict:
    with Wire(port, timeout=60) as wire:
        if framing == "length":
            wire.send(b"POST /echo/upload HTTP/1.1\r\nHost: example.test\r\n"
                      b"Content-Length: %d\r\n\r\n" % (megabytes * MB))
            for _ in range(megabytes):
                wire.send(PIECE)
        else:
            wire.send(b"POST /echo/upload HTTP/1.1\r\nHost: example.test\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = chunked(PIECE)[:-5]  # one chunk, without the last-chunk
            for _ in range(megabytes):
                wire.send(chunk)
            wire.send(b"0\r\n\r\n")
        return wire.response().json()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_50_mb_upload_streams_through_a_worker(streaming_proxy, framing: str) -> None:  # noqa: ANN001
    proxy, worker = streaming_proxy
    expected = hashlib.sha256()
    for _ in range(50):
        expected.update(PIECE)
    with RssSampler(worker) as rss:
        echo = upload(proxy.port, 50, framing)
    assert (echo["body_length"], echo["body_sha256"]) == (50 * MB, expected.hexdigest())
    print(f"worker RSS grew by {rss.growth / MB:.2f} MB ({rss.samples} samples)")
    assert rss.samples > 5
    assert rss.growth < 10 * MB, f"worker RSS grew by {rss.growth / MB:.1f} MB"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", [f"/bytes/{50 * MB}", f"/chunked/{50 * MB}"],
                         ids=["length", "chunked"])
def test_a_50_mb_download_streams_through_a_worker(streaming_proxy, path: str) -> None:  # noqa: ANN001
    proxy, worker = streaming_proxy
    with RssSampler(worker) as rss, Wire(proxy.port, timeout=60) as wire:
        wire.send(request("GET", path, headers=[("Connection", "close")]))
        head = wire.head()
        assert head.status == 200
        received = len(wire.buffer)
        while data := wire.sock.recv(MB):  # count the bytes without keeping them
            received += len(data)
    if head.header("Content-Length"):
        assert received == 50 * MB
    else:
        assert received > 50 * MB  # the body plus its chunk framing
    print(f"worker RSS grew by {rss.growth / MB:.2f} MB ({rss.samples} samples)")
    assert rss.samples > 5
    assert rss.growth < 10 * MB, f"worker RSS grew by {rss.growth / MB:.1f} MB"


# -- peers failing -----------------------------------------------------------------------------

def test_a_dead_peer_is_skipped_and_banned_while_the_live_one_serves(
        start_proxy, upstream, dead_port: int) -> None:  # noqa: ANN001
    dead = dead_port
    proxy = start_proxy(f"""
        workers = 1
        [upstream.pair]
        servers = ["127.0.0.1:{dead}", "{upstream.address}"]
        [[server]]
        listen = ["127.0.0.1:{{port}}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://pair"
    """)
    for index in range(6):
        assert get(proxy.port, f"/echo/pair-{index}").status == 200
    with Wire(proxy.port) as wire:  # nothing was sent to the dead peer: a POST moves on too
        wire.send(request("POST", "/echo/pair-post", body=b"data"))
        assert wire.response().json()["body_length"] == 4
    # max_fails=1, fail_timeout=10s: one failed try, then the dead peer is left alone.
    wait_for(lambda: f"connect to 127.0.0.1:{dead} failed" in proxy.log(),
             message="the failed connect in the error log")
    assert proxy.log().count(f"connect to 127.0.0.1:{dead} failed") == 1


def test_a_pooled_connection_the_upstream_closed_is_retried_on_a_fresh_one(
        start_proxy, started, tmp_path: Path) -> None:  # noqa: ANN001
    port = free_port()
    first = start_upstream_on(port, tmp_path / "upstream-1.log")
    started.append(first)
    proxy = start_proxy(one_location(f"127.0.0.1:{port}"))
    assert get(proxy.port, "/echo/pooled").status == 200  # leaves a connection in the pool
    first.stop()  # the pooled connection is now closed by its peer
    started.append(start_upstream_on(port, tmp_path / "upstream-2.log"))
    assert get(proxy.port, "/echo/after-restart").json()["path"] == "/echo/after-restart"
    assert get(proxy.port, "/echo/pooled-again").status == 200
    started[-1].stop()
    started.append(start_upstream_on(port, tmp_path / "upstream-3.log"))
    with Wire(proxy.port) as wire:  # a body on a stale connection is not lost either
        wire.send(request("POST", "/echo/post-after-restart", body=b"x" * 1000))
        assert wire.response().json()["body_length"] == 1000


def test_weighted_round_robin_spreads_requests_as_nginx_does(
        start_proxy, upstream, started, tmp_path: Path) -> None:  # noqa: ANN001
    second = Upstream(tmp_path / "second-upstream.log")
    started.append(second)
    proxy = start_proxy(f"""
        workers = 1
        [upstream.app]
        servers = ["{upstream.address} weight=2", "{second.address}"]
        [[server]]
        listen = ["127.0.0.1:{{port}}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://app"
    """)
    for index in range(30):
        assert get(proxy.port, f"/echo/rr-{index}").status == 200
    counts = [get(server.port, "/stats").json()["requests"] for server in (upstream, second)]
    assert counts == [20, 10]  # one worker: exactly the smooth WRR shares


def test_a_backup_serves_only_while_the_primary_is_down(
        start_proxy, upstream, started, tmp_path: Path, dead_port: int) -> None:  # noqa: ANN001
    backup = Upstream(tmp_path / "backup-upstream.log")
    started.append(backup)
    dead = dead_port
    proxy = start_proxy(f"""
        workers = 1
        [upstream.app]
        servers = ["{upstream.address}", "127.0.0.1:{dead} backup"]
        [upstream.failing]
        servers = ["127.0.0.1:{dead}", "{backup.address} backup"]
        [[server]]
        listen = ["127.0.0.1:{{port}}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://app"
          [[server.location]]
          path = "/failing/"
          proxy_pass = "http://failing"
    """)
    for index in range(5):
        assert get(proxy.port, f"/echo/primary-{index}").status == 200
    assert f"127.0.0.1:{dead}" not in proxy.log()  # the backup was never tried
    for index in range(5):
        assert get(proxy.port, f"/failing/echo/{index}").status == 200
    paths = get(backup.port, "/stats").json()["paths"]
    assert paths == [f"/failing/echo/{index}" for index in range(5)]


def test_a_path_no_location_matches_is_404_and_never_sent_upstream(
        start_proxy, upstream) -> None:  # noqa: ANN001
    proxy = start_proxy(one_location(upstream.address, path="/api/"))
    with Wire(proxy.port) as wire:
        wire.send(request("GET", "/other"))
        response = wire.response()
        assert response.status == 404
        wire.send(request("GET", "/api/x"))  # a 404 keeps the connection
        assert wire.response().json()["path"] == "/api/x"
    assert get(upstream.port, "/stats").json()["paths"] == ["/api/x"]


def test_after_an_upstream_error_only_an_idempotent_request_moves_to_the_next_peer(
        start_proxy, upstream) -> None:  # noqa: ANN001
    closing = ClosingPeer()
    try:
        proxy = start_proxy(f"""
            workers = 1
            [upstream.pair]
            servers = ["127.0.0.1:{closing.port} max_fails=0", "{upstream.address}"]
            [[server]]
            listen = ["127.0.0.1:{{port}}"]
              [[server.location]]
              path = "/"
              proxy_pass = "http://pair"
        """)
        # Round robin starts on the closing peer: a GET is tried there, then here.
        assert get(proxy.port, "/echo/idempotent").json()["path"] == "/echo/idempotent"
        assert closing.accepted == 1
        # A POST reached the closing peer and is never sent twice (nginx): 502.
        statuses = []
        for index in range(2):  # one of the two lands on the closing peer first
            with Wire(proxy.port) as wire:
                wire.send(request("POST", f"/echo/post-{index}", body=b"once"))
                statuses.append(wire.response().status)
        assert sorted(statuses) == [200, 502]
        assert closing.accepted == 2
    finally:
        closing.close()
