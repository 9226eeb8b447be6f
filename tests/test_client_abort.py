"""A client that closes while the upstream has not answered yet frees the upstream.

nginx (`proxy_ignore_client_abort off`, its default) closes the upstream
connection when the client goes away, and logs the request with 499. So a
long-poll or slow request whose client left does not hold an upstream
connection, or a uWSGI process, until the upstream's answer or read_timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Proxy, wait_for
from tests.support.sites import running_proxy


class Thinking:
    """Reads a request head, then waits (never answering) until the peer closes;
    `closed_after` is how long that took."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed_after: float | None = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            started = time.monotonic()
            conn.settimeout(30)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            self.closed_after = time.monotonic() - started


@pytest.fixture
def thinking(tmp_path: Path) -> Iterator[tuple[Proxy, Thinking]]:
    upstream = Thinking()
    with running_proxy(tmp_path, f"""
        workers = 1
        access_log = "{tmp_path}/access.log"
        [[server]]
        listen = ["127.0.0.1:{{port}}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://127.0.0.1:{upstream.port}"
    """) as proxy:
        yield proxy, upstream
    upstream.listener.close()


@pytest.mark.timeout(30)
def test_a_client_that_leaves_closes_the_upstream_and_is_logged_499(
        thinking: tuple[Proxy, Thinking], tmp_path: Path) -> None:
    proxy, upstream = thinking
    client = socket.create_connection(("127.0.0.1", proxy.port))
    client.sendall(b"GET /long-poll HTTP/1.1\r\nHost: abort.test\r\n\r\n")
    time.sleep(0.3)  # the request is upstream, and the upstream thinks
    client.close()
    wait_for(lambda: upstream.closed_after is not None, 10,
             message="the proxy to close the upstream connection")
    assert upstream.closed_after < 5
    log = tmp_path / "access.log"
    wait_for(lambda: log.exists() and "/long-poll" in log.read_text(), 5,
             message="the request in the access log")
    assert '"GET /long-poll HTTP/1.1" 499 0' in log.read_text()
