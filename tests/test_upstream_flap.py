"""One upstream of three killed and started again every 2 s, under a client loop.

nginx's `proxy_next_upstream error timeout` (the default): a GET that finds a
refused, reset or closed peer goes on to another, so no GET fails; a POST is
sent again only when it reached no upstream (a refused connect), so no POST is
received twice. A POST whose connection broke after it was sent may fail: that
is allowed (counted), a duplicate is not. Bounded: about 12 s and at most
MAX_REQUESTS per client.
"""

from __future__ import annotations

import http.client
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ROOT, Process, free_port, port_open, wait_for
from tests.support.sites import running_proxy

pytestmark = pytest.mark.timeout(90)

RUN_SECONDS = 12.0
CLIENTS = 3
MAX_REQUESTS = 2000  # per client


class FlappingUpstream:
    """tests/support/flap_upstream.py on a fixed port, killed and restarted at will."""

    def __init__(self, directory: Path, index: int) -> None:
        self.port = free_port()
        self.ids = directory / f"ids-{index}.txt"
        self.log = directory / f"upstream-{index}.log"
        self.starts = 0
        self.process: Process | None = None
        self.start()

    def start(self) -> None:
        self.starts += 1
        self.process = Process([sys.executable, str(ROOT / "tests/support/flap_upstream.py"),
                                str(self.port), str(self.ids)],
                               self.log.with_suffix(f".{self.starts}.log"))
        wait_for(lambda: port_open(self.port), message="the upstream to listen")

    def kill(self) -> None:
        self.process.popen.kill()  # SIGKILL: no goodbye to open connections
        self.process.popen.wait(5)

    def stop(self) -> None:
        self.process.stop()

    def received(self) -> list[str]:
        return self.ids.read_text().split() if self.ids.exists() else []


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[list[FlappingUpstream]]:
    made = [FlappingUpstream(tmp_path, index) for index in range(3)]
    yield made
    for upstream in made:
        upstream.stop()


class Client(threading.Thread):
    """GETs and POSTs (each with a unique id) on a keep-alive connection."""

    def __init__(self, port: int, number: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.number, self.stop = port, number, stop
        self.gets = self.posts = 0
        self.get_failures: list[str] = []
        self.post_failures: list[str] = []
        self.answered: list[str] = []  # the ids of the POSTs answered 200

    def run(self) -> None:
        connection = None
        for sequence in range(MAX_REQUESTS):
            if self.stop.is_set():
                break
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            post = sequence % 2 == 1
            post_id = f"c{self.number}-{sequence}"
            try:
                if post:
                    connection.request("POST", "/post", body=post_id.encode())
                else:
                    connection.request("GET", "/get")
                response = connection.getresponse()
                body = response.read()
                ok = response.status == 200 and body.startswith(b"ok ")
                failure = None if ok else f"{response.status} {body[:60]!r}"
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                failure = f"{type(exc).__name__}: {exc}"
                connection.close()
                connection = None
            if post:
                self.posts += 1
                if failure:
                    self.post_failures.append(failure)
                else:
                    self.answered.append(post_id)
            else:
                self.gets += 1
                if failure:
                    self.get_failures.append(failure)
        if connection is not None:
            connection.close()


def test_a_flapping_upstream_fails_no_get_and_duplicates_no_post(
        upstreams: list[FlappingUpstream], tmp_path: Path) -> None:
    servers = ", ".join(f'"127.0.0.1:{upstream.port}"' for upstream in upstreams)
    with running_proxy(tmp_path, f"""
workers = 2
[upstream.app]
servers = [{servers}]
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  path = "/"
  proxy_pass = "http://app"
  connect_timeout = "2s"
  read_timeout = "5s"
""") as proxy:
        stop = threading.Event()
        clients = [Client(proxy.port, number, stop) for number in range(CLIENTS)]
        for client in clients:
            client.start()
        flapping = upstreams[0]
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline:
            time.sleep(1.0)
            flapping.kill()
            time.sleep(1.0)
            flapping.start()
        stop.set()
        for client in clients:
            client.join(30)
            assert not client.is_alive()
    gets = sum(client.gets for client in clients)
    posts = sum(client.posts for client in clients)
    assert flapping.starts >= 6 and gets > 100 and posts > 100, (flapping.starts, gets, posts)
    assert [f for client in clients for f in client.get_failures] == []
    received = [post_id for upstream in upstreams for post_id in upstream.received()]
    duplicates = sorted({post_id for post_id in received if received.count(post_id) > 1})
    assert duplicates == []
    # Every POST the client saw succeed reached an upstream (once, as checked above).
    answered = {post_id for client in clients for post_id in client.answered}
    assert answered <= set(received)
    post_failures = [f for client in clients for f in client.post_failures]
    print(f"{gets} GETs, {posts} POSTs, {len(post_failures)} POSTs failed "
          f"(allowed: sent, then the upstream died), {flapping.starts - 1} restarts")
