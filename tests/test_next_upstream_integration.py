"""next_upstream through the real master: which reply reaches the client, and how
many tries each upstream saw (nginx's proxy_next_upstream).

Three scripted upstreams answer each test's own path; each test has its own
upstream group (its own round robin) and location, with max_fails=0 so that no
peer is banned between requests, unless the test is about bans.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.processes import Proxy, wait_for
from tests.support.scripted_http import ScriptedHttp
from tests.support.sites import refused_port, running_proxy
from tests.support.wire import Wire, chunked, request

pytestmark = pytest.mark.timeout(60)


def status_reply(status: int, reason: str, body: bytes) -> bytes:
    return b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n\r\n%b" % (
        status, reason.encode(), len(body), body)


def unavailable(name: str) -> bytes:
    return status_reply(503, "Service Unavailable", b"503 from " + name.encode())


def bad_gateway(name: str) -> bytes:
    return status_reply(502, "Bad Gateway", b"502 from " + name.encode())


@pytest.fixture(scope="module")
def upstreams() -> Iterator[list[ScriptedHttp]]:
    servers = []
    for name in ("s1", "s2", "s3"):
        replies = {b"/every503/x": unavailable(name), b"/limited/x": unavailable(name),
                   b"/deadline/x": [2.0, unavailable(name)],
                   b"/post502/x": bad_gateway(name), b"/post502-again/x": bad_gateway(name)}
        if name == "s1":  # the others answer 200 ("honest PATH")
            replies.update({b"/listed/x": unavailable(name),
                            b"/unlisted/x": unavailable(name)})
        servers.append(ScriptedHttp(replies))
    yield servers
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def refused() -> Iterator[list[int]]:
    socks = [refused_port(), refused_port()]
    yield [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()


def _group(name: str, addresses: list[str], options: str = "max_fails=0") -> str:
    servers = ", ".join(f'"{address} {options}"' for address in addresses)
    return f"[upstream.{name}]\nservers = [{servers}]\n"


def _location(path: str, group: str, settings: str = "") -> str:
    return (f'  [[server.location]]\n  path = "{path}"\n  proxy_pass = "http://{group}"\n'
            f"  {settings}\n")


@pytest.fixture(scope="module")
def proxy(upstreams: list[ScriptedHttp], refused: list[int],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    s1, s2, s3 = (server.address for server in upstreams)
    pair, trio = [s1, s2], [s1, s2, s3]
    down = [f"127.0.0.1:{port}" for port in refused]
    text = ("workers = 1\n" + _group("listed", pair) + _group("unlisted", pair)
            + _group("every", trio) + _group("limited", trio) + _group("post", trio)
            + _group("post_again", trio) + _group("deadline", trio) + _group("off", [down[0], s1])
            + _group("down", down, "max_fails=1 fail_timeout=60s")
            + '[[server]]\nlisten = ["127.0.0.1:{port}"]\n'
            + _location("/listed/", "listed", 'next_upstream = ["error", "timeout", "http_503"]')
            + _location("/unlisted/", "unlisted")
            + _location("/every503/", "every", 'next_upstream = ["http_503"]')
            + _location("/limited/", "limited",
                        'next_upstream = ["http_503"]\n  next_upstream_tries = 2')
            + _location("/post502/", "post", 'next_upstream = ["error", "http_502"]')
            + _location("/post502-again/", "post_again",
                        'next_upstream = ["error", "http_502", "non_idempotent"]')
            + _location("/off/", "off", 'next_upstream = ["off"]')
            + _location("/deadline/", "deadline",
                        # Tries start at 0, 1 s and 2 s: a limit of 1.5 s lets the
                        # second start and not the third, with 0.5 s to spare either
                        # side on a loaded machine.
                        'read_timeout = "1s"\n  next_upstream_timeout = "1500ms"')
            + _location("/down/", "down"))
    with running_proxy(tmp_path_factory.mktemp("next-upstream"), text) as running:
        yield running


def _hits(upstreams: list[ScriptedHttp], path: bytes) -> list[int]:
    return [server.paths().count(path) for server in upstreams]


def _exchange(proxy: Proxy, method: str, path: str, body: bytes | None = None) -> tuple:
    with Wire(proxy.port) as wire:
        wire.send(request(method, path, body=body))
        response = wire.response()
    return response.status, response.body


def test_a_listed_503_is_discarded_and_the_next_peers_200_answers(
        proxy: Proxy, upstreams: list[ScriptedHttp]) -> None:
    answers = [_exchange(proxy, "GET", "/listed/x") for _ in range(2)]
    assert answers == [(200, b"honest /listed/x")] * 2
    # One request started at s1 (round robin over two), was answered 503 and went on.
    assert _hits(upstreams, b"/listed/x") == [1, 2, 0]


def test_an_unlisted_503_reaches_the_client(proxy: Proxy,
                                            upstreams: list[ScriptedHttp]) -> None:
    answers = sorted(_exchange(proxy, "GET", "/unlisted/x") for _ in range(2))
    assert answers == [(200, b"honest /unlisted/x"), (503, b"503 from s1")]
    assert _hits(upstreams, b"/unlisted/x") == [1, 1, 0]


def test_when_every_peer_answers_a_listed_503_the_last_503_reaches_the_client(
        proxy: Proxy, upstreams: list[ScriptedHttp]) -> None:
    status, body = _exchange(proxy, "GET", "/every503/x")
    assert status == 503 and body in {b"503 from s1", b"503 from s2", b"503 from s3"}
    assert _hits(upstreams, b"/every503/x") == [1, 1, 1]


def test_next_upstream_tries_2_makes_two_tries_of_three_peers(
        proxy: Proxy, upstreams: list[ScriptedHttp]) -> None:
    status, body = _exchange(proxy, "GET", "/limited/x")
    assert status == 503 and body.startswith(b"503 from s")
    assert sum(_hits(upstreams, b"/limited/x")) == 2


def test_next_upstream_timeout_runs_from_the_first_try(
        proxy: Proxy, upstreams: list[ScriptedHttp]) -> None:
    """Each peer stalls: the first try times out at 1 s, the second starts within
    1.5 s of the first and times out at 2 s, past the limit: 504, two tries."""
    started = time.monotonic()
    status, _ = _exchange(proxy, "GET", "/deadline/x")
    elapsed = time.monotonic() - started
    assert status == 504
    assert sum(_hits(upstreams, b"/deadline/x")) == 2
    assert 1.9 < elapsed < 4.5, elapsed  # (two read timeouts, not three)


def test_a_post_is_not_sent_again_on_a_listed_502(proxy: Proxy,
                                                  upstreams: list[ScriptedHttp]) -> None:
    status, body = _exchange(proxy, "POST", "/post502/x", b"id=1")
    assert status == 502 and body.startswith(b"502 from s")  # the upstream's own 502
    assert sum(_hits(upstreams, b"/post502/x")) == 1


def test_a_post_is_sent_again_on_a_listed_502_with_non_idempotent(
        proxy: Proxy, upstreams: list[ScriptedHttp]) -> None:
    """A chunked body is held whole (request buffering), so it can be sent again; a
    Content-Length body streams as it comes and cannot (it is not kept)."""
    with Wire(proxy.port) as wire:
        wire.send(request("POST", "/post502-again/x",
                          headers=[("Transfer-Encoding", "chunked")]) + chunked(b"id=2"))
        response = wire.response()
    assert response.status == 502 and response.body.startswith(b"502 from s")
    assert _hits(upstreams, b"/post502-again/x") == [1, 1, 1]
    assert _exchange(proxy, "POST", "/post502-again/x", b"id=3")[0] == 502
    assert sum(_hits(upstreams, b"/post502-again/x")) == 4  # the streamed one: once


def test_off_answers_the_first_error(proxy: Proxy, upstreams: list[ScriptedHttp]) -> None:
    answers = sorted(_exchange(proxy, "GET", "/off/x")[0] for _ in range(2))
    assert answers == [200, 502]  # the refused peer's error is not followed by s1
    assert _hits(upstreams, b"/off/x") == [1, 0, 0]


def test_with_every_peer_down_502_comes_at_once_for_no_live_upstreams(
        proxy: Proxy) -> None:
    assert _exchange(proxy, "GET", "/down/first")[0] == 502  # both refused, both banned
    assert _exchange(proxy, "GET", "/down/second")[0] == 502
    wait_for(lambda: "no live upstreams in down" in proxy.log())
