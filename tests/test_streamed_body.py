"""A Content-Length request body streams to the upstream at the upstream's pace.

The driver reads the client's body as it comes and stops reading it while the
upstream has a backlog (TCP back-pressure reaches the client). Whatever the
pace, the body's end is passed on and the reply comes back as soon as the
upstream answers: here the upstream reads slowly, so the body's last piece
and its end arrive while a backlog is waiting.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Proxy
from tests.support.sites import running_proxy
from tests.support.wire import Wire

HEAD = b"PUT /upload HTTP/1.1\r\nHost: streamed.test\r\nContent-Length: %d\r\n\r\n"
# The driver reads a head in a page (8 KiB), then the body 64 KiB at a time: a body
# of this length makes the last read a full 64 KiB, so the body's end comes in the
# read whose piece meets a backlog the slow upstream has not taken yet.
_FIRST = 8192 - len(HEAD % 4243537)
PAUSE = 0.02  # between the slow upstream's reads
BODY = (bytes(range(256)) * 16500)[:_FIRST + 64 * 65536]
assert len(HEAD % len(BODY)) + _FIRST == 8192


class SlowReader:
    """Reads each request at 64 KiB per 20 ms, then answers with the body's sha256;
    a thread per connection, requests kept alive."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed: done
            while True:
                conn, _ = self.listener.accept()
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while True:
                data = b""
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                while len(body) < length:
                    time.sleep(PAUSE)
                    body += conn.recv(64 * 1024)
                digest = hashlib.sha256(body).hexdigest().encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(digest), digest))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    upstream = SlowReader()
    try:
        with running_proxy(tmp_path, f"""
            workers = 2
            access_log = "off"
            [[server]]
            listen = ["127.0.0.1:{{port}}"]
              [[server.location]]
              path = "/"
              proxy_pass = "http://127.0.0.1:{upstream.port}"
              client_max_body_size = "8m"
        """) as running:
            yield running
    finally:
        upstream.close()


def _upload(port: int, times: int, results: list) -> None:
    with Wire(port, timeout=20) as wire:
        for _ in range(times):
            started = time.monotonic()
            wire.send(HEAD % len(BODY) + BODY)
            reply = wire.response(b"PUT")
            results.append((reply.status, reply.body, time.monotonic() - started))


@pytest.mark.timeout(60)
def test_bodies_streamed_to_a_slow_upstream_get_their_replies(proxy: Proxy) -> None:
    """Eight clients upload 4 MiB twice each, at once, on kept connections."""
    results: list = []
    clients = [threading.Thread(target=_upload, args=(proxy.port, 2, results))
               for _ in range(8)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(50)
    digest = hashlib.sha256(BODY).hexdigest().encode()
    assert [(status, body) for status, body, _ in results] == [(200, digest)] * 16
    # The upstream reads each in about 1.3 s; the client body timeout is 60 s.
    assert max(seconds for _, _, seconds in results) < 15
