"""The callback lane (workers/lane.py) against the real master and real upstreams.

The lane serves a keep-alive connection's plain exchanges once a pooled
upstream connection exists, and hands everything else to the greenlet path.
Each test first makes one request, so that the pool holds a connection, then
drives one of the lane's ways out: a whole small response served in the lane,
a response it leaves to proxy_http.resume (big, chunked, HTTP/1.0 client,
HEAD), pipelined requests, a pooled connection the upstream drops before it
answers (the free retry), and the access log of lane-served requests.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.configs import one_location
from tests.support.processes import wait_for
from tests.support.sites import Site, running_site
from tests.support.wire import Wire, request

SIZES = [0, 1, 12, 65535, 65536, 1 << 20]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("lane"), one_location(
            "http://{upstream}", top='workers = 1\naccess_log = "{dir}/access.log"')) as running:
        yield running


def upstream_stats(site: Site) -> dict:
    with Wire(site.proxy.port) as wire:
        wire.send(request("GET", "/stats"))
        return wire.response().json()


def test_many_plain_requests_on_one_connection_share_one_upstream_connection(
        site: Site) -> None:
    before = upstream_stats(site)["connections"]
    with Wire(site.proxy.port) as wire:
        for number in range(50):
            wire.send(request("GET", f"/echo/lane/{number}"))
            response = wire.response()
            assert response.status == 200
            assert response.json()["path"] == f"/echo/lane/{number}"
            assert response.header("Connection") is None  # HTTP/1.1 keep-alive
    assert upstream_stats(site)["connections"] - before <= 1


@pytest.mark.parametrize("size", SIZES)
def test_bodies_of_every_size_arrive_whole_after_a_pooled_request(site: Site, size: int) -> None:
    with Wire(site.proxy.port) as wire:
        wire.send(request("GET", "/echo/warm"))
        assert wire.response().status == 200
        for path in (f"/bytes/{size}", f"/chunked/{size}"):
            wire.send(request("GET", path))
            response = wire.response()
            assert (response.status, response.body) == (200, b"x" * size), path


def test_head_and_304_and_http10_keep_alive_take_the_greenlet_path_correctly(
        site: Site) -> None:
    with Wire(site.proxy.port) as wire:
        wire.send(request("GET", "/echo/warm"))
        assert wire.response().status == 200
        wire.send(request("HEAD", "/bytes/100"))
        head = wire.response(b"HEAD")
        assert (head.status, head.header("Content-Length"), head.body) == (200, "100", b"")
        wire.send(request("GET", "/not-modified"))
        assert wire.response().status == 304
        wire.send(b"GET /bytes/5 HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n")
        response = wire.response()
        assert (response.version, response.body) == (b"HTTP/1.1", b"xxxxx")
        assert response.header("Connection") == "keep-alive"
        wire.send(request("GET", "/bytes/3"))
        assert wire.response().body == b"xxx"


def test_pipelined_requests_are_answered_in_order(site: Site) -> None:
    with Wire(site.proxy.port) as wire:
        wire.send(request("GET", "/echo/warm"))
        assert wire.response().status == 200
        wire.send(b"".join(request("GET", f"/echo/pipelined/{n}") for n in range(5)))
        paths = [wire.response().json()["path"] for _ in range(5)]
    assert paths == [f"/echo/pipelined/{n}" for n in range(5)]


def test_lane_served_requests_are_in_the_access_log(site: Site) -> None:
    log = Path(site.proxy.config_path).parent / "access.log"
    with Wire(site.proxy.port) as wire:
        for number in range(3):
            wire.send(request("GET", f"/echo/logged-{number}"))
            assert wire.response().status == 200

    def logged() -> list[str]:
        return [line for line in log.read_text().splitlines() if "/echo/logged-" in line]

    lines = wait_for(lambda: len(logged()) == 3 and logged(), message="three log lines")
    assert all('"GET /echo/logged-' in line and '" 200 ' in line for line in lines)


class AnswersOnceThenDrops:
    """An upstream that answers the first request on each connection (keep-alive),
    then closes the connection when the second request arrives, unanswered."""

    BODY = b"answered"

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = self.requests = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            for answer in (True, False):
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                data = data[data.index(b"\r\n\r\n") + 4:]
                self.requests += 1
                if answer:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(self.BODY), self.BODY))

    def close(self) -> None:
        self.listener.close()


def test_a_pooled_connection_dropped_before_its_answer_gets_the_free_retry(
        start_proxy) -> None:  # noqa: ANN001
    peer = AnswersOnceThenDrops()
    try:
        proxy = start_proxy(one_location(f"127.0.0.1:{peer.port}",
                                         top='workers = 1\naccess_log = "off"'))
        with Wire(proxy.port) as wire:
            for _ in range(3):
                wire.send(request("GET", "/"))
                response = wire.response()
                assert (response.status, response.body) == (200, AnswersOnceThenDrops.BODY)
        # Each later request went out on the pooled connection, was dropped, and was
        # sent again on a new one: 3 answered, 2 dropped, over 3 connections.
        assert (peer.requests, peer.connections) == (5, 3)
    finally:
        peer.close()
