"""Peer state shared by the workers, through the real master (two workers).

A peer that fails for one worker is skipped by the other at once (tried once
host-wide, not once per worker); least_conn counts the other worker's open
connections; max_conns is a host-wide limit, with requests queued (or answered
503 with Retry-After) while every peer is full (prefork_proxy/peer_board.py,
workers/balancing.py, workers/peer_queue.py).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.processes import Proxy, wait_for
from tests.support.scripted_http import ScriptedHttp, honest_reply
from tests.support.uwsgi_server import UwsgiServer, uwsgi_servers
from tests.support.wire import Wire, get, request

pytestmark = pytest.mark.timeout(90)


def _owner(proxy: Proxy, wire: Wire) -> int | None:
    """The pid of the worker holding the other end of `wire`."""
    port = wire.sock.getsockname()[1]
    for worker in proxy.workers():
        for connection in worker.net_connections(kind="tcp"):
            if connection.raddr and connection.raddr.port == port \
                    and connection.status == psutil.CONN_ESTABLISHED:
                return worker.pid
    return None


def _one_wire_per_worker(proxy: Proxy) -> tuple[Wire, Wire]:
    """Two client connections served by different workers (the kernel shares
    accepts between them; a worker well above its sibling leaves one to it)."""
    wait_for(lambda: len(proxy.workers()) == 2, 10, message="two workers")
    time.sleep(1.5)  # each worker has read its sibling's scoreboard slot
    opened: list[Wire] = []
    try:
        by_worker: dict[int, Wire] = {}
        for _ in range(40):
            wire = Wire(proxy.port)
            opened.append(wire)
            owner = None

            def found(wire: Wire = wire) -> bool:
                nonlocal owner
                owner = _owner(proxy, wire)
                return owner is not None

            wait_for(found, 5, message="the connection accepted")
            by_worker.setdefault(owner, wire)
            if len(by_worker) == 2:
                first, second = by_worker.values()
                return first, second
        raise AssertionError("every connection went to one worker")
    finally:
        for wire in opened:
            if wire not in locals().get("by_worker", {}).values():
                wire.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedHttp]]:
    servers: list[ScriptedHttp] = []

    def start(replies: dict) -> ScriptedHttp:
        servers.append(ScriptedHttp(replies))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _two_peer_config(a: str, b: str, balance: str, options: str = "") -> str:
    return f"""
        workers = 2
        access_log = "off"
        [upstream.app]
        servers = ["{a}{options}", "{b}{options}"]
        balance = "{balance}"
        [[server]]
        listen = ["127.0.0.1:{{port}}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://app"
    """


def test_a_peer_that_failed_for_one_worker_is_skipped_by_the_other(
        start_proxy: Callable[..., Proxy], scripted: Callable[..., ScriptedHttp]) -> None:
    failing = scripted({b"/x": [None]})  # closes every connection without a word
    healthy = scripted({})
    proxy = start_proxy(_two_peer_config(failing.address, healthy.address, "round_robin",
                                         " max_fails=1 fail_timeout=30s"))
    first, second = _one_wire_per_worker(proxy)
    with first, second:
        first.send(request("GET", "/x"))
        reply = first.response()
        assert (reply.status, reply.body) == (200, b"honest /x")  # retried on the healthy one
        assert failing.connections == 1
        # Worker 2's first pick would be the failing peer (round robin starts there):
        # it is banned host-wide, so worker 2 never tries it.
        for _ in range(3):
            second.send(request("GET", "/x"))
            reply = second.response()
            assert (reply.status, reply.body) == (200, b"honest /x")
    assert failing.connections == 1
    assert [head.split(b" ")[1] for head in healthy.requests] == [b"/x"] * 4


def test_least_conn_counts_the_other_workers_connections(
        start_proxy: Callable[..., Proxy], scripted: Callable[..., ScriptedHttp]) -> None:
    slow = [3.0, honest_reply(b"/slow")]
    a, b = scripted({b"/slow": slow}), scripted({b"/slow": slow})
    proxy = start_proxy(_two_peer_config(a.address, b.address, "least_conn"))
    first, second = _one_wire_per_worker(proxy)
    with first, second:
        first.send(request("GET", "/slow"))  # held open on a (both idle: a comes first)
        wait_for(lambda: len(a.requests) == 1, 5, message="the slow request on a")
        second.send(request("GET", "/fast"))
        reply = second.response()
        assert (reply.status, reply.body) == (200, b"honest /fast")
        assert [head.split(b" ")[1] for head in b.requests] == [b"/fast"]
        assert [head.split(b" ")[1] for head in a.requests] == [b"/slow"]
        assert first.response().body == b"honest /slow"


# -- max_conns and the queue, on a one-process uWSGI with threads ----------------------

def _uwsgi_config(server: UwsgiServer, queue: int) -> str:
    return f"""
        workers = 2
        access_log = "off"
        [upstream.app]
        servers = ["{server.uwsgi_pass} max_conns=1"]
        queue = {queue}
        [[server]]
        listen = ["127.0.0.1:{{port}}"]
          [[server.location]]
          path = "/"
          uwsgi_pass = "app"
    """


def _concurrently(port: int, paths: list[str]) -> list[tuple[int, str | None, bytes]]:
    """GET each path on its own connection at once: (status, Retry-After, body)."""
    wires = [Wire(port) for _ in paths]
    results: list = [None] * len(paths)

    def one(index: int) -> None:
        reply = wires[index].response()
        results[index] = (reply.status, reply.header("Retry-After"), reply.body)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(len(paths))]
    try:
        for wire, path in zip(wires, paths, strict=True):
            wire.send(request("GET", path))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for wire in wires:
            wire.close()
    return results


@pytest.fixture
def threaded_uwsgi(tmp_path: Path) -> Iterator[UwsgiServer]:
    # One process, four threads: without max_conns it would serve four at once.
    with uwsgi_servers(tmp_path) as start:
        yield start("concurrency.py", processes=1,
                    extra_args=("--threads", "4", "--enable-threads"))


def test_max_conns_with_a_queue_serves_every_request_one_at_a_time(
        start_proxy: Callable[..., Proxy], threaded_uwsgi: UwsgiServer) -> None:
    proxy = start_proxy(_uwsgi_config(threaded_uwsgi, queue=10))
    results = _concurrently(proxy.port, ["/work?s=0.1"] * 10)
    assert results == [(200, None, b"done")] * 10
    assert get(proxy.port, "/max").body == b"1"


def test_max_conns_without_a_queue_answers_the_excess_503_with_retry_after(
        start_proxy: Callable[..., Proxy], threaded_uwsgi: UwsgiServer) -> None:
    proxy = start_proxy(_uwsgi_config(threaded_uwsgi, queue=0))
    results = _concurrently(proxy.port, ["/work?s=2"] * 4)
    assert sorted(status for status, _, _ in results) == [200, 503, 503, 503]
    for status, retry_after, body in results:
        if status == 503:
            assert retry_after == "1"
            assert b"<title>503 Service Unavailable</title>" in body
        else:
            assert (retry_after, body) == (None, b"done")
    assert get(proxy.port, "/max").body == b"1"


def test_a_ban_outlives_a_reload(start_proxy: Callable[..., Proxy],
                                 scripted: Callable[..., ScriptedHttp]) -> None:
    """The new generation's workers keep skipping a peer the old one banned: the
    peer kept its slot, and the old workers' ban went to the master's column."""
    failing = scripted({b"/x": [None]})
    healthy = scripted({})
    proxy = start_proxy(_two_peer_config(failing.address, healthy.address, "round_robin",
                                         " max_fails=1 fail_timeout=60s"))
    old_workers = proxy.worker_pids()
    assert get(proxy.port, "/x").body == b"honest /x"
    assert failing.connections == 1
    proxy.signal(signal.SIGHUP)
    proxy.wait_serving(2)
    wait_for(lambda: not proxy.worker_pids() & old_workers, 15,
             message="the old generation gone")
    for _ in range(6):
        assert get(proxy.port, "/x").body == b"honest /x"
    assert failing.connections == 1
