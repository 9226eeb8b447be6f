"""Client limits on the wire: no client can pin a connection, a worker or an upstream.

nginx's meanings: `client_header_timeout` is a deadline for the whole request
head (from the accept for a connection's first request, from the first byte of
a later one), `client_body_timeout` and `client_send_timeout` run between two
reads or writes, `client_keepalive_requests` ends a connection with
`Connection: close` on its last answer. At `worker_connections` a worker closes
its longest-idle keep-alive connection to admit a new one, and a worker out of
file descriptors answers 503 at once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.processes import wait_for
from tests.support.sites import Site, running_site
from tests.support.wire import Wire, request

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 1.0
SEND_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 4.0
# The worker checks deadlines every 0.25 s (workers/stream.py); the rest is the
# slack of a shared test machine.
MARGIN = 1.5


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("limits"), f"""
        workers = 1
        access_log = "{{dir}}/access.log"
        client_header_timeout = "{HEADER_TIMEOUT}s"
        client_body_timeout = "60s"
        client_keepalive_requests = 3
        [[server]]
        listen = ["127.0.0.1:{{port}}"]
        client_body_timeout = "{BODY_TIMEOUT}s"
        client_send_timeout = "{SEND_TIMEOUT}s"
        client_keepalive_timeout = "{KEEPALIVE_TIMEOUT}s"
          [[server.location]]
          path = "/"
          proxy_pass = "http://{{upstream}}"
          [[server.location]]
          path = "/unbuffered/"
          proxy_pass = "http://{{upstream}}/"
          buffering = false
    """) as running:
        yield running


def seconds_until_closed(sock: socket.socket, limit: float, trickle: bytes = b"",
                         every: float = 0.5) -> float | None:
    """Seconds from now until the server closes `sock` (None if it is still open
    after `limit`), sending one byte of `trickle` every `every` seconds meanwhile."""
    start = time.monotonic()
    sock.settimeout(every)
    sent = 0
    while time.monotonic() - start < limit:
        if sent < len(trickle):
            try:
                sock.send(trickle[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start
            sent += 1
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start
        raise AssertionError(f"the server answered: {data[:200]!r}")
    return None


SLOW_HEAD = b"GET /echo/slow HTTP/1.1\r\nHost: example.test\r\nX-Long: " + b"a" * 100


# -- client_header_timeout -----------------------------------------------------------

def test_a_head_trickled_byte_by_byte_is_cut_off_at_the_header_timeout(site: Site) -> None:
    # Slowloris: each byte comes well within any per-read timeout; the deadline
    # for the whole head still holds, counted from the accept.
    with socket.create_connection(("127.0.0.1", site.port)) as sock:
        took = seconds_until_closed(sock, HEADER_TIMEOUT + 4, trickle=SLOW_HEAD)
    assert took is not None, "a trickling client held the connection"
    assert HEADER_TIMEOUT - 0.5 <= took <= HEADER_TIMEOUT + MARGIN, took


def test_a_fresh_connection_that_sends_nothing_is_closed_at_the_header_timeout(
        site: Site) -> None:
    with socket.create_connection(("127.0.0.1", site.port)) as sock:
        took = seconds_until_closed(sock, HEADER_TIMEOUT + 4)
    assert took is not None, "a silent connection was kept open"
    assert HEADER_TIMEOUT - 0.5 <= took <= HEADER_TIMEOUT + MARGIN, took


def test_a_kept_connection_waits_the_keepalive_timeout_then_the_header_deadline(
        site: Site) -> None:
    # nginx: between requests the keep-alive timeout runs; the header deadline
    # starts with the first byte of the next request.
    with Wire(site.port) as wire:
        wire.send(request("GET", "/echo/first"))
        assert wire.response().status == 200
        assert not wire.closed(timeout=HEADER_TIMEOUT + 0.5), "closed at the header timeout"
        took = seconds_until_closed(wire.sock, HEADER_TIMEOUT + 4, trickle=SLOW_HEAD)
    assert took is not None, "a trickling client held the connection"
    assert HEADER_TIMEOUT - 0.5 <= took <= HEADER_TIMEOUT + MARGIN, took


def test_an_idle_kept_connection_is_closed_at_the_keepalive_timeout(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(request("GET", "/echo/first"))
        assert wire.response().status == 200
        took = seconds_until_closed(wire.sock, KEEPALIVE_TIMEOUT + 4)
    assert took is not None, "an idle kept connection stayed open"
    assert KEEPALIVE_TIMEOUT - 0.5 <= took <= KEEPALIVE_TIMEOUT + MARGIN, took


# -- client_body_timeout -------------------------------------------------------------

def test_a_body_stall_closes_the_client_without_blaming_the_upstream(site: Site) -> None:
    logged = len(site.proxy.log())
    with Wire(site.port) as wire:
        wire.send(b"POST /echo/stall HTTP/1.1\r\nHost: example.test\r\n"
                  b"Content-Length: 100\r\n\r\n" + b"x" * 10)
        start = time.monotonic()
        answer = wire.drain(timeout=BODY_TIMEOUT + 4)
        took = time.monotonic() - start
    # nginx answers 408 (or closes): never a 5xx, which would blame the upstream.
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert took <= BODY_TIMEOUT + MARGIN, took
    log = site.proxy.log()[logged:]
    assert "upstream timed out" not in log and "upstream" not in log.lower(), log


# -- client_send_timeout -------------------------------------------------------------

def worker_connections_to(worker: psutil.Process, port: int) -> list:
    return [c for c in worker.net_connections("tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED]


def test_a_client_that_never_reads_is_closed_at_the_send_timeout(site: Site) -> None:
    """With buffering off, the upstream connection is held until then, and closed;
    with it on, the reply is read whole at once (tests/test_reply_buffering.py)."""
    (worker,) = site.proxy.workers()
    size = 20 << 20
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect(("127.0.0.1", site.port))
        client_port = sock.getsockname()[1]
        sock.sendall(request("GET", f"/unbuffered/bytes/{size}"))
        # The worker holds the client and an upstream connection while it cannot write...
        wait_for(lambda: worker_connections_to(worker, site.upstream.port), timeout=5,
                 message="the worker to connect upstream")
        # ...and lets both go once the client has taken nothing for client_send_timeout.
        start = time.monotonic()
        wait_for(lambda: not worker_connections_to(worker, client_port), timeout=SEND_TIMEOUT + 4,
                 message="the worker to close the client connection")
        took = time.monotonic() - start
        assert not worker_connections_to(worker, site.upstream.port), \
            "the upstream connection was kept (pooled mid-reply)"
        received = 0
        sock.settimeout(5)
        try:
            while data := sock.recv(1 << 20):
                received += len(data)
        except ConnectionResetError:
            pass
    assert took <= SEND_TIMEOUT + MARGIN, took
    assert received < size, "the whole reply came: the connection was not closed"
    # nginx logs a request whose client timed out, with what was sent.
    log = site.proxy.config_path.parent / "access.log"
    wait_for(lambda: f"GET /unbuffered/bytes/{size} " in log.read_text(), timeout=5,
             message="the access log line of the timed-out request")


# -- client_keepalive_requests -------------------------------------------------------

def test_the_third_answer_on_a_connection_says_close_and_the_connection_closes(
        site: Site) -> None:
    with Wire(site.port) as wire:
        for number in (1, 2):
            wire.send(request("GET", f"/echo/{number}"))
            response = wire.response()
            assert response.status == 200
            assert response.header("Connection") != "close", number
        wire.send(request("GET", "/echo/3"))
        last = wire.response()
        assert last.status == 200 and last.header("Connection") == "close"
        assert wire.drain(timeout=5) == b""


def test_keepalive_requests_count_pipelined_requests_too(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(b"".join(request("GET", f"/echo/p{number}") for number in range(1, 5)))
        answers = [wire.response() for _ in range(3)]
        assert [answer.status for answer in answers] == [200, 200, 200]
        assert [answer.header("Connection") for answer in answers][-1] == "close"
        assert wire.drain(timeout=5) == b"", "a fourth answer"


# -- worker_connections ----------------------------------------------------------------

def test_at_worker_connections_the_oldest_idle_connection_makes_room(
        tmp_path: Path) -> None:
    with running_site(tmp_path, """
        workers = 1
        access_log = "off"
        worker_connections = 8
        [[server]]
        listen = ["127.0.0.1:{port}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://{upstream}"
    """) as small:
        kept = []
        try:
            for number in range(8):  # eight idle keep-alive connections, oldest first
                wire = Wire(small.port, timeout=5)
                wire.send(request("GET", f"/echo/kept{number}"))
                assert wire.response().status == 200
                kept.append(wire)
            start = time.monotonic()
            with Wire(small.port, timeout=5) as newcomer:
                newcomer.send(request("GET", "/echo/newcomer"))
                assert newcomer.response().status == 200
            assert time.monotonic() - start < 2.0
            assert kept[0].closed(timeout=2), "the oldest idle connection was kept"
            kept[-1].send(request("GET", "/echo/newest"))  # the newest still serves
            assert kept[-1].response().status == 200
        finally:
            for wire in kept:
                wire.close()


# -- out of file descriptors -------------------------------------------------------------

def test_a_worker_out_of_file_descriptors_answers_503_then_serves_again(
        tmp_path: Path) -> None:
    with running_site(tmp_path, """
        workers = 1
        access_log = "off"
        [[server]]
        listen = ["127.0.0.1:{port}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://{upstream}"
    """) as small:
        (worker,) = small.proxy.workers()
        with Wire(small.port) as warm:  # anything opened on first use is open now
            warm.send(request("GET", "/echo/warm"))
            assert warm.response().status == 200
        wait_for(lambda: not [c for c in worker.net_connections("tcp")
                              if c.laddr.port == small.port and c.raddr], timeout=5,
                 message="the worker to close the first connection")
        limit = worker.num_fds() + 3
        worker.rlimit(psutil.RLIMIT_NOFILE, (limit, limit))
        held = []
        try:
            while (count := worker.num_fds()) < limit:  # idle connections fill the table
                held.append(socket.create_connection(("127.0.0.1", small.port)))
                wait_for(lambda count=count: worker.num_fds() > count, timeout=5,
                         message="the worker to accept a held connection")
            start = time.monotonic()
            with Wire(small.port, timeout=5) as refused:
                refused.send(request("GET", "/echo/refused"))
                response = refused.response()
                assert response.status == 503 and response.header("Connection") == "close"
                assert refused.drain(timeout=5) == b""
            assert time.monotonic() - start < 2.0
        finally:
            for sock in held:
                sock.close()
        wait_for(lambda: worker.num_fds() < limit - 1, timeout=5,
                 message="the worker to close the held connections")
        with Wire(small.port, timeout=5) as later:
            later.send(request("GET", "/echo/later"))
            assert later.response().status == 200
