"""How a WebSocket tunnel ends: idle timeout, either side closing, worker drain.

nginx is the reference: the tunnel closes after `proxy_read_timeout` with no
traffic (pings count), there is no half-close, and a draining worker lets
open tunnels run until they close or `graceful_timeout` expires.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.sync.client import connect

from tests.support.processes import wait_for
from tests.support.ws_raw import handshake
from tests.support.ws_sockets import listener_fds
from tests.support.ws_upstream import proxy_config, start_ws_echo

# ping_interval=None: the client never pings on its own; each test decides.
OPTIONS = {"compression": None, "max_size": None, "open_timeout": 10, "close_timeout": 10,
           "ping_interval": None}


def url(proxy, path: str = "/") -> str:
    return f"ws://127.0.0.1:{proxy.port}{path}"


def test_a_silent_tunnel_closes_after_read_timeout(start_proxy, started, tmp_path):
    echo = start_ws_echo(started, tmp_path)
    proxy = start_proxy(proxy_config(echo.address, 'read_timeout = "1s"'))
    with connect(url(proxy), **OPTIONS) as websocket:
        websocket.send("one message, then silence")
        websocket.recv(timeout=10)
        quiet_since = time.monotonic()
        with pytest.raises(ConnectionClosedError):
            websocket.recv(timeout=30)
        waited = time.monotonic() - quiet_since
    # nginx closes the connection itself: no close frame, so the client sees 1006.
    assert websocket.protocol.close_rcvd is None
    assert 0.9 <= waited < 10, waited


def test_client_pings_keep_a_quiet_tunnel_open(start_proxy, started, tmp_path):
    echo = start_ws_echo(started, tmp_path)
    proxy = start_proxy(proxy_config(echo.address, 'read_timeout = "1s"'))
    with connect(url(proxy), **OPTIONS) as websocket:
        for _ in range(10):  # 2.5 s of pings every 0.25 s: over twice the timeout
            assert websocket.ping().wait(5)
            with pytest.raises(TimeoutError):  # no message; the tunnel must stay up
                websocket.recv(timeout=0.25)
        websocket.send("still here")
        assert websocket.recv(timeout=10) == "still here"


def test_upstream_pings_keep_a_quiet_tunnel_open(start_proxy, started, tmp_path):
    echo = start_ws_echo(started, tmp_path)
    proxy = start_proxy(proxy_config(echo.address, 'read_timeout = "1s"'))
    # The upstream pings every 0.25 s; the client only answers with pongs.
    with connect(url(proxy, "/ping/0.25"), **OPTIONS) as websocket:
        with pytest.raises(TimeoutError):
            websocket.recv(timeout=2.5)
        websocket.send("still here")
        assert websocket.recv(timeout=10) == "still here"


def test_read_timeout_is_per_location(start_proxy, started, tmp_path):
    echo = start_ws_echo(started, tmp_path)
    proxy = start_proxy(f"""\
        workers = 1
        access_log = "off"
        [[server]]
        listen = ["127.0.0.1:{{port}}"]
          [[server.location]]
          path = "/"
          proxy_pass = "{echo.address}"
          read_timeout = "1h"
          [[server.location]]
          path = "/short"
          proxy_pass = "{echo.address}"
          read_timeout = "1s"
        """)
    with connect(url(proxy, "/short"), **OPTIONS) as short, \
            connect(url(proxy, "/"), **OPTIONS) as long:
        with pytest.raises(ConnectionClosedError):
            short.recv(timeout=30)
        long.send("the 1h tunnel is still open")
        assert long.recv(timeout=10) == "the 1h tunnel is still open"


def test_no_half_close_client_eof_closes_both_sides(start_proxy, started, tmp_path):
    echo = start_ws_echo(started, tmp_path)
    proxy = start_proxy(proxy_config(echo.address))
    sock = handshake(proxy.port, timeout=10)
    with sock:
        sock.shutdown(socket.SHUT_WR)  # the client's FIN: nginx closes both sides
        assert sock.recv(65536) == b""  # EOF from the proxy, not the 10 s timeout


def test_the_upstream_going_away_closes_the_client(start_proxy, started, tmp_path):
    echo = start_ws_echo(started, tmp_path)
    proxy = start_proxy(proxy_config(echo.address))
    with connect(url(proxy), **OPTIONS) as websocket:
        websocket.send("hello")
        assert websocket.recv(timeout=10) == "hello"
        echo.popen.kill()
        with pytest.raises(ConnectionClosed):
            websocket.recv(timeout=10)


def test_a_tunnel_outlives_its_worker_drain_then_ends_cleanly(start_proxy, started, tmp_path):
    echo = start_ws_echo(started, tmp_path)
    proxy = start_proxy(proxy_config(echo.address, top='graceful_timeout = "60s"'))
    (worker,) = proxy.workers()
    accepting = listener_fds(worker.pid, proxy.port)
    with connect(url(proxy), **OPTIONS) as websocket:
        websocket.send("before the drain")
        assert websocket.recv(timeout=10) == "before the drain"
        proxy.signal(signal.SIGQUIT)
        wait_for(lambda: listener_fds(worker.pid, proxy.port) < accepting,
                 message="the worker to stop accepting")
        for number in range(5):
            websocket.send(f"during the drain {number}")
            assert websocket.recv(timeout=10) == f"during the drain {number}"
        assert worker.is_running()
        websocket.close(1000, "done")
    assert websocket.protocol.close_rcvd.code == 1000
    # With its last tunnel gone, the worker (and then the master) exits, long
    # before graceful_timeout.
    wait_for(lambda: not proxy.alive(), timeout=20, message="the master to exit")
    assert proxy.popen.returncode == 0, proxy.log()


def test_a_tunnel_still_open_at_graceful_timeout_is_cut(start_proxy, started, tmp_path):
    echo = start_ws_echo(started, tmp_path)
    proxy = start_proxy(proxy_config(echo.address, top='graceful_timeout = "1s"'))
    with connect(url(proxy), **OPTIONS) as websocket:
        websocket.send("hello")
        assert websocket.recv(timeout=10) == "hello"
        proxy.signal(signal.SIGQUIT)
        with pytest.raises(ConnectionClosed):
            websocket.recv(timeout=30)
    wait_for(lambda: not proxy.alive(), timeout=20, message="the master to exit")
