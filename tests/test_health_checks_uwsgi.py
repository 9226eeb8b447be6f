"""Active health checks of uwsgi upstreams, against the real uWSGI server.

Without a path the check is a TCP connect; with one it is a uwsgi request for
the path, judged by the status of uWSGI's reply.
"""

from __future__ import annotations

import pytest

from tests.support.processes import wait_for
from tests.support.raw_http import exchange
from tests.support.sites import refused_port
from tests.support.uwsgi_server import uwsgi_servers

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def uwsgi(tmp_path):
    with uwsgi_servers(tmp_path) as start:
        yield start


def config(servers: list[str], check: str) -> str:
    listed = ", ".join(f'"{server}"' for server in servers)
    return f"""
        workers = 2
        access_log = "off"
        [upstream.app]
        servers = [{listed}]
        health_check = {check}
        [[server]]
        listen = ["127.0.0.1:{{port}}"]
          [[server.location]]
          path = "/"
          uwsgi_pass = "app"
    """


def get(port: int) -> tuple[int, bytes]:
    reply = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10)
    return reply.status, reply.body


def test_a_tcp_check_takes_out_a_peer_that_refuses_and_keeps_uwsgi(uwsgi, start_proxy) -> None:
    server = uwsgi("hello.py")
    with refused_port() as dead:
        dead_address = f"127.0.0.1:{dead.getsockname()[1]}"
        proxy = start_proxy(config([dead_address, server.socket],
                                   '{ interval = "0.2s", timeout = "0.2s" }'))
        wait_for(lambda: f"peer {dead_address} of upstream app is DOWN: connect: "
                         "Connection refused" in proxy.log(), message="the dead peer DOWN")
        assert [get(proxy.port) for _ in range(6)] == [(200, b"hello world")] * 6
        assert f"peer {server.socket} of upstream app is DOWN" not in proxy.log()
        assert f"connect to {dead_address} failed" not in proxy.log()  # no request tried it


def test_a_path_check_sends_a_uwsgi_request_and_judges_its_status(uwsgi, start_proxy) -> None:
    server = uwsgi("hello.py")
    # hello.py answers 200 to every path: expecting 204 fails it, by its status.
    proxy = start_proxy(config([server.socket], '{ path = "/healthz", interval = "0.2s", '
                                                'timeout = "1s", expect = "204" }'))
    wait_for(lambda: f"peer {server.socket} of upstream app is DOWN: status 200"
                     in proxy.log(), message="the peer DOWN by its status")
    wait_for(lambda: "GET /healthz" in server.log, message="uWSGI's log of the check")
    assert get(proxy.port)[0] == 502


def test_a_path_check_that_passes_keeps_the_uwsgi_peer(uwsgi, start_proxy) -> None:
    server = uwsgi("hello.py")
    proxy = start_proxy(config([server.socket], '{ path = "/healthz", interval = "0.2s" }'))
    wait_for(lambda: server.log.count("GET /healthz") >= 3, message="three checks")
    assert "is DOWN" not in proxy.log()
    assert get(proxy.port) == (200, b"hello world")
