"""The pooling rule: an upstream connection returns to the pool only when its reply was
framed and ended exactly, with no byte left over (DESIGN.md, data paths).

Each hostile reply below carries bytes past its framing: a whole fake response
(POISON). A client pipelines a second request behind the first, so the second
is forwarded in the same loop iteration as the first reply's end, before the
pool's idle watcher can notice the waiting bytes. If the poisoned connection
were pooled, the second request would be answered with POISON. It must get
its own honest answer, on a new upstream connection.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import Proxy, wait_for
from tests.support.scripted_http import ScriptedHttp
from tests.support.sites import running_proxy
from tests.support.wire import Wire, request

POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON"


def _length_reply(body: bytes, extra: bytes = POISON) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b%b" % (len(body), body, extra)


def _ending_at(total: int) -> bytes:
    """A Content-Length reply whose head and body are exactly `total` bytes."""
    head_size = len(_length_reply(b"", b"")) + len(str(total)) - 1
    return _length_reply(b"x" * (total - head_size), b"")


def _chunked_ending_at(total: int) -> bytes:
    """A chunked reply whose last chunk ends exactly `total` bytes after its head."""
    tail = b"\r\n0\r\n\r\n"
    size_line = b"%x\r\n" % (total - len(tail) - 6)  # a 4-digit hex size and its CRLF
    assert len(size_line) == 6
    body = size_line + b"c" * (total - len(tail) - len(size_line)) + tail
    assert len(body) == total
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body


HOSTILE = {
    # A Content-Length shorter than the bytes that follow.
    "cl-short": (b"GET", _length_reply(b"hello")),
    # A Content-Length body over 8 KiB: the extras are never read.
    "cl-big": (b"GET", _length_reply(b"b" * 20000)),
    # The extras start exactly at the 8 KiB read boundary.
    "at-8k": (b"GET", _ending_at(8192) + POISON),
    # A chunked reply whose last chunk ends exactly at 64 KiB after the head.
    "chunked-64k": (b"GET", _chunked_ending_at(65536) + POISON),
    # Bodies where there can be none: a HEAD reply, a 204, a 304.
    "head-body": (b"HEAD", _length_reply(b"hello")),
    "204-body": (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n" + POISON),
    "304-body": (b"GET", b"HTTP/1.1 304 Not Modified\r\n\r\n" + POISON),
}

# The extras come in a later send, 50 ms after the reply: no peek can see them when
# the reply ends, and the second request is on its way before they come. The
# kernel can split one write the same way, at a page boundary that ends the reply.
LATE = {
    # The reply ends exactly where the driver's reads end (8 KiB, then 64 KiB), so
    # the last read was full: the connection is not pooled. The second request is
    # sent once the first answer is in, well before the extras.
    "late-at-72k": ([_ending_at(8192 + 65536), 0.05, POISON], False),
    # Pipelined: the second request comes in the loop iteration that released the
    # connection, which may not take it again.
    "late-exact": ([_length_reply(b"hello", b""), 0.05, POISON], True),
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedHttp]:
    server = ScriptedHttp({b"/" + name.encode(): reply for name, (_, reply) in HOSTILE.items()})
    yield server
    server.close()


@pytest.fixture(scope="module")
def proxy(upstream: ScriptedHttp,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    directory = tmp_path_factory.mktemp("pooling")
    with running_proxy(directory, _proxy_config(upstream)) as running:
        yield running


def _proxy_config(upstream: ScriptedHttp) -> str:
    return f"""
workers = 1
access_log = "off"
[upstream.hostile]
servers = ["{upstream.address}"]
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  path = "/"
  proxy_pass = "http://hostile"
"""


@pytest.fixture(scope="module")
def proxy_port(proxy: Proxy) -> int:
    return proxy.port


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_reply_with_bytes_past_its_framing_is_never_reused(
        name: str, proxy_port: int, upstream: ScriptedHttp) -> None:
    method, _ = HOSTILE[name]
    with Wire(proxy_port) as wire:
        wire.send(request(method.decode(), f"/{name}") + request("GET", "/after"))
        wire.response(method)
        second = wire.response()
    assert second.body == b"honest /after", second.body[:200]


@pytest.mark.parametrize("name", sorted(LATE))
def test_bytes_past_a_reply_that_come_late_reach_no_client(name: str, tmp_path) -> None:
    # A proxy of its own: a connection that takes late extras back into the pool
    # would hand them to whichever request takes it before they come.
    steps, pipelined = LATE[name]
    late = ScriptedHttp({b"/" + name.encode(): steps})
    try:
        with running_proxy(tmp_path, _proxy_config(late)) as proxy, Wire(proxy.port) as wire:
            if pipelined:
                wire.send(request("GET", f"/{name}") + request("GET", "/after"))
                wire.response()
            else:
                wire.send(request("GET", f"/{name}"))
                wire.response()
                wire.send(request("GET", "/after"))
            second = wire.response()
        assert second.body == b"honest /after", second.body[:200]
    finally:
        late.close()

def test_a_reply_that_ends_exactly_is_reused(proxy_port: int, upstream: ScriptedHttp) -> None:
    """The rule keeps honest connections: three exact replies, one upstream connection."""
    with Wire(proxy_port) as wire:
        wire.send(request("GET", "/warm"))
        assert wire.response().body == b"honest /warm"
    before = upstream.connections
    with Wire(proxy_port) as wire:
        for index in range(3):
            wire.send(request("GET", f"/exact{index}"))
            assert wire.response().body == b"honest /exact%d" % index
    assert upstream.connections == before


def test_the_excess_is_logged_once_for_its_connection(proxy: Proxy) -> None:
    before = proxy.log().count("bytes past the end of a reply")
    with Wire(proxy.port) as wire:
        wire.send(request("GET", "/cl-short") + request("GET", "/after"))
        wire.response()
        assert wire.response().body == b"honest /after"
    wait_for(lambda: proxy.log().count("bytes past the end of a reply") == before + 1,
             message="one log line for the poisoned connection")
    assert f"sent {len(POISON)} bytes past the end of a reply" in proxy.log()
