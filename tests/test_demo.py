"""`make demo` (`prefork-proxy demo`): it starts, serves what it prints, and stops.

Run on free ports (the demo takes them from the environment), so the test
never depends on 8080, 7001 or 7000 being free on the machine.
"""

from __future__ import annotations

import signal
import urllib.request

import psutil
import pytest
from websockets.sync.client import connect

from tests.support.processes import wait_for
from tests.support.ws_demo import start_demo


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode("utf-8", "replace")


@pytest.mark.timeout(180)
def test_the_demo_serves_http_websocket_and_the_test_page(started, tmp_path):
    demo = start_demo(started, tmp_path)
    banner = demo.log()
    assert f"{demo.base_url}/ws-test" in banner
    assert f"ws://127.0.0.1:{demo.ports.proxy}/ws" in banner

    status, body = fetch(f"{demo.base_url}/")
    assert status == 200 and "prefork-proxy demo" in body
    status, body = fetch(f"{demo.base_url}/headers")
    assert status == 200 and "X-Forwarded-For: 127.0.0.1" in body
    status, page = fetch(f"{demo.base_url}/ws-test")
    assert status == 200 and "new WebSocket(" in page

    with connect(f"ws://127.0.0.1:{demo.ports.proxy}/ws", open_timeout=10) as websocket:
        websocket.send("hello, demo")
        assert websocket.recv(timeout=10) == "hello, demo"


@pytest.mark.timeout(180)
def test_the_demo_passes_to_uwsgi_when_it_can(started, tmp_path):
    demo = start_demo(started, tmp_path)
    if "uWSGI part skipped" in demo.log():
        reason = demo.log().split("uWSGI part skipped: ", 1)[1].split(")\n", 1)[0]
        pytest.skip(f"the demo left uWSGI out: {reason}")
    status, body = fetch(f"http://127.0.0.1:{demo.ports.uwsgi_proxy}/hello?name=test")
    assert status == 200
    assert "Hello, world, from a uWSGI app" in body
    assert "QUERY_STRING = name=test" in body


@pytest.mark.timeout(180)
def test_term_stops_the_demo_and_everything_it_started(started, tmp_path):
    demo = start_demo(started, tmp_path)
    children = [child for child in demo.children if child.is_running()]
    assert len(children) >= 3  # the HTTP and echo upstreams, the proxy (and uWSGI)
    demo.signal(signal.SIGTERM)
    wait_for(lambda: not demo.alive(), timeout=30, message="the demo to exit")
    assert demo.popen.returncode == 0, demo.log()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [child.pid for child in alive]
