"""A worker's caches of header names are bounded in bytes.

Clients choose header names: a cache keyed by them and bounded by a count of
entries grows with the names' length. Distinct 10 KB names once grew one
worker by 74 MiB in each of two caches of the uwsgi path (the encoded
`HTTP_*` keys of the one-pass packet, and the var prefixes of the two-step
one, taken when a location has uwsgi_params). Each request here carries three
header names of 8,000 bytes never seen before (a header line of nginx's
largest, `large_client_header_buffers 4 8k`, which the proxy also enforces),
to a uwsgi location (one pass), a uwsgi location with a uwsgi_param (two
steps) and a proxy_pass location; the worker's RSS must grow by less than
30 MiB. The unit tests check the bound of each cache directly.
"""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import pytest

from tests.support.raw_http import read_reply
from tests.support.scripted_http import ScriptedHttp
from tests.support.uwsgi_server import uwsgi_servers
from workers import uwsgi_packet

MiB = 1 << 20
NAME_BYTES = 8_000
NAMES_PER_REQUEST = 3
REQUESTS_PER_LOCATION = 1200
WARM_UP = 30


def long_name(number: int, which: int) -> bytes:
    """A header name of NAME_BYTES that no other request uses."""
    prefix = b"X-%d-%d-" % (number, which)
    return prefix + b"n" * (NAME_BYTES - len(prefix))


def request_with_new_names(path: bytes, number: int) -> bytes:
    lines = b"".join(long_name(number, which) + b": 1\r\n"
                     for which in range(NAMES_PER_REQUEST))
    return b"GET " + path + b" HTTP/1.1\r\nHost: memory.test\r\n" + lines + b"\r\n"


def config(uwsgi_pass: str, proxy_pass: str) -> str:
    return (
        'workers = 1\naccess_log = "off"\n'
        "[[server]]\n"
        'listen = ["127.0.0.1:{port}"]\n'
        "  [[server.location]]\n"
        '  path = "/one-pass/"\n'
        f'  uwsgi_pass = "{uwsgi_pass}"\n'
        "  [[server.location]]\n"
        '  path = "/two-steps/"\n'
        f'  uwsgi_pass = "{uwsgi_pass}"\n'
        '  uwsgi_param = { SCRIPT_NAME = "/two-steps" }\n'
        "  [[server.location]]\n"
        '  path = "/"\n'
        f'  proxy_pass = "{proxy_pass}"\n')


@pytest.fixture
def uwsgi(tmp_path: Path):
    with uwsgi_servers(tmp_path) as start:
        yield start


def test_new_long_header_names_do_not_grow_the_worker(uwsgi, start_proxy):
    server = uwsgi("hello.py")  # started with --buffer-size 65535: 24 KB of names fit
    http = ScriptedHttp({})
    try:
        proxy = start_proxy(config(server.uwsgi_pass, http.address))
        (worker,) = proxy.workers()
        worker = psutil.Process(worker.pid)
        number = 0

        def send(path: bytes, count: int) -> None:
            # A keep-alive connection per 100 requests (keepalive_requests is 1000).
            nonlocal number
            for start in range(0, count, 100):
                with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
                    for _ in range(min(100, count - start)):
                        number += 1
                        sock.sendall(request_with_new_names(path, number))
                        reply = read_reply(sock)
                        assert reply.status == 200, (path, reply)

        for path in (b"/one-pass/", b"/two-steps/", b"/"):
            send(path, WARM_UP)
        before = worker.memory_info().rss
        for path in (b"/one-pass/", b"/two-steps/", b"/"):
            send(path, REQUESTS_PER_LOCATION)
        after = worker.memory_info().rss
    finally:
        http.close()
    growth = after - before
    assert growth < 30 * MiB, f"the worker grew by {growth / MiB:.1f} MiB"


# -- each cache's bound, directly ------------------------------------------------


def cached_bytes(table: dict[bytes, bytes]) -> int:
    return sum(len(key) + len(value) for key, value in table.items())


def test_the_header_key_cache_keeps_no_long_name_and_stays_under_its_budget():
    uwsgi_packet._HEADER_KEYS.table.clear()
    for number in range(3000):
        name = b"X-Header-%d" % number
        uwsgi_packet.shared_vars("1.1", [(name, b"v"), (long_name(number, 0), b"v")],
                                 b"127.0.0.1", b"1", b"2", b"host")
    table = uwsgi_packet._HEADER_KEYS.table
    assert all(len(name) <= uwsgi_packet.MAX_CACHED_NAME for name in table)
    assert 0 < cached_bytes(table) <= uwsgi_packet.CACHE_BUDGET


def test_the_var_prefix_cache_keeps_no_long_name_and_stays_under_its_budget():
    uwsgi_packet._KEY_PREFIXES.table.clear()
    for number in range(3000):
        uwsgi_packet.encode_vars([(b"HTTP_X_HEADER_%d" % number, b"v"),
                                  (b"HTTP_" + long_name(number, 0), b"v")])
    table = uwsgi_packet._KEY_PREFIXES.table
    assert all(len(name) <= uwsgi_packet.MAX_CACHED_NAME for name in table)
    assert 0 < cached_bytes(table) <= uwsgi_packet.CACHE_BUDGET


def test_a_cached_name_encodes_as_an_uncached_one():
    first = uwsgi_packet.shared_vars("1.1", [(b"X-Same", b"1"), (long_name(1, 0), b"2")],
                                     b"a", b"1", b"2", b"h")
    again = uwsgi_packet.shared_vars("1.1", [(b"X-Same", b"1"), (long_name(1, 0), b"2")],
                                     b"a", b"1", b"2", b"h")
    assert first == again
    assert b"HTTP_X_SAME" in first[1]
