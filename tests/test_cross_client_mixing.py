"""No client receives bytes meant for no one: a hostile upstream cannot mix answers up.

The upstream (tests/support/hostile_upstream.py) sends more than its framing
says: a Content-Length shorter than what follows, extras after a body over
8 KiB, extras starting exactly at the 8 KiB read boundary, a chunked reply
ending exactly at 64 KiB followed by extras, a body on a reply to HEAD, on a
204 and on a 304. The extras are a complete fake response (POISON). An
upstream connection goes back to the pool only when its reply was framed and
ended exactly, with nothing left waiting (RFC 9112 §6.3; nginx closes the
connection and logs "upstream sent more data than specified"). The load and
the judging are bench/mixing.py's, the short version of the bench scenario
"cross-client mixing": 8 concurrent keep-alive clients, each request with its
own token, each answer checked for it.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.mixing import REQUESTS, Reader, Request, judge, run_clients
from tests.support.configs import one_location
from tests.support.processes import Process, Proxy, free_port, port_open, wait_for

HONEST = Request("GET", "/", 200)
HOSTILE = [request for request in REQUESTS if request.target != "/"]


class HostileUpstream(Process):
    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        super().__init__([sys.executable, "-m", "tests.support.hostile_upstream",
                          str(self.port)], log_path)
        wait_for(lambda: port_open(self.port), message="the hostile upstream to listen")


@pytest.fixture
def hostile(tmp_path: Path, started: list[Process]) -> HostileUpstream:
    server = HostileUpstream(tmp_path / "hostile-upstream.log")
    started.append(server)
    return server


def exchange(reader: Reader, request: Request, token: bytes) -> str:
    reader.sock.sendall(b"%s %s HTTP/1.1\r\nHost: x\r\nX-Client-Token: %s\r\n\r\n"
                        % (request.method.encode(), request.target.encode(), token))
    return judge(request, token, reader.answer(request.method))


@pytest.mark.parametrize("request_", HOSTILE, ids=lambda r: f"{r.method} {r.target}")
def test_the_upstream_poisons_the_next_answer_on_its_connection(
        hostile: HostileUpstream, request_: Request) -> None:
    """The harness sees what it counts: straight to the upstream, the hostile reply
    itself reads right, and the next answer on that connection is the fake one."""
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=5) as sock:
        reader = Reader(sock)
        assert exchange(reader, request_, b"first") == "ok"
        wait_for(lambda: reader.buffer or _waiting(sock), message="the extra bytes")
        assert exchange(reader, HONEST, b"second") == "wrong"


def _waiting(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, TimeoutError):
        return False


@pytest.mark.timeout(60)
def test_eight_clients_only_ever_get_their_own_answers(
        hostile: HostileUpstream, start_proxy: Callable[..., Proxy]) -> None:
    proxy = start_proxy(one_location("http://hostile", top=f"""
        workers = 1
        [upstream.hostile]
        servers = ["127.0.0.1:{hostile.port}"]
        """))
    tally = run_clients(proxy.port, seconds=2.0, clients=8, max_requests=3000)
    assert tally.requests > 8 * len(REQUESTS), tally.summary()
    assert tally.wrong == 0 and tally.failed == 0, (
        f"{tally.summary()}\n" + "\n".join(tally.samples))
