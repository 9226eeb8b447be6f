"""The PROXY protocol end to end: a real HAProxy (send-proxy, send-proxy-v2) and
handcrafted headers in front of the real master's `proxy_protocol` listeners.

The first listener takes the header's address as the client's (X-Real-IP, the
access log); the second sets `real_ip_header = "proxy_protocol"` with
127.0.0.1 trusted, and a one-second client_header_timeout. A broken or missing
header closes the connection with no reply; a header split over several TCP
segments is read whole; the request after the header, in the same segment or
not, is served, and so is a second one on the same connection.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port, port_open, wait_for
from tests.support.sites import Site, access_line, headers_seen, running_site
from tests.support.wire import Wire, request
from workers.proxy_protocol import V2_SIGNATURE

pytestmark = pytest.mark.timeout(60)

HAPROXY = "/usr/sbin/haproxy"
REAL_IP_PORT = free_port()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("proxy_protocol"), f"""
        workers = 1
        access_log = "{{dir}}/access.log"
        [[server]]
        listen = ["127.0.0.1:{{port}} proxy_protocol"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://{{upstream}}"
        [[server]]
        listen = ["127.0.0.1:{REAL_IP_PORT} proxy_protocol"]
        real_ip_from = ["127.0.0.1"]
        real_ip_header = "proxy_protocol"
        client_header_timeout = "1s"
          [[server.location]]
          path = "/"
          proxy_pass = "http://{{upstream}}"
    """) as running:
        yield running


@pytest.fixture
def haproxy(tmp_path: Path, site: Site) -> Iterator[Callable[[str], int]]:
    """start(send) -> the port of a real HAProxy in TCP mode in front of the site."""
    started: list[subprocess.Popen] = []

    def start(send: str) -> int:
        port = free_port()
        config = tmp_path / f"haproxy-{send}.cfg"
        config.write_text(textwrap.dedent(f"""
            defaults
                mode tcp
                timeout connect 5s
                timeout client 30s
                timeout server 30s
            frontend front
                bind 127.0.0.1:{port}
                default_backend proxy
            backend proxy
                server s 127.0.0.1:{site.port} {send}
        """))
        log = open(tmp_path / f"haproxy-{send}.log", "wb")  # noqa: SIM115 - closed with it
        process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT)
        log.close()
        started.append(process)
        wait_for(lambda: process.poll() is not None or port_open(port),
                 message="haproxy to listen")
        assert process.poll() is None, (tmp_path / f"haproxy-{send}.log").read_text()
        return port

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=10)




def v2_header(source: str, sport: int, command: int = 1) -> bytes:
    block = (socket.inet_aton(source) + socket.inet_aton("127.0.0.1")
             + struct.pack("!HH", sport, 80) + b"\x01\x00\x02h2")  # one TLV, skipped
    return (V2_SIGNATURE + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(block))
            + block)


def connect(port: int, source: str = "127.0.0.1") -> Wire:
    wire = Wire.__new__(Wire)
    sock = socket.socket()
    sock.settimeout(10.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    wire.sock, wire.buffer = sock, b""
    return wire


@pytest.mark.parametrize(("send", "source"), [
    ("send-proxy", "127.0.0.1"), ("send-proxy-v2", "127.0.0.1"),
    ("send-proxy", "127.0.0.2"), ("send-proxy-v2", "127.0.0.2"),
])
def test_haproxy_s_header_names_the_client_upstream_and_in_the_log(
        site: Site, haproxy: Callable[[str], int], send: str, source: str) -> None:
    path = f"/echo/haproxy/{send}/{source}"
    with connect(haproxy(send), source) as wire:
        wire.send(request("GET", path))
        response = wire.response()
    assert response.status == 200
    headers = headers_seen(response)
    assert headers["x-real-ip"] == [source]
    assert headers["x-forwarded-for"] == [source]
    assert access_line(site, path).startswith(f"{source} - - [")


def test_haproxy_s_connection_serves_two_requests(site: Site,
                                                  haproxy: Callable[[str], int]) -> None:
    with connect(haproxy("send-proxy-v2"), "127.0.0.3") as wire:
        responses = []
        for number in range(2):
            wire.send(request("GET", f"/echo/kept/{number}"))
            responses.append(wire.response())
    assert [response.status for response in responses] == [200, 200]
    assert [headers_seen(response)["x-real-ip"] for response in responses] == [["127.0.0.3"]] * 2


def test_a_handcrafted_v2_header_sets_the_address_with_real_ip_header_proxy_protocol(
        site: Site) -> None:
    with connect(REAL_IP_PORT) as wire:
        wire.send(v2_header("203.0.113.7", 40000) + request("GET", "/echo/fake-source"))
        response = wire.response()
    assert headers_seen(response)["x-real-ip"] == ["203.0.113.7"]
    assert access_line(site, "/echo/fake-source").startswith("203.0.113.7 - - [")


def test_a_v2_local_header_keeps_the_socket_address(site: Site) -> None:
    with connect(site.port, "127.0.0.4") as wire:
        wire.send(v2_header("203.0.113.7", 40000, command=0) + request("GET", "/echo/local"))
        assert headers_seen(wire.response())["x-real-ip"] == ["127.0.0.4"]


def test_a_keep_alive_connection_after_a_header_serves_two_requests(site: Site) -> None:
    with connect(site.port) as wire:
        wire.send(b"PROXY TCP4 198.51.100.4 127.0.0.1 5000 80\r\n")
        wire.send(request("GET", "/echo/one"))
        first = wire.response()
        wire.send(request("GET", "/echo/two"))
        second = wire.response()
    assert headers_seen(first)["x-real-ip"] == headers_seen(second)["x-real-ip"] == ["198.51.100.4"]
    assert first.json()["connection"] == second.json()["connection"]


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 198.51.100.5 127.0.0.1 5000 80\r\n",
    v2_header("198.51.100.5", 5000),
], ids=["v1", "v2"])
def test_a_header_split_over_several_segments_is_read_whole(site: Site, header: bytes) -> None:
    with connect(site.port) as wire:
        for start in range(0, len(header), 5):
            wire.sock.sendall(header[start:start + 5])
        wire.send(request("GET", "/echo/split"))
        response = wire.response()
    assert response.status == 200
    assert headers_seen(response)["x-real-ip"] == ["198.51.100.5"]


@pytest.mark.parametrize("data", [
    request("GET", "/echo/no-header"),                      # no header at all
    b"PROXY TCP4 198.51.100.5 127.0.0.1 99999 80\r\n" + request("GET", "/"),
    b"PROXY UNKNOWN " + b"x" * 200,                         # v1 over 107 bytes
    V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),          # v2 with version 3
])
def test_a_broken_header_closes_the_connection_with_no_reply(site: Site, data: bytes) -> None:
    with connect(site.port) as wire:
        wire.send(data)
        assert wire.drain(timeout=5) == b""
    wait_for(lambda: "broken header" in site.proxy.log(), message="the broken header logged")


def test_a_header_that_never_ends_is_closed_at_client_header_timeout(site: Site) -> None:
    with connect(REAL_IP_PORT) as wire:
        started = time.monotonic()
        wire.send(b"PROXY TCP4 198.51.100.5")
        assert wire.drain(timeout=5) == b""
    assert time.monotonic() - started >= 0.9  # closed by the deadline, not at once
    wait_for(lambda: "timed out sending the PROXY protocol header" in site.proxy.log(),
             message="the timeout logged")


def test_an_untrusted_sender_s_header_is_not_believed_with_real_ip_header_proxy_protocol(
        site: Site) -> None:
    # real_ip_from is 127.0.0.1 alone: a header sent from 127.0.0.2 is read, not taken.
    with connect(REAL_IP_PORT, "127.0.0.2") as wire:
        wire.send(v2_header("203.0.113.7", 40000) + request("GET", "/echo/untrusted-sender"))
        assert headers_seen(wire.response())["x-real-ip"] == ["127.0.0.2"]
